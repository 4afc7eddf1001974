use super::jwks::{KeyError, KeySetError};
use super::*;
use crate::testutil::{b64, hs256, TestKey, RSA_A, RSA_B};
use serde_json::json;

const ISS: &str = "http://127.0.0.1:8180/realms/demo";
const NOW: u64 = 1_800_000_000;

struct Fixture {
    rsa: TestKey,
    rsa_b: TestKey,
    es256: TestKey,
    es384: TestKey,
    ed: TestKey,
    keys: KeySet,
    issuers: Vec<String>,
    audiences: Vec<String>,
}

fn fixture() -> Fixture {
    let rsa = TestKey::rsa(RSA_A);
    let rsa_b = TestKey::rsa(RSA_B);
    let es256 = TestKey::ec(Alg::ES256);
    let es384 = TestKey::ec(Alg::ES384);
    let ed = TestKey::ed();
    let jwks = json!({"keys": [
        rsa.jwk("rsa1", Alg::RS256),
        rsa.jwk("rsa1-ps", Alg::PS256),
        rsa.jwk("rsa1-rs384", Alg::RS384),
        rsa.jwk("rsa1-rs512", Alg::RS512),
        rsa.jwk("rsa1-ps384", Alg::PS384),
        rsa.jwk("rsa1-ps512", Alg::PS512),
        es256.jwk("ec1", Alg::ES256),
        es384.jwk("ec2", Alg::ES384),
        ed.jwk("ed1", Alg::EdDSA),
        {"kty": "RSA", "use": "enc", "kid": "enc1", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
    ]});
    let keys = KeySet::from_value(&jwks).unwrap();
    Fixture {
        rsa,
        rsa_b,
        es256,
        es384,
        ed,
        keys,
        issuers: vec![ISS.into()],
        audiences: vec!["api".into(), "gateway".into()],
    }
}

impl Fixture {
    fn expect(&self) -> Expectations<'_> {
        Expectations { issuers: &self.issuers, audiences: &self.audiences, algorithms: &Alg::ALL, leeway_secs: 30 }
    }

    fn claims(&self) -> Value {
        json!({"iss": ISS, "sub": "alice-id", "aud": "account", "azp": "api",
               "exp": NOW + 300, "iat": NOW - 10, "preferred_username": "alice"})
    }

    fn token_with(&self, claims: Value) -> String {
        self.rsa.mint(Alg::RS256, &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa1"}), &claims)
    }

    fn good(&self) -> String {
        self.token_with(self.claims())
    }

    fn check(&self, token: &str) -> Result<Verified, JwtError> {
        verify(token, &self.keys, &self.expect(), NOW)
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[test]
fn accepts_every_algorithm_with_its_key() {
    let f = fixture();
    let cases = [
        (&f.rsa, Alg::RS256, "rsa1"),
        (&f.rsa, Alg::RS384, "rsa1-rs384"),
        (&f.rsa, Alg::RS512, "rsa1-rs512"),
        (&f.rsa, Alg::PS256, "rsa1-ps"),
        (&f.rsa, Alg::PS384, "rsa1-ps384"),
        (&f.rsa, Alg::PS512, "rsa1-ps512"),
        (&f.es256, Alg::ES256, "ec1"),
        (&f.es384, Alg::ES384, "ec2"),
        (&f.ed, Alg::EdDSA, "ed1"),
    ];
    for (key, alg, kid) in cases {
        let token = key.mint(alg, &json!({"alg": alg.name(), "kid": kid}), &f.claims());
        let verified = f.check(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.claims["preferred_username"], "alice");
        assert_eq!(verified.exp, NOW + 300);
        assert_eq!(verified.claims["exp"], json!(NOW + 300), "time claims stay mappable");
    }
}

#[test]
fn enc_keys_are_skipped_not_fatal() {
    let f = fixture();
    assert_eq!(f.keys.keys.len(), 9);
    assert_eq!(f.keys.skipped.len(), 1);
    assert_eq!(f.keys.skipped[0].kid.as_deref(), Some("enc1"), "{:?}", f.keys.skipped);
    assert_eq!(f.keys.skipped[0].reason, KeyError::NotForSignatures("enc".into()));
    assert!(f.keys.skipped[0].to_string().contains("enc1"));
}

#[test]
fn without_kid_each_key_of_the_algorithm_is_tried() {
    let f = fixture();
    let token = f.rsa.mint(Alg::RS256, &json!({"alg": "RS256"}), &f.claims());
    assert!(f.check(&token).is_ok());
    let foreign = f.rsa_b.mint(Alg::RS256, &json!({"alg": "RS256"}), &f.claims());
    assert_eq!(f.check(&foreign), Err(JwtError::BadSignature));
    let eddsa = f.ed.mint(Alg::EdDSA, &json!({"alg": "EdDSA"}), &f.claims());
    assert!(f.check(&eddsa).is_ok());
}

#[test]
fn every_flipped_signature_bit_is_rejected() {
    let f = fixture();
    for (key, alg, kid) in [(&f.rsa, Alg::RS256, "rsa1"), (&f.es256, Alg::ES256, "ec1"), (&f.ed, Alg::EdDSA, "ed1")] {
        let token = key.mint(alg, &json!({"alg": alg.name(), "kid": kid}), &f.claims());
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        for bit in 0..sig.len() * 8 {
            let mut bad = sig.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let forged = format!("{input}.{}", b64(&bad));
            assert_eq!(f.check(&forged), Err(JwtError::BadSignature), "{alg} bit {bit}");
        }
    }
}

#[test]
fn every_flipped_payload_bit_is_rejected() {
    let f = fixture();
    let token = f.good();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let payload = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1]).unwrap();
    for bit in 0..payload.len() * 8 {
        let mut bad = payload.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        parts[1] = b64(&bad);
        let forged = parts.join(".");
        assert!(f.check(&forged).is_err(), "payload bit {bit} accepted");
    }
}

#[test]
fn alg_none_in_any_spelling_is_rejected() {
    let f = fixture();
    let payload = b64(f.claims().to_string().as_bytes());
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": none, "kid": "rsa1"}).to_string().as_bytes());
        for sig in ["", "AAAA"] {
            let token = format!("{header}.{payload}.{sig}");
            assert_eq!(f.check(&token), Err(JwtError::AlgorithmNotAllowed), "{none} {sig:?}");
        }
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_rejected() {
    let f = fixture();
    let jwk = f.rsa.jwk("rsa1", Alg::RS256);
    let header = b64(json!({"alg": "HS256", "kid": "rsa1"}).to_string().as_bytes());
    let payload = b64(f.claims().to_string().as_bytes());
    let input = format!("{header}.{payload}");
    // Try the usual "secrets" an attacker would use: the JWK text and the raw modulus.
    for secret in [jwk.to_string().into_bytes(), jwk["n"].as_str().unwrap().as_bytes().to_vec()] {
        let token = format!("{input}.{}", b64(&hs256(&secret, input.as_bytes())));
        assert_eq!(f.check(&token), Err(JwtError::AlgorithmNotAllowed));
    }
}

#[test]
fn algorithm_must_match_the_keys_alg() {
    let f = fixture();
    // A valid PS256 signature, but naming the key registered for RS256.
    let token = f.rsa.mint(Alg::PS256, &json!({"alg": "PS256", "kid": "rsa1"}), &f.claims());
    assert_eq!(f.check(&token), Err(JwtError::KeyAlgorithmMismatch));
    // A kid naming a key of another type.
    let token = f.es256.mint(Alg::ES256, &json!({"alg": "ES256", "kid": "rsa1"}), &f.claims());
    assert_eq!(f.check(&token), Err(JwtError::KeyAlgorithmMismatch));
}

#[test]
fn algorithms_outside_the_allow_list_are_rejected() {
    let f = fixture();
    let only_rs256 = [Alg::RS256];
    let expect = Expectations { algorithms: &only_rs256, ..f.expect() };
    let token = f.es256.mint(Alg::ES256, &json!({"alg": "ES256", "kid": "ec1"}), &f.claims());
    assert_eq!(verify(&token, &f.keys, &expect, NOW), Err(JwtError::AlgorithmNotAllowed));
    assert!(verify(&f.good(), &f.keys, &expect, NOW).is_ok());
}

#[test]
fn unknown_kid_is_reported_as_such() {
    let f = fixture();
    let token = f.rsa_b.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "rotated"}), &f.claims());
    assert_eq!(f.check(&token), Err(JwtError::UnknownKeyId));
}

