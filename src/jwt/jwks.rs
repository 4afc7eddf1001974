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
    pub skipped: Vec<String>,
}

impl KeySet {
    /// Parses a JWKS document. Fails only if the document is not a JSON object with a `keys`
    /// array; individual bad keys are skipped.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| format!("key set is not JSON: {e}"))?;
        Self::from_value(&doc)
    }

    /// As [`KeySet::parse`], from an already-parsed document (an inline `jwks` in the config).
    pub fn from_value(doc: &Value) -> Result<KeySet, String> {
        let keys = doc.get("keys").and_then(Value::as_array).ok_or("key set has no `keys` array")?;
        let mut set = KeySet::default();
        let mut es256_budget = MAX_PREPARED_ES256;
        for (i, key) in keys.iter().enumerate() {
            if i >= MAX_KEYS {
                set.skipped.push(format!("keys after the first {MAX_KEYS} ignored"));
                break;
            }
            match parse_key(key, &mut es256_budget) {
                Ok(jwk) => set.keys.push(jwk),
                Err(reason) => {
                    let kid = key.get("kid").and_then(Value::as_str).unwrap_or("-");
                    set.skipped.push(format!("key {i} (kid {kid:.64}): {reason}"));
                }
            }
        }
        Ok(set)
    }

    /// Whether a key with this id is in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn parse_key(key: &Value, es256_budget: &mut usize) -> Result<Jwk, String> {
    let obj = key.as_object().ok_or("not a JSON object")?;
    let kty = str_member(obj, "kty")?.ok_or("no `kty`")?;
    if let Some(usage) = str_member(obj, "use")? {
        if usage != "sig" {
            return Err(format!("`use` is {usage:?}, not \"sig\""));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("`key_ops` does not include \"verify\"".into());
        }
    }
    let alg_name = str_member(obj, "alg")?.ok_or("no `alg` (the algorithm must come from the key, not the token)")?;
    let alg = Alg::from_name(alg_name)
        .ok_or_else(|| format!("`alg` {alg_name:.32?} is not a supported signature algorithm"))?;
    let kid = str_member(obj, "kid")?.map(str::to_owned);
    let key = match (kty, alg) {
        ("RSA", Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512) => {
            let n = strip_leading_zeros(b64_member(obj, "n")?);
            let e = strip_leading_zeros(b64_member(obj, "e")?);
            if n.len() < 256 {
                return Err(format!("RSA modulus of {} bits is below 2048", n.len() * 8));
            }
            if n.len() > 1024 {
                return Err(format!("RSA modulus of {} bits is above 8192", n.len() * 8));
            }
            if e.is_empty() || e.len() > 4 {
                return Err("RSA exponent out of range".into());
            }
            let prepared = RsaKey::new(&n, &e).ok_or(
                "RSA key unusable (the modulus must be odd and 2048-8192 bits, the exponent odd and at least 3)",
            )?;
            PublicKey::Rsa { n, e, prepared: Arc::new(prepared) }
        }
        ("EC", Alg::ES256 | Alg::ES384) => {
            let (curve, size) = if alg == Alg::ES256 { ("P-256", 32) } else { ("P-384", 48) };
            let crv = str_member(obj, "crv")?.ok_or("no `crv`")?;
            if crv != curve {
                return Err(format!("`crv` {crv:.16?} does not fit `alg` {alg}"));
            }
            let x = b64_member(obj, "x")?;
            let y = b64_member(obj, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!("EC coordinates must be {size} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let prepared = if alg == Alg::ES256 && *es256_budget > 0 {
                *es256_budget -= 1;
                let key = LazyP256Key::new(&point).ok_or("EC point is not on the curve")?;
                Some(Arc::new(key))
            } else {
                None
            };
            PublicKey::Ec { point, prepared }
        }
        ("OKP", Alg::EdDSA) => {
            let crv = str_member(obj, "crv")?.ok_or("no `crv`")?;
            if crv != "Ed25519" {
                return Err(format!("`crv` {crv:.16?} is not supported (only Ed25519)"));
            }
            let x = b64_member(obj, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".into());
            }
            PublicKey::Ed25519 { x }
        }
        ("RSA" | "EC" | "OKP", _) => {
            return Err(format!("`alg` {alg} does not fit `kty` {kty}"));
        }
        _ => return Err(format!("`kty` {kty:.16?} is not supported")),
    };
    Ok(Jwk { kid, alg, key })
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` is not a string")),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = str_member(obj, name)?.ok_or_else(|| format!("no `{name}`"))?;
    B64URL.decode(text).map_err(|_| format!("`{name}` is not base64url"))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}
