//! Bearer JWT verification (RFC 7519, RFC 8725), fully in-process.
//!
//! The rules, in the order they are applied:
//! 1. size and shape: a JWS in compact form (three parts); JWE (five parts) is refused;
//! 2. the header: `crit` is refused (we implement no extensions, RFC 7515 §4.1.11); `jku`, `x5u`
//!    and embedded `jwk` are ignored — keys only ever come from the configured key set;
//! 3. the algorithm: the token's `alg` must be in the configured allow-list *and* equal the
//!    `alg` of the key chosen (RFC 8725 §2.1, §3.1) — never taken from the token alone;
//! 4. the key: by `kid`; without a `kid`, each key of that algorithm is tried;
//! 5. the signature (jwt-compact's pipeline with a `ring` backend);
//! 6. the claims: `exp` (required), `nbf`, `iat` with leeway; `iss` exactly one of the accepted
//!    issuers; `aud` containing an accepted audience, or else `azp` being one.

pub mod alg;
pub mod es256;
pub mod jwks;
pub mod rsa;

use alg::{Alg, RingVerifier};
use jwks::KeySet;
use jwt_compact::{AlgorithmExt, UntrustedToken, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// Tokens longer than this are refused before any parsing. Keycloak tokens are a few KB, but
/// users in hundreds of groups push them past 16 KB; Envoy's own header limit is 60 KB.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// Without a `kid`, at most this many keys are tried (bounds the cost of a hostile token).
const MAX_KEYS_TRIED: usize = 8;

/// What a token must satisfy, besides its signature.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    pub issuers: &'a [String],
    pub audiences: &'a [String],
    pub algorithms: &'a [Alg],
    pub leeway_secs: u64,
}

/// A verified token: its claims (an object) and its expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Value,
    pub exp: u64,
}

/// Why a token was refused. `description` is safe to send to the client: it never contains
/// any part of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    TooLarge,
    Encrypted,
    Malformed,
    CriticalHeader,
    AlgorithmNotAllowed,
    UnknownKeyId,
    NoKeyForAlgorithm,
    KeyAlgorithmMismatch,
    BadSignature,
    MissingExpiry,
    Expired,
    NotYetValid,
    IssuedInFuture,
    IssuerNotAccepted,
    AudienceNotAccepted,
}

impl JwtError {
    /// A short reason for `error_description` (RFC 6750 §3).
    pub fn description(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "token too large",
            JwtError::Encrypted => "encrypted tokens are not accepted",
            JwtError::Malformed => "malformed token",
            JwtError::CriticalHeader => "unsupported critical header",
            JwtError::AlgorithmNotAllowed => "algorithm not allowed",
            JwtError::UnknownKeyId => "unknown key id",
            JwtError::NoKeyForAlgorithm => "no key for the token's algorithm",
            JwtError::KeyAlgorithmMismatch => "algorithm does not match the key",
            JwtError::BadSignature => "invalid signature",
            JwtError::MissingExpiry => "token has no expiry",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid",
            JwtError::IssuedInFuture => "token issued in the future",
            JwtError::IssuerNotAccepted => "issuer not accepted",
            JwtError::AudienceNotAccepted => "audience not accepted",
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Header members jwt-compact does not model that we must look at.
#[derive(Debug, Clone, Deserialize)]
struct ExtraHeader {
    #[serde(default)]
    crit: Option<Value>,
}

/// Verifies a compact JWS against a key set and the expectations, at time `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, expect: &Expectations<'_>, now: u64) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    match token.bytes().filter(|b| *b == b'.').count() {
        2 => {}
        4 => return Err(JwtError::Encrypted),
        _ => return Err(JwtError::Malformed),
    }
    let untrusted = UntrustedToken::<ExtraHeader>::try_from(token).map_err(|_| JwtError::Malformed)?;
    if untrusted.header().other_fields.crit.is_some() {
        return Err(JwtError::CriticalHeader);
    }
    let alg = Alg::from_name(untrusted.algorithm())
        .filter(|alg| expect.algorithms.contains(alg))
        .ok_or(JwtError::AlgorithmNotAllowed)?;

