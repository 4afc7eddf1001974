//! What the VMs of one Envoy share: Envoy runs one Wasm VM per worker thread, and proxy-wasm's
//! shared data is the one store they all see. gatehouse keeps three kinds of entry there, named
//! per issuer so that several gatehouse configurations in one VM group do not mix them:
//!
//! - `gatehouse|<issuer>|keys`: the last discovery document and key set fetched ([`Snapshot`]),
//!   adopted by the other VMs instead of fetching themselves;
//! - `gatehouse|<issuer>|lease`: until when one VM holds the right to fetch them;
//! - `gatehouse|<issuer>|refreshed|<slot>`: a session one VM just refreshed
//!   ([`crate::flow::RefreshNote`]), so that the others do not refresh it again;
//! - `gatehouse|<issuer>|refreshing|<slot>`: until when one VM is refreshing a session, so that two
//!   workers never redeem the same refresh token (a provider that rotates refresh tokens refuses the
//!   second use, which would sign the user out);
//! - `gatehouse|<issuer>|revocations` and `…|revoked|<slot>`: the sessions back-channel logouts
//!   ended ([`crate::revoked`]), and `…|logout-jti|<slot>` the logout tokens already used.
//!
//! The store is a trait so that the core is host-tested: the glue lends Envoy's, tests use
//! [`MemoryStore`].
//!
//! [`Snapshot`]: crate::keys::Snapshot

use std::cell::RefCell;
use std::collections::HashMap;

/// A key-value store with compare-and-swap, as proxy-wasm's shared data.
pub trait Store {
    /// The value under `key` and its version (`None, None` when there is none).
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Sets `key`; with `cas`, only if the value is still at that version. Whether it was set.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// The names of one issuer's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(issuer: &str) -> Names {
        Names { prefix: format!("gatehouse|{issuer}|") }
    }

    pub fn keys(&self) -> String {
        format!("{}keys", self.prefix)
    }

    pub fn lease(&self) -> String {
        format!("{}lease", self.prefix)
    }

    /// One of 256 slots for refresh notes: shared data cannot be deleted, so the slots are a
    /// fixed ring and a newer note overwrites an older one.
    pub fn refreshed(&self, slot: u8) -> String {
        format!("{}refreshed|{slot}", self.prefix)
    }

    /// The number of the last back-channel logout (see [`crate::revoked`]).
    pub fn revocations(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// One slot of the ring of back-channel logouts.
    pub fn revoked(&self, slot: u64) -> String {
        format!("{}revoked|{slot}", self.prefix)
    }

    /// A slot of the logout tokens' `jti`s seen (a ring by hash).
    pub fn logout_jti(&self, slot: u16) -> String {
        format!("{}logout-jti|{slot}", self.prefix)
    }

    /// The lease of one of 256 slots for refreshes in flight (a ring, as [`Names::refreshed`]).
    pub fn refreshing(&self, slot: u8) -> String {
        format!("{}refreshing|{slot}", self.prefix)
    }
}

/// Takes the lease under `key` until `until` (Unix seconds) if nobody holds it at `now`: one VM
/// does the work (fetching the keys, refreshing a session), the others adopt what it publishes.
/// The value is `until` (then `|` and what holds it, for a log reader).
pub fn take_lease(store: &dyn Store, key: &str, holder: &str, now: u64, until: u64) -> bool {
    let (mut value, mut cas) = store.get(key);
    if cas.is_none() {
        // First use: create the entry, then compete with compare-and-swap like later uses, so
        // that two VMs starting together cannot both win.
        store.set(key, b"0", None);
        (value, cas) = store.get(key);
    }
    let held_until = value
        .and_then(|v| {
            let text = std::str::from_utf8(&v).ok()?;
            text.split('|').next()?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let value = if holder.is_empty() { until.to_string() } else { format!("{until}|{holder}") };
    held_until <= now && store.set(key, value.as_bytes(), cas)
}

/// Gives a lease back (the work is over).
pub fn release_lease(store: &dyn Store, key: &str) {
    store.set(key, b"0", None);
}

/// Gives a lease back if `holder` still holds it (it may have expired and been taken by another).
pub fn release_lease_of(store: &dyn Store, key: &str, holder: &str) {
    let (value, cas) = store.get(key);
    let held = value
        .is_some_and(|v| std::str::from_utf8(&v).ok().and_then(|t| t.split_once('|')).map(|(_, h)| h) == Some(holder));
    if held {
        store.set(key, b"0", cas);
    }
}

/// An in-memory [`Store`] that keeps versions as Envoy does (every set makes a new version; a set
/// with a stale version fails), for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    versions: std::cell::Cell<u32>,
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.entries.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut entries = self.entries.borrow_mut();
        if let (Some(expected), Some((_, current))) = (cas, entries.get(key)) {
            if expected != *current {
                return false;
            }
        }
        let version = self.versions.get().wrapping_add(1).max(1);
        self.versions.set(version);
        entries.insert(key.to_string(), (value.to_vec(), version));
        true
    }
}

