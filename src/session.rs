//! Sealed values: gatehouse's session and login-state cookies.
//!
//! A sealed value is `v1.<kid>.<payload>.<mac>`: the payload is base64url JSON, the MAC is
//! HMAC-SHA256 over a versioned, delimited input — `gatehouse|v1|<purpose>|<kid>|<payload>` — so a
//! value minted for one purpose (a login state) can never pass as another (a session), and a
//! later format cannot be confused with this one. Keys rotate as a list: the first seals, all
//! open; `kid` names the key (a hash prefix, never the key). MACs are compared in constant time
//! (`ring::hmac::verify`). Secrets kept in a cookie (the refresh token) are additionally
//! encrypted with AES-256-GCM under a key derived from the same secret with HKDF.

use crate::secret::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::{aead, hkdf, hmac};
use sha2::{Digest, Sha256};

/// What a sealed value is for: part of the MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Session,
    LoginState,
    /// The sign-out form's token (only its MAC is used).
    SignOut,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Session => "session",
            Purpose::LoginState => "state",
            Purpose::SignOut => "sign-out",
        }
    }
}

struct Key {
    kid: String,
    mac: hmac::Key,
    aead: aead::LessSafeKey,
}

/// The configured cookie keys, first one current.
pub struct Sealer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        write!(f, "Sealer {{ kids: {kids:?} }}")
    }
}

impl PartialEq for Sealer {
    fn eq(&self, other: &Self) -> bool {
        self.keys.iter().map(|k| &k.kid).eq(other.keys.iter().map(|k| &k.kid))
    }
}

impl Eq for Sealer {}

struct AeadLen;

impl hkdf::KeyType for AeadLen {
    fn len(&self) -> usize {
        32
    }
}

impl Sealer {
    /// Builds the sealer; the caller has checked there is at least one key of ≥ 32 bytes.
    pub fn new(secrets: &[Secret]) -> Sealer {
        let keys = secrets
            .iter()
            .filter_map(|s| {
                let bytes = s.expose().as_bytes();
                let digest = Sha256::digest([b"gatehouse-kid|".as_slice(), bytes].concat());
                let kid: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
                let mut aead_key = [0u8; 32];
                hkdf::Salt::new(hkdf::HKDF_SHA256, b"gatehouse")
                    .extract(bytes)
                    .expand(&[b"gatehouse refresh-token v1"], AeadLen)
                    .and_then(|okm| okm.fill(&mut aead_key))
                    .ok()?;
                let aead = aead::UnboundKey::new(&aead::AES_256_GCM, &aead_key).ok()?;
                Some(Key { kid, mac: hmac::Key::new(hmac::HMAC_SHA256, bytes), aead: aead::LessSafeKey::new(aead) })
            })
            .collect();
        Sealer { keys }
    }

    fn mac_input(purpose: Purpose, kid: &str, payload: &str) -> String {
        format!("gatehouse|v1|{}|{kid}|{payload}", purpose.label())
    }

    /// Seals `json` with the current key.
    pub fn seal(&self, purpose: Purpose, json: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        let payload = B64.encode(json);
        let tag = hmac::sign(&key.mac, Self::mac_input(purpose, &key.kid, &payload).as_bytes());
        Some(format!("v1.{}.{payload}.{}", key.kid, B64.encode(tag.as_ref())))
    }

