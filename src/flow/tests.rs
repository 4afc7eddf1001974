use super::*;
use crate::jwt::alg::Alg;
use crate::shared::MemoryStore;
use crate::testutil::{discovery_fetch, jwks_fetch, load, ok, vm, TestKey, RSA_A, RSA_B};
use serde_json::{json, Value};

const ISS: &str = "http://127.0.0.1:8180/realms/demo";
const NOW: u64 = 1_800_000_000;

/// Deterministic "randomness" for tests: a counter.
fn rng() -> impl FnMut(&mut [u8]) {
    let mut n = 0u8;
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            n = n.wrapping_add(1);
            *b = n;
        }
    }
}

fn config(extra: Value, inline_keys: Option<Value>) -> Rc<Config> {
    let mut doc = json!({
        "provider": {"issuer": ISS, "cluster": "idp", "clientId": "gateway", "audiences": ["api", "gateway"]},
        "publicPaths": [{"prefix": "/public/"}, {"exact": "/healthz"}],
        "rules": [{"name": "admins-only", "match": {"paths": [{"prefix": "/admin/"}]}, "require": {"groups": ["admins"]}}]
    });
    if let Some(keys) = inline_keys {
        doc["provider"]["jwks"] = keys;
    }
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap())
}

fn alice_claims() -> Value {
    json!({"iss": ISS, "sub": "a-1", "aud": "account", "azp": "api", "exp": NOW + 300, "iat": NOW,
           "email": "alice@example.com", "preferred_username": "alice", "groups": ["/admins"],
           "realm_access": {"roles": ["backendaccess", "offline_access"]},
           "resource_access": {"gateway": {"roles": ["viewer"]}}})
}

fn bob_claims() -> Value {
    json!({"iss": ISS, "sub": "b-1", "aud": "account", "azp": "api", "exp": NOW + 300, "iat": NOW,
           "email": "bob@example.com", "preferred_username": "bob", "groups": [],
           "realm_access": {"roles": ["offline_access"]}})
}

struct Bed {
    key: TestKey,
    engine: Engine,
}

fn bed(extra: Value) -> Bed {
    let key = TestKey::rsa(RSA_A);
    let jwks = json!({"keys": [key.jwk("k1", Alg::RS256)]});
    let engine = vm(config(extra, Some(jwks)));
    Bed { key, engine }
}

impl Bed {
    fn token(&self, claims: &Value) -> String {
        self.key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}), claims)
    }

    fn run(&mut self, path: &str, extra_headers: &[(&str, &str)]) -> Decision {
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            (":authority".into(), "127.0.0.1:8080".into()),
        ];
        headers.extend(extra_headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        self.engine.decide(&Request { headers: &headers }, NOW, true, &mut rng())
    }

    fn bearer(&mut self, path: &str, token: &str) -> Decision {
        self.run(path, &[("authorization", &format!("Bearer {token}"))])
    }
}

fn status(d: &Decision) -> u32 {
    match d {
        Decision::Respond(r) => r.status,
        Decision::Forward { .. } => 200,
        Decision::FetchKeys(_) | Decision::FetchKeysForAnswer(..) | Decision::CallIdp(_) | Decision::ReadBody => 0,
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    match d {
        Decision::Respond(r) => r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
        Decision::Forward { set, .. } => set.iter().find(|(n, _)| &**n == name).map(|(_, v)| &**v),
        Decision::FetchKeys(_) | Decision::FetchKeysForAnswer(..) | Decision::CallIdp(_) | Decision::ReadBody => None,
    }
}

fn removed(d: &Decision) -> Vec<String> {
    match d {
        Decision::Forward { remove, .. } => remove.clone(),
        _ => panic!("not forwarded: {d:?}"),
    }
}

#[test]
fn no_credentials_get_a_bearer_challenge() {
    let mut b = bed(json!({}));
    for extra in [
        vec![],
        vec![("authorization", "Basic YWxpY2U6YWxpY2U=")],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Bearer")],
    ] {
        let d = b.run("/echo", &extra);
        assert_eq!(status(&d), 401, "{extra:?}");
        assert_eq!(header(&d, "www-authenticate"), Some("Bearer realm=\"gatehouse\""));
        assert_eq!(header(&d, "content-type"), Some("application/json"));
    }
}

#[test]
fn alice_gets_her_identity_headers() {
    let mut b = bed(json!({}));
    let t = b.token(&alice_claims());
    let d = b.bearer("/echo", &t);
    assert_eq!(status(&d), 200);
    assert_eq!(header(&d, "x-auth-request-user"), Some("a-1"));
    assert_eq!(header(&d, "x-auth-request-email"), Some("alice@example.com"));
    assert_eq!(header(&d, "x-auth-request-preferred-username"), Some("alice"));
    assert_eq!(header(&d, "x-auth-request-groups"), Some("/admins"));
    assert_eq!(header(&d, "x-auth-request-roles"), Some("backendaccess,offline_access,viewer"));
    assert!(removed(&d).contains(&"authorization".to_string()), "the token is not forwarded by default");
    assert_eq!(status(&b.bearer("/admin/", &t)), 200);
    // Scheme is case-insensitive.
    assert_eq!(status(&b.run("/echo", &[("authorization", &format!("bearer  {t}"))])), 200);
}

#[test]
fn bob_is_forbidden_on_admin_only() {
    let mut b = bed(json!({}));
    let t = b.token(&bob_claims());
    assert_eq!(status(&b.bearer("/echo", &t)), 200);
    let d = b.bearer("/admin/", &t);
    assert_eq!(status(&d), 403);
    let Decision::Respond(r) = &d else { unreachable!() };
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"error": "access_denied", "reason": "group_required", "rule": "admins-only"})
    );
    for sneaky in ["/admin", "/public/../admin/", "//admin/", "/%61dmin/", "/admin/?x=/public/"] {
        assert_eq!(status(&b.bearer(sneaky, &t)), 403, "{sneaky}");
    }
    let html = b.run("/admin/", &[("authorization", &format!("Bearer {t}")), ("accept", "text/html,*/*")]);
    assert_eq!(header(&html, "content-type"), Some("text/html; charset=utf-8"));
}

#[test]
fn bad_tokens_get_invalid_token_without_echoing_the_token() {
    let mut b = bed(json!({}));
    let mut expired = alice_claims();
    expired["exp"] = json!(NOW - 3600);
    let cases = vec![
        (b.token(&expired), "token expired"),
        ("garbage".to_string(), "malformed token"),
        (
            TestKey::rsa(RSA_B).mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &alice_claims()),
            "invalid signature",
        ),
    ];
    for (token, reason) in cases {
        let d = b.bearer("/echo", &token);
        assert_eq!(status(&d), 401);
        let challenge = header(&d, "www-authenticate").unwrap();
        assert_eq!(
            challenge,
            format!("Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"{reason}\"")
        );
        let Decision::Respond(r) = &d else { unreachable!() };
        assert!(!r.body.contains(&token) && !challenge.contains(&token));
    }
}

#[test]
fn two_authorization_headers_are_a_bad_request() {
    let mut b = bed(json!({}));
    let t = b.token(&alice_claims());
    let bearer = format!("Bearer {t}");
    let d = b.run("/echo", &[("authorization", &bearer), ("authorization", &bearer)]);
    assert_eq!(status(&d), 400);
}

#[test]
fn spoofed_identity_headers_are_removed_everywhere() {
    let mut b = bed(json!({}));
    let spoof = [
        ("x-auth-request-email", "ceo@example.com"),
        ("x_auth_request_email", "ceo@example.com"),
        ("x-auth-request-groups", "admins"),
    ];
    // On a public path, without any token.
    let d = b.run("/public/x", &spoof);
    let mut r = removed(&d);
    r.sort();
    assert_eq!(
        r,
        vec!["x-auth-request-email", "x-auth-request-groups", "x_auth_request_email"],
        "exactly the managed headers sent"
    );
    assert!(!r.contains(&"authorization".to_string()), "public paths leave Authorization alone");
    // With a token, the spoofed ones are removed and the real ones set.
    let t = b.token(&bob_claims());
    let mut with_token = spoof.to_vec();
    let bearer = format!("Bearer {t}");
    with_token.push(("authorization", &bearer));
    let d = b.run("/echo", &with_token);
    assert!(removed(&d).contains(&"x_auth_request_email".to_string()));
    assert_eq!(header(&d, "x-auth-request-email"), Some("bob@example.com"));
    assert_eq!(header(&d, "x-auth-request-groups"), None, "bob has no groups: the header is absent, not spoofable");
}

#[test]
fn a_header_configured_with_underscores_is_removed_in_either_spelling() {
    let mut b = bed(
        json!({"claimHeaders": [{"header": "X_Legacy_User", "claim": "sub"}, {"header": "_lead", "claim": "email"}]}),
    );
    let d = b.run(
        "/public/x",
        &[
            ("x-legacy-user", "ceo"),
            ("x_legacy_user", "ceo"),
            ("x-legacy_user", "ceo"),
            ("-lead", "x"),
            ("_lead", "x"),
            ("x-legacy-users", "kept"),
        ],
    );
    let mut r = removed(&d);
    r.sort();
    assert_eq!(r, vec!["-lead", "_lead", "x-legacy-user", "x-legacy_user", "x_legacy_user"]);
}

#[test]
fn a_refused_configuration_answers_browsers_with_a_page_and_the_rest_with_text() {
    let page = |accept: &str| {
        let h: Vec<(String, String)> = vec![("accept".into(), accept.into()), ("x-request-id".into(), "rid-7".into())];
        crate::flow::not_configured(&Request { headers: &h })
    };
    let html = page("text/html,application/xhtml+xml");
    assert_eq!(html.status, 503);
    assert!(html.body.contains("<h1>Sign-in unavailable</h1>") && html.body.contains("Request ID <code>rid-7</code>"));
    assert!(html.headers.contains(&("content-security-policy".into(), crate::config::DEFAULT_CSP.into())));
    let api = page("application/json");
    assert_eq!((api.status, api.body.as_str()), (503, "gatehouse is not configured"));
}

#[test]
fn public_paths_skip_authentication() {
    let mut b = bed(json!({}));
    assert_eq!(status(&b.run("/public/", &[])), 200);
    assert_eq!(status(&b.run("/public/a/b?c", &[])), 200);
    assert_eq!(status(&b.run("/healthz", &[])), 200);
    assert_eq!(status(&b.run("/healthz/x", &[])), 401);
    assert_eq!(status(&b.run("/publicity", &[])), 401);
    assert_eq!(status(&b.run("/public/..%2fadmin/", &[])), 400, "encoded slashes are refused by default");
    assert_eq!(status(&b.run("/public/../admin/", &[])), 401);
}

#[test]
fn cors_preflights_pass_only_where_configured_and_only_as_preflights() {
    let mut b =
        bed(json!({"preflightPaths": [{"prefix": "/api/"}, {"prefix": "/status/", "hosts": ["status.example"]}]}));
    let ask = |b: &mut Bed, method: &str, path: &str, host: &str, extra: &[(&str, &str)]| {
        let mut h: Vec<(String, String)> =
            vec![(":method".into(), method.into()), (":path".into(), path.into()), (":authority".into(), host.into())];
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        b.engine.decide(&Request { headers: &h }, NOW, true, &mut rng())
    };
    let preflight = [("origin", "https://app.example"), ("access-control-request-method", "POST")];
    let h = "127.0.0.1:8080";
    let passed = ask(&mut b, "OPTIONS", "/api/orders", h, &preflight);
    assert_eq!(status(&passed), 200);
    // Nothing is added; client-sent identity headers are still removed.
    let spoofed =
        ask(&mut b, "OPTIONS", "/api/orders", h, &[preflight[0], preflight[1], ("x-auth-request-user", "admin")]);
    assert_eq!(removed(&spoofed), vec!["x-auth-request-user".to_string()]);
    assert!(matches!(&spoofed, Decision::Forward { set, set_cookies, .. } if set.is_empty() && set_cookies.is_empty()));
    // Not a preflight: no Origin, no Access-Control-Request-Method, another method.
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/api/orders", h, &preflight[..1])), 401);
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/api/orders", h, &preflight[1..])), 401);
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/api/orders", h, &[("origin", ""), preflight[1]])), 401);
    assert_eq!(status(&ask(&mut b, "POST", "/api/orders", h, &preflight)), 401);
    assert_eq!(status(&ask(&mut b, "options", "/api/orders", h, &preflight)), 401, "a method read two ways");
    // An OPTIONS that some upstream reads as another method is not a preflight.
    assert_eq!(
        status(&ask(
            &mut b,
            "OPTIONS",
            "/api/orders",
            h,
            &[preflight[0], preflight[1], ("x-http-method-override", "DELETE")]
        )),
        401
    );
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/api/orders?_method=DELETE", h, &preflight)), 401);
    // Not under preflightPaths, by path, by host, or by any reading of the path.
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/admin/", h, &preflight)), 401);
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/api/../admin/", h, &preflight)), 401);
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/API/orders", h, &preflight)), 401);
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/status/x", h, &preflight)), 401);
    assert_eq!(status(&ask(&mut b, "OPTIONS", "/status/x", "status.example", &preflight)), 200);
    assert_eq!(
        status(&ask(
            &mut b,
            "OPTIONS",
            "/status/x",
            "status.example",
            &[preflight[0], preflight[1], ("x-forwarded-host", "other.example")]
        )),
        401,
        "a host reading outside"
    );
    // Without preflightPaths, a preflight is authenticated like anything else.
    let mut none = bed(json!({}));
    assert_eq!(status(&ask(&mut none, "OPTIONS", "/api/orders", h, &preflight)), 401);
}