#[test]
fn header_key_urls_and_embedded_keys_are_ignored() {
    let f = fixture();
    // Signed by a key we do not trust, which the header offers in every way it can.
    let attacker = f.rsa_b.jwk("evil", Alg::RS256);
    let header = json!({"alg": "RS256", "jwk": attacker, "jku": "http://evil/jwks", "x5u": "http://evil/cert"});
    let token = f.rsa_b.mint(Alg::RS256, &header, &f.claims());
    assert_eq!(f.check(&token), Err(JwtError::BadSignature));
}

#[test]
fn crit_headers_are_rejected() {
    let f = fixture();
    let token = f.rsa.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"], "exp": 1}), &f.claims());
    assert_eq!(f.check(&token), Err(JwtError::CriticalHeader));
}

#[test]
fn time_claims_at_the_leeway_edges() {
    let f = fixture();
    let c = f.claims();
    // exp: valid strictly before exp + leeway.
    assert!(f.check(&f.token_with(with(c.clone(), "exp", json!(NOW - 29)))).is_ok());
    assert_eq!(f.check(&f.token_with(with(c.clone(), "exp", json!(NOW - 30)))), Err(JwtError::Expired));
    assert_eq!(f.check(&f.token_with(with(c.clone(), "exp", json!(NOW - 3600)))), Err(JwtError::Expired));
    // nbf: valid from nbf - leeway.
    assert!(f.check(&f.token_with(with(c.clone(), "nbf", json!(NOW + 30)))).is_ok());
    assert_eq!(f.check(&f.token_with(with(c.clone(), "nbf", json!(NOW + 31)))), Err(JwtError::NotYetValid));
    // iat: not after now + leeway.
    assert!(f.check(&f.token_with(with(c.clone(), "iat", json!(NOW + 30)))).is_ok());
    assert_eq!(f.check(&f.token_with(with(c.clone(), "iat", json!(NOW + 31)))), Err(JwtError::IssuedInFuture));
    // exp is required.
    assert_eq!(f.check(&f.token_with(without(c.clone(), "exp"))), Err(JwtError::MissingExpiry));
    // Time claims of the wrong type are malformed, not ignored.
    assert_eq!(f.check(&f.token_with(with(c, "exp", json!("tomorrow")))), Err(JwtError::Malformed));
}

