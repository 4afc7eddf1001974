use super::*;
use crate::jwt::alg::Alg;
use crate::jwt::jwks::KeySetError;
use crate::testutil::TestKey;
use crate::testutil::{discovery_fetch, jwks_fetch};
use serde_json::json;

const ISS: &str = "http://127.0.0.1:8180/realms/demo";
const DISC: &str = "/realms/demo/.well-known/openid-configuration";

/// A key manager for this key source (`provider` members: `jwksUri`, `jwks`, or none for
/// discovery), with or without the browser flow (which needs discovery whatever the source).
fn manager(source: serde_json::Value, browser: bool) -> KeyManager {
    let mut provider = json!({"issuer": ISS, "cluster": "idp", "clientId": "gateway", "clientSecret": "s"});
    for (k, v) in source.as_object().unwrap() {
        provider[k] = v.clone();
    }
    let mut doc = json!({
        "provider": provider,
        "keys": {"refreshIntervalSeconds": 300, "unknownKidMinIntervalSeconds": 30, "retryMaxSeconds": 30}
    });
    if browser {
        doc["session"] = json!({"keys": [crate::testutil::fixtures::SESSION_KEY]});
    }
    KeyManager::new(std::rc::Rc::new(Config::parse(doc.to_string().as_bytes(), &|_| None).unwrap()), 0)
}

fn has(m: &KeyManager, kid: &str) -> bool {
    m.keys().unwrap().keys.iter().any(|k| k.kid.as_deref() == Some(kid))
}

fn discovery() -> Vec<u8> {
    json!({"issuer": ISS, "jwks_uri": "http://127.0.0.1:8180/realms/demo/protocol/openid-connect/certs"})
        .to_string()
        .into_bytes()
}

fn jwks(kid: &str) -> Vec<u8> {
    json!({"keys": [TestKey::ec(Alg::ES256).jwk(kid, Alg::ES256)]}).to_string().into_bytes()
}

fn loaded(now: u64) -> KeyManager {
    let mut m = manager(json!({}), false);
    assert_eq!(m.due(now), Some(discovery_fetch(DISC)));
    assert_eq!(
        m.on_discovery(now, Ok(&discovery())),
        Ok(Some(jwks_fetch("/realms/demo/protocol/openid-connect/certs")))
    );
    m.on_jwks(now, Ok(&jwks("k1"))).unwrap();
    m
}

#[test]
fn start_fetches_discovery_then_keys_then_waits_for_the_interval() {
    let mut m = loaded(1000);
    assert!(has(&m, "k1"));
    assert_eq!(m.due(1001), None);
    assert_eq!(m.due(1299), None);
    assert_eq!(m.due(1300), Some(discovery_fetch(DISC)));
    assert_eq!(m.due(1300), None, "one fetch in flight at a time");
}

