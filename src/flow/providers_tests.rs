//! Several providers in one gatehouse: bearer tokens checked by their issuer's keys only,
//! browsers signed in by their host's provider, and nothing of one provider's accepted where
//! another's is expected.

use super::*;
use crate::jwt::alg::Alg;
use crate::oidc::login::LoginState;
use crate::session::Purpose;
use crate::shared::MemoryStore;
use crate::testutil::{load_with, TestKey, RSA_A, RSA_B};
use serde_json::{json, Value};

const ISS_A: &str = "https://sso.corp.test/realms/a";
const ISS_B: &str = "https://sso.corp.test/realms/b";
const NOW: u64 = 1_800_000_000;
const KEY: &str = "0123456789abcdef0123456789abcdef-providers";

fn rng() -> impl FnMut(&mut [u8]) {
    let mut n = 0u8;
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            n = n.wrapping_add(1);
            *b = n;
        }
    }
}

/// Realm a signs with RSA key A, realm b with RSA key B, both under key id `k1`: a token signed
/// by one and naming the other's issuer must find the other's key, and fail.
fn keys() -> (TestKey, TestKey) {
    (TestKey::rsa(RSA_A), TestKey::rsa(RSA_B))
}

/// Realm a signs in `a.corp.test`; realm b `b.corp.test` and its subdomains. The session cookie
/// is shared by every host under `corp.test`.
fn doc() -> Value {
    let (a, b) = keys();
    json!({
        "providers": [
            {"issuer": ISS_A, "cluster": "idp-a", "clientId": "gw-a", "clientSecret": "secret-a",
             "jwks": {"keys": [a.jwk("k1", Alg::RS256)]}, "hosts": ["a.corp.test"]},
            {"issuer": ISS_B, "cluster": "idp-b", "clientId": "gw-b", "clientSecret": "secret-b",
             "jwks": {"keys": [b.jwk("k1", Alg::RS256)]}, "hosts": ["b.corp.test", "*.b.corp.test"]}
        ],
        "session": {"keys": [KEY], "domain": "corp.test", "hostPrefix": false, "refresh": true},
        "login": {"backchannelLogoutPath": "/oauth2/backchannel_logout"},
        "rules": [{"name": "admins-only", "match": {"paths": [{"prefix": "/admin/"}]}, "require": {"groups": ["admins"]}}]
    })
}

fn discovery(iss: &str) -> String {
    json!({"issuer": iss, "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
           "authorization_endpoint": format!("{iss}/protocol/openid-connect/auth"),
           "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
           "end_session_endpoint": format!("{iss}/protocol/openid-connect/logout")})
    .to_string()
}

fn engine_of(doc: &Value, store: Box<dyn Store>) -> Engine {
    let cfg = Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap());
    let mut engine = Engine::new(cfg, store);
    let made = load_with(&mut engine, NOW, &|f| discovery(if f.provider == 0 { ISS_A } else { ISS_B }));
    let paths: Vec<&str> = made.iter().map(crate::keys::Fetch::path).collect();
    assert_eq!(made.len(), 2, "each provider's discovery, on its own cluster: {paths:?}");
    engine
}

fn engine() -> Engine {
    engine_of(&doc(), Box::new(MemoryStore::default()))
}

fn req(host: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), host.to_string()),
        ("x-forwarded-proto".to_string(), "https".to_string()),
    ];
    h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    h
}

fn decide(engine: &mut Engine, headers: &[(String, String)], now: u64) -> Decision {
    engine.decide(&Request { headers }, now, true, &mut rng())
}

