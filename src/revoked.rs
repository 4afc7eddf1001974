//! Sessions ended by the provider (back-channel logout), known to every VM of this Envoy at once.
//!
//! A logout reaches one worker's VM. It claims the next number of a generation counter in the
//! shared data (compare-and-swap), then writes its revocation to that number's slot of a ring
//! (shared data cannot be deleted, so slots are reused). Every VM reads the counter on each
//! session request — one small shared-data read — and, when it moved, reads the slots it has not
//! seen into its own table. A slot whose number is not yet the one claimed is being written:
//! the VM reads it again at its next request.
//!
//! A revocation lasts as long as a session can (`session.lifetimeSeconds`): later, every session
//! it could end has expired anyway.

use crate::shared::{Names, Store};
use std::collections::HashMap;

/// Slots of the ring: a VM that starts (or falls behind) by more revocations than this within a
/// session lifetime misses the oldest.
pub const RING: u64 = 4096;

/// How long a claimed slot may stay unwritten before readers pass over it.
const STUCK_SECS: u64 = 5;

/// What a logout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One provider session.
    Session { sid: String },
    /// Every session of a user made at or before `at`.
    User { sub: String, at: u64 },
}

impl Revocation {
    fn encode(&self, number: u64, until: u64) -> String {
        match self {
            Revocation::Session { sid } => format!("{number}|sid|{until}|{sid}"),
            Revocation::User { sub, at } => format!("{number}|sub|{until}|{at}|{sub}"),
        }
    }

    fn decode(text: &str) -> Option<(u64, u64, Revocation)> {
        let mut parts = text.splitn(4, '|');
        let number = parts.next()?.parse().ok()?;
        let kind = parts.next()?;
        let until = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let r = match kind {
            "sid" => Revocation::Session { sid: rest.to_string() },
            "sub" => {
                let (at, sub) = rest.split_once('|')?;
                Revocation::User { sub: sub.to_string(), at: at.parse().ok()? }
            }
            _ => return None,
        };
        Some((number, until, r))
    }
}

/// One VM's table of revocations, and how far it has read the ring.
#[derive(Debug, Default)]
pub struct Revocations {
    seen: u64,
    /// A claimed slot not written yet, and since when this VM waits for it.
    waiting: Option<(u64, u64)>,
    /// By `sid`: `(u64::MAX, until)`, every session of it, until when (the shape of `users`: one
    /// copy of the map code for both).
    sessions: HashMap<String, (u64, u64)>,
    /// By `sub`: sessions made at or before the first number end, until the second.
    users: HashMap<String, (u64, u64)>,
}

