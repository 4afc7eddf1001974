//! Issue 11's invariant on arbitrary request targets: under every path setting and the
//! policies of the property test (`testutil::upstreams::policies`), whoever gatehouse lets
//! through, every upstream model of src/testutil/upstreams.rs lets through on its own reading of
//! the path gatehouse forwards. gatehouse may be stricter,
//! never more permissive; and nothing panics.
#![no_main]
use gatehouse::policy::path::prepare;
use gatehouse::policy::{EscapedSlashes, Normalization, PathSettings, Target};
use gatehouse::testutil::upstreams::{allowed, identities, policies, MODELS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    for normalization in
        [Normalization::None, Normalization::Base, Normalization::MergeSlashes, Normalization::DecodeAndMergeSlashes]
    {
        for escaped_slashes in
            [EscapedSlashes::KeepUnchanged, EscapedSlashes::RejectRequest, EscapedSlashes::UnescapeAndForward]
        {
            let Ok(p) = prepare(raw, &PathSettings { normalization, escaped_slashes }) else { continue };
            assert!(p.path.starts_with('/'), "{raw:?} -> {:?}", p.path);
            for (_, policy) in policies("/public/", "/admin/") {
                let routes = policy.route(&["h"], p.readings(), &["GET"]);
                for (name, model) in MODELS {
                    let Some(reading) = model(&p.path) else { continue };
                    let theirs = policy.route_of(&Target { host: "h", path: &reading, method: "GET" });
                    for (who, claims) in identities() {
                        if routes.iter().all(|&r| allowed(&policy, r, &claims)) {
                            assert!(
                                allowed(&policy, theirs, &claims),
                                "{who} on {raw:?}: forwarded {:?}, {name} reads {reading:?}",
                                p.path
                            );
                        }
                    }
                }
            }
        }
    }
});
