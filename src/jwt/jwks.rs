//! JSON Web Key Sets (RFC 7517): which keys of an IdP's set gatehouse can verify with.
//!
//! A key set is hostile input. Keys we cannot use — encryption keys, unknown key types, keys
//! without `alg`, weak RSA moduli, malformed members — are skipped with a reason, never fatal:
//! one odd key must not take the whole set (and every token) down with it.

use super::alg::{Alg, PublicKey};
use super::es256::LazyP256Key;
use super::rsa::RsaKey;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use serde_json::{Map, Value};
use std::sync::Arc;

/// At most this many keys of one set are considered; real sets hold a handful.
pub const MAX_KEYS: usize = 64;

/// ES256 keys of one set that get a verification table (150 KB each, about 5 ms to build in
/// Wasm, when first used); any further ones verify with `ring`, as fast as that is.
pub const MAX_PREPARED_ES256: usize = 8;

/// Base64url as JWKs use it: unpadded by the RFC, but padded members are accepted.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One usable verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Alg,
    pub key: PublicKey,
}

/// The usable keys of a set, and why the others were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    pub skipped: Vec<Skipped>,
}

/// Why a key set document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySetError {
    /// Not JSON (an HTML error page, a truncated answer); serde's message.
    NotJson(String),
    /// JSON, but without a `keys` array.
    NoKeys,
}

impl std::fmt::Display for KeySetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySetError::NotJson(e) => write!(f, "key set is not JSON: {e}"),
            KeySetError::NoKeys => f.write_str("key set has no `keys` array"),
        }
    }
}

/// A key of the set gatehouse cannot verify with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its place in the set.
    pub index: usize,
    /// Its `kid`, if it has one (at most 64 characters kept).
    pub kid: Option<String>,
    pub reason: KeyError,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {} (kid {}): {}", self.index, self.kid.as_deref().unwrap_or("-"), self.reason)
    }
}

/// Why a key was skipped (RFC 7517 §4, RFC 7518 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Keys after the first [`MAX_KEYS`].
    TooMany,
    NotAnObject,
    /// A member that must be a string is not.
    NotAString(&'static str),
    Missing(&'static str),
    NotBase64url(&'static str),
    /// `use` is not `sig`.
    NotForSignatures(String),
    /// `key_ops` without `verify`.
    NoVerifyOp,
    UnsupportedAlg(String),
    AlgDoesNotFitKty {
        alg: Alg,
        kty: String,
    },
    UnsupportedKty(String),
    UnsupportedCurve(String),
    CurveDoesNotFitAlg {
        crv: String,
        alg: Alg,
    },
    RsaModulusBits(usize),
    RsaExponent,
    RsaUnusable,
    EcCoordinateLength(usize),
    NotOnCurve,
    Ed25519Length,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::TooMany => write!(f, "keys after the first {MAX_KEYS} ignored"),
            KeyError::NotAnObject => f.write_str("not a JSON object"),
            KeyError::NotAString(name) => write!(f, "`{name}` is not a string"),
            KeyError::Missing("alg") => f.write_str("no `alg` (the algorithm must come from the key, not the token)"),
            KeyError::Missing(name) => write!(f, "no `{name}`"),
            KeyError::NotBase64url(name) => write!(f, "`{name}` is not base64url"),
            KeyError::NotForSignatures(usage) => write!(f, "`use` is {usage:.16?}, not \"sig\""),
            KeyError::NoVerifyOp => f.write_str("`key_ops` does not include \"verify\""),
            KeyError::UnsupportedAlg(alg) => write!(f, "`alg` {alg:.32?} is not a supported signature algorithm"),
            KeyError::AlgDoesNotFitKty { alg, kty } => write!(f, "`alg` {alg} does not fit `kty` {kty}"),
            KeyError::UnsupportedKty(kty) => write!(f, "`kty` {kty:.16?} is not supported"),
            KeyError::UnsupportedCurve(crv) => write!(f, "`crv` {crv:.16?} is not supported (only Ed25519)"),
            KeyError::CurveDoesNotFitAlg { crv, alg } => write!(f, "`crv` {crv:.16?} does not fit `alg` {alg}"),
            KeyError::RsaModulusBits(bits) if *bits < 2048 => write!(f, "RSA modulus of {bits} bits is below 2048"),
            KeyError::RsaModulusBits(bits) => write!(f, "RSA modulus of {bits} bits is above 8192"),
            KeyError::RsaExponent => f.write_str("RSA exponent out of range"),
            KeyError::RsaUnusable => f.write_str(
                "RSA key unusable (the modulus must be odd and 2048-8192 bits, the exponent odd and at least 3)",
            ),
            KeyError::EcCoordinateLength(size) => write!(f, "EC coordinates must be {size} bytes"),
            KeyError::NotOnCurve => f.write_str("EC point is not on the curve"),
            KeyError::Ed25519Length => f.write_str("Ed25519 key must be 32 bytes"),
        }
    }
}

