use super::*;
use crate::jwt::alg::Alg;
use crate::keys::Fetch;
use crate::testutil::{TestKey, RSA_A, RSA_B};
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
    let engine = Engine::new(config(extra, Some(jwks)));
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
        Decision::FetchKeys(_) | Decision::CallIdp(_) => 0,
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    match d {
        Decision::Respond(r) => r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
        Decision::Forward { set, .. } => set.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()),
        Decision::FetchKeys(_) | Decision::CallIdp(_) => None,
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
    for extra in [vec![], vec![("authorization", "Basic YWxpY2U6YWxpY2U=")], vec![("authorization", "Bearer ")], vec![("authorization", "Bearer")]] {
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
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap(), json!({"error": "access_denied", "reason": "group_required", "rule": "admins-only"}));
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
        (TestKey::rsa(RSA_B).mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &alice_claims()), "invalid signature"),
    ];
    for (token, reason) in cases {
        let d = b.bearer("/echo", &token);
        assert_eq!(status(&d), 401);
        let challenge = header(&d, "www-authenticate").unwrap();
        assert_eq!(challenge, format!("Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"{reason}\""));
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
    let spoof = [("x-auth-request-email", "ceo@example.com"), ("x_auth_request_email", "ceo@example.com"), ("x-auth-request-groups", "admins")];
    // On a public path, without any token.
    let d = b.run("/public/x", &spoof);
    let r = removed(&d);
    for name in ["x-auth-request-email", "x_auth_request_email", "x-auth-request-groups", "x-auth-request-user", "x-auth-request-roles"] {
        assert!(r.contains(&name.to_string()), "{name} not removed: {r:?}");
    }
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
fn public_paths_skip_authentication() {
    let mut b = bed(json!({}));
    assert_eq!(status(&b.run("/public/", &[])), 200);
    assert_eq!(status(&b.run("/public/a/b?c", &[])), 200);
    assert_eq!(status(&b.run("/healthz", &[])), 200);
    assert_eq!(status(&b.run("/healthz/x", &[])), 401);
    assert_eq!(status(&b.run("/publicity", &[])), 401);
    assert_eq!(status(&b.run("/public/..%2fadmin/", &[])), 401, "ambiguous paths are never public");
    assert_eq!(status(&b.run("/public/../admin/", &[])), 401);
}

#[test]
fn forward_authorization_and_payload_header_options() {
    let mut b = bed(json!({"tokens": {"forwardAuthorization": true, "payloadHeader": "x-jwt-payload"}}));
    let t = b.token(&alice_claims());
    let d = b.bearer("/echo", &t);
    assert!(!removed(&d).contains(&"authorization".to_string()));
    assert_eq!(header(&d, "x-jwt-payload"), t.split('.').nth(1));
    assert!(removed(&b.run("/public/", &[])).contains(&"x-jwt-payload".to_string()));
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
    let headers = vec![(":path".to_string(), "/echo".to_string()), ("authorization".to_string(), format!("Bearer {t}"))];
    let later = b.engine.decide(&Request { headers: &headers }, NOW + 41, true, &mut rng());
    assert_eq!(status(&later), 401);
    // Rejected tokens are never cached.
    assert_eq!(status(&b.bearer("/echo", "garbage")), 401);
    assert_eq!(b.engine.cache.len(), 0);
}

#[test]
fn keys_not_loaded_means_503_never_a_pass() {
    let mut engine = Engine::new(config(json!({}), None));
    let key = TestKey::rsa(RSA_A);
    let t = key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &alice_claims());
    let headers = vec![(":path".to_string(), "/echo".to_string()), ("authorization".to_string(), format!("Bearer {t}"))];
    let d = engine.decide(&Request { headers: &headers }, NOW, true, &mut rng());
    assert_eq!(status(&d), 503);
    assert_eq!(header(&d, "retry-after"), Some("5"));
    // Public paths still work, and requests without credentials still get 401.
    let public = vec![(":path".to_string(), "/public/x".to_string())];
    assert_eq!(status(&engine.decide(&Request { headers: &public }, NOW, true, &mut rng())), 200);
}

