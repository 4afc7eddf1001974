//! OpenID Connect Back-Channel Logout 1.0: the logout token the provider POSTs when a user's
//! session ends there, validated as §2.6 requires.

use crate::jwt::{self, jwks::KeySet, Expectations, JwtError};
use serde_json::Value;

/// The event a logout token carries (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Longest `sid`, `sub` or `jti` taken (Keycloak's are UUIDs).
const MAX_ID_LEN: usize = 256;

/// A valid logout token: which sessions end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    /// The provider's session (`sid`): only sessions of that session end.
    pub sid: Option<String>,
    /// The user (`sub`): without a `sid`, every session of that user made until `iat` ends.
    pub sub: Option<String>,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

/// Why a logout token was refused. `code` is safe to answer with and to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutError {
    Jwt(JwtError),
    /// `aud` does not name this client (an `azp` is not enough here).
    Audience,
    /// No `iat`.
    NoIssuedAt,
    /// No `jti`, or not a usable one.
    NoTokenId,
    /// No `events` member with the back-channel logout event as an object.
    NotALogoutToken,
    /// Neither a usable `sid` nor `sub`.
    NoSubject,
    /// A `nonce`: an ID token, not a logout token (§2.6 step 7).
    Nonce,
}

impl LogoutError {
    pub fn code(&self) -> &'static str {
        match self {
            LogoutError::Jwt(e) => e.description(),
            LogoutError::Audience => "audience is not this client",
            LogoutError::NoIssuedAt => "no iat",
            LogoutError::NoTokenId => "no usable jti",
            LogoutError::NotALogoutToken => "no back-channel logout event",
            LogoutError::NoSubject => "neither sid nor sub",
            LogoutError::Nonce => "a logout token carries no nonce",
        }
    }
}

/// Validates a logout token (§2.6): the signature, `iss`, `exp` and `iat` as for an ID token
/// ([`jwt::verify`], with this client as the audience), `aud` naming `client_id`, `iat` and `jti`
/// present, the `events` claim with the back-channel logout event, a `sid` and/or `sub`, and no
/// `nonce`. Whether its `jti` was seen before is the caller's to check.
pub fn validate(
    token: &str,
    keys: &KeySet,
    expect: &Expectations<'_>,
    client_id: &str,
    now: u64,
) -> Result<Logout, LogoutError> {
    let verified = jwt::verify(token, keys, expect, now).map_err(LogoutError::Jwt)?;
    let c = &verified.claims;
    if !super::aud_names(c, client_id) {
        return Err(LogoutError::Audience);
    }
    let iat = c.get("iat").and_then(Value::as_u64).ok_or(LogoutError::NoIssuedAt)?;
    let id = |name: &str| {
        c.get(name).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN).map(str::to_owned)
    };
    let jti = id("jti").ok_or(LogoutError::NoTokenId)?;
    let event = c.get("events").and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(LogoutError::NotALogoutToken);
    }
    if c.get("nonce").is_some() {
        return Err(LogoutError::Nonce);
    }
    let (sid, sub) = (id("sid"), id("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(LogoutError::NoSubject);
    }
    Ok(Logout { sid, sub, jti, iat, exp: verified.exp })
}

#[cfg(test)]
mod tests;