impl<S: Store + ?Sized> Store for std::rc::Rc<S> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        (**self).get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        (**self).set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lease_holder_until_it_expires_or_is_released() {
        let store = MemoryStore::default();
        let names = Names::new("https://idp/realms/demo");
        let key = names.lease();
        assert!(take_lease(&store, &key, "", 100, 110), "the first taker wins");
        assert!(!take_lease(&store, &key, "", 105, 115), "held until 110");
        assert!(take_lease(&store, &key, "", 110, 120), "free again at 110");
        release_lease(&store, &key);
        assert!(take_lease(&store, &key, "", 111, 121), "free once released");
        let slot = names.refreshing(3);
        assert!(take_lease(&store, &slot, "ab12", 100, 110));
        assert!(!take_lease(&store, &slot, "cd34", 101, 111), "a holder's value is read past its |");
        assert!(take_lease(&store, &slot, "cd34", 110, 120));
        release_lease_of(&store, &slot, "ab12");
        assert!(!take_lease(&store, &slot, "ef56", 111, 121), "only its holder gives a lease back");
        release_lease_of(&store, &slot, "cd34");
        assert!(take_lease(&store, &slot, "ef56", 111, 121), "given back by its holder");
    }

    #[test]
    fn a_lease_taken_meanwhile_by_another_vm_is_not_taken_twice() {
        // The other VM's set lands between this VM's read and its compare-and-swap.
        struct Racing<'a>(&'a MemoryStore, std::cell::Cell<bool>);
        impl Store for Racing<'_> {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let got = self.0.get(key);
                if got.1.is_some() && !self.1.replace(true) {
                    self.0.set(key, b"999", None);
                }
                got
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                self.0.set(key, value, cas)
            }
        }
        let store = MemoryStore::default();
        let names = Names::new("i");
        assert!(!take_lease(&Racing(&store, false.into()), &names.lease(), "", 100, 110));
        assert_eq!(store.get(&names.lease()).0.as_deref(), Some(&b"999"[..]));
    }

    #[test]
    fn a_garbled_lease_is_free_and_issuers_have_their_own_entries() {
        let store = MemoryStore::default();
        let (a, b) = (Names::new("https://a"), Names::new("https://b"));
        store.set(&a.lease(), b"not a number", None);
        assert!(take_lease(&store, &a.lease(), "", 5, 10));
        assert!(take_lease(&store, &b.lease(), "", 5, 10), "another issuer's lease is another entry");
        assert_ne!(a.keys(), b.keys());
        assert_eq!(a.refreshed(7), "gatehouse|https://a|refreshed|7");
    }

    #[test]
    fn memory_store_versions_like_envoy() {
        let store = MemoryStore::default();
        assert_eq!(store.get("k"), (None, None));
        assert!(store.set("k", b"1", Some(42)), "a missing entry is created whatever the version");
        let (_, cas) = store.get("k");
        assert!(store.set("k", b"2", cas));
        assert!(!store.set("k", b"3", cas), "a stale version fails");
        assert!(store.set("k", b"4", None), "no version: always set");
        assert_eq!(store.get("k").0.as_deref(), Some(&b"4"[..]));
    }
}