impl KeySet {
    /// Parses a JWKS document. Fails only if the document is not a JSON object with a `keys`
    /// array; individual bad keys are skipped.
    pub fn parse(body: &[u8]) -> Result<KeySet, KeySetError> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| KeySetError::NotJson(e.to_string()))?;
        Self::from_value(&doc)
    }

    /// As [`KeySet::parse`], from an already-parsed document (an inline `jwks` in the config).
    pub fn from_value(doc: &Value) -> Result<KeySet, KeySetError> {
        let keys = doc.get("keys").and_then(Value::as_array).ok_or(KeySetError::NoKeys)?;
        let mut set = KeySet::default();
        let mut es256_budget = MAX_PREPARED_ES256;
        for (index, key) in keys.iter().enumerate() {
            let kid = || key.get("kid").and_then(Value::as_str).map(|k| k.chars().take(64).collect());
            if index >= MAX_KEYS {
                set.skipped.push(Skipped { index, kid: None, reason: KeyError::TooMany });
                break;
            }
            match parse_key(key, &mut es256_budget) {
                Ok(jwk) => set.keys.push(jwk),
                Err(reason) => set.skipped.push(Skipped { index, kid: kid(), reason }),
            }
        }
        Ok(set)
    }
}

fn parse_key(key: &Value, es256_budget: &mut usize) -> Result<Jwk, KeyError> {
    let obj = key.as_object().ok_or(KeyError::NotAnObject)?;
    let kty = str_member(obj, "kty")?.ok_or(KeyError::Missing("kty"))?;
    if let Some(usage) = str_member(obj, "use")? {
        if usage != "sig" {
            return Err(KeyError::NotForSignatures(usage.to_string()));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err(KeyError::NoVerifyOp);
        }
    }
    let alg_name = str_member(obj, "alg")?.ok_or(KeyError::Missing("alg"))?;
    let alg = Alg::from_name(alg_name).ok_or_else(|| KeyError::UnsupportedAlg(alg_name.chars().take(32).collect()))?;
    let kid = str_member(obj, "kid")?.map(str::to_owned);
    let key = match (kty, alg) {
        ("RSA", Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512) => {
            let n = strip_leading_zeros(b64_member(obj, "n")?);
            let e = strip_leading_zeros(b64_member(obj, "e")?);
            if n.len() < 256 || n.len() > 1024 {
                return Err(KeyError::RsaModulusBits(n.len() * 8));
            }
            if e.is_empty() || e.len() > 4 {
                return Err(KeyError::RsaExponent);
            }
            let prepared = RsaKey::new(&n, &e).ok_or(KeyError::RsaUnusable)?;
            PublicKey::Rsa { n, e, prepared: Arc::new(prepared) }
        }
        ("EC", Alg::ES256 | Alg::ES384) => {
            let (curve, size) = if alg == Alg::ES256 { ("P-256", 32) } else { ("P-384", 48) };
            let crv = str_member(obj, "crv")?.ok_or(KeyError::Missing("crv"))?;
            if crv != curve {
                return Err(KeyError::CurveDoesNotFitAlg { crv: crv.chars().take(16).collect(), alg });
            }
            let x = b64_member(obj, "x")?;
            let y = b64_member(obj, "y")?;
            if x.len() != size || y.len() != size {
                return Err(KeyError::EcCoordinateLength(size));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let prepared = if alg == Alg::ES256 && *es256_budget > 0 {
                *es256_budget -= 1;
                let key = LazyP256Key::new(&point).ok_or(KeyError::NotOnCurve)?;
                Some(Arc::new(key))
            } else {
                None
            };
            PublicKey::Ec { point, prepared }
        }
        ("OKP", Alg::EdDSA) => {
            let crv = str_member(obj, "crv")?.ok_or(KeyError::Missing("crv"))?;
            if crv != "Ed25519" {
                return Err(KeyError::UnsupportedCurve(crv.chars().take(16).collect()));
            }
            let x = b64_member(obj, "x")?;
            if x.len() != 32 {
                return Err(KeyError::Ed25519Length);
            }
            PublicKey::Ed25519 { x }
        }
        ("RSA" | "EC" | "OKP", _) => return Err(KeyError::AlgDoesNotFitKty { alg, kty: kty.to_string() }),
        _ => return Err(KeyError::UnsupportedKty(kty.chars().take(16).collect())),
    };
    Ok(Jwk { kid, alg, key })
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, KeyError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::NotAString(name)),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    let text = str_member(obj, name)?.ok_or(KeyError::Missing(name))?;
    B64URL.decode(text).map_err(|_| KeyError::NotBase64url(name))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}
