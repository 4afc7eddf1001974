use super::*;
use crate::jwt::alg::Alg;
use crate::testutil::{TestKey, RSA_A, RSA_B};
use serde_json::json;

const ISS: &str = "http://127.0.0.1:8180/realms/demo";
const NOW: u64 = 1_800_000_000;

#[test]
fn pkce_rfc7636_appendix_b() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn golden_authorize_url() {
    let extra = vec![("kc_idp_hint".to_string(), "entra id".to_string())];
    let url = authorize_url(&AuthorizeRequest {
        endpoint: "http://127.0.0.1:8180/realms/demo/protocol/openid-connect/auth",
        client_id: "gateway",
        redirect_uri: "http://127.0.0.1:8080/oauth2/callback",
        scope: "openid profile email",
        state: "st4te",
        nonce: "n0nce",
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        extra: &extra,
    })
    .unwrap();
    assert_eq!(
        url,
        "http://127.0.0.1:8180/realms/demo/protocol/openid-connect/auth?response_type=code&client_id=gateway\
         &redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Foauth2%2Fcallback&scope=openid+profile+email&state=st4te\
         &nonce=n0nce&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\
         &kc_idp_hint=entra+id"
    );
}

#[test]
fn golden_token_requests() {
    let (body, auth) =
        token_request("c0de", "http://127.0.0.1:8080/oauth2/callback", "v", "gateway", "gateway-secret", false);
    assert_eq!(body, "grant_type=authorization_code&code=c0de&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Foauth2%2Fcallback&code_verifier=v");
    assert_eq!(auth.as_deref(), Some("Basic Z2F0ZXdheTpnYXRld2F5LXNlY3JldA=="));
    let (body, auth) = token_request("c", "r", "v", "a b", "s:e", true);
    assert_eq!(
        body,
        "grant_type=authorization_code&code=c&redirect_uri=r&code_verifier=v&client_id=a+b&client_secret=s%3Ae"
    );
    assert_eq!(auth, None);
    let (_, auth) = token_request("c", "r", "v", "a b", "s:e", false);
    assert_eq!(auth.as_deref(), Some(format!("Basic {}", STANDARD.encode("a+b:s%3Ae")).as_str()));
    let (body, _) = refresh_request("rt", "gateway", "s", true);
    assert_eq!(body, "grant_type=refresh_token&refresh_token=rt&client_id=gateway&client_secret=s");
}

