//! A bounded cache of verified tokens and session cookies, keyed by the credential itself.
//!
//! RSA and ECDSA verification inside Wasm costs hundreds of microseconds; a token seen again is
//! a map lookup. The map is std's `HashMap` (SipHash-1-3 with a per-VM random key, so lookups
//! with hostile strings cannot be steered into collisions) and a hit compares the whole
//! credential, so it is exact. Hashing a 2 KB cookie this way costs a few hundred nanoseconds in
//! Wasm; the SHA-256 digest this cache was keyed by before cost about ten times that, on every
//! request. Only credentials that verified are stored. Entries live until the token's `exp` (plus leeway); when full, expired
//! entries go first, then the oldest. The whole cache is dropped when the key set changes, so a
//! key removed at the provider stops being honoured at once.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// A credential's SHA-256 digest: how a session is named to the other workers (refresh notes)
/// without putting the cookie itself in shared memory.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

pub struct TokenCache<V> {
    capacity: usize,
    entries: HashMap<Rc<str>, (u64, Rc<V>)>,
    /// Insertion order, oldest first (may name entries already removed).
    order: VecDeque<Rc<str>>,
    /// When expired entries were last swept out.
    swept_at: u64,
}

impl<V> TokenCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::new(), order: VecDeque::new(), swept_at: 0 }
    }

    /// The cached value, if present and not past `valid_until`.
    pub fn get(&mut self, key: &str, now: u64) -> Option<Rc<V>> {
        match self.entries.get(key) {
            Some((until, value)) if now < *until => Some(Rc::clone(value)),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `value` until `valid_until` (exclusive). Each insert into a full cache evicts the
    /// oldest entry; expired entries are swept out at most once a second (a sweep visits every
    /// entry, and a cache of distinct tokens is full all the time).
    pub fn insert(&mut self, key: &str, valid_until: u64, value: Rc<V>, now: u64) {
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        let key: Rc<str> = Rc::from(key);
        if self.entries.len() >= self.capacity && now > self.swept_at {
            self.entries.retain(|_, (until, _)| now < *until);
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
        if self.entries.insert(Rc::clone(&key), (valid_until, value)).is_none() {
            self.order.push_back(key);
        }
        // Keep `order` bounded too; compacting costs a lookup per name, so only now and then.
        if self.order.len() > self.capacity.saturating_mul(2) {
            self.order.retain(|k| self.entries.contains_key(&**k));
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.swept_at = 0;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(c.order.len() <= 6);
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
    fn zero_capacity_and_past_entries_are_not_stored() {
        let mut c = TokenCache::new(0);
        c.insert("a", 1000, Rc::new(1), 10);
        assert!(c.is_empty());
        let mut c = TokenCache::new(2);
        c.insert("a", 10, Rc::new(1), 10);
        assert!(c.is_empty());
    }
}
