//! A bounded cache of verified tokens, keyed by the SHA-256 of the token.
//!
//! RSA and ECDSA verification inside Wasm costs hundreds of microseconds; a token seen again is
//! a hash and a map lookup. Entries live until the token's `exp` (plus leeway); when full, expired
//! entries go first, then the oldest. The whole cache is dropped when the key set changes, so a
//! key removed at the provider stops being honoured at once.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// A cache key: the token's digest (the token itself is never stored).
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

pub struct TokenCache<V> {
    capacity: usize,
    entries: HashMap<TokenHash, (u64, Rc<V>)>,
    order: VecDeque<TokenHash>,
}

impl<V> TokenCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::new(), order: VecDeque::new() }
    }

    /// The cached value, if present and not past `valid_until`.
    pub fn get(&mut self, key: &TokenHash, now: u64) -> Option<Rc<V>> {
        match self.entries.get(key) {
            Some((until, value)) if now < *until => Some(Rc::clone(value)),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `value` until `valid_until` (exclusive).
    pub fn insert(&mut self, key: TokenHash, valid_until: u64, value: Rc<V>, now: u64) {
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (until, _)| now < *until);
            self.order.retain(|k| self.entries.contains_key(k));
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        if self.entries.insert(key, (valid_until, value)).is_none() {
            self.order.push_back(key);
        }
        // `order` may hold keys removed by `get`; keep it bounded too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            self.order.retain(|k| self.entries.contains_key(k));
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
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
        let k = token_hash("a");
        c.insert(k, 100, Rc::new(1), 10);
        assert_eq!(c.get(&k, 99).as_deref(), Some(&1));
        assert_eq!(c.get(&k, 100), None);
        assert!(c.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn bounded_with_expired_then_oldest_evicted() {
        let mut c = TokenCache::new(3);
        c.insert(token_hash("short"), 20, Rc::new(0), 10);
        c.insert(token_hash("a"), 1000, Rc::new(1), 10);
        c.insert(token_hash("b"), 1000, Rc::new(2), 10);
        c.insert(token_hash("c"), 1000, Rc::new(3), 30); // "short" has expired: it goes first
        assert_eq!(c.len(), 3);
        assert!(c.get(&token_hash("a"), 30).is_some());
        c.insert(token_hash("d"), 1000, Rc::new(4), 30); // full of live entries: oldest ("a") goes
        assert_eq!(c.len(), 3);
        assert!(c.get(&token_hash("a"), 30).is_none());
        assert!(c.get(&token_hash("d"), 30).is_some());
        for i in 0..10_000 {
            c.insert(token_hash(&i.to_string()), 1000, Rc::new(i), 30);
        }
        assert_eq!(c.len(), 3);
        assert!(c.order.len() <= 6);
    }

    #[test]
    fn zero_capacity_and_past_entries_are_not_stored() {
        let mut c = TokenCache::new(0);
        c.insert(token_hash("a"), 1000, Rc::new(1), 10);
        assert!(c.is_empty());
        let mut c = TokenCache::new(2);
        c.insert(token_hash("a"), 10, Rc::new(1), 10);
        assert!(c.is_empty());
    }
}