fn status(d: &Decision) -> u32 {
    match d {
        Decision::Forward { .. } => 200,
        Decision::Respond(r) => r.status,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

fn respond(d: Decision) -> Response {
    match d {
        Decision::Respond(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn token(key: &TestKey, claims: Value) -> String {
    key.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), &claims)
}

fn claims(iss: &str, client: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": client, "azp": client, "exp": NOW + 300, "iat": NOW,
           "preferred_username": sub, "groups": ["/admins"]})
}

#[test]
fn bearer_tokens_are_checked_by_their_issuers_keys_audiences_and_hosts_only() {
    let mut e = engine();
    let (a, b) = keys();
    let bearer = |e: &mut Engine, host: &str, t: &str| {
        let h = req(host, "/admin/x", &[("authorization", &format!("Bearer {t}"))]);
        status(&decide(e, &h, NOW + 1))
    };
    let of_a = token(&a, claims(ISS_A, "gw-a", "alice"));
    let of_b = token(&b, claims(ISS_B, "gw-b", "bob"));
    // Each provider's tokens pass on the hosts it serves, and nowhere else.
    assert_eq!((bearer(&mut e, "a.corp.test", &of_a), bearer(&mut e, "a.corp.test", &of_b)), (200, 401));
    for host in ["b.corp.test", "x.b.corp.test"] {
        assert_eq!((bearer(&mut e, host, &of_a), bearer(&mut e, host, &of_b)), (401, 200), "{host}");
    }
    assert_eq!((bearer(&mut e, "elsewhere.test", &of_a), bearer(&mut e, "elsewhere.test", &of_b)), (401, 401));
    // Every reading of the host must be served: b's host, forwarded as a's.
    let h = req(
        "x.b.corp.test",
        "/x",
        &[("authorization", &format!("Bearer {of_b}")), ("x-forwarded-host", "a.corp.test")],
    );
    assert_eq!(status(&decide(&mut e, &h, NOW + 1)), 401);
    // A provider without hosts serves every host: its tokens pass on the other's hosts too.
    let mut open = doc();
    open["providers"][0].as_object_mut().unwrap().remove("hosts");
    let mut e2 = engine_of(&open, Box::new(MemoryStore::default()));
    for host in ["a.corp.test", "x.b.corp.test", "elsewhere.test"] {
        assert_eq!(bearer(&mut e2, host, &of_a), 200, "{host}");
    }
    assert_eq!((bearer(&mut e2, "elsewhere.test", &of_b), bearer(&mut e2, "a.corp.test", &of_b)), (401, 401));
    // One realm's key never verifies a token naming the other issuer (the same `kid` in both).
    assert_eq!(bearer(&mut e, "b.corp.test", &token(&a, claims(ISS_B, "gw-b", "mallory"))), 401);
    assert_eq!(bearer(&mut e, "a.corp.test", &token(&b, claims(ISS_A, "gw-a", "mallory"))), 401);
    // Each provider's audiences: realm b's token for realm a's client is refused.
    assert_eq!(bearer(&mut e, "b.corp.test", &token(&b, claims(ISS_B, "gw-a", "bob"))), 401);
    // No provider's issuer, or none at all, or unreadable: refused before any key is tried.
    let mut no_iss = claims(ISS_A, "gw-a", "alice");
    no_iss.as_object_mut().unwrap().remove("iss");
    for (what, t) in [
        ("another issuer", token(&a, claims("https://sso.corp.test/realms/c", "gw-a", "alice"))),
        ("no issuer", token(&a, no_iss)),
        ("garbage", "a.b.c".to_string()),
    ] {
        let h = req("a.corp.test", "/x", &[("authorization", &format!("Bearer {t}"))]);
        let r = respond(decide(&mut e, &h, NOW + 1));
        assert_eq!(r.status, 401, "{what}");
        assert!(header(&r, "www-authenticate")[0].contains("error=\"invalid_token\""), "{what}");
    }
}

/// Signs a browser in on `host` through the pure flow, with the ID token `sign` makes from the
/// nonce: the answer to the token endpoint's answer, and the callback's cluster and client.
fn login(e: &mut Engine, host: &str, sign: &dyn Fn(&str) -> String) -> (Decision, String, String) {
    let page = req(host, "/admin/x", &[("accept", "text/html")]);
    let r = respond(decide(e, &page, NOW));
    assert_eq!(r.status, 302, "{host}");
    let url = url::Url::parse(header(&r, "location")[0]).unwrap();
    let q = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).unwrap_or_default();
    let state_cookie = header(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
    let cb = req(host, &format!("/oauth2/callback?code=c0de&state={}", q("state")), &[("cookie", &state_cookie)]);
    let Decision::CallIdp(call) = decide(e, &cb, NOW + 5) else { panic!("no token call") };
    let client = call.callout.header("authorization").unwrap_or_default().to_string();
    let body = json!({"access_token": "opaque", "id_token": sign(&q("nonce")), "token_type": "Bearer",
                      "expires_in": 300, "refresh_token": "rt"})
    .to_string();
    let answer = HeldAnswer { pending: call.pending.clone(), status: Some(200), body: body.into_bytes() };
    let d = e.on_idp_answer(answer, &Request { headers: &cb }, NOW + 6, true, &mut rng());
    (d, call.callout.cluster.clone(), client)
}

fn id_token(key: &TestKey, iss: &str, client: &str, sub: &str, nonce: &str) -> String {
    let mut c = claims(iss, client, sub);
    c["nonce"] = json!(nonce);
    c["sid"] = json!(format!("sid-{sub}"));
    token(key, c)
}

fn session_cookie(d: Decision) -> String {
    let r = respond(d);
    assert_eq!(r.status, 302, "signed in: {}", r.body);
    header(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string()
}

#[test]
fn browsers_sign_in_at_their_hosts_provider_and_its_sessions_stay_there() {
    let mut e = engine();
    let (a, b) = keys();
    // The login redirect goes to the host's provider, with its client.
    for (host, iss, client) in [("a.corp.test", ISS_A, "gw-a"), ("x.b.corp.test", ISS_B, "gw-b")] {
        let r = respond(decide(&mut e, &req(host, "/", &[("accept", "text/html")]), NOW));
        let location = header(&r, "location")[0];
        assert!(location.starts_with(&format!("{iss}/protocol/openid-connect/auth?")), "{location}");
        assert!(location.contains(&format!("client_id={client}&")), "{location}");
    }
    // A host no provider lists gets no sign-in: 401, never a login at some provider.
    let r = respond(decide(&mut e, &req("elsewhere.test", "/", &[("accept", "text/html")]), NOW));
    assert_eq!((r.status, header(&r, "location").len()), (401, 0));

    // Bob signs in on b's host: the code is redeemed at b, with b's client.
    let (d, cluster, client) = login(&mut e, "x.b.corp.test", &|n| id_token(&b, ISS_B, "gw-b", "bob", n));
    assert_eq!((cluster.as_str(), client.as_str()), ("idp-b", "Basic Z3ctYjpzZWNyZXQtYg=="), "gw-b:secret-b");
    let bob = session_cookie(d);
    let with = |cookie: &str, host: &str, extra: &[(&str, &str)]| {
        let mut h = req(host, "/admin/x", &[("cookie", cookie), ("accept", "application/json")]);
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        h
    };
    assert_eq!(status(&decide(&mut e, &with(&bob, "x.b.corp.test", &[]), NOW + 7)), 200);
    assert_eq!(status(&decide(&mut e, &with(&bob, "b.corp.test", &[]), NOW + 7)), 200, "the same provider's host");
    // The cookie reaches a's host too (one cookie domain): b's session is no session there.
    assert_eq!(status(&decide(&mut e, &with(&bob, "a.corp.test", &[]), NOW + 7)), 401);
    // Nor on b's host when an upstream may take the request for a's.
    let forwarded = with(&bob, "x.b.corp.test", &[("x-forwarded-host", "a.corp.test")]);
    assert_eq!(status(&decide(&mut e, &forwarded, NOW + 7)), 401);

    // An ID token of the other provider, or naming it, makes no session.
    for (what, sign) in [
        ("a's key", &(|n: &str| id_token(&a, ISS_B, "gw-b", "bob", n)) as &dyn Fn(&str) -> String),
        ("a's issuer", &|n: &str| id_token(&a, ISS_A, "gw-b", "bob", n)),
        ("a's client", &|n: &str| id_token(&b, ISS_B, "gw-a", "bob", n)),
    ] {
        let (d, _, _) = login(&mut e, "x.b.corp.test", sign);
        assert_eq!(status(&d), 502, "{what}");
    }

    // Alice on a's host; the refresh of her session goes to a, with a's client.
    let (d, cluster, _) = login(&mut e, "a.corp.test", &|n| id_token(&a, ISS_A, "gw-a", "alice", n));
    assert_eq!(cluster, "idp-a");
    let alice = session_cookie(d);
    assert_eq!(status(&decide(&mut e, &with(&alice, "a.corp.test", &[]), NOW + 7)), 200);
    assert_eq!(status(&decide(&mut e, &with(&alice, "x.b.corp.test", &[]), NOW + 7)), 401);
    let Decision::CallIdp(call) = decide(&mut e, &with(&alice, "a.corp.test", &[]), NOW + 290) else {
        panic!("a refresh is due")
    };
    assert_eq!(call.callout.cluster, "idp-a");
    assert_eq!(call.callout.header(":path"), Some("/realms/a/protocol/openid-connect/token"));
    assert_eq!(call.callout.header("authorization"), Some("Basic Z3ctYTpzZWNyZXQtYQ=="), "gw-a:secret-a");
}

#[test]
fn a_callback_redeems_the_code_where_its_login_went_and_nowhere_else() {
    let mut e = engine();
    // A login at b answered with iss=a (RFC 9207): a mix-up, refused.
    let r = respond(decide(&mut e, &req("b.corp.test", "/", &[("accept", "text/html")]), NOW));
    let url = url::Url::parse(header(&r, "location")[0]).unwrap();
    let state = url.query_pairs().find(|(n, _)| n == "state").unwrap().1.into_owned();
    let cookie = header(&r, "set-cookie")[0].split_once(';').unwrap().0.to_string();
    let cb = |iss: &str| {
        let path = format!(
            "/oauth2/callback?code=c&state={state}&iss={}",
            url::form_urlencoded::byte_serialize(iss.as_bytes()).collect::<String>()
        );
        req("b.corp.test", &path, &[("cookie", &cookie)])
    };
    assert_eq!(status(&decide(&mut e, &cb(ISS_A), NOW + 1)), 400);
    let Decision::CallIdp(call) = decide(&mut e, &cb(ISS_B), NOW + 1) else { panic!("b's own iss") };
    assert_eq!(call.callout.cluster, "idp-b");
    // The callback's host does not choose: a login that went to b is redeemed at b on a's host.
    let Decision::CallIdp(call) = decide(&mut e, &req("a.corp.test", &cb(ISS_B)[1].1, &[("cookie", &cookie)]), NOW + 1)
    else {
        panic!("the state names b")
    };
    assert_eq!(call.callout.cluster, "idp-b");
    // A login state naming an issuer no longer configured is void.
    let b = e.config().browser.as_ref().unwrap();
    let gone = LoginState {
        state: state.clone(),
        nonce: "n".into(),
        verifier: "v".into(),
        return_to: "/".into(),
        redirect_uri: "https://b.corp.test/oauth2/callback".into(),
        exp: NOW + 600,
        iss: "https://sso.corp.test/realms/gone".into(),
    };
    let sealed = b.sealer.seal(Purpose::LoginState, &serde_json::to_vec(&gone).unwrap()).unwrap();
    let name = cookie.split_once('=').unwrap().0;
    let forged = req(
        "b.corp.test",
        &format!("/oauth2/callback?code=c&state={state}"),
        &[("cookie", &format!("{name}={sealed}"))],
    );
    let r = respond(decide(&mut e, &forged, NOW + 1));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("could not be matched"), "{}", r.body);
}

#[test]
fn sign_out_ends_the_session_at_the_hosts_provider_and_hints_only_its_own_id_token() {
    let mut e = engine();
    let (_, b) = keys();
    let (d, _, _) = login(&mut e, "b.corp.test", &|n| id_token(&b, ISS_B, "gw-b", "bob", n));
    let bob = session_cookie(d);
    let out = |e: &mut Engine, host: &str| {
        let h = req(host, "/oauth2/sign_out", &[("cookie", &bob), ("sec-fetch-site", "same-origin")]);
        let r = respond(decide(e, &h, NOW + 7));
        assert_eq!(r.status, 302);
        url::Url::parse(header(&r, "location")[0]).unwrap()
    };
    let at_b = out(&mut e, "b.corp.test");
    assert_eq!(at_b.path(), "/realms/b/protocol/openid-connect/logout");
    let q: Vec<(String, String)> = at_b.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert!(q.iter().any(|(k, v)| k == "client_id" && v == "gw-b"));
    assert!(q.iter().any(|(k, _)| k == "id_token_hint"), "b's own ID token as the hint");
    // On a's host, b's session is not a's: a's logout, without b's ID token.
    let at_a = out(&mut e, "a.corp.test");
    assert_eq!(at_a.path(), "/realms/a/protocol/openid-connect/logout");
    assert!(at_a.query_pairs().all(|(k, _)| k != "id_token_hint"), "{at_a}");
    assert!(at_a.query_pairs().any(|(k, v)| k == "client_id" && v == "gw-a"));
}

#[test]
fn a_backchannel_logout_ends_only_its_providers_sessions() {
    let store = Rc::new(MemoryStore::default());
    let mut e = engine_of(&doc(), Box::new(Rc::clone(&store)));
    let (a, b) = keys();
    // The same user id and provider session id in both realms.
    let (d, _, _) = login(&mut e, "a.corp.test", &|n| id_token(&a, ISS_A, "gw-a", "same", n));
    let at_a = session_cookie(d);
    let (d, _, _) = login(&mut e, "b.corp.test", &|n| id_token(&b, ISS_B, "gw-b", "same", n));
    let at_b = session_cookie(d);
    let get = |e: &mut Engine, cookie: &str, host: &str| {
        status(&decide(e, &req(host, "/x", &[("cookie", cookie), ("accept", "application/json")]), NOW + 8))
    };
    assert_eq!((get(&mut e, &at_a, "a.corp.test"), get(&mut e, &at_b, "b.corp.test")), (200, 200));
    let mut post =
        req("b.corp.test", "/oauth2/backchannel_logout", &[("content-type", "application/x-www-form-urlencoded")]);
    post.retain(|(n, _)| n != ":method");
    post.push((":method".into(), "POST".into()));
    let logout = |key: &TestKey, iss: &str, client: &str, jti: &str| {
        let c = json!({"iss": iss, "aud": client, "sub": "same", "sid": "sid-same", "iat": NOW + 8, "exp": NOW + 120,
                       "jti": jti, "events": {crate::oidc::logout::BACKCHANNEL_LOGOUT_EVENT: {}}});
        format!("logout_token={}", token(key, c)).into_bytes()
    };
    let answer =
        |e: &mut Engine, body: &[u8]| status(&e.on_request_body(&Request { headers: &post }, body, NOW + 8, true));
    // Refused: signed by a but naming b, or for a's client under b.
    assert_eq!(answer(&mut e, &logout(&a, ISS_B, "gw-b", "j-1")), 400);
    assert_eq!(answer(&mut e, &logout(&b, ISS_B, "gw-a", "j-2")), 400);
    assert_eq!(answer(&mut e, &logout(&a, "https://sso.corp.test/realms/c", "gw-a", "j-3")), 400);
    assert_eq!((get(&mut e, &at_a, "a.corp.test"), get(&mut e, &at_b, "b.corp.test")), (200, 200));
    // Realm b ends its session: b's ends, a's (same sub, same sid) does not.
    assert_eq!(answer(&mut e, &logout(&b, ISS_B, "gw-b", "j-4")), 200);
    assert_eq!((get(&mut e, &at_a, "a.corp.test"), get(&mut e, &at_b, "b.corp.test")), (200, 401));
}

#[test]
fn keys_are_fetched_per_provider_each_on_its_cluster_under_its_own_lease() {
    let mut d = doc();
    for p in d["providers"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("jwks");
    }
    let cfg = Rc::new(Config::parse(d.to_string().as_bytes(), &|_| None).unwrap());
    let store = Rc::new(MemoryStore::default());
    let mut first = Engine::new(Rc::clone(&cfg), Box::new(Rc::clone(&store)));
    let tick = first.tick(NOW, &[]);
    let calls: Vec<(&str, &str)> =
        tick.calls.iter().map(|c| (c.callout.cluster.as_str(), c.callout.header(":path").unwrap())).collect();
    assert_eq!(
        calls,
        vec![
            ("idp-a", "/realms/a/.well-known/openid-configuration"),
            ("idp-b", "/realms/b/.well-known/openid-configuration")
        ]
    );
    // b's fetch is in flight: the next tick starts none for b (and a's lease is held).
    assert!(first.tick(NOW, &[1]).calls.is_empty());
    // Another worker holds no lease: it waits for what this one publishes.
    let mut second = Engine::new(cfg, Box::new(Rc::clone(&store)));
    assert!(second.tick(NOW, &[]).calls.is_empty());
    // b answers; a is down. b's tokens pass, a's get 503 until a's keys come.
    let (a, b) = keys();
    let b_call = &tick.calls[1];
    let next = first.on_key_answer(&b_call.fetch, &crate::testutil::ok(&discovery(ISS_B)), NOW, Fetcher::Root).unwrap();
    assert_eq!(next.callout.cluster, "idp-b");
    let jwks = json!({"keys": [b.jwk("k1", Alg::RS256)]}).to_string();
    assert!(first.on_key_answer(&next.fetch, &crate::testutil::ok(&jwks), NOW, Fetcher::Root).is_none());
    first.on_key_answer(&tick.calls[0].fetch, &crate::callout::Answer::none(), NOW, Fetcher::Root);
    let bearer = |e: &mut Engine, host: &str, t: &str| {
        status(&decide(e, &req(host, "/x", &[("authorization", &format!("Bearer {t}"))]), NOW + 1))
    };
    let of_b = token(&b, claims(ISS_B, "gw-b", "bob"));
    assert_eq!(bearer(&mut first, "b.corp.test", &of_b), 200);
    let h = req("b.corp.test", "/x", &[("authorization", &format!("Bearer {of_b}"))]);
    let adopted = second.on_request(&Request { headers: &h }, &mut || NOW + 1, &mut rng());
    assert_eq!(status(&adopted), 200, "adopted from the other worker");
    assert_eq!(bearer(&mut first, "a.corp.test", &token(&a, claims(ISS_A, "gw-a", "alice"))), 503);
}
