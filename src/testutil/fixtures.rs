//! Realistic inputs for the benchmarks (`benches/hot_paths.rs`, `examples/paths.rs`): a Keycloak
//! user's access and ID tokens, a configuration with a session section, inline keys of every
//! algorithm family and eight rules, requests shaped like Envoy's, and a session cookie made by
//! the real sign-in flow. Keys and signatures are deterministic, so that instruction counts are
//! the same on every run. The tests below check that each input takes the path it is named for.

use super::TestKey;
use crate::config::Config;
use crate::flow::{Decision, Engine, HeldAnswer, Request, Response};
use crate::jwt::alg::Alg;
use crate::jwt::Expectations;
use serde_json::{json, Value};
use std::rc::Rc;

/// The issuer, Keycloak style.
pub const ISS: &str = "https://sso.example.com/realms/acme";
/// "Now" for every request (Unix seconds).
pub const NOW: u64 = 1_800_000_000;
/// The host requests go to.
pub const HOST: &str = "app.example.com";
/// A request the rules allow (rule `app`: role `app-user`), after seven rules that do not match.
pub const ALLOWED: (&str, &str) = ("GET", "/api/orders/42?expand=items");
/// A request the rules deny (rule `billing-write`: group `/finance/billing`).
pub const DENIED: (&str, &str) = ("POST", "/billing/invoices");
/// A public path.
pub const PUBLIC: (&str, &str) = ("GET", "/static/js/app.3f9c1d.js");
/// The session cookie key.
pub const SESSION_KEY: &str = "bench-session-key-0123456789abcdef0123456789";

/// The algorithms benchmarked, one key each (RS256 and PS256 share an RSA-2048 key).
pub const ALGS: [Alg; 5] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA];

/// Deterministic signing keys for [`ALGS`], with Keycloak-like key ids.
pub struct Signers {
    keys: Vec<(Alg, String, TestKey)>,
}

impl Signers {
    pub fn new() -> Signers {
        let keys = ALGS
            .iter()
            .map(|&alg| {
                let key = match alg {
                    Alg::ES256 | Alg::ES384 => TestKey::ec_fixed(alg, 0x11),
                    Alg::EdDSA => TestKey::ed_fixed(0x22),
                    _ => TestKey::rsa(super::RSA_A),
                };
                // Keycloak's kids are 43 characters of base64url (a SHA-256 thumbprint).
                let kid = format!("{:-<6}x7Gq3mJ0vR1nT8kLw2Zc5yBf9HdPaEoUiKsNl", alg.name());
                (alg, kid, key)
            })
            .collect();
        Signers { keys }
    }

    /// The public key set.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|(alg, kid, key)| key.jwk(kid, *alg)).collect::<Vec<_>>()})
    }

    /// A token of these claims signed with `alg`'s key (the same token on every run).
    pub fn token(&self, alg: Alg, claims: &Value) -> String {
        let (_, kid, key) =
            self.keys.iter().find(|(a, _, _)| *a == alg).expect("a key for every benchmarked algorithm");
        key.mint_fixed(alg, &json!({"alg": alg.name(), "typ": "JWT", "kid": kid}), claims)
    }
}

impl Default for Signers {
    fn default() -> Self {
        Signers::new()
    }
}

/// A Keycloak access token's payload for a user in ten groups (about 1.2 KB of JSON). Its `aud`
/// does not name the gateway; its `azp` does, as Keycloak does it.
pub fn access_claims() -> Value {
    json!({
        "exp": NOW + 300, "iat": NOW, "auth_time": NOW - 60,
        "jti": "onrtac:6f1d1b2e-5c1a-4a8b-9b7e-2f0c4d5e6a7b",
        "iss": ISS, "aud": ["billing-api", "account"],
        "sub": "5f2b8c1e-3d4a-4e6f-9a7b-1c2d3e4f5a6b", "typ": "Bearer", "azp": "gateway",
        "sid": "8e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", "acr": "1",
        "allowed-origins": ["https://app.example.com"],
        "realm_access": {"roles": ["default-roles-acme", "offline_access", "uma_authorization", "app-user",
                                   "backendaccess", "reports-reader", "billing-reader", "support-agent"]},
        "resource_access": {
            "gateway": {"roles": ["viewer", "editor"]},
            "billing-api": {"roles": ["invoices:read", "customers:read"]},
            "grafana": {"roles": ["viewer"]},
            "account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}
        },
        "scope": "openid profile email reports",
        "email_verified": true, "name": "Alice Liddell", "preferred_username": "alice",
        "given_name": "Alice", "family_name": "Liddell", "email": "alice@example.com",
        "groups": ["/admins", "/engineering", "/engineering/platform-team", "/engineering/platform-team/oncall",
                   "/finance/readers", "/operations", "/operations/sre", "/staff", "/staff/berlin-office",
                   "/projects/gatehouse-rollout"]
    })
}