#[test]
fn email_domains_allow_only_verified_emails_in_them() {
    let reason = |d: &Decision| match d {
        Decision::Respond(r) => {
            serde_json::from_str::<Value>(&r.body).ok().and_then(|v| v["reason"].as_str().map(String::from))
        }
        _ => None,
    };
    let with = |email: Value, verified: Value| {
        let mut c = alice_claims();
        c["email"] = email;
        c["email_verified"] = verified;
        c
    };
    let mut b = bed(json!({"email": {"domains": ["example.com", "*.corp.example"]}}));
    let ask = |b: &mut Bed, claims: Value| {
        let t = b.token(&claims);
        b.bearer("/x", &t)
    };
    assert_eq!(status(&ask(&mut b, with(json!("alice@example.com"), json!(true)))), 200);
    assert_eq!(status(&ask(&mut b, with(json!("Alice@EXAMPLE.com"), json!(true)))), 200, "domains ignore case");
    assert_eq!(status(&ask(&mut b, with(json!("carol@eu.corp.example"), json!(true)))), 200, "a subdomain, asked for");
    for (email, why) in [
        (json!("alice@sub.example.com"), "a subdomain, not asked for"),
        (json!("carol@corp.example"), "*.corp.example is the subdomains only"),
        (json!("mallory@example.com.evil"), "a suffix is no domain"),
        (json!("mallory@evilexample.com"), "nor is a longer name"),
        (json!("mallory@xcorp.example"), "nor for subdomains"),
        (json!("\"a@example.com\"@evil.example"), "the domain follows the last @"),
        (json!("example.com"), "no @"),
        (json!("@example.com"), "no local part"),
        (json!(["alice@example.com"]), "not a string"),
        (Value::Null, "absent"),
    ] {
        let d = ask(&mut b, with(email, json!(true)));
        assert_eq!((status(&d), reason(&d).as_deref()), (403, Some("email_domain")), "{why}");
    }
    for verified in [json!(false), json!("true"), Value::Null] {
        let d = ask(&mut b, with(json!("alice@example.com"), verified.clone()));
        assert_eq!((status(&d), reason(&d).as_deref()), (403, Some("email_unverified")), "email_verified {verified}");
    }
    // Switched off, an unverified email in the domain passes; one outside still does not.
    let mut off = bed(json!({"email": {"domains": ["example.com"], "requireVerified": false}}));
    assert_eq!(status(&ask(&mut off, with(json!("alice@example.com"), json!(false)))), 200);
    assert_eq!(status(&ask(&mut off, with(json!("alice@other.example"), json!(false)))), 403);
    // Without the section, email is not looked at.
    let mut none = bed(json!({}));
    assert_eq!(status(&ask(&mut none, with(json!("x@anything.example"), json!(false)))), 200);
}

#[test]
fn forward_authorization_and_payload_header_options() {
    let mut b = bed(json!({"tokens": {"forwardAuthorization": true, "payloadHeader": "x-jwt-payload"}}));
    let t = b.token(&alice_claims());
    let d = b.bearer("/echo", &t);
    assert!(!removed(&d).contains(&"authorization".to_string()));
    assert_eq!(header(&d, "x-jwt-payload"), t.split('.').nth(1));
    assert!(removed(&b.run("/public/", &[("x-jwt-payload", "forged")])).contains(&"x-jwt-payload".to_string()));
    assert!(removed(&b.run("/public/", &[])).is_empty(), "nothing to remove, no host calls");
}

#[test]
fn custom_claim_headers_with_nested_paths_and_encoding() {
    let mut b = bed(json!({"claimHeaders": [
        {"header": "x-name", "claim": "name"},
        {"header": "x-roles", "claim": ["realm_access.roles", "resource_access.gateway.roles"]}
    ]}));
    let mut c = alice_claims();
    c["name"] = json!("Alice\r\nX-Evil: yes");
    let d = b.bearer("/echo", &b.token(&c));
    assert_eq!(header(&d, "x-name"), Some("Alice%0D%0AX-Evil: yes"));
    assert_eq!(header(&d, "x-roles"), Some("backendaccess,offline_access,viewer"));
    assert_eq!(header(&d, "x-auth-request-email"), None, "only the configured headers");
}

#[test]
fn counts_what_happened() {
    use crate::stats::{Counter as C, DenyReason as R};
    let mut b = bed(json!({}));
    let alice = b.token(&alice_claims());
    let bob = b.token(&bob_claims());
    b.bearer("/echo", &alice);
    b.bearer("/echo", &alice);
    b.bearer("/admin/", &bob);
    b.bearer("/echo", "garbage");
    b.run("/echo", &[]);
    b.run("/public/x", &[]);
    let mut counts = b.engine.stats.take();
    counts.sort();
    let mut want = vec![
        C::Allowed,
        C::Allowed,
        C::Public,
        C::Denied(R::Unauthenticated),
        C::Denied(R::InvalidToken),
        C::Denied(R::GroupRequired),
        C::TokenCacheHit,
        C::TokenCacheMiss,
        C::TokenCacheMiss,
        C::TokenCacheMiss,
    ];
    want.sort();
    assert_eq!(counts, want);
}

