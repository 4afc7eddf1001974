use super::*;
use serde_json::json;

fn alice() -> Value {
    json!({"preferred_username": "alice", "groups": ["/admins", "/staff/ops"],
           "realm_access": {"roles": ["backendaccess", "offline_access"]},
           "resource_access": {"api": {"roles": ["reader"]}},
           "scope": "openid email profile", "email_verified": true, "level": 3})
}

fn bob() -> Value {
    json!({"preferred_username": "bob", "groups": [], "realm_access": {"roles": ["offline_access"]}})
}

fn policy(rules: Vec<Rule>, default_allow: bool) -> Policy {
    Policy {
        public_paths: vec![],
        preflight_paths: vec![],
        email: None,
        rules,
        default_allow,
        groups_claim: ClaimPath::parse("groups").unwrap(),
        roles_claims: vec![
            ClaimPath::parse("realm_access.roles").unwrap(),
            ClaimPath::parse("resource_access.api.roles").unwrap(),
        ],
    }
}

fn rule(name: &str) -> Rule {
    Rule {
        name: name.into(),
        hosts: vec![],
        paths: vec![],
        methods: vec![],
        groups: vec![],
        roles: vec![],
        claims: vec![],
    }
}

fn t<'a>(host: &'a str, path: &'a str, method: &'a str) -> Target<'a> {
    Target { host, path, method }
}

/// The outcome for one reading of a request (public paths count as allowed).
fn evaluate(p: &Policy, target: &Target<'_>, claims: &Value) -> Verdict {
    p.verdict(p.route_of(target), claims)
}

fn denied(reason: Denial, rule: &str) -> Verdict {
    Verdict::Deny { rule: Some(rule.into()), reason }
}

#[test]
fn seed_002_admins_group() {
    let p = policy(
        vec![Rule { paths: vec![PathMatch::prefix("/admin/")], groups: vec!["admins".into()], ..rule("admins-only") }],
        true,
    );
    assert_eq!(evaluate(&p, &t("h", "/admin/x", "GET"), &alice()), Verdict::Allow);
    assert_eq!(evaluate(&p, &t("h", "/admin/x", "GET"), &bob()), denied(Denial::GroupRequired, "admins-only"));
    assert_eq!(
        evaluate(&p, &t("h", "/admin", "GET"), &bob()),
        denied(Denial::GroupRequired, "admins-only"),
        "the bare directory is covered"
    );
    assert_eq!(evaluate(&p, &t("h", "/administrator", "GET"), &bob()), Verdict::Allow);
    assert_eq!(evaluate(&p, &t("h", "/echo", "GET"), &bob()), Verdict::Allow);
}

#[test]
fn seed_003_role_and_username() {
    let p = policy(
        vec![Rule {
            roles: vec!["backendaccess".into()],
            claims: vec![ClaimCondition {
                claim: ClaimPath::parse("preferred_username").unwrap(),
                op: ClaimOp::Equals("testuser".into()),
            }],
            ..rule("backend")
        }],
        false,
    );
    let mut testuser = alice();
    testuser["preferred_username"] = json!("testuser");
    assert_eq!(evaluate(&p, &t("h", "/", "GET"), &testuser), Verdict::Allow);
    assert_eq!(evaluate(&p, &t("h", "/", "GET"), &alice()), denied(Denial::ClaimMismatch, "backend"));
    assert_eq!(evaluate(&p, &t("h", "/", "GET"), &bob()), denied(Denial::RoleRequired, "backend"));
}

#[test]
fn groups_match_full_paths_only_at_top_level() {
    let g = |want: &str| {
        evaluate(&policy(vec![Rule { groups: vec![want.into()], ..rule("r") }], true), &t("h", "/", "GET"), &alice())
    };
    assert_eq!(g("admins"), Verdict::Allow);
    assert_eq!(g("/admins"), Verdict::Allow);
    assert_eq!(g("/staff/ops"), Verdict::Allow);
    assert_eq!(g("ops"), denied(Denial::GroupRequired, "r"), "a subgroup's short name is not enough");
    assert_eq!(g("Admins"), denied(Denial::GroupRequired, "r"));
    assert_eq!(g("staff"), denied(Denial::GroupRequired, "r"));
}

#[test]
fn roles_come_from_every_roles_claim() {
    let r = |want: &str| {
        evaluate(&policy(vec![Rule { roles: vec![want.into()], ..rule("r") }], true), &t("h", "/", "GET"), &alice())
    };
    assert_eq!(r("backendaccess"), Verdict::Allow);
    assert_eq!(r("reader"), Verdict::Allow, "client roles");
    assert_eq!(r("writer"), denied(Denial::RoleRequired, "r"));
}