#[test]
fn token_responses() {
    let r = TokenResponse::parse(
        br#"{"access_token":"a","id_token":"i","refresh_token":"r","expires_in":300,"token_type":"Bearer","x":1}"#,
    )
    .unwrap();
    assert_eq!(r.id_token.as_deref(), Some("i"));
    assert!(TokenResponse::parse(br#"{"access_token":"a","token_type":"mac"}"#).is_err());
    assert!(TokenResponse::parse(b"<html>").is_err());
    assert!(TokenResponse::parse(br#"{"id_token":"i"}"#).is_err());
    assert_eq!(
        token_error(br#"{"error":"invalid_grant","error_description":"Code not valid"}"#).as_deref(),
        Some("invalid_grant")
    );
    assert_eq!(token_error(br#"{"error":"<script>"}"#), None);
    assert_eq!(token_error(b"oops"), None);
}

fn id_claims() -> Value {
    json!({"iss": ISS, "sub": "a-1", "aud": "gateway", "azp": "gateway", "exp": NOW + 300, "iat": NOW, "nonce": "n0nce"})
}

fn check(claims: &Value, signer: &TestKey) -> Result<Value, IdTokenError> {
    let key = TestKey::rsa(RSA_A);
    let keys = KeySet::from_value(&json!({"keys": [key.jwk("k1", Alg::RS256)]})).unwrap();
    let token = signer.mint(Alg::RS256, &json!({"alg": "RS256", "kid": "k1"}), claims);
    let (issuers, audiences) = ([ISS.to_string()], ["gateway".to_string()]);
    let expect = Expectations { issuers: &issuers, audiences: &audiences, algorithms: &Alg::ALL, leeway_secs: 30 };
    validate_id_token(Some(&token), &keys, &expect, Some("n0nce"), NOW)
}

#[test]
fn id_token_rules() {
    let good = TestKey::rsa(RSA_A);
    assert!(check(&id_claims(), &good).is_ok());
    let with = |k: &str, v: Value| {
        let mut c = id_claims();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = id_claims();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    assert!(check(&with("aud", json!(["other", "gateway"])), &good).is_ok());
    assert!(check(&without("azp"), &good).is_ok());
    let cases = [
        (check(&id_claims(), &TestKey::rsa(RSA_B)), IdTokenError::Jwt(JwtError::BadSignature)),
        (check(&with("iss", json!("http://evil/realms/demo")), &good), IdTokenError::Jwt(JwtError::IssuerNotAccepted)),
        (check(&with("aud", json!("other")), &good), IdTokenError::AudienceMissingClient),
        (check(&with("aud", json!("account")), &good), IdTokenError::AudienceMissingClient),
        (check(&with("azp", json!("other")), &good), IdTokenError::AzpMismatch),
        (check(&with("nonce", json!("other")), &good), IdTokenError::NonceMismatch),
        (check(&without("nonce"), &good), IdTokenError::NonceMismatch),
        (check(&without("iat"), &good), IdTokenError::MissingIssuedAt),
        (check(&without("sub"), &good), IdTokenError::MissingSubject),
        (check(&with("sub", json!("")), &good), IdTokenError::MissingSubject),
        (check(&with("sub", json!(42)), &good), IdTokenError::MissingSubject),
        (check(&with("iat", json!(NOW + 3600)), &good), IdTokenError::Jwt(JwtError::IssuedInFuture)),
        (check(&with("exp", json!(NOW - 3600)), &good), IdTokenError::Jwt(JwtError::Expired)),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(want), "case {i}");
    }
    let keys = KeySet::default();
    let audiences = ["gateway".to_string()];
    let expect = Expectations { issuers: &[], audiences: &audiences, algorithms: &Alg::ALL, leeway_secs: 30 };
    assert_eq!(validate_id_token(None, &keys, &expect, Some("n"), NOW), Err(IdTokenError::Missing));
}

#[test]
fn return_paths_never_leave_the_host() {
    for ok in ["/", "/echo", "/echo?a=1&b=%2F", "/a/b/../c", "/%2F%2Fevil.com", "/path;x"] {
        assert_eq!(safe_return_path(ok), ok, "{ok}");
    }
    for bad in [
        "//evil.com",
        "//evil.com/x",
        "/\\evil.com",
        "/\\/evil.com",
        "https://evil.com",
        "https:evil.com",
        "evil.com",
        "",
        "/\t/evil.com",
        "/\r\nSet-Cookie: x=1",
        "/a b",
        "/caf\u{e9}",
        "\\\\evil.com",
        "/ /evil",
        "javascript:alert(1)",
    ] {
        assert_eq!(safe_return_path(bad), "/", "{bad:?}");
    }
    assert_eq!(safe_return_path(&format!("/{}", "a".repeat(3000))), "/");
}

#[test]
fn absolute_return_urls_only_to_allowed_hosts() {
    let allowed = vec![".example.com".to_string(), "partner.test".to_string()];
    let ok = |t: &str, want: &str| {
        assert_eq!(allowed_return_url(t, "auth.example.com", &allowed).as_deref(), Some(want), "{t}")
    };
    ok("https://app.example.com/x?y=1", "https://app.example.com/x?y=1");
    ok("https://APP.Example.com/x", "https://app.example.com/x");
    ok("https://partner.test/", "https://partner.test/");
    ok("http://auth.example.com:8443/a", "http://auth.example.com:8443/a");
    ok("https://app.example.com//evil.com/", "https://app.example.com/");
    for bad in [
        "https://evil.com/",
        "https://example.com.evil.com/",
        "https://evilexample.com/",
        "https://example.com/",
        "https://evil.com@app.example.com/",
        "https://app.example.com@evil.com/",
        "https://user:pw@app.example.com/",
        "https:evil.com",
        "//app.example.com/x",
        "/x",
        "javascript:alert(1)",
        "ftp://app.example.com/",
        "https://ex\u{0430}mple.com/",
        "https://app.ex\u{0430}mple.com/",
        "https://sub.partner.test/",
        "",
    ] {
        assert_eq!(allowed_return_url(bad, "auth.example.com", &allowed), None, "{bad:?}");
    }
    // CR/LF cannot survive into the Location header.
    let got =
        allowed_return_url("https://app.example.com/a\r\nSet-Cookie:%20x=1", "auth.example.com", &allowed).unwrap();
    assert!(!got.contains('\r') && !got.contains('\n'), "{got:?}");
}

#[test]
fn token_answers_are_told_apart_once_for_login_and_refresh() {
    let ok = br#"{"access_token": "a", "token_type": "Bearer", "id_token": "x.y.z"}"#;
    assert!(matches!(TokenAnswer::classify(Some(200), ok), TokenAnswer::Tokens(t) if t.access_token == "a"));
    assert!(matches!(TokenAnswer::classify(None, b""), TokenAnswer::Unavailable(_)));
    for code in [500, 502, 503, 504, 599] {
        assert!(matches!(TokenAnswer::classify(Some(code), b"<html>"), TokenAnswer::Unavailable(_)), "{code}");
    }
    assert_eq!(
        TokenAnswer::classify(Some(400), br#"{"error": "invalid_grant"}"#),
        TokenAnswer::Refused { status: 400, error: "invalid_grant".into() }
    );
    assert_eq!(
        TokenAnswer::classify(Some(401), br#"{"error": "bad<script>"}"#),
        TokenAnswer::Refused { status: 401, error: "-".into() },
        "an error code outside RFC 6749's characters is never shown"
    );
    assert_eq!(TokenAnswer::classify(Some(302), b""), TokenAnswer::Refused { status: 302, error: "-".into() });
    for body in [&b"not json"[..], br#"{"access_token": "a", "token_type": "mac"}"#, br#"{"token_type": "Bearer"}"#] {
        assert!(matches!(TokenAnswer::classify(Some(200), body), TokenAnswer::Unreadable(_)));
    }
}

#[test]
fn token_answers_say_whether_a_configuration_must_change() {
    use crate::callout::Class;
    let problem = |status, body: &[u8]| TokenAnswer::classify(status, body).problem();
    assert_eq!(problem(Some(200), br#"{"access_token": "a"}"#), None);
    assert_eq!(problem(None, b""), Some(Class::Passing));
    assert_eq!(problem(Some(503), b""), Some(Class::Passing));
    assert_eq!(problem(Some(400), br#"{"error": "invalid_grant"}"#), None, "the user's grant, not the setup");
    assert_eq!(problem(Some(401), br#"{"error": "invalid_client"}"#), Some(Class::Configuration));
    assert_eq!(problem(Some(404), b"<html>"), Some(Class::Configuration));
    assert_eq!(problem(Some(200), b"<html>"), Some(Class::Configuration));
    assert_eq!(
        TokenAnswer::classify(Some(200), br#"{"access_token": "a", "token_type": "mac"}"#),
        TokenAnswer::Unreadable(TokenResponseError::NotBearer)
    );
    assert_eq!(
        TokenAnswer::classify(Some(401), br#"{"error": "invalid_client"}"#).to_string(),
        "HTTP 401 (invalid_client)"
    );
}