/// The ID token's payload for the same sign-in.
pub fn id_claims(nonce: &str) -> Value {
    json!({
        "exp": NOW + 300, "iat": NOW, "auth_time": NOW - 60,
        "jti": "ofrtac:0b6e2d9a-1f3c-4b5d-8e7f-9a0b1c2d3e4f",
        "iss": ISS, "aud": "gateway", "sub": "5f2b8c1e-3d4a-4e6f-9a7b-1c2d3e4f5a6b", "typ": "ID", "azp": "gateway",
        "nonce": nonce, "sid": "8e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b", "at_hash": "W3bJ8e9yO2Zp1kLq5TgX4A", "acr": "1",
        "email_verified": true, "name": "Alice Liddell", "preferred_username": "alice",
        "given_name": "Alice", "family_name": "Liddell", "email": "alice@example.com",
        "groups": ["/admins", "/engineering", "/engineering/platform-team", "/engineering/platform-team/oncall",
                   "/finance/readers", "/operations", "/operations/sre", "/staff", "/staff/berlin-office",
                   "/projects/gatehouse-rollout"]
    })
}

/// The configuration: a session section, inline keys, three public paths, eight rules on hosts,
/// paths, methods, groups, roles and claims, default deny. `cache_tokens` is `cache.tokens`
/// (0 disables the token and session cache).
pub fn config(signers: &Signers, cache_tokens: usize) -> Rc<Config> {
    let doc = config_doc(signers, cache_tokens);
    Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).expect("the benchmark configuration is valid"))
}

/// [`config`] as the JSON a plugin is configured with.
pub fn config_doc(signers: &Signers, cache_tokens: usize) -> Value {
    json!({
        "provider": {
            "issuer": ISS, "cluster": "outbound|8080||keycloak.keycloak.svc.cluster.local",
            "authority": "keycloak.keycloak.svc.cluster.local:8080",
            "clientId": "gateway", "clientSecret": "gateway-secret", "audiences": ["gateway", "api"],
            "jwks": signers.jwks()
        },
        "publicPaths": [{"prefix": "/static/"}, {"exact": "/healthz"}, {"prefix": "/auth/"}],
        "session": {"keys": [SESSION_KEY]},
        "cache": {"tokens": cache_tokens},
        "rules": [
            {"name": "admin-host", "match": {"hosts": ["admin.example.com"]}, "require": {"groups": ["admins"]}},
            {"name": "grafana-admin", "match": {"hosts": ["grafana.example.com"], "paths": [{"prefix": "/api/admin/"}]},
             "require": {"roles": ["grafana-admin"]}},
            {"name": "billing-write", "match": {"hosts": ["*.example.com"], "paths": [{"prefix": "/billing/"}],
             "methods": ["POST", "PUT", "PATCH", "DELETE"]}, "require": {"groups": ["/finance/billing"], "roles": ["billing-write"]}},
            {"name": "billing-read", "match": {"paths": [{"prefix": "/billing/"}]}, "require": {"groups": ["finance", "/finance/readers"]}},
            {"name": "backend", "match": {"paths": [{"prefix": "/backend/"}]},
             "require": {"roles": ["backendaccess"], "claims": [{"claim": "email_verified", "equals": true}]}},
            {"name": "reports", "match": {"hosts": ["app.example.com"], "paths": [{"prefix": "/reports/"}, {"exact": "/export"}]},
             "require": {"claims": [{"claim": "scope", "contains": "reports"}]}},
            {"name": "ops", "match": {"paths": [{"prefix": "/ops/"}, {"prefix": "/metrics"}]}, "require": {"groups": ["operations", "/operations/sre"]}},
            {"name": "app", "match": {"hosts": ["app.example.com", "*.app.example.com"]}, "require": {"roles": ["app-user"]}}
        ],
        "defaultAction": "deny"
    })
}