impl Revocations {
    /// Reads what other VMs revoked since the last call (one shared-data read when nothing did).
    pub fn sync(&mut self, store: &dyn Store, names: &Names, now: u64) {
        let (value, _) = store.get(&names.revocations());
        let current = value.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok()).unwrap_or(0);
        if current <= self.seen {
            return;
        }
        let first = self.seen.saturating_add(1).max(current.saturating_sub(RING - 1));
        for number in first..=current {
            let (slot, _) = store.get(&names.revoked(number % RING));
            let entry = slot.and_then(|v| Revocation::decode(std::str::from_utf8(&v).ok()?));
            match entry {
                Some((n, until, r)) if n == number => self.insert(r, until),
                // Overwritten by a later round of the ring: lost to a VM this far behind.
                Some((n, ..)) if n > number => {}
                // Claimed, not written yet: read it again next time — unless it stays so for
                // seconds (a write that failed), which must not stop every later one.
                _ => match self.waiting {
                    Some((n, since)) if n == number && now >= since + STUCK_SECS => {}
                    Some((n, _)) if n == number => return,
                    _ => {
                        self.waiting = Some((number, now));
                        return;
                    }
                },
            }
            self.seen = number;
        }
        if self.sessions.len() + self.users.len() > 1024 {
            for map in [&mut self.sessions, &mut self.users] {
                map.retain(|_, (_, until)| now < *until);
            }
        }
    }

    /// Records a revocation for every VM of this Envoy (and this one), valid until `until`.
    /// `false` if the shared data would not take it (this VM still knows).
    pub fn revoke(&mut self, store: &dyn Store, names: &Names, r: Revocation, until: u64) -> bool {
        self.insert(r.clone(), until);
        let key = names.revocations();
        for _ in 0..16 {
            let (value, cas) = store.get(&key);
            let current = value.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok()).unwrap_or(0);
            let number = current + 1;
            if store.set(&key, number.to_string().as_bytes(), cas) {
                return store.set(&names.revoked(number % RING), r.encode(number, until).as_bytes(), None);
            }
        }
        false
    }

    fn insert(&mut self, r: Revocation, until: u64) {
        match r {
            Revocation::Session { sid } => {
                let e = self.sessions.entry(sid).or_insert((u64::MAX, 0));
                e.1 = e.1.max(until);
            }
            Revocation::User { sub, at } => {
                let e = self.users.entry(sub).or_insert((0, 0));
                *e = (e.0.max(at), e.1.max(until));
            }
        }
    }

    /// Whether a session (its provider session, user and login time) was ended.
    pub fn ended(&self, sid: Option<&str>, sub: Option<&str>, login_at: u64, now: u64) -> bool {
        let ends = |(at, until): &(u64, u64)| login_at <= *at && now < *until;
        sid.and_then(|s| self.sessions.get(s)).is_some_and(ends)
            || sub.and_then(|s| self.users.get(s)).is_some_and(ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;
    use std::rc::Rc;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_revocation_reaches_every_vm_and_lasts_a_session_lifetime() {
        let store = Rc::new(MemoryStore::default());
        let names = Names::new("https://idp/realms/demo");
        let (mut a, mut b) = (Revocations::default(), Revocations::default());
        assert!(a.revoke(&*store, &names, Revocation::Session { sid: "s-1".into() }, NOW + 100));
        assert!(a.ended(Some("s-1"), None, NOW - 5, NOW), "at once where it arrived");
        assert!(!b.ended(Some("s-1"), None, NOW - 5, NOW), "not synced yet");
        b.sync(&*store, &names, NOW);
        assert!(b.ended(Some("s-1"), Some("u"), NOW - 5, NOW));
        assert!(!b.ended(Some("s-2"), Some("u"), NOW - 5, NOW), "another session");
        assert!(!b.ended(Some("s-1"), None, NOW - 5, NOW + 100), "over after the lifetime");
        // A user's sessions made until the logout end; later ones do not.
        assert!(b.revoke(&*store, &names, Revocation::User { sub: "a|b".into(), at: NOW }, NOW + 100));
        a.sync(&*store, &names, NOW);
        assert!(a.ended(Some("x"), Some("a|b"), NOW, NOW));
        assert!(!a.ended(Some("x"), Some("a|b"), NOW + 1, NOW + 1), "signed in after the logout");
        assert!(!a.ended(None, Some("a"), NOW, NOW));
        // Another issuer's entries are its own.
        let mut c = Revocations::default();
        c.sync(&*store, &Names::new("https://other"), NOW);
        assert!(!c.ended(Some("s-1"), None, NOW, NOW));
    }

    #[test]
    fn a_slot_claimed_but_not_written_is_read_again_and_a_late_vm_reads_the_ring() {
        let store = Rc::new(MemoryStore::default());
        let names = Names::new("i");
        // Number 1 claimed, its slot not written yet.
        store.set(&names.revocations(), b"1", None);
        let mut b = Revocations::default();
        b.sync(&*store, &names, NOW);
        store.set(&names.revoked(1), Revocation::Session { sid: "s".into() }.encode(1, NOW + 9).as_bytes(), None);
        b.sync(&*store, &names, NOW);
        assert!(b.ended(Some("s"), None, 0, NOW), "read once written");
        // A claimed slot that stays unwritten (a failed write) holds readers back for seconds,
        // not for ever: the next revocation still arrives.
        store.set(&names.revocations(), b"2", None);
        let mut a = Revocations::default();
        assert!(a.revoke(&*store, &names, Revocation::Session { sid: "t".into() }, NOW + 99));
        b.sync(&*store, &names, NOW);
        assert!(!b.ended(Some("t"), None, 0, NOW), "number 2 not written yet");
        b.sync(&*store, &names, NOW + 6);
        assert!(b.ended(Some("t"), None, 0, NOW + 6), "passed over number 2");
        // A slot holding an older round's entry is not taken for the new number.
        store.set(&names.revocations(), (RING + 1).to_string().as_bytes(), None);
        let mut late = Revocations::default();
        late.sync(&*store, &names, NOW);
        late.sync(&*store, &names, NOW + 6);
        assert!(!late.ended(Some("s"), None, 0, NOW + 6), "slot 1 holds number 1, not {}", RING + 1);
        // Garbage in a slot or the counter: nothing taken, nothing panics.
        store.set(&names.revocations(), b"\xff\xfe", None);
        store.set(&names.revoked(2), b"2|sub|x|y", None);
        Revocations::default().sync(&*store, &names, NOW);
        assert_eq!(Revocation::decode("3|sub|9|notanumber|u"), None);
        assert_eq!(Revocation::decode("3|xyz|9|u"), None);
    }
}
