//! The authorization-code flow's pure parts: PKCE (RFC 7636), the authorization request, the
//! token request and response (RFC 6749 §4.1), ID-token validation (OpenID Connect Core
//! §3.1.3.7), and where to send the user afterwards (no open redirect).

use super::Class;
use crate::jwt::{self, jwks::KeySet, Expectations, JwtError};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// The S256 code challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// What a login attempt remembers, sealed in its own cookie until the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// `state` sent to the provider (also names the cookie).
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to go after login: a path on this host.
    pub return_to: String,
    pub redirect_uri: String,
    /// Unix seconds after which the attempt is void.
    pub exp: u64,
    /// The issuer of the provider the browser was sent to: the callback redeems the code there
    /// (an attempt without one is void).
    #[serde(default)]
    pub iss: String,
}

/// The parameters of the authorization request.
pub struct AuthorizeRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
    pub extra: &'a [(String, String)],
}

/// The authorization URL (RFC 6749 §4.1.1, OIDC Core §3.1.2.1, RFC 7636 §4.3).
pub fn authorize_url(r: &AuthorizeRequest<'_>) -> Option<String> {
    let mut url = url::Url::parse(r.endpoint).ok()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", r.client_id)
            .append_pair("redirect_uri", r.redirect_uri)
            .append_pair("scope", r.scope)
            .append_pair("state", r.state)
            .append_pair("nonce", r.nonce)
            .append_pair("code_challenge", r.code_challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in r.extra {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

/// The token request for a code: the form body, and the `Authorization` header when the client
/// authenticates with HTTP Basic (RFC 6749 §2.3.1: id and secret are form-encoded first).
pub fn token_request(
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    client_id: &str,
    client_secret: &str,
    secret_in_body: bool,
) -> (String, Option<String>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", verifier);
    let auth = client_auth(&mut form, client_id, client_secret, secret_in_body);
    (form.finish(), auth)
}

/// The refresh request (RFC 6749 §6).
pub fn refresh_request(
    refresh_token: &str,
    client_id: &str,
    client_secret: &str,
    secret_in_body: bool,
) -> (String, Option<String>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token").append_pair("refresh_token", refresh_token);
    let auth = client_auth(&mut form, client_id, client_secret, secret_in_body);
    (form.finish(), auth)
}

fn client_auth(
    form: &mut url::form_urlencoded::Serializer<'_, String>,
    client_id: &str,
    client_secret: &str,
    secret_in_body: bool,
) -> Option<String> {
    if secret_in_body {
        form.append_pair("client_id", client_id).append_pair("client_secret", client_secret);
        None
    } else {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        Some(format!("Basic {}", STANDARD.encode(format!("{}:{}", enc(client_id), enc(client_secret)))))
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
}

/// Why a 200 answer of the token endpoint is not a token response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenResponseError {
    /// Not JSON with an `access_token` (an HTML page: the endpoint is not the token endpoint).
    Shape,
    /// A `token_type` other than `Bearer` (RFC 6750).
    NotBearer,
}

impl fmt::Display for TokenResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenResponseError::Shape => "token response is not valid JSON of the expected shape",
            TokenResponseError::NotBearer => "token response has a token_type other than Bearer",
        })
    }
}

impl TokenResponse {
    pub fn parse(body: &[u8]) -> Result<TokenResponse, TokenResponseError> {
        let r: TokenResponse = serde_json::from_slice(body).map_err(|_| TokenResponseError::Shape)?;
        if !r.token_type.as_deref().unwrap_or("Bearer").eq_ignore_ascii_case("bearer") {
            return Err(TokenResponseError::NotBearer);
        }
        Ok(r)
    }
}

/// The `error` of a token endpoint error answer (RFC 6749 §5.2), if it has one.
pub fn token_error(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?.as_str()?;
    // Only the registered error-code characters (RFC 6749 §5.2): safe to show and log.
    e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_').then(|| e.to_string())
}

/// What the token endpoint answered, told apart the same way for a login's code and a session's
/// refresh token (RFC 6749 §5.1, §5.2).
#[derive(Debug, Clone, PartialEq)]
pub enum TokenAnswer {
    /// No answer (`None`: time-out, connection failure), or a 5xx — which includes Envoy's own
    /// 503 when it cannot reach the provider (a callout gets that as an answer). Transient.
    Unavailable(Option<u32>),
    /// Any other status but 200: the grant was refused, with its `error` code (`-` if none).
    Refused {
        status: u32,
        error: String,
    },
    /// 200, but not a token response.
    Unreadable(TokenResponseError),
    Tokens(TokenResponse),
}

impl TokenAnswer {
    pub fn classify(status: Option<u32>, body: &[u8]) -> TokenAnswer {
        match status {
            None => TokenAnswer::Unavailable(None),
            Some(code) if code >= 500 => TokenAnswer::Unavailable(Some(code)),
            Some(200) => match TokenResponse::parse(body) {
                Ok(t) => TokenAnswer::Tokens(t),
                Err(e) => TokenAnswer::Unreadable(e),
            },
            Some(code) => TokenAnswer::Refused { status: code, error: token_error(body).unwrap_or_else(|| "-".into()) },
        }
    }