/// The token expectations of a configuration, as the flow builds them.
pub fn expectations(cfg: &Config) -> Expectations<'_> {
    Expectations {
        issuers: &cfg.providers.at(0).issuers,
        audiences: &cfg.providers.at(0).audiences,
        algorithms: &cfg.tokens.algorithms,
        leeway_secs: cfg.tokens.leeway_secs,
    }
}

/// An engine with its discovery document loaded (the keys are inline).
pub fn engine(config: Rc<Config>) -> Engine {
    let mut engine = super::vm(config);
    let made = super::load(&mut engine, NOW, &discovery().to_string(), "");
    assert_eq!(made.len(), 1, "discovery only: the keys are inline");
    engine
}

/// The provider's discovery document.
pub fn discovery() -> Value {
    json!({
        "issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
        "authorization_endpoint": format!("{ISS}/protocol/openid-connect/auth"),
        "token_endpoint": "http://keycloak.keycloak.svc.cluster.local:8080/realms/acme/protocol/openid-connect/token",
        "end_session_endpoint": format!("{ISS}/protocol/openid-connect/logout")
    })
}

/// Deterministic "randomness": a counter.
pub fn counter_random() -> impl FnMut(&mut [u8]) {
    let mut n = 0u8;
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            n = n.wrapping_add(1);
            *b = n;
        }
    }
}

/// A credential a request carries.
pub enum Credential<'a> {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// A `Cookie` header: the session cookie(s) among the site's other cookies.
    Cookie(&'a str),
}

