//! Host benchmarks of the per-request hot paths of the pure core (criterion):
//!
//! ```text
//! cargo bench --features bench-support --bench hot_paths             # full run, ~3 min
//! cargo bench --features bench-support --bench hot_paths -- --quick  # a rough look, ~30 s
//! cargo bench --features bench-support --bench hot_paths -- session  # one group
//! ```
//!
//! Inputs are those of `gatehouse::testutil::fixtures`: a Keycloak user in ten groups, eight
//! rules, requests shaped like Envoy's. These are x86-64 host times; inside Wasm in V8 the same
//! code is several times slower. For numbers that do not move with machine noise, see
//! `wasm-test/bench/instructions.mjs` (instruction counts under callgrind).

// Set-up code: an input that cannot be built should stop the benchmark loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatehouse::flow::{self, Decision, Engine, Request};
use gatehouse::policy::{host_of, path, PathSettings, Target, Verdict};
use gatehouse::session::Purpose;
use gatehouse::testutil::fixtures::{self as fx, Credential, Signers};
use std::hint::black_box;
use std::rc::Rc;

/// One request through the engine, as the glue makes it (it drains the counters after each).
fn decide(engine: &mut Engine, headers: &[(String, String)], random: &mut dyn FnMut(&mut [u8])) -> Decision {
    let d = engine.on_request(&Request { headers }, &mut || fx::NOW, random);
    black_box(engine.take_counts());
    d
}

fn forwarded(d: &Decision) -> bool {
    matches!(d, Decision::Forward { .. })
}

fn session(c: &mut Criterion) {
    let signers = Signers::new();
    let cfg = fx::config(&signers, 1024);
    let mut engine = fx::engine(Rc::clone(&cfg));
    let cookie = fx::sign_in(&mut engine, &signers);
    let sealed = fx::session_value(&cfg, &cookie);
    let sealer = &cfg.browser.as_ref().expect("a session section").sealer;
    let headers = fx::request(fx::ALLOWED, Credential::Cookie(&cookie));
    let mut random = fx::counter_random();

    let mut g = c.benchmark_group("session");
    g.bench_function("sealer_open", |b| b.iter(|| sealer.open(Purpose::Session, black_box(&sealed))));
    assert!(forwarded(&decide(&mut engine, &headers, &mut random)));
    g.bench_function("decide_hit", |b| b.iter(|| decide(&mut engine, black_box(&headers), &mut random)));
    g.bench_function("decide_miss", |b| {
        b.iter_batched(
            || fx::engine(Rc::clone(&cfg)),
            |mut fresh| {
                let d = decide(&mut fresh, black_box(&headers), &mut random);
                (fresh, d)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn jwt_verify(c: &mut Criterion) {
    let signers = Signers::new();
    let cfg = fx::config(&signers, 1024);
    let keys = &gatehouse::jwt::jwks::KeySet::from_value(&signers.jwks()).expect("the signers' keys");
    let expect = fx::expectations(&cfg);
    let claims = fx::access_claims();

    let mut g = c.benchmark_group("jwt_verify");
    for alg in fx::ALGS {
        let token = signers.token(alg, &claims);
        assert!(gatehouse::jwt::verify(&token, keys, &expect, fx::NOW).is_ok(), "{alg}");
        g.bench_function(alg.name(), |b| b.iter(|| gatehouse::jwt::verify(black_box(&token), keys, &expect, fx::NOW)));
    }
    g.finish();
}

fn bearer_and_public(c: &mut Criterion) {
    let signers = Signers::new();
    let cfg = fx::config(&signers, 1024);
    let mut engine = fx::engine(Rc::clone(&cfg));
    let token = signers.token(gatehouse::jwt::alg::Alg::RS256, &fx::access_claims());
    let bearer = fx::request(fx::ALLOWED, Credential::Bearer(&token));
    let denied = fx::request(fx::DENIED, Credential::Bearer(&token));
    let public = fx::request(fx::PUBLIC, Credential::None);
    let mut random = fx::counter_random();
    assert!(forwarded(&decide(&mut engine, &bearer, &mut random)), "the first request fills the cache");
    assert!(!forwarded(&decide(&mut engine, &denied, &mut random)));
    assert!(forwarded(&decide(&mut engine, &public, &mut random)));

    let mut g = c.benchmark_group("decide");
    g.bench_function("bearer_hit", |b| b.iter(|| decide(&mut engine, black_box(&bearer), &mut random)));
    g.bench_function("bearer_hit_403", |b| b.iter(|| decide(&mut engine, black_box(&denied), &mut random)));
    g.bench_function("public", |b| b.iter(|| decide(&mut engine, black_box(&public), &mut random)));
    g.finish();
}

fn claims_and_policy(c: &mut Criterion) {
    let signers = Signers::new();
    let cfg = fx::config(&signers, 1024);
    let claims = fx::access_claims();

    let mut g = c.benchmark_group("claims");
    g.bench_function("identity_of", |b| {
        b.iter_batched(|| claims.clone(), |claims| flow::identity_of(&cfg, 0, claims, None), BatchSize::SmallInput)
    });
    g.finish();

    let mut g = c.benchmark_group("policy");
    for (name, (method, raw_path), want_allow) in [("allow", fx::ALLOWED, true), ("deny", fx::DENIED, false)] {
        let host = host_of(fx::HOST);
        let path = path::prepare(raw_path, &PathSettings::default()).unwrap().path;
        let target = Target { host: &host, path: &path, method };
        assert_eq!(cfg.policy.verdict(cfg.policy.route_of(&target), &claims) == Verdict::Allow, want_allow, "{name}");
        g.bench_function(name, |b| b.iter(|| cfg.policy.verdict(cfg.policy.route_of(black_box(&target)), &claims)));
    }
    g.bench_function("prepare_path", |b| b.iter(|| path::prepare(black_box(fx::ALLOWED.1), &PathSettings::default())));
    g.bench_function("prepare_tricky_path", |b| {
        b.iter(|| path::prepare(black_box("/Public/..;/Admin/%2e%2E/x"), &PathSettings::default()))
    });
    g.finish();
}

criterion_group!(benches, session, jwt_verify, bearer_and_public, claims_and_policy);
criterion_main!(benches);
