//! Runs one request path of the pure core N times, for instruction counts under callgrind:
//!
//! ```text
//! cargo build --release --features bench-support --example paths
//! valgrind --tool=callgrind target/release/examples/paths session-cached 200
//! ```
//!
//! `wasm-test/bench/instructions.mjs` runs every path with N = 0 and N > 0 and reports
//! (Ir(N) − Ir(0)) / N. All set-up (configuration, keys, tokens, sign-in, and one warm-up run
//! that fills the caches) happens before the loop whatever N is, so the difference is the cost
//! of N requests alone. Engine paths are `Engine::decide` plus the counter drain the glue makes
//! after each call. Inputs are those of `gatehouse::testutil::fixtures`, deterministic, so the
//! counts are the same on every run.
//!
//! `paths --list` prints the path names, `paths --inputs` the sizes of the inputs, and
//! `paths --vm-inputs` the same inputs as JSON for the built module (`wasm-test/bench/vm.mjs`:
//! the plugin configuration, the discovery document, "now", and each path's request headers,
//! and the same with `cache.tokens = 0` for the uncached paths).

// Set-up code: an input that cannot be built should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::flow::{self, Decision, Engine, Request};
use gatehouse::jwt::alg::Alg;
use gatehouse::policy::{host_of, path, PathSettings, Target};
use gatehouse::session::Purpose;
use gatehouse::testutil::fixtures::{self as fx, Credential, Signers};
use std::hint::black_box;

/// The paths, with what each measures.
const PATHS: &[(&str, &str)] = &[
    ("public", "Engine::decide, public path, no credentials"),
    ("bearer-cached", "Engine::decide, repeated RS256 bearer token (token-cache hit), allowed by rule 8 of 8"),
    ("bearer-cached-403", "Engine::decide, repeated bearer token, denied by a rule (403 JSON)"),
    ("session-cached", "Engine::decide, session cookie seen before (cache hit), allowed"),
    ("session-miss", "Engine::decide, session cookie with cache.tokens = 0 (open, parse, map every time)"),
    ("bearer-RS256-uncached", "Engine::decide, RS256 bearer token with cache.tokens = 0"),
    ("bearer-PS256-uncached", "Engine::decide, PS256 bearer token with cache.tokens = 0"),
    ("bearer-ES256-uncached", "Engine::decide, ES256 bearer token with cache.tokens = 0"),
    ("bearer-ES384-uncached", "Engine::decide, ES384 bearer token with cache.tokens = 0"),
    ("bearer-EdDSA-uncached", "Engine::decide, EdDSA bearer token with cache.tokens = 0"),
    ("op-sealer-open", "Sealer::open of the session cookie (HMAC-SHA256, base64)"),
    ("op-session-json", "serde_json::from_slice of the opened session (to a Value)"),
    ("op-jwt-verify-RS256", "jwt::verify of the RS256 token alone"),
    (
        "op-identity-of",
        "flow::identity_of on a clone of the access-token claims (default claim headers), dropped after",
    ),
    ("op-claims-clone", "the clone and drop alone, to subtract from op-identity-of"),
    ("op-policy-allow", "Policy::route_of and verdict, allowed target (8 rules)"),
    ("op-policy-deny", "Policy::route_of and verdict, denied target"),
];

fn decide(engine: &mut Engine, headers: &[(String, String)], random: &mut dyn FnMut(&mut [u8])) -> Decision {
    let d = engine.on_request(&Request { headers }, &mut || fx::NOW, random);
    black_box(engine.take_counts());
    d
}

/// An engine path: set-up, a check that the request takes the path named, and the operation.
fn engine_path(
    cache: usize,
    headers: Vec<(String, String)>,
    want_status: u32,
    warm: Option<Vec<(String, String)>>,
) -> Box<dyn FnMut()> {
    let signers = Signers::new();
    let mut engine = fx::engine(fx::config(&signers, cache));
    let mut random = fx::counter_random();
    if let Some(warm) = warm {
        decide(&mut engine, &warm, &mut random);
    }
    let status = match decide(&mut engine, &headers, &mut random) {
        Decision::Forward { .. } => 200,
        Decision::Respond(r) => r.status,
        other => panic!("unexpected decision {other:?}"),
    };
    assert_eq!(status, want_status, "the request takes another path than the one named");
    Box::new(move || {
        black_box(decide(&mut engine, black_box(&headers), &mut random));
    })
}

fn session_cookie(signers: &Signers) -> String {
    let mut engine = fx::engine(fx::config(signers, 1024));
    fx::sign_in(&mut engine, signers)
}

fn bearer(alg: Alg, cache: usize, target: (&str, &str), want: u32) -> Box<dyn FnMut()> {
    let token = Signers::new().token(alg, &fx::access_claims());
    engine_path(cache, fx::request(target, Credential::Bearer(&token)), want, None)
}

