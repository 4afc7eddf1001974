//! Test support: real keys and real signatures (ring), to mint tokens for the host tests, and
//! (in [`fixtures`]) the realistic inputs of the benchmarks. Compiled for tests, and for the
//! benchmarks with the `bench-support` feature; never part of the filter.

// Set-up code: a key or token that cannot be made is a broken test, and should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod fixtures;
pub mod upstreams;

use crate::jwt::alg::Alg;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::rsa::PublicKeyComponents;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

pub const RSA_A: &[u8] = include_bytes!("jwt/testdata/rsa-a.der");
pub const RSA_B: &[u8] = include_bytes!("jwt/testdata/rsa-b.der");

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of one algorithm, with its public JWK.
pub enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl TestKey {
    pub fn rsa(der: &[u8]) -> TestKey {
        TestKey::Rsa(RsaKeyPair::from_der(der).unwrap())
    }

    pub fn ec(alg: Alg) -> TestKey {
        Self::ec_from(alg, &SystemRandom::new())
    }

    fn ec_from(alg: Alg, rng: &dyn ring::rand::SecureRandom) -> TestKey {
        let sa = if alg == Alg::ES256 {
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING
        } else {
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING
        };
        let pk8 = EcdsaKeyPair::generate_pkcs8(sa, rng).unwrap();
        TestKey::Ec(EcdsaKeyPair::from_pkcs8(sa, pk8.as_ref(), rng).unwrap())
    }

    pub fn ed() -> TestKey {
        let pk8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        TestKey::Ed(Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap())
    }

    /// Like [`TestKey::ec`], but the same key on every run (made from `seed`).
    pub fn ec_fixed(alg: Alg, seed: u8) -> TestKey {
        Self::ec_from(alg, &fixed_random(seed))
    }

    /// Like [`TestKey::ed`], but the same key on every run (made from `seed`).
    pub fn ed_fixed(seed: u8) -> TestKey {
        TestKey::Ed(Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap())
    }

    /// The public JWK, with `kid` and `alg`.
    pub fn jwk(&self, kid: &str, alg: Alg) -> Value {
        match self {
            TestKey::Rsa(kp) => {
                let c: PublicKeyComponents<Vec<u8>> = kp.public().into();
                json!({"kty": "RSA", "kid": kid, "alg": alg.name(), "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            TestKey::Ec(kp) => {
                let point = kp.public_key().as_ref();
                let size = (point.len() - 1) / 2;
                let crv = if size == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": kid, "alg": alg.name(), "crv": crv,
                       "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])})
            }
            TestKey::Ed(kp) => {
                json!({"kty": "OKP", "kid": kid, "alg": "EdDSA", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())})
            }
        }
    }

    /// Signs `message` with `alg` (which must fit the key).
    pub fn sign(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        self.sign_with(alg, message, &SystemRandom::new())
    }

    /// Signs with the given randomness (the ECDSA nonce and the PSS salt depend on it).
    fn sign_with(&self, alg: Alg, message: &[u8], rng: &dyn SecureRandom) -> Vec<u8> {
        match self {
            TestKey::Rsa(kp) => {
                let padding: &dyn signature::RsaEncoding = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} is not an RSA algorithm"),
                };
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(padding, rng, message, &mut sig).unwrap();
                sig
            }
            TestKey::Ec(kp) => kp.sign(rng, message).unwrap().as_ref().to_vec(),
            TestKey::Ed(kp) => kp.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact JWS with this header and payload, signed with `alg`.
    pub fn mint(&self, alg: Alg, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.sign(alg, signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&sig))
    }

    /// Like [`TestKey::mint`], but the same token on every run: ECDSA verification is
    /// variable-time in the signature, and instruction counts must not move between runs.
    pub fn mint_fixed(&self, alg: Alg, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.sign_with(alg, signing_input.as_bytes(), &fixed_random(0x5a));
        format!("{signing_input}.{}", b64(&sig))
    }
}

/// Randomness that is always the byte `seed`: for keys and signatures that must be the same on
/// every run. ring keeps this under its (hidden, deprecated) test module.
#[allow(deprecated)]
fn fixed_random(seed: u8) -> ring::test::rand::FixedByteRandom {
    ring::test::rand::FixedByteRandom { byte: seed }
}

/// HS256 over `message` with `key` (to forge "HS256 keyed with the public key" tokens).
pub fn hs256(key: &[u8], message: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

/// The engine of one VM, with a store of its own.
pub fn vm(config: std::rc::Rc<crate::config::Config>) -> crate::flow::Engine {
    crate::flow::Engine::new(config, Box::new(crate::shared::MemoryStore::default()))
}

/// A provider's 200 answer with this body.
pub fn ok(body: &str) -> crate::callout::Answer {
    crate::callout::Answer { status: Some(200), body: body.as_bytes().to_vec(), body_size: body.len() }
}

use crate::keys::Doc;

/// Loads the engine's discovery document and key set as the glue would: its tick at `now` asks
/// for them, the provider answers `discovery` and `jwks`. Returns the fetches made.
pub fn load(engine: &mut crate::flow::Engine, now: u64, discovery: &str, jwks: &str) -> Vec<crate::keys::Fetch> {
    load_with(engine, now, &|fetch| match fetch.doc {
        Doc::Discovery(_) => discovery.to_string(),
        Doc::Jwks(_) => jwks.to_string(),
    })
}

/// [`load`] for several providers: `answer` gives the body for each fetch.
pub fn load_with(
    engine: &mut crate::flow::Engine,
    now: u64,
    answer: &dyn Fn(&crate::keys::Fetch) -> String,
) -> Vec<crate::keys::Fetch> {
    let mut made = Vec::new();
    let mut calls = engine.tick(now, &[]).calls;
    while let Some(c) = calls.pop() {
        let body = answer(&c.fetch);
        calls.extend(engine.on_key_answer(&c.fetch, &ok(&body), now, crate::flow::Fetcher::Root));
        made.push(c.fetch);
    }
    made
}

/// The first provider's fetch of a key set at `path`.
pub fn jwks_fetch(path: &str) -> crate::keys::Fetch {
    crate::keys::Fetch { provider: 0, doc: Doc::Jwks(path.into()) }
}

/// The first provider's fetch of a discovery document at `path`.
pub fn discovery_fetch(path: &str) -> crate::keys::Fetch {
    crate::keys::Fetch { provider: 0, doc: Doc::Discovery(path.into()) }
}