#[test]
fn claim_operators() {
    let c = |claim: &str, op: ClaimOp| {
        let rule = Rule { claims: vec![ClaimCondition { claim: ClaimPath::parse(claim).unwrap(), op }], ..rule("r") };
        evaluate(&policy(vec![rule], true), &t("h", "/", "GET"), &alice()) == Verdict::Allow
    };
    assert!(c("preferred_username", ClaimOp::Equals("alice".into())));
    assert!(!c("preferred_username", ClaimOp::Equals("alic".into())));
    assert!(c("email_verified", ClaimOp::Equals("true".into())));
    assert!(c("level", ClaimOp::Equals("3".into())));
    assert!(!c("groups", ClaimOp::Equals("/admins".into())), "equals never matches an array");
    assert!(!c("missing", ClaimOp::Equals("".into())));
    assert!(c("groups", ClaimOp::Contains("/admins".into())));
    assert!(!c("groups", ClaimOp::Contains("/admin".into())), "no substring match");
    assert!(c("scope", ClaimOp::Contains("email".into())));
    assert!(!c("scope", ClaimOp::Contains("mail".into())));
    assert!(c("preferred_username", ClaimOp::OneOf(vec!["bob".into(), "alice".into()])));
    assert!(!c("preferred_username", ClaimOp::OneOf(vec!["bob".into()])));
    assert!(!c("realm_access", ClaimOp::OneOf(vec!["{}".into()])));
}

#[test]
fn first_matching_rule_wins_and_default_applies() {
    let p = policy(
        vec![
            Rule { paths: vec![PathMatch::exact("/admin/health")], ..rule("health") },
            Rule { paths: vec![PathMatch::prefix("/admin/")], groups: vec!["admins".into()], ..rule("admin") },
            Rule { methods: vec!["DELETE".into()], roles: vec!["writer".into()], ..rule("deletes") },
            Rule {
                hosts: vec![HostPattern::parse("*.internal.example").unwrap()],
                groups: vec!["staff".into()],
                ..rule("internal")
            },
        ],
        false,
    );
    assert_eq!(evaluate(&p, &t("h", "/admin/health", "GET"), &bob()), Verdict::Allow);
    assert_eq!(evaluate(&p, &t("h", "/admin/users", "GET"), &bob()), denied(Denial::GroupRequired, "admin"));
    assert_eq!(evaluate(&p, &t("h", "/x", "DELETE"), &alice()), denied(Denial::RoleRequired, "deletes"));
    assert_eq!(evaluate(&p, &t("a.internal.example", "/x", "GET"), &bob()), denied(Denial::GroupRequired, "internal"));
    assert_eq!(
        evaluate(&p, &t("internal.example", "/x", "GET"), &bob()),
        Verdict::Deny { rule: None, reason: Denial::NoRuleMatched }
    );
    let open = policy(vec![], true);
    assert_eq!(evaluate(&open, &t("h", "/x", "GET"), &bob()), Verdict::Allow);
}

#[test]
fn prefix_and_exact_paths() {
    assert!(PathMatch::prefix("/public/").matches("/public/x"));
    assert!(PathMatch::prefix("/public/").matches("/public"));
    assert!(!PathMatch::prefix("/public/").matches("/publicity"));
    assert!(PathMatch::prefix("/").matches("/anything"));
    assert!(PathMatch::exact("/healthz").matches("/healthz"));
    assert!(!PathMatch::exact("/healthz").matches("/healthz/"));
}

#[test]
fn hosts() {
    assert_eq!(host_of("Example.COM:8080"), "example.com");
    assert_eq!(host_of("example.com."), "example.com");
    assert_eq!(host_of("EXAMPLE.com.:443"), "example.com");
    assert_eq!(host_of("[::1]:8080"), "[::1]");
    assert_eq!(host_of("[::FFFF:7f00:1]"), "127.0.0.1", "IPv4-mapped");
    assert_eq!(host_of("[0:0:0:0:0:0:0:1]:443"), "[::1]");
    assert_eq!(host_of("[2001:DB8::1]"), "[2001:db8::1]");
    assert_eq!(host_of("127.0.0.1"), "127.0.0.1");
    assert_eq!(host_of("internal_svc:80"), "internal_svc");
    // Numbers are IPv4 addresses, as URL parsers and inet_aton read them.
    for spelling in
        ["127.0.0.1", "127.000.0.1", "127.1", "0x7f.0.0.1", "0X7F.0.0.1:8080", "2130706433", "0177.0.0.1", "127.0.0.1."]
    {
        assert_eq!(host_of(spelling), "127.0.0.1", "{spelling}");
    }
    for bad in [
        "",
        ".",
        "example.com..",
        "a..b",
        "user@example.com",
        "exa%6dple.com",
        "example.com:80:80",
        "example.com:99999",
        "example.com:8x",
        "[::1",
        "[::1]x",
        "[zz::1]",
        "ex ample.com",
        "example.com/x",
        "*.example.com",
        "é.example",
        "999.0.0.1",
        "1.2.3.4.5",
        "example.123",
    ] {
        assert_eq!(canonical_host(bad), Err(HostError), "{bad:?}");
    }
    assert!(HostPattern::parse("*.example.com").unwrap().matches("a.example.com"));
    assert!(!HostPattern::parse("*.example.com").unwrap().matches("example.com"));
    assert!(!HostPattern::parse("*.example.com").unwrap().matches("aexample.com"));
    assert!(HostPattern::parse("example.com").unwrap().matches("example.com"));
    assert_eq!(
        HostPattern::parse("Example.COM.").unwrap(),
        HostPattern::parse("example.com").unwrap(),
        "patterns are canonical too"
    );
    for bad in ["example.com:443", "*", "*.", "a.*.com", "[::1]:80", "", "ex ample"] {
        assert!(HostPattern::parse(bad).is_none(), "{bad:?}");
    }
}
