//! JWS algorithms (RFC 7518 §3) and their verification with `ring`.
//!
//! jwt-compact parses tokens and runs the validate pipeline; it takes any signature backend
//! through its `Algorithm` trait. We plug in `ring` (PSS, ES384, EdDSA), which is faster than
//! the pure-Rust RSA/ECDSA crates under a Wasm runtime, our own RSASSA-PKCS1-v1_5 for RS*
//! (see [`super::rsa`]) and ES256 with per-key tables (see [`super::es256`]), both several times
//! faster than `ring` in Wasm.
//! The filter only verifies: the signing key type is uninhabited, so no signing code exists.

use super::es256::{LazyP256Key, PlainP256Key};
use super::rsa::{Hash, RsaKey};
use jwt_compact::{Algorithm, AlgorithmSignature};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// An asymmetric JWS algorithm gatehouse can verify. `none` and the HMAC family are not here by
/// construction: a verifier holding public keys must never accept them (RFC 8725 §2.1, §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// All algorithms, in the order the config reference lists them.
    pub const ALL: [Alg; 9] =
        [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::ES256, Alg::ES384, Alg::EdDSA];

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Parses an `alg` value; names are case-sensitive (RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key from a JWKS, in the form `ring` verifies with.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent, big-endian without leading zeros, and the key prepared for
    /// RS* verification (see [`super::rsa`]).
    Rsa { n: Vec<u8>, e: Vec<u8>, prepared: Arc<RsaKey> },
    /// An uncompressed SEC1 point (`0x04 ‖ x ‖ y`) on the curve of the key's algorithm, and for
    /// ES256 the key prepared for fast verification (see [`super::es256`]; `None` for ES384, and
    /// past the first few ES256 keys of a set, which then verify without a table of their own,
    /// as [`super::es256::PlainP256Key`]).
    Ec { point: Vec<u8>, prepared: Option<Arc<LazyP256Key>> },
    /// A 32-byte Ed25519 public key.
    Ed25519 { x: Vec<u8> },
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Rsa { n, .. } => write!(f, "Rsa({} bits)", n.len() * 8),
            PublicKey::Ec { point, .. } => write!(f, "Ec({} bytes)", point.len()),
            PublicKey::Ed25519 { .. } => f.write_str("Ed25519"),
        }
    }
}

/// Uninhabited: the filter never signs.
#[derive(Debug)]
pub enum NoSigningKey {}

/// Raw signature bytes; their length is checked by `ring` for the algorithm.
#[derive(Debug)]
pub struct SignatureBytes(Vec<u8>);

impl AlgorithmSignature for SignatureBytes {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(Self(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// A jwt-compact `Algorithm` verifying one JWS algorithm with `ring`.
#[derive(Debug, Clone, Copy)]
pub struct RingVerifier(pub Alg);

impl Algorithm for RingVerifier {
    type SigningKey = NoSigningKey;
    type VerifyingKey = PublicKey;
    type Signature = SignatureBytes;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.0.name())
    }

    fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> SignatureBytes {
        match *signing_key {}
    }

    fn verify_signature(&self, sig: &SignatureBytes, key: &PublicKey, message: &[u8]) -> bool {
        let alg = self.0;
        let result = match (alg, key) {
            (Alg::RS256, PublicKey::Rsa { prepared, .. }) => {
                return prepared.verify_pkcs1(Hash::Sha256, message, &sig.0)
            }
            (Alg::RS384, PublicKey::Rsa { prepared, .. }) => {
                return prepared.verify_pkcs1(Hash::Sha384, message, &sig.0)
            }
            (Alg::RS512, PublicKey::Rsa { prepared, .. }) => {
                return prepared.verify_pkcs1(Hash::Sha512, message, &sig.0)
            }
            (Alg::PS256 | Alg::PS384 | Alg::PS512, PublicKey::Rsa { n, e, .. }) => {
                let params = match alg {
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, &sig.0)
            }
            (Alg::ES256, PublicKey::Ec { prepared: Some(key), .. }) => return key.verify(message, &sig.0),
            (Alg::ES256, PublicKey::Ec { point, prepared: None }) => {
                return PlainP256Key::new(point).is_some_and(|key| key.verify(message, &sig.0))
            }
            (Alg::ES384, PublicKey::Ec { point, .. }) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(message, &sig.0)
            }
            (Alg::EdDSA, PublicKey::Ed25519 { x }) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(message, &sig.0)
            }
            // A key of another type than the algorithm needs never verifies (RFC 8725 §3.1).
            _ => return false,
        };
        result.is_ok()
    }
}
