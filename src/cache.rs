//! A bounded cache of verified tokens and session cookies, keyed by the credential itself.
//!
//! RSA and ECDSA verification inside Wasm costs hundreds of microseconds; a token seen again is
//! a map lookup. The map is std's `HashMap` (SipHash-1-3 with a per-VM random key, so lookups
//! with hostile strings cannot be steered into collisions). It hashes only a credential's last
//! 64 bytes — every credential cached here ends with its signature or MAC, which tells them
//! apart — and a hit compares the whole credential, so it is exact. Hashing a 2 KB cookie
//! whole cost a few microseconds per request in Wasm; the SHA-256 digest this cache was keyed by
//! before, ten times that. Only credentials that verified are stored.
//!
//! Entries live until the token's `exp` (plus leeway); when full, the oldest goes, and expired
//! entries are swept out. The whole cache is dropped when the key set changes, so a key removed
//! at the provider stops being honoured at once.

use sha2::{Digest, Sha256};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::rc::Rc;

/// A credential's SHA-256 digest: how a session is named to the other workers (refresh notes)
/// without putting the cookie itself in shared memory.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// How much of a credential's end the map hashes.
const TAIL: usize = 64;

/// Expired entries are swept out at least this often (on an insert), full or not: a cache that
/// is rarely full (refreshed sessions) would otherwise keep dead entries' memory until it is.
const SWEEP_EVERY_SECS: u64 = 30;

fn tail(credential: &str) -> &str {
    let mut start = credential.len().saturating_sub(TAIL);
    while !credential.is_char_boundary(start) {
        start += 1;
    }
    credential.get(start..).unwrap_or(credential)
}

/// Whether two credentials are the same bytes. `==` on slices is a call to `memcmp`, which in
/// Wasm is compiler-builtins' byte-at-a-time loop: a fifth of a cached session's time in the VM
/// went to comparing its 2 KB cookie that way. This compares 16 bytes at a time.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(16), b.chunks_exact(16));
    for (p, q) in x.by_ref().zip(y.by_ref()) {
        let (Ok(p), Ok(q)) = (<[u8; 16]>::try_from(p), <[u8; 16]>::try_from(q)) else {
            return false;
        };
        if u128::from_ne_bytes(p) != u128::from_ne_bytes(q) {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

struct Entry {
    credential: Rc<str>,
    until: u64,
    value: Rc<dyn Any>,
}

/// A bounded cache of verified credentials, each holding a `V` (a session's or token's identity).
/// What it holds is only named at [`TokenCache::get`]: the map code is one copy, in `Store`,
/// for every cache (it was one per value type: 3 KB more in the module).
pub struct TokenCache<V> {
    store: Store,
    holds: PhantomData<Rc<V>>,
}

impl<V: 'static> TokenCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self { store: Store::new(capacity), holds: PhantomData }
    }

    /// The cached value, if this exact credential is present and not past `valid_until`.
    pub fn get(&mut self, credential: &str, now: u64) -> Option<Rc<V>> {
        // Only `insert` below puts values in, all of them `V`s: the downcast always holds.
        self.store.get(credential, now)?.downcast::<V>().ok()
    }

    /// Caches `value` until `valid_until` (exclusive). See `Store::insert`.
    pub fn insert(&mut self, credential: &str, valid_until: u64, value: Rc<V>, now: u64) {
        self.store.insert(credential, valid_until, value, now);
    }

    pub fn clear(&mut self) {
        self.store.clear();
    }

    pub fn len(&self) -> usize {
        self.store.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.entries.is_empty()
    }
}

struct Store {
    capacity: usize,
    /// By the credential's tail.
    entries: HashMap<Rc<str>, Entry>,
    /// Tails in insertion order, oldest first (may name entries already removed).
    order: VecDeque<Rc<str>>,
    /// When expired entries were last swept out.
    swept_at: u64,
}

