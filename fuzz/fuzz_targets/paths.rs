//! Issue 11's invariant on arbitrary request targets: under every path setting and a few
//! policies, whoever gatehouse lets through, every upstream model (src/testutil/upstreams.rs)
//! lets through on its own reading of the path gatehouse forwards. gatehouse may be stricter,
//! never more permissive; and nothing panics.
#![no_main]
use gatehouse::claims::ClaimPath;
use gatehouse::policy::path::prepare;
use gatehouse::policy::{EscapedSlashes, Normalization, PathMatch, PathSettings, Policy, PublicPath, Route, Rule, Target, Verdict};
use gatehouse::testutil::upstreams::MODELS;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn policies() -> Vec<Policy> {
    let rule = |paths: Vec<PathMatch>, groups: &[&str]| Rule {
        name: "r".into(),
        hosts: vec![],
        paths,
        methods: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
        roles: vec![],
        claims: vec![],
    };
    let policy = |public: Vec<PathMatch>, rules: Vec<Rule>, default_allow: bool| Policy {
        public_paths: public.into_iter().map(|path| PublicPath { path, hosts: vec![] }).collect(),
        rules,
        default_allow,
        groups_claim: ClaimPath::parse("groups").unwrap(),
        roles_claims: vec![],
    };
    vec![
        policy(vec![PathMatch::prefix("/public/")], vec![rule(vec![PathMatch::prefix("/admin/")], &["admins"])], true),
        policy(vec![], vec![rule(vec![PathMatch::prefix("/public/")], &[]), rule(vec![], &["admins"])], true),
        policy(vec![PathMatch::exact("/healthz")], vec![rule(vec![PathMatch::prefix("/admin").ignoring_case()], &[])], false),
    ]
}

fn allowed(policy: &Policy, route: Route, who: &Option<Value>) -> bool {
    match (route, who) {
        (Route::Public, _) => true,
        (_, None) => false,
        (route, Some(claims)) => policy.verdict(route, claims) == Verdict::Allow,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let who = [None, Some(json!({"groups": []})), Some(json!({"groups": ["/admins"]}))];
    for normalization in [Normalization::None, Normalization::Base, Normalization::MergeSlashes, Normalization::DecodeAndMergeSlashes] {
        for escaped_slashes in [EscapedSlashes::KeepUnchanged, EscapedSlashes::RejectRequest, EscapedSlashes::UnescapeAndForward] {
            let Ok(p) = prepare(raw, &PathSettings { normalization, escaped_slashes }) else { continue };
            assert!(p.path.starts_with('/'), "{raw:?} -> {:?}", p.path);
            for policy in policies() {
                let routes = policy.route(&["h"], p.readings(), &["GET"]);
                for (name, model) in MODELS {
                    let Some(reading) = model(&p.path) else { continue };
                    let theirs = policy.route_of(&Target { host: "h", path: &reading, method: "GET" });
                    for w in &who {
                        if routes.iter().all(|&r| allowed(&policy, r, w)) {
                            assert!(allowed(&policy, theirs, w), "{raw:?}: forwarded {:?}, {name} reads {reading:?}", p.path);
                        }
                    }
                }
            }
        }
    }
});