    /// Opens a sealed value: the JSON payload if the MAC holds under any configured key.
    pub fn open(&self, purpose: Purpose, value: &str) -> Option<Vec<u8>> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(kid), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        let mac = B64.decode(mac).ok()?;
        hmac::verify(&key.mac, Self::mac_input(purpose, kid, payload).as_bytes(), &mac).ok()?;
        B64.decode(payload).ok()
    }

    /// Encrypts a secret for a cookie: base64url(`kid` ‖ nonce ‖ ciphertext+tag). `nonce` must be
    /// fresh randomness.
    pub fn encrypt(&self, plaintext: &[u8], nonce: [u8; 12]) -> Option<String> {
        let key = self.keys.first()?;
        let mut buf = plaintext.to_vec();
        key.aead
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(key.kid.as_bytes()),
                &mut buf,
            )
            .ok()?;
        Some(format!("{}.{}.{}", key.kid, B64.encode(nonce), B64.encode(buf)))
    }

    /// Decrypts what [`Sealer::encrypt`] produced, with whichever configured key made it.
    pub fn decrypt(&self, text: &str) -> Option<Vec<u8>> {
        let mut parts = text.split('.');
        let (Some(kid), Some(nonce), Some(ct), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        let nonce: [u8; 12] = B64.decode(nonce).ok()?.try_into().ok()?;
        let mut buf = B64.decode(ct).ok()?;
        let plain = key
            .aead
            .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(kid.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(keys: &[&str]) -> Sealer {
        Sealer::new(&keys.iter().map(|k| Secret::new(k.to_string())).collect::<Vec<_>>())
    }

    const K1: &str = "0123456789abcdef0123456789abcdef-one";
    const K2: &str = "0123456789abcdef0123456789abcdef-two";

    #[test]
    fn golden_encoding() {
        let s = sealer(&[K1]);
        let sealed = s.seal(Purpose::Session, br#"{"sub":"a"}"#).unwrap();
        let parts: Vec<&str> = sealed.split('.').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "v1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2], "eyJzdWIiOiJhIn0");
        // Deterministic: the same key and payload give the same value.
        assert_eq!(s.seal(Purpose::Session, br#"{"sub":"a"}"#).unwrap(), sealed);
        assert_eq!(s.open(Purpose::Session, &sealed).unwrap(), br#"{"sub":"a"}"#);
    }

    #[test]
    fn purposes_do_not_mix() {
        let s = sealer(&[K1]);
        let state = s.seal(Purpose::LoginState, b"{}").unwrap();
        assert!(s.open(Purpose::Session, &state).is_none());
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let s = sealer(&[K1]);
        let sealed = s.seal(Purpose::Session, br#"{"sub":"alice","exp":1800000000}"#).unwrap();
        let bytes = sealed.as_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.to_vec();
                bad[i] ^= 1 << bit;
                let Ok(text) = String::from_utf8(bad) else { continue };
                // Some flips of the last base64 character only touch its unused low bits and
                // decode to the same bytes; those are the same value, not a forgery.
                let same = B64.decode(text.rsplit('.').next().unwrap_or("")).ok()
                    == B64.decode(sealed.rsplit('.').next().unwrap()).ok()
                    && text.rsplit_once('.').map(|x| x.0) == sealed.rsplit_once('.').map(|x| x.0);
                if !same {
                    assert!(s.open(Purpose::Session, &text).is_none(), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn truncation_and_shapes_are_rejected() {
        let s = sealer(&[K1]);
        let sealed = s.seal(Purpose::Session, b"{}").unwrap();
        for n in 0..sealed.len() {
            assert!(s.open(Purpose::Session, &sealed[..n]).is_none(), "{n}");
        }
        assert!(s.open(Purpose::Session, &format!("{sealed}.x")).is_none());
        assert!(s.open(Purpose::Session, &sealed.replacen("v1", "v2", 1)).is_none());
    }

    #[test]
    fn keys_rotate_first_seals_all_open() {
        let old = sealer(&[K1]);
        let rotated = sealer(&[K2, K1]);
        let retired = sealer(&[K2]);
        let v = old.seal(Purpose::Session, b"{}").unwrap();
        assert!(rotated.open(Purpose::Session, &v).is_some());
        assert!(retired.open(Purpose::Session, &v).is_none());
        let new = rotated.seal(Purpose::Session, b"{}").unwrap();
        assert!(retired.open(Purpose::Session, &new).is_some());
        assert!(old.open(Purpose::Session, &new).is_none());
    }

    #[test]
    fn encryption_round_trip_and_tamper() {
        let s = sealer(&[K1]);
        let ct = s.encrypt(b"refresh-token", [7; 12]).unwrap();
        assert!(!ct.contains("refresh"));
        assert_eq!(s.decrypt(&ct).unwrap(), b"refresh-token");
        let mut bad = ct.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(s.decrypt(&String::from_utf8(bad).unwrap()).is_none());
        assert!(sealer(&[K2, K1]).decrypt(&ct).is_some(), "old keys still decrypt");
        assert!(sealer(&[K2]).decrypt(&ct).is_none());
    }
}