#[test]
fn issuer_must_match_exactly() {
    let f = fixture();
    let c = f.claims();
    for bad in [
        json!("http://127.0.0.1:8180/realms/demo/"),
        json!("HTTP://127.0.0.1:8180/realms/demo"),
        json!("http://127.0.0.1:8180/realms/other"),
        json!([ISS]),
        json!(null),
    ] {
        assert_eq!(
            f.check(&f.token_with(with(c.clone(), "iss", bad.clone()))),
            Err(JwtError::IssuerNotAccepted),
            "{bad}"
        );
    }
    assert_eq!(f.check(&f.token_with(without(c, "iss"))), Err(JwtError::IssuerNotAccepted));
}

#[test]
fn extra_issuers_are_accepted() {
    let f = fixture();
    let issuers = vec![ISS.to_string(), "https://other.example".to_string()];
    let expect = Expectations { issuers: &issuers, ..f.expect() };
    let token = f.token_with(with(f.claims(), "iss", json!("https://other.example")));
    assert!(verify(&token, &f.keys, &expect, NOW).is_ok());
    assert_eq!(f.check(&token), Err(JwtError::IssuerNotAccepted));
}

#[test]
fn audience_rules() {
    let f = fixture();
    let c = without(without(f.claims(), "aud"), "azp");
    let ok = |claims: Value| f.check(&f.token_with(claims)).is_ok();
    assert!(ok(with(c.clone(), "aud", json!("api"))));
    assert!(ok(with(c.clone(), "aud", json!(["account", "gateway"]))));
    assert!(ok(with(with(c.clone(), "aud", json!("account")), "azp", json!("api"))), "azp as audience (Keycloak)");
    assert!(!ok(with(c.clone(), "aud", json!("account"))));
    assert!(!ok(with(c.clone(), "aud", json!(["account", "API"]))), "case matters");
    assert!(!ok(with(c.clone(), "aud", json!("api/"))), "trailing slash matters");
    assert!(!ok(with(c.clone(), "aud", json!([["api"]]))));
    assert!(!ok(with(c.clone(), "azp", json!("other"))));
    assert!(!ok(c), "no aud and no azp");
}