    let candidates: Vec<&jwks::Jwk> = match untrusted.header().key_id.as_deref() {
        Some(kid) => {
            let with_kid: Vec<_> = keys.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if with_kid.is_empty() {
                return Err(JwtError::UnknownKeyId);
            }
            let fitting: Vec<_> = with_kid.into_iter().filter(|k| k.alg == alg).collect();
            if fitting.is_empty() {
                return Err(JwtError::KeyAlgorithmMismatch);
            }
            fitting
        }
        None => {
            let fitting: Vec<_> = keys.keys.iter().filter(|k| k.alg == alg).take(MAX_KEYS_TRIED).collect();
            if fitting.is_empty() {
                return Err(JwtError::NoKeyForAlgorithm);
            }
            fitting
        }
    };

    let verifier = RingVerifier(alg);
    let mut outcome = Err(JwtError::BadSignature);
    for key in candidates {
        match verifier.validator::<Map<String, Value>>(&key.key).validate(&untrusted) {
            Ok(token) => {
                outcome = Ok(token);
                break;
            }
            Err(ValidationError::InvalidSignature | ValidationError::InvalidSignatureLen { .. }) => {}
            Err(ValidationError::MalformedClaims(_)) => return Err(JwtError::Malformed),
            Err(_) => return Err(JwtError::BadSignature),
        }
    }
    let (_, claims) = outcome?.into_parts();

    // Time checks (RFC 7519 §4.1.4–4.1.6), with leeway for clock skew.
    let leeway = expect.leeway_secs;
    let exp = claims.expiration.map(|t| t.timestamp()).ok_or(JwtError::MissingExpiry)?;
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    let leeway_i = i64::try_from(leeway).unwrap_or(i64::MAX);
    if now_i >= exp.saturating_add(leeway_i) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.not_before.map(|t| t.timestamp()) {
        if now_i.saturating_add(leeway_i) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = claims.issued_at.map(|t| t.timestamp()) {
        if iat > now_i.saturating_add(leeway_i) {
            return Err(JwtError::IssuedInFuture);
        }
    }

    let mut custom = claims.custom;
    let issuer_ok = custom
        .get("iss")
        .and_then(Value::as_str)
        .is_some_and(|iss| expect.issuers.iter().any(|accepted| accepted == iss));
    if !issuer_ok {
        return Err(JwtError::IssuerNotAccepted);
    }
    if !audience_ok(&custom, expect.audiences) {
        return Err(JwtError::AudienceNotAccepted);
    }

    // Put the time claims back, so that they can be mapped to headers like any other.
    custom.insert("exp".into(), Value::from(exp));
    if let Some(nbf) = claims.not_before {
        custom.insert("nbf".into(), Value::from(nbf.timestamp()));
    }
    if let Some(iat) = claims.issued_at {
        custom.insert("iat".into(), Value::from(iat.timestamp()));
    }
    Ok(Verified { claims: Value::Object(custom), exp: u64::try_from(exp).unwrap_or(0) })
}

/// The `iss` a token names, unverified: with several providers, which one's keys and
/// expectations are to check it ([`verify`] then checks `iss` again). Nothing else is read.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&json).ok()?.iss
}

/// `aud` (a string or an array of strings) holds an accepted audience, or `azp` is one.
/// Keycloak access tokens carry `aud: "account"` unless an audience mapper is set, and the
/// requesting client in `azp`.
fn audience_ok(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    let is_accepted = |v: &Value| v.as_str().is_some_and(|s| accepted.iter().any(|a| a == s));
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(items)) => items.iter().any(is_accepted),
        Some(v) => is_accepted(v),
        None => false,
    };
    aud_ok || claims.get("azp").is_some_and(is_accepted)
}

#[cfg(test)]
mod tests;