#[test]
fn verified_tokens_are_cached_until_expiry() {
    let mut b = bed(json!({}));
    let mut c = alice_claims();
    c["exp"] = json!(NOW + 10);
    let t = b.token(&c);
    assert_eq!(status(&b.bearer("/echo", &t)), 200);
    assert_eq!(b.engine.cache.len(), 1);
    assert_eq!(status(&b.bearer("/echo", &t)), 200);
    assert_eq!(b.engine.cache.len(), 1);
    // Past exp + leeway the cached entry is not used.
    let headers = vec![
        (":path".to_string(), "/echo".to_string()),
        (":authority".to_string(), "127.0.0.1:8080".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let later = b.engine.decide(&Request { headers: &headers }, NOW + 41, true, &mut rng());
    assert_eq!(status(&later), 401);
    // Rejected tokens are never cached.
    assert_eq!(status(&b.bearer("/echo", "garbage")), 401);
    assert_eq!(b.engine.cache.len(), 0);
}

#[test]
fn a_cached_token_keeps_only_the_claims_that_headers_rules_and_email_read() {
    let mut b = bed(json!({
        "email": {"domains": ["example.com"], "requireVerified": false},
        "claimHeaders": [{"header": "x-team", "claim": "org.team"}],
        "rules": [{"name": "hr", "match": {"paths": [{"prefix": "/hr/"}]},
                   "require": {"claims": [{"claim": "department", "equals": "hr"}]}}]
    }));
    let mut c = alice_claims();
    c["department"] = json!("hr");
    c["org"] = json!({"team": "people"});
    c["jti"] = json!("j-1");
    c["scope"] = json!("openid profile email");
    let t = b.token(&c);
    let mut other = c.clone();
    other["department"] = json!("sales");
    let refused = b.token(&other);
    // First (verified) and second (cached) requests decide the same, on claims the rule reads.
    for _ in 0..2 {
        let d = b.bearer("/hr/x", &t);
        assert_eq!(status(&d), 200);
        assert_eq!(header(&d, "x-team"), Some("people"));
        assert_eq!(status(&b.bearer("/hr/x", &refused)), 403);
    }
    let Some(cached) = b.engine.cache.get(&t, NOW) else { panic!("the token is cached") };
    let mut kept: Vec<&str> =
        cached.claims.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    kept.sort_unstable();
    // `sub`, the groups' and roles' roots, the rule's and the header's claims, and what `email`
    // reads; not `iss`, `aud`, `azp`, `exp`, `iat`, `jti`, `scope`, nor `preferred_username`
    // (the configured `claimHeaders` replace the default ones, which read it).
    assert_eq!(kept, ["department", "email", "groups", "org", "realm_access", "resource_access", "sub"]);
}

#[test]
fn keys_not_loaded_means_503_never_a_pass() {
    let mut engine = vm(config(json!({}), None));
    let key = TestKey::rsa(RSA_A);
    let t = key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &alice_claims());
    let headers = vec![
        (":path".to_string(), "/echo".to_string()),
        (":authority".to_string(), "127.0.0.1:8080".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let d = engine.decide(&Request { headers: &headers }, NOW, true, &mut rng());
    assert_eq!(status(&d), 503);
    assert_eq!(header(&d, "retry-after"), Some("5"));
    // Public paths still work, and requests without credentials still get 401.
    let public =
        vec![(":path".to_string(), "/public/x".to_string()), (":authority".to_string(), "127.0.0.1:8080".to_string())];
    assert_eq!(status(&engine.decide(&Request { headers: &public }, NOW, true, &mut rng())), 200);
}

#[test]
fn unknown_kid_triggers_one_key_fetch_then_verifies() {
    let mut engine = vm(config(json!({}), None));
    let old = TestKey::rsa(RSA_A);
    let new = TestKey::rsa(RSA_B);
    // Load the old key as the glue would.
    let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs")}).to_string();
    assert_eq!(load(&mut engine, NOW, &disc, &json!({"keys": [old.jwk("k1", Alg::RS256)]}).to_string()).len(), 2);

    let t = new.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k2"}), &alice_claims());
    let headers = vec![
        (":path".to_string(), "/echo".to_string()),
        (":authority".to_string(), "127.0.0.1:8080".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let req = Request { headers: &headers };
    assert_eq!(
        engine.decide(&req, NOW + 1, true, &mut rng()),
        Decision::FetchKeys(jwks_fetch("/realms/demo/protocol/openid-connect/certs"))
    );
    let fetch = jwks_fetch("/realms/demo/protocol/openid-connect/certs");
    let call = engine.wait_for_keys(fetch.clone()).expect("nobody published new keys");
    assert_eq!(call.callout.headers[1], (":path".into(), "/realms/demo/protocol/openid-connect/certs".into()));
    let both = json!({"keys": [old.jwk("k1", Alg::RS256), new.jwk("k2", Alg::RS256)]}).to_string();
    assert_eq!(engine.on_key_answer(&fetch, &ok(&both), NOW + 1, Fetcher::Request), None);
    assert_eq!(status(&engine.decide(&req, NOW + 1, false, &mut rng())), 200);

    // A bogus kid: one fetch, then rate-limited straight to 401.
    let bogus = new.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "bogus"}), &alice_claims());
    let headers = vec![
        (":path".to_string(), "/echo".to_string()),
        (":authority".to_string(), "127.0.0.1:8080".to_string()),
        ("authorization".to_string(), format!("Bearer {bogus}")),
    ];
    let req = Request { headers: &headers };
    assert_eq!(status(&engine.decide(&req, NOW + 2, true, &mut rng())), 401, "within the rate limit window");
    let Decision::FetchKeys(fetch) = engine.decide(&req, NOW + 40, true, &mut rng()) else { panic!("no fetch") };
    assert_eq!(engine.on_key_answer(&fetch, &crate::callout::Answer::none(), NOW + 40, Fetcher::Request), None);
    assert_eq!(status(&engine.decide(&req, NOW + 40, false, &mut rng())), 401);
    assert_eq!(status(&engine.decide(&req, NOW + 41, true, &mut rng())), 401);
}

#[test]
fn key_set_change_drops_cached_tokens() {
    let mut engine = vm(config(json!({}), None));
    let key = TestKey::rsa(RSA_A);
    let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/certs")}).to_string();
    load(&mut engine, NOW, &disc, &json!({"keys": [key.jwk("k1", Alg::RS256)]}).to_string());
    let t = key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &alice_claims());
    let headers = vec![
        (":path".to_string(), "/echo".to_string()),
        (":authority".to_string(), "127.0.0.1:8080".to_string()),
        ("authorization".to_string(), format!("Bearer {t}")),
    ];
    let req = Request { headers: &headers };
    assert_eq!(status(&engine.decide(&req, NOW, true, &mut rng())), 200);
    // The provider removes the key (e.g. it was compromised): the cached token stops working.
    let other = TestKey::rsa(RSA_B);
    load(&mut engine, NOW + 300, &disc, &json!({"keys": [other.jwk("k9", Alg::RS256)]}).to_string());
    assert_eq!(status(&engine.decide(&req, NOW + 200, false, &mut rng())), 401);
}

/// Issue 11: one route for every reading of a request, through the whole decision.
mod paths {
    use super::*;

    fn reason(d: &Decision) -> String {
        let Decision::Respond(r) = d else { panic!("forwarded: {d:?}") };
        assert_eq!(r.status, 400, "{r:?}");
        serde_json::from_str::<Value>(&r.body).unwrap()["reason"].as_str().unwrap().to_string()
    }

    #[test]
    fn bob_never_reaches_what_an_upstream_reads_as_admin() {
        // A path some server reads as /admin/ is held to /admin/'s rule (403 for bob), whatever
        // else it could be; one no server reads one way is refused (400).
        let mut b = bed(json!({}));
        let t = b.token(&bob_claims());
        let cases: &[(&str, u32, Option<&str>)] = &[
            // (target, status, reason for 400)
            ("/admin/", 403, None),
            ("/public/..%2fadmin/", 400, Some("escaped_slash")),
            ("/public/..%2Fadmin/", 400, Some("escaped_slash")),
            ("/public/..%5cadmin/", 400, Some("escaped_slash")),
            ("/public/..%252fadmin/", 400, Some("escaped_slash")),
            ("/public/%2e%2e/admin/", 403, None),
            // `\` is `/`, and `..` removes the empty segment before it (RFC 3986, as Envoy's
            // normalize_path): the upstream receives /public/admin/.
            ("/public/\\..\\admin/", 200, None),
            ("/public\\..\\admin/", 403, None),
            ("/public/..;/admin/", 403, None),
            ("/admin;x/", 403, None),
            ("/x/..;/admin/", 403, None),
            ("//admin//x", 403, None),
            ("/Admin/", 403, None),
            ("/ADMIN/x", 403, None),
            ("/admin./", 403, None),
            ("/admin%20/", 403, None),
            ("/%EF%BD%81dmin/", 403, None),
            ("/public%EF%BC%8F..%EF%BC%8Fadmin/", 403, None),
            ("/admin%3f/", 403, None),
            ("/admin%00/", 400, Some("encoded_control")),
            ("/admin%ff/", 400, Some("not_utf8")),
            ("/%c0%afadmin/", 400, Some("not_utf8")),
            ("http://127.0.0.1:8080/admin/", 400, Some("path_not_absolute")),
            ("/admin/#x", 400, Some("invalid_character")),
        ];
        for (target, want, why) in cases {
            let d = b.bearer(target, &t);
            assert_eq!(status(&d), *want, "{target}");
            if let Some(why) = why {
                assert_eq!(reason(&d), *why, "{target}");
            }
        }
    }

    #[test]
    fn the_upstream_receives_the_normalized_path() {
        let mut b = bed(json!({}));
        let t = b.token(&alice_claims());
        for (target, forwarded) in [
            ("/public/%2e%2e/admin/?q=%2F", Some("/admin/?q=%2F")),
            ("//admin//x", Some("/admin/x")),
            ("/%61dmin/", Some("/admin/")),
            ("/admin/", None),
        ] {
            let d = b.bearer(target, &t);
            assert_eq!(status(&d), 200, "{target}");
            assert_eq!(header(&d, ":path"), forwarded, "{target}");
        }
        // Public paths too: the upstream gets the path that was matched.
        let d = b.run("/public//x/./y", &[]);
        assert_eq!(header(&d, ":path"), Some("/public/x/y"));
        // With NONE, nothing is rewritten (and the readings still have to agree).
        let mut none = bed(json!({"pathNormalization": {"normalization": "NONE", "escapedSlashes": "KEEP_UNCHANGED"}}));
        let t = none.token(&alice_claims());
        assert_eq!(header(&none.bearer("//admin//x", &t), ":path"), None);
        assert_eq!(status(&none.bearer("/api/a%2Fb", &t)), 200);
        assert_eq!(status(&none.bearer("/public/..%2fadmin/", &t)), 200, "alice may see both readings");
        let bob = none.token(&bob_claims());
        assert_eq!(status(&none.bearer("/public/..%2fadmin/", &bob)), 403, "bob may not see /admin/");
        assert_eq!(
            status(&none.run("/public/../admin/", &[])),
            401,
            "under NONE the upstream resolves the dots itself: not public"
        );
        // DECODE_AND_MERGE_SLASHES: decoded, then matched as what it is.
        let mut decode = bed(json!({"pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"}}));
        let bob = decode.token(&bob_claims());
        let d = decode.bearer("/public/..%2fadmin/", &bob);
        assert_eq!(status(&d), 403);
    }

    #[test]
    fn public_paths_refuse_any_doubt() {
        let mut b = bed(json!({}));
        // Public only if every reading is.
        for target in ["/public/..;/admin/", "/Public/x", "/public/..;/x/", "/public./x"] {
            assert_eq!(status(&b.run(target, &[])), 401, "{target}");
        }
        for target in ["/public/..%2fadmin", "/public%2fx"] {
            assert_eq!(reason(&b.run(target, &[])), "escaped_slash", "{target}");
        }
        let t = b.token(&alice_claims());
        assert_eq!(status(&b.bearer("/public/..;/admin/", &t)), 200, "alice passes the rules of both readings");
        // Normalized first: the upstream receives /admin/, which is not public.
        assert_eq!(status(&b.run("/healthz;/../admin/", &[])), 401);
        for target in ["/public/", "/public/a;b/c", "/public/%2e/x", "/healthz"] {
            assert_eq!(status(&b.run(target, &[])), 200, "{target}");
        }
    }

    #[test]
    fn case_insensitive_matching() {
        let mut b = bed(json!({"pathNormalization": {"caseSensitive": false}}));
        let t = b.token(&bob_claims());
        for target in ["/Admin/", "/ADMIN/x", "/admin/"] {
            assert_eq!(status(&b.bearer(target, &t)), 403, "{target}");
        }
        assert_eq!(status(&b.run("/PUBLIC/x", &[])), 200);
        // Per path match, against the global setting.
        let mut one = bed(
            json!({"rules": [{"name": "admins-only", "match": {"paths": [{"prefix": "/admin/", "caseSensitive": false}]}, "require": {"groups": ["admins"]}}]}),
        );
        let t = one.token(&bob_claims());
        assert_eq!(status(&one.bearer("/Admin/", &t)), 403);
        assert_eq!(status(&one.run("/Public/x", &[])), 401, "public paths stay case-sensitive");
    }

    #[test]
    fn hosts_are_canonical_and_header_hosts_are_readings() {
        let extra = json!({
            "publicPaths": [{"prefix": "/status/", "hosts": ["status.example"]}],
            "rules": [{"name": "admin-host", "match": {"hosts": ["admin.example"]}, "require": {"groups": ["admins"]}}]
        });
        let mut b = bed(extra);
        let t = b.token(&bob_claims());
        let bearer = format!("Bearer {t}");
        let on = |b: &mut Bed, host: &str, path: &str, extra: &[(&str, &str)]| {
            let mut h: Vec<(String, String)> = vec![
                (":method".into(), "GET".into()),
                (":path".into(), path.into()),
                (":authority".into(), host.into()),
            ];
            h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            b.engine.decide(&Request { headers: &h }, NOW, true, &mut rng())
        };
        for host in ["admin.example", "ADMIN.example", "admin.example.", "admin.example:8443", "Admin.Example.:443"] {
            assert_eq!(status(&on(&mut b, host, "/", &[("authorization", &bearer)])), 403, "{host}");
        }
        for host in ["status.example", "STATUS.example.:80"] {
            assert_eq!(status(&on(&mut b, host, "/status/x", &[])), 200, "{host}");
        }
        assert_eq!(status(&on(&mut b, "app.example", "/status/x", &[])), 401, "host-scoped public path");
        for bad in ["", "admin..example", "bob@admin.example", "admin.example:x", "adm%69n.example"] {
            assert_eq!(reason(&on(&mut b, bad, "/", &[("authorization", &bearer)])), "invalid_host", "{bad:?}");
        }
        // A header that names another host, which some upstreams believe: never a way around.
        for (name, value) in [
            ("x-forwarded-host", "admin.example"),
            ("x-forwarded-host", "app.example, admin.example"),
            ("forwarded", "for=1.2.3.4;host=admin.example"),
            ("forwarded", "host=\"ADMIN.example:443\""),
            ("x-host", "admin.example"),
            ("x-original-host", "admin.example"),
        ] {
            assert_eq!(
                status(&on(&mut b, "app.example", "/", &[("authorization", &bearer), (name, value)])),
                403,
                "{name}: {value}"
            );
        }
        assert_eq!(status(&on(&mut b, "status.example", "/status/x", &[("x-forwarded-host", "app.example")])), 401);
        assert_eq!(
            reason(&on(&mut b, "app.example", "/", &[("authorization", &bearer), ("x-forwarded-host", "bad host")])),
            "invalid_host"
        );
        // One that agrees changes nothing.
        assert_eq!(
            status(&on(&mut b, "app.example", "/", &[("authorization", &bearer), ("x-forwarded-host", "app.example")])),
            200
        );
    }

    #[test]
    fn method_overrides_are_readings_and_get_covers_head() {
        let extra = json!({"rules": [
            {"name": "deletes", "match": {"methods": ["DELETE"]}, "require": {"groups": ["admins"]}},
            {"name": "reads", "match": {"paths": [{"prefix": "/reports/"}], "methods": ["GET"]}, "require": {"groups": ["admins"]}}
        ]});
        let mut b = bed(extra);
        let t = b.token(&bob_claims());
        let bearer = format!("Bearer {t}");
        let with = |b: &mut Bed, method: &str, path: &str, extra: &[(&str, &str)]| {
            let mut h: Vec<(String, String)> = vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":authority".into(), "127.0.0.1:8080".into()),
                ("authorization".into(), bearer.clone()),
            ];
            h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            b.engine.decide(&Request { headers: &h }, NOW, true, &mut rng())
        };
        assert_eq!(status(&with(&mut b, "DELETE", "/x", &[])), 403);
        assert_eq!(status(&with(&mut b, "POST", "/x", &[])), 200);
        for (name, value) in
            [("x-http-method-override", "DELETE"), ("x-http-method", "delete"), ("x-method-override", "DELETE")]
        {
            assert_eq!(status(&with(&mut b, "POST", "/x", &[(name, value)])), 403, "{name}");
        }
        assert_eq!(status(&with(&mut b, "POST", "/x?_method=DELETE", &[])), 403);
        assert_eq!(status(&with(&mut b, "POST", "/x?a=1&_METHOD=delete", &[])), 403);
        assert_eq!(
            status(&with(&mut b, "POST", "/x?a=1;_method=DELETE", &[])),
            403,
            "; separates parameters for some parsers"
        );
        assert_eq!(status(&with(&mut b, "delete", "/x", &[])), 403, "a lower-case method some servers upper-case");
        // A form POST may say `_method=DELETE` in its body: it is held to every method's rule.
        assert_eq!(status(&with(&mut b, "POST", "/x", &[("content-type", "application/x-www-form-urlencoded")])), 403);
        assert_eq!(status(&with(&mut b, "POST", "/x", &[("content-type", "Multipart/Form-Data; boundary=x")])), 403);
        assert_eq!(
            status(&with(&mut b, "POST", "/x", &[("content-type", "application/json")])),
            403,
            "Laravel reads _method from JSON too"
        );
        assert_eq!(status(&with(&mut b, "POST", "/x", &[("content-type", "application/merge-patch+json")])), 403);
        assert_eq!(status(&with(&mut b, "POST", "/x", &[("content-type", "text/plain")])), 200);
        assert_eq!(status(&with(&mut b, "POST", "/x", &[])), 200);
        // For upstreams that honour no override, they can be turned off.
        let mut off = bed(json!({"pathNormalization": {"methodOverrides": false}, "rules": [
            {"name": "deletes", "match": {"methods": ["DELETE"]}, "require": {"groups": ["admins"]}}]}));
        let t = off.token(&bob_claims());
        let bearer = format!("Bearer {t}");
        for extra in
            [vec![("x-http-method-override", "DELETE")], vec![("content-type", "application/x-www-form-urlencoded")]]
        {
            let mut h: Vec<(String, String)> = vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/x?_method=DELETE".into()),
                (":authority".into(), "h".into()),
                ("authorization".into(), bearer.clone()),
            ];
            h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            assert_eq!(status(&off.engine.decide(&Request { headers: &h }, NOW, true, &mut rng())), 200, "{extra:?}");
        }
        assert_eq!(reason(&with(&mut b, "POST", "/x", &[("x-http-method-override", "DEL ETE")])), "invalid_method");
        assert_eq!(status(&with(&mut b, "POST", "/x?_method=POST", &[])), 200, "an override that changes nothing");
        assert_eq!(status(&with(&mut b, "HEAD", "/reports/q3", &[])), 403, "GET rules cover HEAD");
        assert_eq!(status(&with(&mut b, "GET", "/reports/q3", &[])), 403);
    }

    #[test]
    fn routing_headers_are_removed() {
        let mut b = bed(json!({}));
        let t = b.token(&bob_claims());
        let bearer = format!("Bearer {t}");
        let sent = [
            ("x-original-url", "/admin/"),
            ("x-rewrite-url", "/admin/"),
            ("x-forwarded-prefix", "/admin"),
            ("x-envoy-original-path", "/admin/"),
            ("x_original_url", "/admin/"),
        ];
        for d in
            [b.run("/public/x", &sent), b.run("/echo", &[&sent[..], &[("authorization", bearer.as_str())]].concat())]
        {
            let r = removed(&d);
            for (name, _) in sent {
                assert!(r.contains(&name.to_string()), "{name} in {r:?}");
            }
        }
    }
}