#[test]
fn shapes_that_are_not_a_jws_are_rejected() {
    let f = fixture();
    let good = f.good();
    let (input, _) = good.rsplit_once('.').unwrap();
    let cases = [
        ("".to_string(), JwtError::Malformed),
        ("garbage".to_string(), JwtError::Malformed),
        ("a.b".to_string(), JwtError::Malformed),
        ("a.b.c".to_string(), JwtError::Malformed),
        (format!("{input}."), JwtError::BadSignature),
        (format!("{good}.x"), JwtError::Malformed),
        ("eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d".to_string(), JwtError::Encrypted),
        (format!("{}.{}", good, "x".repeat(MAX_TOKEN_BYTES)), JwtError::TooLarge),
    ];
    for (token, expected) in cases {
        assert_eq!(f.check(&token), Err(expected), "{:.40}", token);
    }
}

#[test]
fn payload_swapped_between_tokens_is_rejected() {
    let f = fixture();
    let a = f.good();
    let b = f.token_with(with(f.claims(), "preferred_username", json!("admin")));
    let pa: Vec<&str> = a.split('.').collect();
    let pb: Vec<&str> = b.split('.').collect();
    let swapped = format!("{}.{}.{}", pa[0], pb[1], pa[2]);
    assert_eq!(f.check(&swapped), Err(JwtError::BadSignature));
}