#[test]
fn unknown_kid_triggers_one_key_fetch_then_verifies() {
    let mut engine = Engine::new(config(json!({}), None));
    let old = TestKey::rsa(RSA_A);
    let new = TestKey::rsa(RSA_B);
    // Load the old key as the glue would.
    let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/protocol/openid-connect/certs")}).to_string();
    assert!(engine.keys.due(NOW).is_some());
    engine.keys.on_discovery(NOW, Ok(disc.as_bytes())).unwrap();
    engine.keys.on_jwks(NOW, Ok(json!({"keys": [old.jwk("k1", Alg::RS256)]}).to_string().as_bytes())).unwrap();

    let t = new.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k2"}), &alice_claims());
    let headers = vec![(":path".to_string(), "/echo".to_string()), ("authorization".to_string(), format!("Bearer {t}"))];
    let req = Request { headers: &headers };
    assert_eq!(engine.decide(&req, NOW + 1, true, &mut rng()), Decision::FetchKeys(Fetch::Jwks("/realms/demo/protocol/openid-connect/certs".into())));
    engine.keys.on_jwks(NOW + 1, Ok(json!({"keys": [old.jwk("k1", Alg::RS256), new.jwk("k2", Alg::RS256)]}).to_string().as_bytes())).unwrap();
    assert_eq!(status(&engine.decide(&req, NOW + 1, false, &mut rng())), 200);

    // A bogus kid: one fetch, then rate-limited straight to 401.
    let bogus = new.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "bogus"}), &alice_claims());
    let headers = vec![(":path".to_string(), "/echo".to_string()), ("authorization".to_string(), format!("Bearer {bogus}"))];
    let req = Request { headers: &headers };
    assert_eq!(status(&engine.decide(&req, NOW + 2, true, &mut rng())), 401, "within the rate limit window");
    assert!(matches!(engine.decide(&req, NOW + 40, true, &mut rng()), Decision::FetchKeys(_)));
    engine.keys.on_jwks(NOW + 40, Err("timeout".into())).unwrap_err();
    assert_eq!(status(&engine.decide(&req, NOW + 40, false, &mut rng())), 401);
    assert_eq!(status(&engine.decide(&req, NOW + 41, true, &mut rng())), 401);
}

#[test]
fn key_set_change_drops_cached_tokens() {
    let mut engine = Engine::new(config(json!({}), None));
    let key = TestKey::rsa(RSA_A);
    let disc = json!({"issuer": ISS, "jwks_uri": format!("{ISS}/certs")}).to_string();
    engine.keys.due(NOW);
    engine.keys.on_discovery(NOW, Ok(disc.as_bytes())).unwrap();
    engine.keys.on_jwks(NOW, Ok(json!({"keys": [key.jwk("k1", Alg::RS256)]}).to_string().as_bytes())).unwrap();
    let t = key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &alice_claims());
    let headers = vec![(":path".to_string(), "/echo".to_string()), ("authorization".to_string(), format!("Bearer {t}"))];
    let req = Request { headers: &headers };
    assert_eq!(status(&engine.decide(&req, NOW, true, &mut rng())), 200);
    // The provider removes the key (e.g. it was compromised): the cached token stops working.
    engine.keys.due(NOW + 300);
    engine.keys.on_discovery(NOW + 300, Ok(disc.as_bytes())).unwrap();
    let other = TestKey::rsa(RSA_B);
    engine.keys.on_jwks(NOW + 300, Ok(json!({"keys": [other.jwk("k9", Alg::RS256)]}).to_string().as_bytes())).unwrap();
    assert_eq!(status(&engine.decide(&req, NOW + 200, false, &mut rng())), 401);
}
