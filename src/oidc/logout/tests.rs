use super::*;
use crate::jwt::alg::Alg;
use crate::testutil::{TestKey, RSA_A, RSA_B};
use serde_json::json;

const ISS: &str = "http://127.0.0.1:8180/realms/demo";
const NOW: u64 = 1_800_000_000;

/// A logout token as Keycloak 26 makes one (`initLogoutToken`), for client `gateway`.
fn claims() -> Value {
    json!({"iss": ISS, "aud": "gateway", "sub": "a-1", "sid": "s-1", "typ": "Logout", "iat": NOW, "exp": NOW + 120,
           "jti": "j-1", "events": {BACKCHANNEL_LOGOUT_EVENT: {}}})
}

fn check(claims: &Value, signer: &TestKey) -> Result<Logout, LogoutError> {
    let key = TestKey::rsa(RSA_A);
    let keys = KeySet::from_value(&json!({"keys": [key.jwk("k1", Alg::RS256)]})).unwrap();
    let token = signer.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), claims);
    let (issuers, audiences) = ([ISS.to_string()], ["gateway".to_string()]);
    let expect = Expectations { issuers: &issuers, audiences: &audiences, algorithms: &Alg::ALL, leeway_secs: 30 };
    validate(&token, &keys, &expect, "gateway", NOW)
}

#[test]
fn logout_token_rules() {
    let good = TestKey::rsa(RSA_A);
    assert_eq!(
        check(&claims(), &good),
        Ok(Logout { sid: Some("s-1".into()), sub: Some("a-1".into()), jti: "j-1".into(), iat: NOW, exp: NOW + 120 })
    );
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    // sid alone, sub alone, aud as a list.
    assert!(check(&without("sub"), &good).is_ok_and(|l| l.sub.is_none() && l.sid.is_some()));
    assert!(check(&without("sid"), &good).is_ok_and(|l| l.sid.is_none() && l.sub.is_some()));
    assert!(check(&with("aud", json!(["other", "gateway"])), &good).is_ok());
    let mut access = claims(); // an access token of this client: azp, no events
    access["aud"] = json!("account");
    access["azp"] = json!("gateway");
    let no_subject = {
        let mut c = without("sid");
        c.as_object_mut().unwrap().remove("sub");
        c
    };
    let cases = [
        (check(&claims(), &TestKey::rsa(RSA_B)), LogoutError::Jwt(JwtError::BadSignature)),
        (check(&with("iss", json!("http://evil/realms/demo")), &good), LogoutError::Jwt(JwtError::IssuerNotAccepted)),
        (check(&with("aud", json!("other")), &good), LogoutError::Jwt(JwtError::AudienceNotAccepted)),
        (check(&access, &good), LogoutError::Audience),
        (check(&with("exp", json!(NOW - 3600)), &good), LogoutError::Jwt(JwtError::Expired)),
        (check(&without("exp"), &good), LogoutError::Jwt(JwtError::MissingExpiry)),
        (check(&with("iat", json!(NOW + 3600)), &good), LogoutError::Jwt(JwtError::IssuedInFuture)),
        (check(&without("iat"), &good), LogoutError::NoIssuedAt),
        (check(&without("jti"), &good), LogoutError::NoTokenId),
        (check(&with("jti", json!("")), &good), LogoutError::NoTokenId),
        (check(&with("jti", json!("x".repeat(300))), &good), LogoutError::NoTokenId),
        (check(&without("events"), &good), LogoutError::NotALogoutToken),
        (
            check(&with("events", json!({"http://schemas.openid.net/event/other": {}})), &good),
            LogoutError::NotALogoutToken,
        ),
        (check(&with("events", json!({BACKCHANNEL_LOGOUT_EVENT: "yes"})), &good), LogoutError::NotALogoutToken),
        (check(&with("events", json!([BACKCHANNEL_LOGOUT_EVENT])), &good), LogoutError::NotALogoutToken),
        (check(&with("nonce", json!("n")), &good), LogoutError::Nonce),
        (check(&no_subject, &good), LogoutError::NoSubject),
        (
            check(
                &{
                    let mut c = no_subject.clone();
                    c["sid"] = json!(42);
                    c
                },
                &good,
            ),
            LogoutError::NoSubject,
        ),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(want), "case {i}");
    }
}