#[test]
fn weak_and_malformed_keys_are_skipped() {
    let set = KeySet::from_value(&json!({"keys": [
        {"kty": "RSA", "kid": "weak", "alg": "RS256", "n": b64(&[0xc3; 128]), "e": "AQAB"},
        {"kty": "RSA", "kid": "noalg", "n": "AQAB", "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": "c2VjcmV0"},
        {"kty": "EC", "kid": "badcrv", "alg": "ES256", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "EC", "kid": "short", "alg": "ES256", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "ops", "alg": "RS256", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "notb64", "alg": "RS256", "n": "!!", "e": "AQAB"},
        {"kty": 7},
        "not an object",
        {"kty": "EC", "kid": "offcurve", "alg": "ES256", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
        {"kty": "RSA", "kid": "even", "alg": "RS256", "n": b64(&[0xc2; 256]), "e": "AQAB"},
    ]}))
    .unwrap();
    assert!(set.keys.is_empty(), "{:?}", set.keys);
    assert_eq!(set.skipped.len(), 11, "{:?}", set.skipped);
    assert_eq!(set.skipped[9].reason, KeyError::NotOnCurve, "{:?}", set.skipped[9]);
    assert_eq!(set.skipped[10].reason, KeyError::RsaUnusable, "{:?}", set.skipped[10]);
    assert!(set.skipped[10].to_string().contains("RSA key unusable"));
    assert!(set.skipped[0].to_string().contains("below 2048"));
    assert_eq!(set.skipped[1].reason, KeyError::Missing("alg"));
}

#[test]
fn es256_keys_past_the_prepared_ones_verify_without_a_table() {
    let f = fixture();
    let keys: Vec<TestKey> = (0..jwks::MAX_PREPARED_ES256 + 2).map(|_| TestKey::ec(Alg::ES256)).collect();
    let set = KeySet::from_value(&json!({"keys": keys.iter().enumerate().map(|(i, k)| k.jwk(&format!("ec{i}"), Alg::ES256)).collect::<Vec<_>>()}))
        .unwrap();
    let built = |set: &KeySet| {
        set.keys
            .iter()
            .filter(|k| matches!(&k.key, alg::PublicKey::Ec { prepared: Some(p), .. } if p.is_prepared()))
            .count()
    };
    let preparable = set.keys.iter().filter(|k| matches!(&k.key, alg::PublicKey::Ec { prepared: Some(_), .. })).count();
    assert_eq!(preparable, jwks::MAX_PREPARED_ES256);
    assert_eq!(built(&set), 0, "tables are built on first use, not when the set is loaded");
    for (i, k) in keys.iter().enumerate() {
        let token = k.mint(Alg::ES256, &json!({"alg": "ES256", "kid": format!("ec{i}")}), &f.claims());
        assert!(verify(&token, &set, &f.expect(), NOW).is_ok(), "key {i}");
        // The other key's signature does not verify under this kid.
        let other =
            keys[(i + 1) % keys.len()].mint(Alg::ES256, &json!({"alg": "ES256", "kid": format!("ec{i}")}), &f.claims());
        assert_eq!(verify(&other, &set, &f.expect(), NOW).unwrap_err(), JwtError::BadSignature, "key {i}");
    }
    assert_eq!(built(&set), jwks::MAX_PREPARED_ES256);
}

#[test]
fn key_sets_that_are_not_sets_are_errors() {
    assert!(matches!(KeySet::parse(b"not json"), Err(KeySetError::NotJson(_))));
    assert_eq!(KeySet::parse(b"{}"), Err(KeySetError::NoKeys));
    assert!(KeySet::parse(b"{\"keys\": {}}").is_err());
    assert!(KeySet::parse(b"[]").is_err());
    assert_eq!(KeySet::parse(b"{\"keys\": []}").unwrap().keys.len(), 0);
}

#[test]
fn huge_key_sets_are_bounded() {
    let f = fixture();
    let one = f.es256.jwk("k", Alg::ES256);
    let doc = json!({"keys": vec![one; jwks::MAX_KEYS + 10]});
    let set = KeySet::from_value(&doc).unwrap();
    assert_eq!(set.keys.len(), jwks::MAX_KEYS);
}

/// The tokens and keys of Envoy's own jwt_authn tests (testdata/envoy-jwt-authn.json; origin
/// and licence in testdata/README.md).
#[test]
fn envoy_jwt_authn_conformance() {
    let doc: Value = serde_json::from_str(include_str!("testdata/envoy-jwt-authn.json")).unwrap();
    let issuers = vec![doc["provider"]["issuer"].as_str().unwrap().to_string()];
    let audiences: Vec<String> =
        doc["provider"]["audiences"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let expect = Expectations { issuers: &issuers, audiences: &audiences, algorithms: &Alg::ALL, leeway_secs: 60 };
    // The tokens were minted long ago and expire in 2033.
    let now = 1_700_000_000;
    let mut seen = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let keys_name = case.get("keys").and_then(Value::as_str).unwrap_or("jwks");
        let keys = KeySet::from_value(&doc[keys_name]).unwrap();
        let result = verify(case["token"].as_str().unwrap(), &keys, &expect, now);
        match case["expect"].as_str().unwrap() {
            "accept" => {
                let verified = result.unwrap_or_else(|e| panic!("{name}: rejected: {e}"));
                for (path, want) in case["claims"].as_object().unwrap() {
                    let got = crate::claims::ClaimPath::parse(path).unwrap().lookup(&verified.claims).cloned();
                    assert_eq!(got.as_ref(), Some(want), "{name}: claim {path}");
                }
            }
            _ => assert!(result.is_err(), "{name}: accepted"),
        }
        seen += 1;
    }
    assert_eq!(seen, 10);
}