/// Request headers as Envoy hands them to the filter (pseudo-headers first, lower case).
pub fn request((method, path): (&str, &str), credential: Credential<'_>) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        (":authority", HOST),
        (":path", path),
        (":method", method),
        (":scheme", "https"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    match credential {
        Credential::None => {}
        Credential::Bearer(token) => h.push(("authorization".into(), format!("Bearer {token}"))),
        Credential::Cookie(cookie) => {
            h.push(("cookie".into(), format!("_ga=GA1.1.1234567890.1700000000; theme=dark; {cookie}")))
        }
    }
    h
}

fn respond(d: Decision) -> Response {
    match d {
        Decision::Respond(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn set_cookies(r: &Response) -> Vec<&str> {
    r.headers.iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.as_str()).collect()
}

/// Signs in through the real flow (login redirect, callback, token answer with the tokens of
/// [`access_claims`] and [`id_claims`]) and returns the session cookie(s) as a `Cookie` header
/// value (`_gatehouse=…`, or its chunks).
pub fn sign_in(engine: &mut Engine, signers: &Signers) -> String {
    let mut random = counter_random();
    let mut page = request(("GET", "/api/orders"), Credential::None);
    page.push(("sec-fetch-mode".into(), "navigate".into()));
    let r = respond(engine.decide(&Request { headers: &page }, NOW, true, &mut random));
    assert_eq!(r.status, 302, "login redirect");
    let state_cookie = set_cookies(&r)[0].split(';').next().unwrap_or_default().to_string();
    let location = r.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).unwrap_or_default();
    let url = url::Url::parse(&location).expect("an absolute authorization URL");
    let q = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).unwrap_or_default();
    let cb = request(
        ("GET", &format!("/oauth2/callback?code=c0de&state={}&session_state=x&iss={ISS}", q("state"))),
        Credential::Cookie(&state_cookie),
    );
    let call = match engine.decide(&Request { headers: &cb }, NOW, true, &mut random) {
        Decision::CallIdp(call) => call,
        other => panic!("expected a token call, got {other:?}"),
    };
    let body = json!({
        "access_token": signers.token(Alg::RS256, &access_claims()),
        "id_token": signers.token(Alg::RS256, &id_claims(&q("nonce"))),
        "token_type": "Bearer", "expires_in": 300, "refresh_expires_in": 1800,
        "refresh_token": "not-kept-without-session.refresh", "scope": "openid profile email reports"
    })
    .to_string();
    let r = respond(engine.on_idp_answer(
        HeldAnswer { pending: call.pending.clone(), status: Some(200), body: body.as_bytes().to_vec() },
        &Request { headers: &cb },
        NOW,
        true,
        &mut random,
    ));
    assert_eq!(r.status, 302, "login completed");
    let name = engine.config().browser.as_ref().map(|b| b.cookie_name.clone()).unwrap_or_default();
    let session: Vec<&str> = set_cookies(&r)
        .into_iter()
        .filter(|c| c.starts_with(&name) && !c.contains("Max-Age=0"))
        .filter_map(|c| c.split(';').next())
        .collect();
    assert!(!session.is_empty(), "a session cookie was set");
    session.join("; ")
}

/// The sealed session value in a `Cookie` header (chunks joined), as `Sealer::open` takes it.
pub fn session_value(cfg: &Config, cookie_header: &str) -> String {
    let name = cfg.browser.as_ref().map(|b| b.cookie_name.as_str()).unwrap_or_default();
    crate::cookie::get_chunked(&crate::cookie::parse(std::iter::once(cookie_header)), name).expect("a session cookie")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Purpose;
    use crate::stats::Counter;

    fn count(e: &mut Engine, c: Counter) -> usize {
        e.take_counts().into_iter().filter(|(x, _)| *x == c).map(|(_, n)| usize::try_from(n).unwrap()).sum()
    }

    fn status(d: &Decision) -> u32 {
        match d {
            Decision::Respond(r) => r.status,
            Decision::Forward { .. } => 200,
            Decision::FetchKeys(_) | Decision::FetchKeysForAnswer(..) | Decision::CallIdp(_) | Decision::ReadBody => 0,
        }
    }

    #[test]
    fn every_input_takes_the_path_it_is_named_for() {
        let signers = Signers::new();
        let cfg = config(&signers, 1024);
        let mut e = engine(Rc::clone(&cfg));
        let mut random = counter_random();
        let mut run =
            |e: &mut Engine, h: &[(String, String)]| e.decide(&Request { headers: h }, NOW, true, &mut random);

        assert_eq!(status(&run(&mut e, &request(PUBLIC, Credential::None))), 200);
        assert_eq!(count(&mut e, Counter::Public), 1);
        let keys = crate::jwt::jwks::KeySet::from_value(&signers.jwks()).unwrap();
        for alg in ALGS {
            let token = signers.token(alg, &access_claims());
            assert_eq!(token, signers.token(alg, &access_claims()), "{alg}: deterministic");
            assert!(crate::jwt::verify(&token, &keys, &expectations(&cfg), NOW).is_ok(), "{alg}");
            assert_eq!(status(&run(&mut e, &request(ALLOWED, Credential::Bearer(&token)))), 200, "{alg}");
            assert_eq!(status(&run(&mut e, &request(DENIED, Credential::Bearer(&token)))), 403, "{alg}");
        }
        assert_eq!(count(&mut e, Counter::TokenCacheHit), 5, "the second request of each token hits the cache");

        let cookie = sign_in(&mut e, &signers);
        let sealed = session_value(&cfg, &cookie);
        let json = cfg.browser.as_ref().unwrap().sealer.open(Purpose::Session, &sealed).unwrap();
        assert!((1000..4000).contains(&json.len()), "session JSON of {} bytes", json.len());
        let d = run(&mut e, &request(ALLOWED, Credential::Cookie(&cookie)));
        let Decision::Forward { set, .. } = &d else { panic!("{d:?}") };
        assert!(set.contains(&("x-auth-request-preferred-username".into(), "alice".into())), "{set:?}");
        assert_eq!(status(&run(&mut e, &request(DENIED, Credential::Cookie(&cookie)))), 403);

        // Without a cache, the session and the tokens are opened and verified every time.
        let mut uncached = engine(config(&signers, 0));
        let token = signers.token(Alg::ES256, &access_claims());
        for _ in 0..2 {
            assert_eq!(status(&run(&mut uncached, &request(ALLOWED, Credential::Cookie(&cookie)))), 200);
            assert_eq!(status(&run(&mut uncached, &request(ALLOWED, Credential::Bearer(&token)))), 200);
        }
        assert_eq!(count(&mut uncached, Counter::TokenCacheMiss), 2);
    }
}