impl Store {
    fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::new(), order: VecDeque::new(), swept_at: 0 }
    }

    #[inline(never)] // one copy for every cache
    fn get(&mut self, credential: &str, now: u64) -> Option<Rc<dyn Any>> {
        let key = tail(credential);
        match self.entries.get(key) {
            Some(e) if !same(e.credential.as_bytes(), credential.as_bytes()) => None,
            Some(e) if now < e.until => Some(Rc::clone(&e.value)),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Each insert into a full cache evicts the oldest entry; expired entries are swept out at
    /// most once a second when full (a sweep visits every entry, and a cache of distinct tokens
    /// is full all the time), and every [`SWEEP_EVERY_SECS`] otherwise.
    #[inline(never)] // one copy for every cache
    fn insert(&mut self, credential: &str, valid_until: u64, value: Rc<dyn Any>, now: u64) {
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        let full = self.entries.len() >= self.capacity;
        if (full && now > self.swept_at) || now >= self.swept_at.saturating_add(SWEEP_EVERY_SECS) {
            self.entries.retain(|_, e| now < e.until);
            self.swept_at = now;
        }
        while self.entries.len() >= self.capacity {
            // `order` may name entries already gone (expired, swept): skip those.
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&*old);
                }
                None => break,
            }
        }
        let key: Rc<str> = Rc::from(tail(credential));
        let entry = Entry { credential: Rc::from(credential), until: valid_until, value };
        // Another credential with the same tail (two verified ones cannot share a signature in
        // practice) is replaced.
        if self.entries.insert(Rc::clone(&key), entry).is_none() {
            self.order.push_back(key);
        }
        // Keep `order` bounded too; compacting costs a lookup per name, so only now and then.
        if self.order.len() > self.capacity.saturating_mul(2) {
            self.order.retain(|k| self.entries.contains_key(&**k));
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.swept_at = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_every_byte() {
        let base: Vec<u8> = (0..=255u8).cycle().take(2100).collect();
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 2048, 2100] {
            let a = &base[..len];
            assert!(same(a, a), "equal at length {len}");
            for at in (0..len).step_by(7).chain(len.checked_sub(1)) {
                let mut b = a.to_vec();
                b[at] ^= 0x01;
                assert!(!same(a, &b), "a difference at byte {at} of {len}");
            }
        }
        assert!(!same(b"abc", b"abcd"), "lengths differ");
        assert!(!same(b"abcd", b"abc"), "lengths differ");
    }

    #[test]
    fn a_credential_with_the_same_tail_is_a_miss() {
        let mut c = TokenCache::new(4);
        let tail = "t".repeat(TAIL);
        let stored = format!("{}{tail}", "a".repeat(2000));
        c.insert(&stored, 100, Rc::new(1), 10);
        let mut other = stored.clone().into_bytes();
        other[1000] = b'b';
        let other = String::from_utf8(other).unwrap();
        assert_eq!(c.get(&stored, 50).as_deref(), Some(&1));
        assert_eq!(c.get(&other, 50), None, "same tail, one byte different before it");
    }

    #[test]
    fn hit_until_expiry() {
        let mut c = TokenCache::new(4);
        let k = "a";
        c.insert(k, 100, Rc::new(1), 10);
        assert_eq!(c.get(k, 99).as_deref(), Some(&1));
        assert_eq!(c.get(k, 100), None);
        assert!(c.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn expired_entries_are_swept_within_the_interval_when_not_full() {
        let mut c = TokenCache::new(100);
        for i in 0..50 {
            c.insert(&format!("old-{i}"), 1010, Rc::new(i), 1000);
        }
        c.insert("fresh", 2000, Rc::new(0), 1020);
        assert_eq!(c.len(), 51, "expired, but not swept before the interval");
        c.insert("later", 2000, Rc::new(0), 1000 + SWEEP_EVERY_SECS);
        assert_eq!(c.len(), 2, "expired entries are gone, live ones stay");
        assert!(c.get("fresh", 1100).is_some() && c.get("later", 1100).is_some());
    }

    #[test]
    fn bounded_with_expired_then_oldest_evicted() {
        let mut c = TokenCache::new(3);
        c.insert("short", 20, Rc::new(0), 10);
        c.insert("a", 1000, Rc::new(1), 10);
        c.insert("b", 1000, Rc::new(2), 10);
        c.insert("c", 1000, Rc::new(3), 30); // "short" has expired: it goes first
        assert_eq!(c.len(), 3);
        assert!(c.get("a", 30).is_some());
        c.insert("d", 1000, Rc::new(4), 30); // full of live entries: oldest ("a") goes
        assert_eq!(c.len(), 3);
        assert!(c.get("a", 30).is_none());
        assert!(c.get("d", 30).is_some());
        for i in 0..10_000 {
            c.insert(&i.to_string(), 1000, Rc::new(i), 30);
        }
        assert_eq!(c.len(), 3);
        assert!(c.store.order.len() <= 6);
    }

    #[test]
    fn only_the_exact_credential_hits() {
        let mut c = TokenCache::new(4);
        c.insert("eyJ.payload.sig", 1000, Rc::new(1), 10);
        for other in ["eyJ.payload.sif", "eyJ.payload.sig ", "eyJ.payload.si", "EYJ.payload.sig", ""] {
            assert!(c.get(other, 11).is_none(), "{other:?} must not hit");
        }
        assert!(c.get("eyJ.payload.sig", 11).is_some());
    }

    #[test]
    fn a_credential_sharing_only_the_tail_misses() {
        let mut c = TokenCache::new(4);
        let sig = "s".repeat(80);
        let good = format!("header.good-claims.{sig}");
        let forged = format!("header.forged-claims.{sig}");
        c.insert(&good, 1000, Rc::new("alice"), 10);
        assert!(c.get(&forged, 11).is_none(), "same signature, other payload: a miss");
        assert_eq!(c.get(&good, 11).as_deref(), Some(&"alice"), "and the cached entry stays");
        // Non-ASCII near the cut does not split a character.
        let odd = format!("{}é{}", "x".repeat(10), "y".repeat(63));
        c.insert(&odd, 1000, Rc::new("odd"), 10);
        assert_eq!(c.get(&odd, 11).as_deref(), Some(&"odd"));
        // A later credential with the same tail replaces the earlier one.
        c.insert(&forged, 1000, Rc::new("mallory"), 10);
        assert!(c.get(&good, 11).is_none());
        assert_eq!(c.get(&forged, 11).as_deref(), Some(&"mallory"));
    }

    #[test]
    fn zero_capacity_and_past_entries_are_not_stored() {
        let mut c = TokenCache::new(0);
        c.insert("a", 1000, Rc::new(1), 10);
        assert!(c.is_empty());
        let mut c = TokenCache::new(2);
        c.insert("a", 10, Rc::new(1), 10);
        assert!(c.is_empty());
    }
}