fn build(name: &str) -> Option<Box<dyn FnMut()>> {
    let uncached = |alg: Alg| bearer(alg, 0, fx::ALLOWED, 200);
    Some(match name {
        "public" => engine_path(1024, fx::request(fx::PUBLIC, Credential::None), 200, None),
        "bearer-cached" => bearer(Alg::RS256, 1024, fx::ALLOWED, 200),
        "bearer-cached-403" => bearer(Alg::RS256, 1024, fx::DENIED, 403),
        "session-cached" | "session-miss" => {
            let cookie = session_cookie(&Signers::new());
            let cache = if name == "session-cached" { 1024 } else { 0 };
            engine_path(cache, fx::request(fx::ALLOWED, Credential::Cookie(&cookie)), 200, None)
        }
        "bearer-RS256-uncached" => uncached(Alg::RS256),
        "bearer-PS256-uncached" => uncached(Alg::PS256),
        "bearer-ES256-uncached" => uncached(Alg::ES256),
        "bearer-ES384-uncached" => uncached(Alg::ES384),
        "bearer-EdDSA-uncached" => uncached(Alg::EdDSA),
        "op-sealer-open" | "op-session-json" => {
            let signers = Signers::new();
            let cfg = fx::config(&signers, 1024);
            let sealed = fx::session_value(&cfg, &session_cookie(&signers));
            let sealer = move |s: &str| cfg.browser.as_ref().and_then(|b| b.sealer.open(Purpose::Session, s));
            if name == "op-sealer-open" {
                assert!(sealer(&sealed).is_some());
                Box::new(move || {
                    black_box(sealer(black_box(&sealed)));
                })
            } else {
                let json = sealer(&sealed).expect("the session opens");
                Box::new(move || {
                    black_box(serde_json::from_slice::<serde_json::Value>(black_box(&json)).expect("JSON"));
                })
            }
        }
        "op-jwt-verify-RS256" => {
            let signers = Signers::new();
            let cfg = fx::config(&signers, 1024);
            let keys = gatehouse::jwt::jwks::KeySet::from_value(&signers.jwks()).expect("the signers' keys");
            let token = signers.token(Alg::RS256, &fx::access_claims());
            assert!(gatehouse::jwt::verify(&token, &keys, &fx::expectations(&cfg), fx::NOW).is_ok());
            Box::new(move || {
                black_box(gatehouse::jwt::verify(black_box(&token), &keys, &fx::expectations(&cfg), fx::NOW).ok());
            })
        }
        "op-identity-of" => {
            let cfg = fx::config(&Signers::new(), 1024);
            let claims = fx::access_claims();
            Box::new(move || {
                // identity_of takes the claims by value: op-claims-clone counts the clone and drop.
                black_box(flow::identity_of(&cfg, 0, black_box(&claims).clone(), None));
            })
        }
        "op-claims-clone" => {
            let claims = fx::access_claims();
            Box::new(move || {
                black_box(black_box(&claims).clone());
            })
        }
        "op-policy-allow" | "op-policy-deny" => {
            let cfg = fx::config(&Signers::new(), 1024);
            let claims = fx::access_claims();
            let (method, raw) = if name == "op-policy-allow" { fx::ALLOWED } else { fx::DENIED };
            let path = path::prepare(raw, &PathSettings::default()).map(|p| p.path).unwrap_or_default();
            let host = host_of(fx::HOST);
            Box::new(move || {
                let target = Target { host: &host, path: &path, method };
                black_box(cfg.policy.verdict(cfg.policy.route_of(black_box(&target)), &claims));
            })
        }
        _ => return None,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for (name, what) in PATHS {
            println!("{name}\t{what}");
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--vm-inputs") {
        let signers = Signers::new();
        let cookie = session_cookie(&signers);
        let token = signers.token(Alg::RS256, &fx::access_claims());
        let requests = serde_json::json!({
            "public": fx::request(fx::PUBLIC, Credential::None),
            "session-cached": fx::request(fx::ALLOWED, Credential::Cookie(&cookie)),
            "bearer-cached": fx::request(fx::ALLOWED, Credential::Bearer(&token)),
            "bearer-cached-403": fx::request(fx::DENIED, Credential::Bearer(&token)),
        });
        let token_of = |alg: Alg| signers.token(alg, &fx::access_claims());
        let uncached = serde_json::json!({
            "bearer-RS256-uncached": fx::request(fx::ALLOWED, Credential::Bearer(&token_of(Alg::RS256))),
            "bearer-ES256-uncached": fx::request(fx::ALLOWED, Credential::Bearer(&token_of(Alg::ES256))),
            "bearer-EdDSA-uncached": fx::request(fx::ALLOWED, Credential::Bearer(&token_of(Alg::EdDSA))),
            "session-miss": fx::request(fx::ALLOWED, Credential::Cookie(&cookie)),
        });
        let out = serde_json::json!({
            "config": fx::config_doc(&signers, 1024),
            "discovery": fx::discovery(),
            "now": fx::NOW,
            "requests": requests,
            "uncached": {"config": fx::config_doc(&signers, 0), "requests": uncached},
        });
        println!("{out}");
        return;
    }
    if args.first().map(String::as_str) == Some("--inputs") {
        let signers = Signers::new();
        let cfg = fx::config(&signers, 1024);
        let cookie = session_cookie(&signers);
        let sealed = fx::session_value(&cfg, &cookie);
        let json = cfg.browser.as_ref().and_then(|b| b.sealer.open(Purpose::Session, &sealed)).map_or(0, |j| j.len());
        let claims = fx::access_claims().to_string().len();
        println!(
            "session cookie: {} bytes (sealed JSON {json} bytes); access-token claims: {claims} bytes JSON",
            cookie.len()
        );
        for alg in fx::ALGS {
            println!("{alg} token: {} bytes", signers.token(alg, &fx::access_claims()).len());
        }
        let headers = fx::request(fx::ALLOWED, Credential::Cookie(&cookie));
        println!("request: {} headers besides the credential", headers.len() - 1);
        return;
    }
    let (Some(name), Some(n)) = (args.first(), args.get(1).and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: paths <path> <iterations>   (paths --list for the paths)");
        std::process::exit(2);
    };
    let Some(mut op) = build(name) else {
        eprintln!("unknown path {name:?}; paths --list lists them");
        std::process::exit(2);
    };
    op(); // warm-up, whatever N: first-use costs (lazy statics, CPU feature detection) are set-up
    measured(&mut *op, n);
}

/// The measured loop (a separate symbol, for `--toggle-collect=*measured*` if wanted).
#[inline(never)]
fn measured(op: &mut dyn FnMut(), n: u64) {
    for _ in 0..n {
        op();
    }
}