#[test]
fn backoff_doubles_up_to_the_maximum_and_keys_survive_failures() {
    let mut m = manager(json!({}), false);
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..8 {
        assert!(m.due(now).is_some());
        assert!(m.on_discovery(now, Err(FetchError::NoAnswer)).is_err());
        delays.push(m.retry_in(now));
        assert_eq!(m.due(now + m.retry_in(now) - 1), None);
        now += m.retry_in(now);
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    assert!(m.keys().is_none());

    // Loaded, then the provider goes away: the old keys stay.
    let mut m = loaded(0);
    assert!(m.due(300).is_some());
    assert!(m.on_discovery(300, Err(FetchError::Status(503))).is_err());
    assert!(has(&m, "k1"));
    assert_eq!(m.due(300), None);
    assert!(m.due(301).is_some(), "retries with backoff, not after a full interval");
    assert!(m.on_discovery(301, Ok(&discovery())).is_ok());
    assert!(matches!(m.on_jwks(301, Ok(b"garbage")), Err(FetchError::KeySet(KeySetError::NotJson(_)))));
    assert!(has(&m, "k1"));
    assert!(m.due(302).is_none() && m.due(303).is_some());
    assert!(m.on_discovery(303, Ok(&discovery())).is_ok());
    assert_eq!(
        m.on_jwks(303, Ok(br#"{"keys": []}"#)),
        Err(FetchError::NoUsableKey(Vec::new())),
        "an empty set never replaces good keys"
    );
    assert!(has(&m, "k1"));
}

#[test]
fn discovery_of_another_issuer_is_refused() {
    let mut m = manager(json!({}), false);
    m.due(0);
    let other = json!({"issuer": "http://evil/realms/demo", "jwks_uri": "http://evil/certs"}).to_string();
    assert!(matches!(m.on_discovery(0, Ok(other.as_bytes())), Err(FetchError::Discovery(_))));
}

#[test]
fn unknown_kid_fetches_are_rate_limited() {
    let mut m = loaded(0);
    assert_eq!(m.unknown_kid(10), Some(jwks_fetch("/realms/demo/protocol/openid-connect/certs")));
    assert_eq!(m.unknown_kid(10), None, "in flight");
    assert!(m.on_jwks(11, Ok(&jwks("k2"))).unwrap().changed, "new keys");
    assert_eq!(m.unknown_kid(20), None, "rate-limited");
    assert_eq!(m.unknown_kid(39), None);
    assert!(m.unknown_kid(40).is_some());
    // Before discovery, there is no path to fetch.
    let mut fresh = manager(json!({}), false);
    assert_eq!(fresh.unknown_kid(0), None);
}

#[test]
fn fixed_path_and_inline_sources() {
    let mut m = manager(json!({"jwksUri": "http://127.0.0.1:8180/certs"}), false);
    assert_eq!(m.due(0), Some(jwks_fetch("/certs")));
    let mut m = manager(json!({"jwks": serde_json::from_slice::<serde_json::Value>(&jwks("k")).unwrap()}), false);
    assert!(m.keys().is_some());
    assert_eq!(m.due(0), None);
    assert_eq!(m.unknown_kid(0), None);

    // The browser flow needs discovery even with a fixed or inline key source.
    let mut m = manager(json!({"jwksUri": "http://127.0.0.1:8180/certs"}), true);
    assert_eq!(m.due(0), Some(discovery_fetch(DISC)));
    assert_eq!(m.on_discovery(0, Ok(&discovery())), Ok(Some(jwks_fetch("/certs"))), "the fixed path wins");
    let mut m = manager(json!({"jwks": serde_json::from_slice::<serde_json::Value>(&jwks("k")).unwrap()}), true);
    assert_eq!(m.due(0), Some(discovery_fetch(DISC)));
    assert_eq!(m.on_discovery(0, Ok(&discovery())), Ok(None), "inline keys: nothing more to fetch");
    assert!(m.discovery().is_some());
    assert_eq!(m.due(1000), None);
}

#[test]
fn snapshots_are_adopted_when_newer() {
    let mut a = loaded(100);
    let snap = {
        let mut b = loaded(200);
        b.due(500);
        b.on_discovery(500, Ok(&discovery())).unwrap();
        b.on_jwks(500, Ok(&jwks("k9"))).unwrap().snapshot
    };
    let bytes = snap.encode();
    let decoded = Snapshot::decode(&bytes).unwrap();
    assert_eq!(a.adopt(&decoded), Adopted::NewKeys);
    assert!(has(&a, "k9"));
    assert_eq!(a.adopt(&decoded), Adopted::No, "not newer");
    assert!(a.discovery().is_some());
    // A fresh VM adopts before it ever fetched, and then has nothing due.
    let mut fresh = manager(json!({}), false);
    assert_eq!(fresh.adopt(&decoded), Adopted::NewKeys);
    assert_eq!(fresh.due(501), None);
    assert_eq!(Snapshot::decode(b"junk"), None);
}