    /// Whether this is a provider problem, and of which class: the provider down passes; an
    /// answer that says the client is not set up right (RFC 6749 §5.2 `invalid_client`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`; or an error without a
    /// code, such as a 404 from the wrong path) or is no token response needs a configuration
    /// change. `None` for tokens, and for a grant refused on the user's account (`invalid_grant`:
    /// a code used twice, a refresh token revoked).
    pub fn problem(&self) -> Option<Class> {
        match self {
            TokenAnswer::Tokens(_) => None,
            TokenAnswer::Unavailable(_) => Some(Class::Passing),
            TokenAnswer::Refused { error, .. } if error == "invalid_grant" => None,
            TokenAnswer::Refused { .. } | TokenAnswer::Unreadable(_) => Some(Class::Configuration),
        }
    }
}

impl fmt::Display for TokenAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenAnswer::Unavailable(None) => f.write_str("no answer (timeout or connection failure)"),
            TokenAnswer::Unavailable(Some(code)) => write!(f, "HTTP {code}"),
            TokenAnswer::Refused { status, error } => write!(f, "HTTP {status} ({error})"),
            TokenAnswer::Unreadable(e) => e.fmt(f),
            TokenAnswer::Tokens(_) => f.write_str("tokens"),
        }
    }
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    Missing,
    Jwt(JwtError),
    AudienceMissingClient,
    AzpMismatch,
    NonceMismatch,
    MissingIssuedAt,
    MissingSubject,
}

impl IdTokenError {
    pub fn description(&self) -> &'static str {
        match self {
            IdTokenError::Missing => "no ID token in the token response",
            IdTokenError::Jwt(e) => e.description(),
            IdTokenError::AudienceMissingClient => "ID token audience does not contain this client",
            IdTokenError::AzpMismatch => "ID token azp is not this client",
            IdTokenError::NonceMismatch => "ID token nonce does not match the login",
            IdTokenError::MissingIssuedAt => "ID token has no iat",
            IdTokenError::MissingSubject => "ID token has no sub",
        }
    }
}

/// Validates an ID token (OpenID Connect Core §3.1.3.7): signature with a key of the set and an
/// allowed algorithm, `iss`, `aud` containing the client id, `azp` (if present) equal to it,
/// `exp`, `iat` (required), `sub` (required) and the `nonce` of this login attempt (`None` on refresh, where the
/// nonce is not checked, §12.2). `expect` is for this client: its one audience is the client id
/// (`Config::client_expectations`). Returns its claims.
pub fn validate_id_token(
    id_token: Option<&str>,
    keys: &KeySet,
    expect: &Expectations<'_>,
    nonce: Option<&str>,
    now: u64,
) -> Result<Value, IdTokenError> {
    let token = id_token.ok_or(IdTokenError::Missing)?;
    let client_id = expect.audiences.first().map(String::as_str).unwrap_or_default();
    let verified = jwt::verify(token, keys, expect, now).map_err(IdTokenError::Jwt)?;
    let claims = verified.claims;
    // jwt::verify also accepts `azp` as the audience (right for access tokens); an ID token's
    // `aud` itself must name this client (§3.1.3.7 item 3).
    if !super::aud_names(&claims, client_id) {
        return Err(IdTokenError::AudienceMissingClient);
    }
    if let Some(azp) = claims.get("azp") {
        if azp.as_str() != Some(client_id) {
            return Err(IdTokenError::AzpMismatch);
        }
    }
    if claims.get("iat").is_none() {
        return Err(IdTokenError::MissingIssuedAt);
    }
    // §2: `sub` is required, a non-empty string; the session is about this subject.
    if claims.get("sub").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(IdTokenError::MissingSubject);
    }
    if let Some(nonce) = nonce {
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(IdTokenError::NonceMismatch);
        }
    }
    Ok(claims)
}

/// Where to return after login: the request's own path and query, made safe. Anything that a
/// browser could read as another host — `//evil`, `/\evil`, schemes, control characters (CR/LF) —
/// becomes `/`. The result is always a path on this host.
pub fn safe_return_path(path: &str) -> String {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= 2048
        && path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\');
    if ok {
        path.to_string()
    } else {
        "/".to_string()
    }
}

/// Validates an absolute return URL (used when the callback is on another host than the page,
/// with a fixed `redirectUri`): http(s), no userinfo, and a host that is the callback's own or
/// in the allow-list (`example.com` exactly, `.example.com` for its subdomains). Hosts are
/// compared in their ASCII form, so IDN look-alikes (`exаmple.com` with a Cyrillic `а`, which
/// becomes `xn--…`) never match. Returns the URL to redirect to, or `None`.
pub fn allowed_return_url(target: &str, own_host: &str, allowed: &[String]) -> Option<String> {
    let url = url::Url::parse(target).ok()?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let host_ok = host == own_host.to_ascii_lowercase()
        || allowed.iter().any(|a| match a.strip_prefix('.') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(a.as_str()),
            None => host == *a,
        });
    if !host_ok {
        return None;
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let safe = safe_return_path(&path);
    let origin = url.origin().ascii_serialization();
    Some(format!("{origin}{safe}"))
}

#[cfg(test)]
mod tests;