mod browser_flow {
    use super::*;
    use crate::oidc::login::{pkce_challenge, LoginState};
    use crate::session::Purpose;
    use crate::testutil::b64;

    const KEY: &str = "0123456789abcdef0123456789abcdef-flow";

    fn engine() -> (Engine, TestKey) {
        engine_with(json!({"keys": [KEY]}))
    }

    /// [`engine`], with keys fetched from the provider instead of inline (so an unknown `kid`
    /// can fetch them again).
    fn engine_fetching_keys() -> (Engine, TestKey) {
        let key = TestKey::rsa(RSA_A);
        let mut doc = config_doc(json!({"keys": [KEY]}));
        doc["provider"].as_object_mut().unwrap().remove("jwks");
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = vm(cfg);
        let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
            "authorization_endpoint": "https://sso.example/realms/demo/protocol/openid-connect/auth",
            "token_endpoint": "http://keycloak:8080/realms/demo/protocol/openid-connect/token"});
        let made = load(&mut engine, NOW, &disc.to_string(), &json!({"keys": [key.jwk("k1", Alg::RS256)]}).to_string());
        assert!(
            matches!(&made[..], [a, b] if *a == discovery_fetch("/realms/demo/.well-known/openid-configuration") && *b == jwks_fetch("/realms/demo/protocol/openid-connect/certs"))
        );
        (engine, key)
    }

    fn config_doc(session: Value) -> Value {
        let key = TestKey::rsa(RSA_A);
        let jwks = json!({"keys": [key.jwk("k1", Alg::RS256)]});
        json!({
            "provider": {"issuer": ISS, "cluster": "idp", "clientId": "gateway", "clientSecret": "gateway-secret",
                         "audiences": ["api", "gateway"], "jwks": jwks},
            "session": session,
            "login": {"extraParams": {"kc_idp_hint": "entra"}, "postLogoutRedirectUri": "https://app.example/bye"},
            "rules": [{"name": "admins-only", "match": {"paths": [{"prefix": "/admin/"}]}, "require": {"groups": ["admins"]}}]
        })
    }

    fn engine_with(session: Value) -> (Engine, TestKey) {
        engine_sharing(session, Box::new(MemoryStore::default()))
    }

    /// [`engine_with`], one of the VMs of an Envoy that share `store`.
    fn engine_sharing(session: Value, store: Box<dyn Store>) -> (Engine, TestKey) {
        let key = TestKey::rsa(RSA_A);
        let doc = config_doc(session);
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = Engine::new(cfg, store);
        let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
            "authorization_endpoint": "https://sso.example/realms/demo/protocol/openid-connect/auth",
            "token_endpoint": "http://keycloak:8080/realms/demo/protocol/openid-connect/token",
            "end_session_endpoint": "https://sso.example/realms/demo/protocol/openid-connect/logout"});
        let made = load(&mut engine, NOW, &disc.to_string(), "");
        assert_eq!(made, vec![discovery_fetch("/realms/demo/.well-known/openid-configuration")], "keys inline");
        (engine, key)
    }

    fn req(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), "app.example".to_string()),
            ("x-forwarded-proto".to_string(), "https".to_string()),
        ];
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        h
    }

    fn respond(d: Decision) -> Response {
        match d {
            Decision::Respond(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn all<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
        r.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn golden_login_redirect_state_cookie_and_pkce() {
        let (mut engine, _) = engine();
        let headers = req("/echo?x=1", &[("accept", "text/html")]);
        let r = respond(engine.decide(&Request { headers: &headers }, NOW, true, &mut rng()));
        assert_eq!(r.status, 302);
        let state = b64(&(1..=32).collect::<Vec<u8>>());
        let nonce = b64(&(33..=64).collect::<Vec<u8>>());
        let verifier = b64(&(65..=96).collect::<Vec<u8>>());
        assert_eq!(state, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA");
        let location = all(&r, "location")[0];
        assert_eq!(
            location,
            format!(
                "https://sso.example/realms/demo/protocol/openid-connect/auth?response_type=code&client_id=gateway\
                 &redirect_uri=https%3A%2F%2Fapp.example%2Foauth2%2Fcallback&scope=openid+profile+email&state={state}\
                 &nonce={nonce}&code_challenge={}&code_challenge_method=S256&kc_idp_hint=entra",
                pkce_challenge(&verifier)
            )
        );
        let cookies = all(&r, "set-cookie");
        assert_eq!(cookies.len(), 1);
        let (name_value, attrs) = cookies[0].split_once("; ").unwrap();
        assert_eq!(
            attrs, "Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax",
            "secure, host-only, path /: __Host- cookies, the state one on / too"
        );
        let (name, value) = name_value.split_once('=').unwrap();
        assert_eq!(name, format!("__Host-_gatehouse_st_{}", &state[..16]));
        let b = engine.config().browser.as_ref().unwrap();
        let attempt: LoginState = serde_json::from_slice(&b.sealer.open(Purpose::LoginState, value).unwrap()).unwrap();
        assert_eq!(
            attempt,
            LoginState {
                state,
                nonce,
                verifier,
                return_to: "/echo?x=1".into(),
                redirect_uri: "https://app.example/oauth2/callback".into(),
                exp: NOW + 600,
                iss: ISS.into(),
            }
        );
    }

    /// Logs in through the pure flow: login redirect, callback, token answer.
    fn login(engine: &mut Engine, key: &TestKey, claims_extra: Value) -> (Response, String) {
        let (d, id_token, _) = login_signed_by(engine, key, "k1", claims_extra);
        (respond(d), id_token)
    }

    /// [`login`] with the ID token signed under key id `kid`: the decision on the token answer,
    /// the ID token, and the callback request's headers.
    fn login_signed_by(
        engine: &mut Engine,
        key: &TestKey,
        kid: &str,
        claims_extra: Value,
    ) -> (Decision, String, Vec<(String, String)>) {
        login_from(engine, key, kid, claims_extra, &req("/admin/x", &[("accept", "text/html")]))
    }

    /// [`login_signed_by`], started by this request (`first`), which must answer a login redirect.
    fn login_from(
        engine: &mut Engine,
        key: &TestKey,
        kid: &str,
        claims_extra: Value,
        headers: &[(String, String)],
    ) -> (Decision, String, Vec<(String, String)>) {
        let r = respond(engine.decide(&Request { headers }, NOW, true, &mut rng()));
        let state_cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let url = url::Url::parse(all(&r, "location")[0]).unwrap();
        let q = |k: &str| url.query_pairs().find(|(n, _)| n == k).unwrap().1.into_owned();
        let cb =
            req(&format!("/oauth2/callback?code=c0de&state={}&iss={}", q("state"), ISS), &[("cookie", &state_cookie)]);
        let call = match engine.decide(&Request { headers: &cb }, NOW + 5, true, &mut rng()) {
            Decision::CallIdp(call) => call,
            other => panic!("{other:?}"),
        };
        assert_eq!(call.callout.header(":path"), Some("/realms/demo/protocol/openid-connect/token"));
        assert_eq!(call.callout.header(":method"), Some("POST"));
        assert_eq!(call.callout.cluster, "idp");
        assert!(call.callout.body.as_deref().unwrap().starts_with("grant_type=authorization_code&code=c0de&redirect_uri=https%3A%2F%2Fapp.example%2Foauth2%2Fcallback&code_verifier="));
        assert_eq!(call.callout.header("authorization"), Some("Basic Z2F0ZXdheTpnYXRld2F5LXNlY3JldA=="));
        let mut id = json!({"iss": ISS, "sub": "a-1", "aud": "gateway", "azp": "gateway", "exp": NOW + 300, "iat": NOW,
                            "nonce": q("nonce"), "email": "alice@example.com", "preferred_username": "alice"});
        for (k, v) in claims_extra.as_object().unwrap() {
            id[k] = v.clone();
        }
        let id_token = key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": kid}), &id);
        let access = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": kid}),
            &json!({"iss": ISS, "sub": "a-1", "aud": "account",
            "azp": "gateway", "exp": NOW + 300, "iat": NOW, "realm_access": {"roles": ["backendaccess"]}}),
        );
        let body = json!({"access_token": access, "id_token": id_token, "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-1"}).to_string();
        let d = engine.on_idp_answer(
            HeldAnswer { pending: call.pending.clone(), status: Some(200), body: body.as_bytes().to_vec() },
            &Request { headers: &cb },
            NOW + 6,
            true,
            &mut rng(),
        );
        (d, id_token, cb)
    }

    #[test]
    fn token_endpoint_failures_give_the_right_page() {
        let answer = |status: Option<u32>, body: &str| {
            let (mut engine, _) = engine();
            let headers = req("/admin/x", &[("accept", "text/html")]);
            let r = respond(engine.decide(&Request { headers: &headers }, NOW, true, &mut rng()));
            let state_cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
            let url = url::Url::parse(all(&r, "location")[0]).unwrap();
            let state = url.query_pairs().find(|(n, _)| n == "state").unwrap().1.into_owned();
            let cb = req(&format!("/oauth2/callback?code=c0de&state={state}"), &[("cookie", &state_cookie)]);
            let Decision::CallIdp(call) = engine.decide(&Request { headers: &cb }, NOW + 5, true, &mut rng()) else {
                panic!()
            };
            respond(engine.on_idp_answer(
                HeldAnswer { pending: call.pending, status, body: body.as_bytes().to_vec() },
                &Request { headers: &cb },
                NOW + 6,
                true,
                &mut rng(),
            ))
        };
        let unavailable = "cannot be reached right now";
        for (status, body, want, text) in [
            (None, "", 503, unavailable),
            // Envoy's own answer when it cannot connect to the provider.
            (Some(503), "upstream connect error or disconnect/reset before headers", 503, unavailable),
            (Some(500), r#"{"error":"unknown_error"}"#, 503, unavailable),
            (Some(504), "", 503, unavailable),
            (Some(400), r#"{"error":"invalid_grant"}"#, 400, "expired or was already used"),
            (Some(401), r#"{"error":"unauthorized_client"}"#, 502, "refused to complete"),
            (Some(200), "<html>not json</html>", 502, "could not be read"),
        ] {
            let r = answer(status, body);
            assert_eq!(r.status, want, "{status:?} {body}");
            assert!(r.body.contains(text), "{status:?}: {}", r.body);
            let retry_after = r.headers.iter().find(|(n, _)| n == "retry-after").map(|(_, v)| v.as_str());
            assert_eq!(
                retry_after,
                (want == 503).then_some("5"),
                "{status:?}: Retry-After only when trying again helps"
            );
            assert!(!all(&r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=v1.")));
        }
    }

    #[test]
    fn an_id_token_signed_by_a_rotated_in_key_waits_for_one_key_fetch() {
        let (mut first, _) = engine_fetching_keys();
        let rotated = TestKey::rsa(RSA_B);
        let (d, _, cb) = login_signed_by(&mut first, &rotated, "k2", json!({}));
        let Decision::FetchKeysForAnswer(fetch, held) = d else { panic!("{d:?}") };
        assert_eq!(fetch, jwks_fetch("/realms/demo/protocol/openid-connect/certs"));
        assert_eq!(held.status, Some(200));
        // The provider's new key set; the same answer is checked again: a session, no second code redemption.
        first
            .providers
            .at_mut(0)
            .keys
            .on_jwks(NOW + 6, Ok(json!({"keys": [rotated.jwk("k2", Alg::RS256)]}).to_string().as_bytes()))
            .unwrap();
        let r = respond(first.on_idp_answer(
            HeldAnswer { pending: held.pending.clone(), status: held.status, body: held.body.clone() },
            &Request { headers: &cb },
            NOW + 6,
            false,
            &mut rng(),
        ));
        assert_eq!(r.status, 302, "{}", r.body);
        assert!(all(&r, "set-cookie")[0].starts_with("__Host-_gatehouse=v1."));

        // A key the fetched set does not have either: refused with the verification page, no session.
        let (mut other, _) = engine_fetching_keys();
        let (d, _, cb) = login_signed_by(&mut other, &rotated, "k9", json!({}));
        let Decision::FetchKeysForAnswer(_, held) = d else { panic!("{d:?}") };
        let r = respond(other.on_idp_answer(
            HeldAnswer { pending: held.pending.clone(), status: held.status, body: held.body.clone() },
            &Request { headers: &cb },
            NOW + 6,
            false,
            &mut rng(),
        ));
        assert_eq!(r.status, 502);
        assert!(r.body.contains("could not be verified"), "{}", r.body);
        assert!(!all(&r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=v1.")));
        // And no second fetch while the first is out (or within the refetch interval).
        let (d, _, _) = login_signed_by(&mut other, &rotated, "k8", json!({}));
        assert_eq!(status(&d), 502, "{d:?}");
    }

    #[test]
    fn callback_then_session() {
        let (mut engine, key) = engine();
        let (r, id_token) = login(&mut engine, &key, json!({"groups": ["/admins"]}));
        assert_eq!(r.status, 302);
        assert_eq!(all(&r, "location"), vec!["/admin/x"]);
        let cookies = all(&r, "set-cookie");
        assert!(cookies[0].starts_with("__Host-_gatehouse=v1."), "{cookies:?}");
        assert!(cookies[0].ends_with("; Path=/; Max-Age=43200; HttpOnly; Secure; SameSite=Lax"));
        assert!(
            cookies[1].contains("Max-Age=0") && cookies[1].starts_with("__Host-_gatehouse_st_"),
            "state cookie cleared"
        );
        let session = cookies[0].split_once(';').unwrap().0.to_string();

        let headers = req("/admin/x", &[("cookie", &format!("{session}; other=1"))]);
        match engine.decide(&Request { headers: &headers }, NOW + 7, true, &mut rng()) {
            Decision::Forward { remove, set, set_cookies } => {
                assert!(set.contains(&("x-auth-request-email".into(), "alice@example.com".into())));
                assert!(
                    set.contains(&("x-auth-request-roles".into(), "backendaccess".into())),
                    "roles from the access token"
                );
                assert!(set.contains(&("cookie".into(), "other=1".into())), "the session cookie is not forwarded");
                assert!(!remove.contains(&"cookie".to_string()));
                assert!(set_cookies.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Only gatehouse's cookies (the session and a leftover state cookie): no Cookie header
        // reaches the upstream, whether or not the session is cached already.
        for _ in 0..2 {
            let headers =
                req("/admin/x", &[("cookie", &format!("__Host-_gatehouse_st_abcdefghijklmnop=x; {session}"))]);
            match engine.decide(&Request { headers: &headers }, NOW + 8, true, &mut rng()) {
                Decision::Forward { remove, set, .. } => {
                    assert!(remove.contains(&"cookie".to_string()), "{remove:?}");
                    assert!(!set.iter().any(|(n, _)| &**n == "cookie"), "{set:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Sign-out: cookies cleared, RP-initiated logout with the ID token as hint.
        let out = req("/oauth2/sign_out", &[("cookie", &session), ("sec-fetch-site", "same-origin")]);
        let r = respond(engine.decide(&Request { headers: &out }, NOW + 8, true, &mut rng()));
        assert_eq!(r.status, 302);
        let loc = url::Url::parse(all(&r, "location")[0]).unwrap();
        assert_eq!(loc.path(), "/realms/demo/protocol/openid-connect/logout");
        let params: Vec<(String, String)> = loc.query_pairs().into_owned().collect();
        assert_eq!(
            params,
            vec![
                ("id_token_hint".into(), id_token),
                ("client_id".into(), "gateway".into()),
                ("post_logout_redirect_uri".into(), "https://app.example/bye".into()),
            ]
        );
        assert_eq!(
            all(&r, "set-cookie"),
            vec!["__Host-_gatehouse=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"]
        );
    }

    #[test]
    fn sign_out_happens_only_when_this_site_asks() {
        let (mut engine, key) = engine();
        let (r, _) = login(&mut engine, &key, json!({}));
        let session = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let mut ask = |method: &str, path: &str, extra: &[(&str, &str)]| {
            let mut h = req(path, &[&[("cookie", session.as_str())], extra].concat());
            h.retain(|(n, _)| n != ":method");
            h.push((":method".into(), method.into()));
            respond(engine.decide(&Request { headers: &h }, NOW + 8, true, &mut rng()))
        };
        let signed_out =
            |r: &Response| r.status == 302 && all(r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=;"));
        // No fetch metadata at all (an old browser, an <img>, a script): only the form.
        let form = ask("GET", "/oauth2/sign_out", &[]);
        assert_eq!(form.status, 200);
        assert!(all(&form, "set-cookie").is_empty());
        assert_eq!(all(&form, "content-security-policy"), vec![crate::config::DEFAULT_CSP]);
        assert!(crate::config::DEFAULT_CSP.contains("frame-ancestors 'none'"));
        let token = form.body.split("csrf=").nth(1).unwrap().split('"').next().unwrap().to_string();
        assert_eq!(token.len(), 43, "{token}");
        for (method, extra) in [
            ("GET", vec![("sec-fetch-site", "cross-site")]),
            ("GET", vec![("sec-fetch-site", "same-site")]),
            ("POST", vec![("origin", "https://evil.example")]),
            ("POST", vec![("sec-fetch-site", "same-origin"), ("origin", "https://evil.example")]),
            ("POST", vec![("origin", "null")]),
            ("POST", vec![]),
        ] {
            assert_eq!(ask(method, "/oauth2/sign_out", &extra).status, 200, "{method} {extra:?}: the form");
        }
        assert_eq!(
            ask("POST", "/oauth2/sign_out?csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &[]).status,
            200,
            "a wrong token"
        );
        // This site asking: the form's token, or the browser's word.
        assert!(signed_out(&ask("POST", &format!("/oauth2/sign_out?csrf={token}"), &[])));
        assert!(signed_out(&ask("GET", "/oauth2/sign_out", &[("sec-fetch-site", "same-origin")])));
        assert!(signed_out(&ask("GET", "/oauth2/sign_out", &[("sec-fetch-site", "none")])));
        assert!(signed_out(&ask("POST", "/oauth2/sign_out", &[("origin", "https://app.example")])));
        assert_eq!(ask("PUT", "/oauth2/sign_out", &[]).status, 405);
        // The token belongs to the session: another session's does not work.
        let (r2, _) = login(&mut engine, &key, json!({"sub": "other"}));
        let other = all(&r2, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let h = req(&format!("/oauth2/sign_out?csrf={token}"), &[("cookie", &other)]);
        let mut h = h;
        h.retain(|(n, _)| n != ":method");
        h.push((":method".into(), "POST".into()));
        assert_eq!(respond(engine.decide(&Request { headers: &h }, NOW + 8, true, &mut rng())).status, 200);
    }

    #[test]
    fn a_session_is_refused_on_another_site_sharing_the_cookie_key() {
        let (mut engine, key) = engine();
        let (r, _) = login(&mut engine, &key, json!({}));
        let session = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let on = |host: &str| {
            let mut h = req("/echo", &[("cookie", &session), ("accept", "application/json")]);
            h.retain(|(n, _)| n != ":authority");
            h.push((":authority".into(), host.into()));
            h
        };
        // Valid where it was made (also with a port and in other case), then from the cache.
        for host in ["app.example", "APP.example:443", "app.example"] {
            assert!(
                matches!(
                    engine.decide(&Request { headers: &on(host) }, NOW + 7, true, &mut rng()),
                    Decision::Forward { .. }
                ),
                "{host}"
            );
        }
        // Refused on another host, although it is cached and its MAC is good.
        for host in ["other.example", "sub.app.example", "example"] {
            assert_eq!(
                status(&engine.decide(&Request { headers: &on(host) }, NOW + 7, true, &mut rng())),
                401,
                "{host}"
            );
        }
        assert_eq!(
            status(&engine.decide(&Request { headers: &on("") }, NOW + 7, true, &mut rng())),
            400,
            "no host at all"
        );
    }

    #[test]
    fn userinfo_answers_the_session_identity_and_nothing_without_one() {
        let (mut engine, key) = engine();
        let (r, _) = login(
            &mut engine,
            &key,
            json!({"email": "alice@example.com", "preferred_username": "alice", "groups": ["/admins"]}),
        );
        let session = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let ask = |engine: &mut Engine, extra: &[(&str, &str)]| {
            let headers = req("/oauth2/userinfo", extra);
            engine.decide(&Request { headers: &headers }, NOW + 7, true, &mut rng())
        };
        let d = ask(&mut engine, &[("cookie", &session)]);
        let r = respond(d);
        assert_eq!(r.status, 200);
        assert_eq!(all(&r, "cache-control"), vec!["no-store"]);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["email"], "alice@example.com");
        assert_eq!(v["preferredUsername"], "alice");
        assert_eq!(v["groups"], json!(["/admins"]));
        assert!(v["user"].is_string());
        // Without a session, with a broken one, or with a navigation: 401 JSON, never a login or
        // the upstream.
        for extra in [vec![], vec![("cookie", "_gatehouse=garbage")], vec![("accept", "text/html")]] {
            let r = respond(ask(&mut engine, &extra));
            assert_eq!(r.status, 401, "{extra:?}");
            assert!(r.body.contains("unauthenticated"));
        }
        // An empty userinfoPath switches it off.
        let mut doc = config_doc(json!({"keys": ["0123456789abcdef0123456789abcdef"]}));
        doc["login"] = json!({"userinfoPath": ""});
        let cfg = Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap();
        assert!(cfg.browser.as_ref().unwrap().userinfo_path.is_none());
    }

    /// Where the login started by `/oauth2/start` with these request headers returns to.
    fn start_returns_to(engine: &mut Engine, headers: &[(String, String)]) -> String {
        let r = respond(engine.decide(&Request { headers }, NOW, true, &mut rng()));
        assert_eq!(r.status, 302, "{r:?}");
        assert!(all(&r, "location")[0].starts_with("https://sso.example/realms/demo/protocol/openid-connect/auth?"));
        let cookies = all(&r, "set-cookie");
        assert_eq!(cookies.len(), 1, "a state cookie only: an existing session is left alone");
        let value = cookies[0].split_once(';').unwrap().0.split_once('=').unwrap().1;
        let b = engine.config().browser.as_ref().unwrap();
        let attempt: LoginState = serde_json::from_slice(&b.sealer.open(Purpose::LoginState, value).unwrap()).unwrap();
        attempt.return_to
    }

    #[test]
    fn start_begins_a_login_towards_rd_under_the_open_redirect_rules() {
        let mut doc = config_doc(json!({"keys": [KEY]}));
        doc["login"]["allowedRedirectDomains"] = json!([".corp.example"]);
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = Engine::new(cfg, Box::new(MemoryStore::default()));
        let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
            "authorization_endpoint": "https://sso.example/realms/demo/protocol/openid-connect/auth",
            "token_endpoint": "http://keycloak:8080/realms/demo/protocol/openid-connect/token"});
        load(&mut engine, NOW, &disc.to_string(), "");
        let start = |rd: &str| req(&format!("/oauth2/start?rd={rd}"), &[]);
        for (rd, want) in [
            ("%2Fadmin%2Fx%3Fa%3D1", "/admin/x?a=1"),
            ("https%3A%2F%2Fapp.example%2Fdocs", "/docs"),
            ("https%3A%2F%2Fwiki.corp.example%2Fpage", "https://wiki.corp.example/page"),
            // Everything else comes back to `/`.
            ("https%3A%2F%2Fevil.example%2F", "/"),
            ("https%3A%2F%2Fcorp.example.evil%2F", "/"),
            ("%2F%2Fevil.example%2F", "/"),
            ("%2F%5Cevil.example", "/"),
            ("javascript%3Aalert(1)", "/"),
            // No downgrade, no other port on this host, no other scheme elsewhere.
            ("http%3A%2F%2Fapp.example%2Fdocs", "/"),
            ("https%3A%2F%2Fapp.example%3A8081%2Fdocs", "/"),
            ("http%3A%2F%2Fwiki.corp.example%2Fpage", "/"),
            ("https%3A%2F%2Fapp.example%2F%5Cevil.example", "/"),
            ("%09https%3A%2F%2Fevil.example", "/"),
            ("https%3A%2F%2Fapp.example%40evil.example%2F", "/"),
            ("https%3A%2F%2Fuser%40app.example%2F", "/"),
            ("", "/"),
        ] {
            assert_eq!(start_returns_to(&mut engine, &start(rd)), want, "rd={rd}");
        }
        assert_eq!(start_returns_to(&mut engine, &req("/oauth2/start", &[])), "/", "no rd");
        // A script's request and a session do not change it: the start path always starts a login.
        let xhr =
            req("/oauth2/start?rd=%2Fa", &[("x-requested-with", "XMLHttpRequest"), ("cookie", "__Host-_gatehouse=x")]);
        assert_eq!(start_returns_to(&mut engine, &xhr), "/a");
        // GET and HEAD only.
        let mut post = start("%2Fa");
        post.retain(|(n, _)| n != ":method");
        post.push((":method".into(), "POST".into()));
        let r = respond(engine.decide(&Request { headers: &post }, NOW, true, &mut rng()));
        assert_eq!((r.status, all(&r, "allow")), (405, vec!["GET, HEAD"]));
        // The whole login, started here, comes back to rd.
        let (mut engine, key) = super::browser_flow::engine();
        let (d, _, _) = login_from(&mut engine, &key, "k1", json!({}), &req("/oauth2/start?rd=%2Fadmin%2Fy", &[]));
        let r = respond(d);
        assert_eq!((r.status, all(&r, "location")), (302, vec!["/admin/y"]));
        // An empty startPath switches it off: the path is then an ordinary one.
        let mut doc = config_doc(json!({"keys": [KEY]}));
        doc["login"] = json!({"startPath": ""});
        let cfg = Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap();
        assert!(cfg.browser.as_ref().unwrap().start_path.is_none());
    }

    #[test]
    fn auth_answers_200_with_the_identity_headers_401_without_credentials_403_by_the_rules() {
        let (mut engine, key) = engine();
        let (r, _) = login(&mut engine, &key, json!({"groups": ["/admins"]}));
        let alice = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let ask = |engine: &mut Engine, extra: &[(&str, &str)]| {
            let headers = req("/oauth2/auth", extra);
            respond(engine.decide(&Request { headers: &headers }, NOW + 7, true, &mut rng()))
        };
        let r = ask(&mut engine, &[("cookie", &alice)]);
        assert_eq!(r.status, 200);
        assert_eq!(all(&r, "x-auth-request-email"), vec!["alice@example.com"]);
        assert_eq!(all(&r, "x-auth-request-groups"), vec!["/admins"]);
        assert_eq!(all(&r, "cache-control"), vec!["no-store"]);
        assert!(r.body.is_empty());
        // A bearer token is as good as a session here.
        let token = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "b-1", "aud": "api", "exp": NOW + 300, "iat": NOW, "email": "bob@example.com"}),
        );
        let r = ask(&mut engine, &[("authorization", &format!("Bearer {token}"))]);
        assert_eq!((r.status, all(&r, "x-auth-request-email")), (200, vec!["bob@example.com"]));
        // No credentials, a broken cookie, a navigation, a forged token: 401, never a login.
        let forged = format!("Bearer {}x", &token[..token.len() - 1]);
        for extra in [
            vec![],
            vec![("cookie", "__Host-_gatehouse=garbage")],
            vec![("accept", "text/html"), ("sec-fetch-mode", "navigate")],
            vec![("authorization", forged.as_str())],
        ] {
            let r = ask(&mut engine, &extra);
            assert_eq!(r.status, 401, "{extra:?}");
            assert!(all(&r, "location").is_empty());
            assert!(all(&r, "x-auth-request-email").is_empty());
        }
        // Two Authorization headers: 400.
        let two = ask(&mut engine, &[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(two.status, 400);
        // The rules for the auth path apply: a rule on it refuses bob, not alice.
        let mut doc = config_doc(json!({"keys": [KEY]}));
        doc["rules"] = json!([{"match": {"paths": [{"exact": "/oauth2/auth"}]}, "require": {"groups": ["admins"]}}]);
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = Engine::new(cfg, Box::new(MemoryStore::default()));
        load(&mut engine, NOW, &json!({"issuer": ISS, "jwks_uri": format!("{ISS}/x")}).to_string(), "");
        let r = ask(&mut engine, &[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(r.status, 403);
        assert!(all(&r, "x-auth-request-email").is_empty());
        let alice_token = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "a-1", "aud": "api", "exp": NOW + 300, "iat": NOW, "groups": ["/admins"]}),
        );
        assert_eq!(ask(&mut engine, &[("authorization", &format!("Bearer {alice_token}"))]).status, 200);
    }

    #[test]
    fn the_403_page_says_why_offers_another_account_and_carries_the_request_id() {
        let (mut engine, key) = engine();
        let (r, _) = login(&mut engine, &key, json!({"email": "bob@example.com", "groups": []}));
        let session = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let ask = |engine: &mut Engine, extra: &[(&str, &str)]| {
            let headers = req("/admin/x", &[&[("cookie", session.as_str()), ("accept", "text/html")], extra].concat());
            respond(engine.decide(&Request { headers: &headers }, NOW + 7, true, &mut rng()))
        };
        let r = ask(&mut engine, &[("x-request-id", "5d1c9e2a-77f0-4c41-9a39-0c1f3e8a6b21")]);
        assert_eq!(r.status, 403);
        assert!(r.body.contains("<h1>Access denied</h1>"));
        assert!(r.body.contains("this page is for members of a group your account is not in"), "{}", r.body);
        assert!(r.body.contains("Reason: <code>group_required</code>"));
        assert!(r.body.contains("Request ID <code>5d1c9e2a-77f0-4c41-9a39-0c1f3e8a6b21</code>"));
        // "Sign in as someone else": the sign-out form, with the token bound to this session.
        let b = engine.config().browser.as_ref().unwrap();
        let token = crate::flow::sign_out::sign_out_token(b, Some(session.split_once('=').unwrap().1));
        assert!(r.body.contains(&format!(
            "<form method=\"post\" action=\"/oauth2/sign_out?csrf={token}\"><button type=\"submit\">Sign in as someone else</button></form>"
        )));
        assert_eq!(all(&r, "content-security-policy"), vec![crate::config::DEFAULT_CSP]);
        // A request id that is not one is left out; nothing of it reaches the page.
        let r = ask(&mut engine, &[("x-request-id", "<script>alert(1)</script>")]);
        assert!(!r.body.contains("script") && !r.body.contains("Request ID"));
        // No session (a bearer token's 403): no sign-out form.
        let t = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "b-1", "aud": "api", "exp": NOW + 300, "iat": NOW, "groups": []}),
        );
        let h = req("/admin/x", &[("authorization", &format!("Bearer {t}")), ("accept", "text/html")]);
        let r = respond(engine.decide(&Request { headers: &h }, NOW + 7, true, &mut rng()));
        assert_eq!(r.status, 403);
        assert!(!r.body.contains("<form"));
    }

    #[test]
    fn an_operator_template_replaces_every_page() {
        let mut doc = config_doc(json!({"keys": [KEY]}));
        doc["pages"] = json!({
            "template": "<main data-status=\"{{status}}\"><h1>{{title}}</h1><p>{{message}}</p>{{detail}}{{action}}<small>{{requestId}}</small>{{reference}}</main>",
            "contentSecurityPolicy": "default-src 'none'; img-src https://cdn.example; frame-ancestors 'none'"
        });
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = Engine::new(cfg, Box::new(MemoryStore::default()));
        let h = req("/oauth2/sign_out", &[("x-request-id", "r-1")]);
        let r = respond(engine.decide(&Request { headers: &h }, NOW, true, &mut rng()));
        assert_eq!(r.status, 200);
        let token = r.body.split("csrf=").nth(1).unwrap().split('"').next().unwrap().to_string();
        assert_eq!(
            r.body,
            format!(
                "<main data-status=\"200\"><h1>Sign out?</h1><p>Do you want to sign out of this site?</p><form method=\"post\" \
                 action=\"/oauth2/sign_out?csrf={token}\"><button type=\"submit\">Sign out</button></form><small>r-1</small>\
                 <p class=\"ref\">Request ID <code>r-1</code></p></main>"
            )
        );
        assert_eq!(
            all(&r, "content-security-policy"),
            vec!["default-src 'none'; img-src https://cdn.example; frame-ancestors 'none'"]
        );
        // An error page: the message escaped, the retry link.
        let h = req("/oauth2/callback?state=nope&code=x", &[]);
        let r = respond(engine.decide(&Request { headers: &h }, NOW, true, &mut rng()));
        assert!(r.body.starts_with("<main data-status=\"400\"><h1>"), "{}", r.body);
        assert!(r.body.contains("<a class=\"button\" href=\"/\">Try again</a>"));
    }

    #[test]
    fn bob_session_is_forbidden_on_admin() {
        let (mut engine, key) = engine();
        let (r, _) = login(&mut engine, &key, json!({"email": "bob@example.com", "groups": []}));
        let session = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let headers = req("/admin/x", &[("cookie", &session)]);
        assert_eq!(status(&engine.decide(&Request { headers: &headers }, NOW + 7, true, &mut rng())), 403);
    }

    #[test]
    fn id_token_with_a_wrong_nonce_gives_no_session() {
        let (mut engine, key) = engine();
        let (r, _) = login(&mut engine, &key, json!({"nonce": "replayed"}));
        assert_eq!(r.status, 502);
        assert!(!all(&r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=v1")));
    }

    #[test]
    fn xhr_gets_401_and_expired_sessions_are_refused() {
        let (mut engine, key) = engine();
        let xhr = req("/echo", &[("accept", "application/json")]);
        assert_eq!(status(&engine.decide(&Request { headers: &xhr }, NOW, true, &mut rng())), 401);
        let (r, _) = login(&mut engine, &key, json!({}));
        let session = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let headers = req("/echo", &[("cookie", &session)]);
        assert_eq!(
            status(&engine.decide(&Request { headers: &headers }, NOW + 43_206, true, &mut rng())),
            401,
            "at the end of the 12h lifetime"
        );
        assert_eq!(
            status(&engine.decide(&Request { headers: &headers }, NOW + 43_205, true, &mut rng())),
            200,
            "a second before"
        );
        let page = req("/echo", &[("cookie", &session), ("sec-fetch-mode", "navigate")]);
        assert_eq!(status(&engine.decide(&Request { headers: &page }, NOW + 43_206, true, &mut rng())), 302);
    }

    #[test]
    fn a_central_callback_host_returns_to_allowed_hosts_only() {
        let key = TestKey::rsa(RSA_A);
        let doc = json!({
            "provider": {"issuer": ISS, "cluster": "idp", "clientId": "gateway", "clientSecret": "s",
                         "jwks": {"keys": [key.jwk("k1", Alg::RS256)]}},
            "session": {"keys": [KEY], "domain": "example.com"},
            "login": {"redirectUri": "https://auth.example.com/oauth2/callback", "allowedRedirectDomains": [".example.com"]}
        });
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = vm(cfg);
        let disc = json!({"issuer": ISS, "jwks_uri": "http://x/certs", "authorization_endpoint": "https://auth.example.com/auth", "token_endpoint": "http://k/token"});
        load(&mut engine, NOW, &disc.to_string(), "");
        let cfg = Rc::clone(engine.config());
        let b = cfg.browser.as_ref().unwrap();
        let attempt_of = |r: &Response| -> LoginState {
            let c = all(r, "set-cookie")[0].split_once(';').unwrap().0.split_once('=').unwrap().1.to_string();
            serde_json::from_slice(&b.sealer.open(Purpose::LoginState, &c).unwrap()).unwrap()
        };
        let start = |authority: &str| {
            let mut h = req("/page?a=1", &[("accept", "text/html")]);
            h[2].1 = authority.to_string();
            h
        };
        let h = start("app.example.com");
        let r = respond(engine.decide(&Request { headers: &h }, NOW, true, &mut rng()));
        assert_eq!(attempt_of(&r).return_to, "https://app.example.com/page?a=1");
        let h = start("evil.com");
        let r = respond(engine.decide(&Request { headers: &h }, NOW, true, &mut rng()));
        assert_eq!(
            attempt_of(&r).return_to,
            "/page?a=1",
            "a host outside the list comes back as a path on the callback host"
        );
    }

    #[test]
    fn refresh_notes_round_trip() {
        let note = RefreshNote { old: [7; 32], until: 99, cookie: "v1.a.b.c".into() };
        assert_eq!(RefreshNote::decode(&note.encode()), Some(note.clone()));
        assert_eq!(RefreshNote::slot(&note.old), 7);
        for bad in [
            "",
            "x|1|c",
            &format!("{}|x|c", "0".repeat(64)),
            &format!("{}|1", "0".repeat(64)),
            &format!("{}|1|c", "g".repeat(64)),
        ] {
            assert_eq!(RefreshNote::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn two_workers_never_redeem_one_refresh_token() {
        let store = Rc::new(MemoryStore::default());
        let session = json!({"keys": [KEY], "refresh": true});
        let (mut a, key) = engine_sharing(session.clone(), Box::new(Rc::clone(&store)));
        let (mut b, _) = engine_sharing(session.clone(), Box::new(Rc::clone(&store)));
        let (r, _) = login(&mut a, &key, json!({"groups": ["/admins"]}));
        let cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let h = req("/echo", &[("cookie", &cookie)]);
        let Decision::CallIdp(call) = a.decide(&Request { headers: &h }, NOW + 290, true, &mut rng()) else {
            panic!("A refreshes")
        };
        // B sees the same cookie while A's refresh is in flight: it goes on with the session.
        assert!(matches!(b.decide(&Request { headers: &h }, NOW + 291, true, &mut rng()), Decision::Forward { .. }));

        // Had B refreshed anyway (a lease it could not see), the provider refuses the reused
        // token; B then takes A's session instead of ending the user's.
        let access = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "a-1", "aud": "account", "azp": "gateway", "exp": NOW + 600, "iat": NOW + 290}),
        );
        let body = json!({"access_token": access, "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-2"});
        let done = a.on_idp_answer(
            HeldAnswer { pending: call.pending.clone(), status: Some(200), body: body.to_string().into_bytes() },
            &Request { headers: &h },
            NOW + 290,
            true,
            &mut rng(),
        );
        assert!(matches!(done, Decision::Forward { .. }));
        // The new access token names no groups and no email: the session keeps those it had
        // (the claims of the old session, which its cached identity holds, not its data).
        assert_eq!(header(&done, "x-auth-request-groups"), Some("/admins"));
        assert_eq!(header(&done, "x-auth-request-user"), Some("a-1"));
        let sealed = cookie.split_once('=').map_or("", |(_, v)| v);
        let Some(cached) = a.cache.get(sealed, NOW + 290) else { panic!("the old session is cached") };
        assert!(cached.session.as_ref().is_some_and(|d| d.claims.is_empty()), "claims are held once, by the identity");
        assert_eq!(cached.claims["groups"], json!(["/admins"]));
        let refused =
            br#"{"error": "invalid_grant", "error_description": "Maximum allowed refresh token reuse exceeded"}"#;
        let d = b.on_idp_answer(
            HeldAnswer { pending: call.pending, status: Some(400), body: refused.to_vec() },
            &Request { headers: &h },
            NOW + 292,
            true,
            &mut rng(),
        );
        let Decision::Forward { set_cookies, .. } = d else { panic!("B signed the user out: {d:?}") };
        assert!(set_cookies.iter().any(|c| c.starts_with("__Host-_gatehouse=v1.")), "A's new session");
    }

    #[test]
    fn a_refresh_is_shared_with_the_other_workers() {
        let store = Rc::new(MemoryStore::default());
        let session = json!({"keys": [KEY], "refresh": true});
        let (mut a, key) = engine_sharing(session.clone(), Box::new(Rc::clone(&store)));
        let (r, _) = login(&mut a, &key, json!({"groups": ["/admins"]}));
        let s1 = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let payload: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s1.split('.').nth(2).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["rexp"], json!(NOW + 6 + 300));
        assert!(!payload["rt"].as_str().unwrap().contains("rt-1"), "the refresh token is encrypted");

        // Before the window: no refresh. In it: the request is held for a refresh call.
        let h = req("/echo", &[("cookie", &s1)]);
        assert!(matches!(a.decide(&Request { headers: &h }, NOW + 200, true, &mut rng()), Decision::Forward { .. }));
        let Decision::CallIdp(call) = a.decide(&Request { headers: &h }, NOW + 290, true, &mut rng()) else {
            panic!("no refresh")
        };
        assert!(call.callout.body.as_deref().unwrap().starts_with("grant_type=refresh_token&refresh_token=rt-1"));
        // Only one at a time: a parallel request goes on with the session.
        assert!(matches!(a.decide(&Request { headers: &h }, NOW + 290, true, &mut rng()), Decision::Forward { .. }));
        let access = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "a-1", "aud": "account",
            "azp": "gateway", "exp": NOW + 600, "iat": NOW + 290, "realm_access": {"roles": ["newrole"]}}),
        );
        let body = json!({"access_token": access, "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-2"})
            .to_string();
        let Decision::Forward { set, set_cookies, .. } = a.on_idp_answer(
            HeldAnswer { pending: call.pending.clone(), status: Some(200), body: body.as_bytes().to_vec() },
            &Request { headers: &h },
            NOW + 290,
            true,
            &mut rng(),
        ) else {
            panic!()
        };
        assert!(set.contains(&("x-auth-request-roles".into(), "newrole".into())), "{set:?}");
        assert!(set_cookies[0].starts_with("__Host-_gatehouse=v1."));
        // The note for the other workers is in the store they share.
        let names = Names::new(ISS);
        let hash = crate::cache::token_hash(s1.split_once('=').unwrap().1);
        let slot = names.refreshed(RefreshNote::slot(&hash));
        let note = RefreshNote::decode(std::str::from_utf8(&store.get(&slot).0.unwrap()).unwrap()).unwrap();
        assert_eq!((note.old, note.until), (hash, NOW + 290 + 60));

        // Worker B still sees the old cookie and would refresh with rt-1 (rotated out): it takes
        // A's session instead, with no call to the provider.
        let (mut b, _) = engine_sharing(session.clone(), Box::new(Rc::clone(&store)));
        let Decision::Forward { set: b_set, set_cookies: b_cookies, .. } =
            b.decide(&Request { headers: &h }, NOW + 291, true, &mut rng())
        else {
            panic!("refreshed again")
        };
        let value = |c: &Vec<String>| c.iter().map(|x| x.split_once(';').unwrap().0.to_string()).collect::<Vec<_>>();
        assert_eq!(value(&b_cookies), value(&set_cookies), "the same new session");
        assert!(b_set.contains(&("x-auth-request-roles".into(), "newrole".into())));
        // And then serves the old cookie from its own memory, without another refresh.
        assert!(matches!(b.decide(&Request { headers: &h }, NOW + 292, true, &mut rng()), Decision::Forward { .. }));

        // A note about another session, or an old one, is not taken: C refreshes itself.
        for (what, note) in [
            ("another session's", RefreshNote { old: [0; 32], ..note.clone() }),
            ("an expired", RefreshNote { until: NOW + 291, ..note.clone() }),
        ] {
            let fresh = Rc::new(MemoryStore::default());
            fresh.set(&slot, note.encode().as_bytes(), None);
            let (mut c, _) = engine_sharing(session.clone(), Box::new(Rc::clone(&fresh)));
            let d = c.decide(&Request { headers: &h }, NOW + 291, true, &mut rng());
            assert!(matches!(d, Decision::CallIdp(_)), "{what} note was taken");
        }
    }

    #[test]
    fn relay_sends_the_session_access_token_upstream_encrypted_in_the_cookie_and_fresh() {
        let session =
            json!({"keys": [KEY], "refresh": true, "relayAccessToken": ["Authorization", "X-Forwarded-Access-Token"]});
        let (mut engine, key) = engine_with(session.clone());
        let (r, _) = login(&mut engine, &key, json!({"groups": ["/admins"]}));
        let cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let payload: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                cookie.split('.').nth(2).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let at = payload["at"].as_str().unwrap();
        assert!(!at.contains("eyJ"), "the access token is encrypted in the cookie");
        // Forwarded with the token, in both headers; a client's copy and a Basic credential are replaced.
        let h = req(
            "/echo",
            &[("cookie", &cookie), ("x-forwarded-access-token", "forged"), ("authorization", "Basic YTpi")],
        );
        let Decision::Forward { set, remove, .. } = engine.decide(&Request { headers: &h }, NOW + 10, true, &mut rng())
        else {
            panic!()
        };
        let get = |n: &str| set.iter().find(|(k, _)| &**k == n).map(|(_, v)| v.to_string());
        let token = get("x-forwarded-access-token").unwrap();
        assert_eq!(token.split('.').count(), 3, "the access token, a JWT");
        assert_ne!(token, "forged");
        assert_eq!(get("authorization"), Some(format!("Bearer {token}")));
        assert!(!remove.contains(&"authorization".to_string()), "set, not removed: {remove:?}");
        // A public path never carries a client's copy upstream.
        let mut doc = config_doc(session.clone());
        doc["publicPaths"] = json!([{"prefix": "/public/"}]);
        let mut public = vm(Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap()));
        let h = req("/public/x", &[("x-forwarded-access-token", "forged"), ("x_forwarded_access_token", "forged")]);
        assert_eq!(
            removed(&public.decide(&Request { headers: &h }, NOW + 10, true, &mut rng())),
            vec!["x-forwarded-access-token", "x_forwarded_access_token"]
        );
        // /oauth2/auth answers the claim headers, never the token.
        let h = req("/oauth2/auth", &[("cookie", &cookie)]);
        let r = respond(engine.decide(&Request { headers: &h }, NOW + 10, true, &mut rng()));
        assert_eq!(r.status, 200);
        assert!(r
            .headers
            .iter()
            .all(|(n, v)| n != "authorization" && n != "x-forwarded-access-token" && !v.contains(&token)));
        // Due for refresh: the refreshed session relays the new token.
        let h = req("/echo", &[("cookie", &cookie)]);
        let Decision::CallIdp(call) = engine.decide(&Request { headers: &h }, NOW + 290, true, &mut rng()) else {
            panic!("no refresh")
        };
        let fresh = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "a-1", "aud": "account", "azp": "gateway", "exp": NOW + 600, "iat": NOW + 290}),
        );
        let body = json!({"access_token": fresh, "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-2"});
        let Decision::Forward { set, set_cookies, .. } = engine.on_idp_answer(
            HeldAnswer { pending: call.pending, status: Some(200), body: body.to_string().into_bytes() },
            &Request { headers: &h },
            NOW + 290,
            true,
            &mut rng(),
        ) else {
            panic!()
        };
        assert!(set.contains(&("x-forwarded-access-token".into(), fresh.as_str().into())));
        assert!(set.contains(&("authorization".into(), format!("Bearer {fresh}").as_str().into())));
        let new_cookie = set_cookies[0].split_once(';').unwrap().0.to_string();
        // Past the access token's expiry with the refresh failing (provider unreachable): 503,
        // never an expired token upstream.
        let h = req("/echo", &[("cookie", &new_cookie)]);
        let Decision::CallIdp(call) = engine.decide(&Request { headers: &h }, NOW + 291 + 300, true, &mut rng()) else {
            panic!("no refresh")
        };
        let d = engine.on_idp_answer(
            HeldAnswer { pending: call.pending, status: Some(503), body: Vec::new() },
            &Request { headers: &h },
            NOW + 291 + 300,
            true,
            &mut rng(),
        );
        assert_eq!(status(&d), 503);
        // A bearer token: kept in Authorization, and copied to the relay header.
        let t = key.mint(
            Alg::RS256,
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": ISS, "sub": "b-1", "aud": "api", "exp": NOW + 300, "iat": NOW}),
        );
        let h = req("/echo", &[("authorization", &format!("Bearer {t}")), ("x-forwarded-access-token", "forged")]);
        let d = engine.decide(&Request { headers: &h }, NOW + 10, true, &mut rng());
        let Decision::Forward { set, remove, .. } = &d else { panic!("{d:?}") };
        assert!(!remove.contains(&"authorization".to_string()));
        assert!(set.contains(&("x-forwarded-access-token".into(), t.as_str().into())));
        // A session made before relaying was switched on has no token: it is no session.
        let (mut plain, key) = engine_with(json!({"keys": [KEY], "refresh": true}));
        let (r, _) = login(&mut plain, &key, json!({}));
        let old = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
        let h = req("/echo", &[("cookie", &old), ("accept", "application/json")]);
        assert_eq!(status(&engine.decide(&Request { headers: &h }, NOW + 10, true, &mut rng())), 401);
    }

    #[test]
    fn auth_and_userinfo_refresh_a_due_session_and_end_one_keycloak_ended() {
        for path in ["/oauth2/auth", "/oauth2/userinfo"] {
            let (mut engine, key) = engine_with(json!({"keys": [KEY], "refresh": true}));
            let (r, _) = login(&mut engine, &key, json!({"groups": ["/admins"]}));
            let cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
            let h = req(path, &[("cookie", &cookie)]);
            // Due: held for the refresh, never answered from the stale session.
            let Decision::CallIdp(call) = engine.decide(&Request { headers: &h }, NOW + 290, true, &mut rng()) else {
                panic!("{path}: no refresh")
            };
            let refused = br#"{"error": "invalid_grant", "error_description": "Session not active"}"#;
            let d = idp_answer(&mut engine, call.pending, 400, refused.to_vec(), &h, NOW + 290);
            let r = respond(d);
            assert_eq!(r.status, 401, "{path}: Keycloak ended the session");
            assert!(all(&r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=;")), "{path}");
            // Refreshed: the endpoint's own answer with the new cookie, not a forward.
            let (mut engine, key) = engine_with(json!({"keys": [KEY], "refresh": true}));
            let (r, _) = login(&mut engine, &key, json!({"groups": ["/admins"]}));
            let cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
            let h = req(path, &[("cookie", &cookie)]);
            let Decision::CallIdp(call) = engine.decide(&Request { headers: &h }, NOW + 290, true, &mut rng()) else {
                panic!("{path}: no refresh")
            };
            let access = key.mint(
                Alg::RS256,
                &json!({"alg": "RS256", "kid": "k1"}),
                &json!({"iss": ISS, "sub": "a-1", "aud": "account", "azp": "gateway", "exp": NOW + 600, "iat": NOW + 290}),
            );
            let body =
                json!({"access_token": access, "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-2"});
            let d = idp_answer(&mut engine, call.pending, 200, body.to_string().into_bytes(), &h, NOW + 290);
            let r = respond(d);
            assert_eq!(r.status, 200, "{path}");
            assert!(all(&r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=v1.")), "{path}");
            // And the old cookie, on another site sharing the key, is not the new session.
            let mut other = req(path, &[("cookie", &cookie)]);
            other.retain(|(n, _)| n != ":authority");
            other.push((":authority".into(), "other.example".into()));
            assert_eq!(
                status(&engine.decide(&Request { headers: &other }, NOW + 291, true, &mut rng())),
                401,
                "{path}"
            );
        }
    }

    #[test]
    fn relay_refuses_a_token_unfit_for_a_header_or_without_a_lifetime() {
        let session = json!({"keys": [KEY], "refresh": true, "relayAccessToken": ["authorization"]});
        for (what, body) in [
            ("a header break", json!({"access_token": "abc\r\nx-evil: 1", "token_type": "Bearer", "expires_in": 300})),
            ("empty", json!({"access_token": "", "token_type": "Bearer", "expires_in": 300})),
            ("no lifetime", json!({"access_token": "opaque-token", "token_type": "Bearer"})),
        ] {
            let (mut engine, key) = engine_with(session.clone());
            let headers = req("/admin/x", &[("accept", "text/html")]);
            let r = respond(engine.decide(&Request { headers: &headers }, NOW, true, &mut rng()));
            let state_cookie = all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
            let url = url::Url::parse(all(&r, "location")[0]).unwrap();
            let q = |k: &str| url.query_pairs().find(|(n, _)| n == k).unwrap().1.into_owned();
            let cb = req(&format!("/oauth2/callback?code=c&state={}", q("state")), &[("cookie", &state_cookie)]);
            let Decision::CallIdp(call) = engine.decide(&Request { headers: &cb }, NOW + 1, true, &mut rng()) else {
                panic!()
            };
            let id =
                json!({"iss": ISS, "sub": "a-1", "aud": "gateway", "exp": NOW + 300, "iat": NOW, "nonce": q("nonce")});
            let mut body = body.clone();
            body["id_token"] = json!(key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &id));
            let d = idp_answer(&mut engine, call.pending, 200, body.to_string().into_bytes(), &cb, NOW + 2);
            let r = respond(d);
            assert_eq!(r.status, 502, "{what}");
            assert!(
                !all(&r, "set-cookie").iter().any(|c| c.starts_with("__Host-_gatehouse=v1.")),
                "{what}: no session"
            );
        }
    }

    /// The provider's answer to a held call, given to the engine.
    fn idp_answer(
        engine: &mut Engine,
        pending: crate::flow::Pending,
        status: u32,
        body: Vec<u8>,
        headers: &[(String, String)],
        now: u64,
    ) -> Decision {
        engine.on_idp_answer(
            HeldAnswer { pending, status: Some(status), body },
            &Request { headers },
            now,
            true,
            &mut rng(),
        )
    }

    /// A VM of an Envoy (sharing `store`) whose gatehouse takes back-channel logouts.
    fn engine_taking_logouts(store: &Rc<MemoryStore>) -> (Engine, TestKey) {
        let mut doc = config_doc(json!({"keys": [KEY]}));
        doc["login"]["backchannelLogoutPath"] = json!("/oauth2/backchannel_logout");
        let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
        let mut engine = Engine::new(cfg, Box::new(Rc::clone(store)));
        let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs"),
            "authorization_endpoint": "https://sso.example/realms/demo/protocol/openid-connect/auth",
            "token_endpoint": "http://keycloak:8080/realms/demo/protocol/openid-connect/token"});
        load(&mut engine, NOW, &disc.to_string(), "");
        (engine, TestKey::rsa(RSA_A))
    }

    #[test]
    fn a_backchannel_logout_ends_the_session_it_names_on_every_worker_once() {
        let store = Rc::new(MemoryStore::default());
        let (mut a, key) = engine_taking_logouts(&store);
        let (mut b, _) = engine_taking_logouts(&store);
        let session_of = |e: &mut Engine, claims: Value| {
            let (r, _) = login(e, &key, claims);
            all(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string()
        };
        let alice = session_of(&mut a, json!({"sid": "s-1"}));
        let alice2 = session_of(&mut a, json!({"sid": "s-9"})); // her session in another browser
        let bob = session_of(&mut a, json!({"sub": "b-1", "sid": "s-2"}));
        let get = |e: &mut Engine, cookie: &str, at: u64| {
            let h = req("/echo", &[("cookie", cookie), ("accept", "application/json")]);
            status(&e.decide(&Request { headers: &h }, at, true, &mut rng()))
        };
        for e in [&mut a, &mut b] {
            assert_eq!((get(e, &alice, NOW + 7), get(e, &bob, NOW + 7)), (200, 200));
        }
        let post = |content_type: &str| {
            let mut h = req("/oauth2/backchannel_logout", &[("content-type", content_type)]);
            h.retain(|(n, _)| n != ":method");
            h.push((":method".into(), "POST".into()));
            h
        };
        let form = post("application/x-www-form-urlencoded");
        // Only a form POST is read.
        let get_it = req("/oauth2/backchannel_logout", &[]);
        assert_eq!(status(&a.decide(&Request { headers: &get_it }, NOW + 8, true, &mut rng())), 405);
        assert_eq!(status(&a.decide(&Request { headers: &post("application/json") }, NOW + 8, true, &mut rng())), 400);
        assert_eq!(a.decide(&Request { headers: &form }, NOW + 8, true, &mut rng()), Decision::ReadBody);
        let logout_token = |claims: Value| {
            let mut c = json!({"iss": ISS, "aud": "gateway", "sub": "a-1", "iat": NOW + 8, "exp": NOW + 128,
                               "jti": "j-1", "events": {crate::oidc::logout::BACKCHANNEL_LOGOUT_EVENT: {}}});
            for (k, v) in claims.as_object().unwrap() {
                c[k] = v.clone();
            }
            let t = key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &c);
            format!("logout_token={t}").into_bytes()
        };
        let answer =
            |e: &mut Engine, body: &[u8]| status(&e.on_request_body(&Request { headers: &form }, body, NOW + 8, true));
        // Refused, and nothing ends: no token, two, an access token, an ID token, another audience.
        for (what, body) in [
            ("empty", b"".to_vec()),
            ("two", [logout_token(json!({"sid": "s-1"})), b"&".to_vec(), logout_token(json!({"sid": "s-1"}))].concat()),
            ("no events", logout_token(json!({"sid": "s-1", "events": null}))),
            ("nonce", logout_token(json!({"sid": "s-1", "nonce": "n"}))),
            ("audience", logout_token(json!({"sid": "s-1", "aud": "other-client", "jti": "j-x"}))),
            ("garbage", b"logout_token=not.a.jwt".to_vec()),
        ] {
            assert_eq!(answer(&mut a, &body), 400, "{what}");
        }
        assert_eq!(get(&mut b, &alice, NOW + 8), 200, "still signed in");
        // Alice's Keycloak session s-1 ended: refused on both workers at once, her other session
        // and bob's not.
        assert_eq!(answer(&mut a, &logout_token(json!({"sid": "s-1"}))), 200);
        for e in [&mut a, &mut b] {
            assert_eq!(get(e, &alice, NOW + 9), 401);
            assert_eq!(get(e, &alice2, NOW + 9), 200);
            assert_eq!(get(e, &bob, NOW + 9), 200);
        }
        // The same token again (on another worker): refused.
        assert_eq!(answer(&mut b, &logout_token(json!({"sid": "s-1"}))), 400);
        // All of bob's sessions (sub only): those made until the logout end.
        assert_eq!(answer(&mut b, &logout_token(json!({"sub": "b-1", "jti": "j-2"}))), 200);
        assert_eq!(get(&mut a, &bob, NOW + 10), 401);
        assert_eq!(get(&mut a, &alice2, NOW + 10), 200);
    }
}
