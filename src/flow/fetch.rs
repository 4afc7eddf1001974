//! Fetching the provider's discovery document and key set, for the engine: the root context's
//! ticks (the schedule, the cross-VM fetch lease, adopting what other VMs published) and a
//! request that waits for the keys because its token named an unknown `kid`.
//!
//! The glue only makes the calls it is handed ([`KeyCall`]) and hands back their answers.

use super::Engine;
use crate::callout::{Answer, Callout, Class, FetchError};
use crate::keys::{Adopted, Fetch, Installed, Snapshot};
use crate::shared::{release_lease, take_lease};
use crate::stats::Counter;
use std::time::Duration;

/// A fetch to make, and the callout that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCall {
    pub fetch: Fetch,
    pub callout: Callout,
}

/// Who makes a fetch: the root context under the cross-VM lease (the periodic fetches), or a
/// request's context without it (a token named an unknown `kid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetcher {
    Root,
    Request,
}

/// What the root context does on a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// A fetch to start now.
    pub call: Option<KeyCall>,
    /// When to tick next.
    pub period: Duration,
}

/// The first tick comes soon after configure (it starts the key fetch); then ticks are fast while
/// no keys are loaded, and once a second after (refresh checks, adopting keys other VMs fetched,
/// handing counts to Envoy).
pub const FIRST_TICK: Duration = Duration::from_millis(10);
const FAST_TICK: Duration = Duration::from_millis(200);
const SLOW_TICK: Duration = Duration::from_secs(1);

impl Engine {
    /// On a tick of the root context at `now`, with a fetch of its own in flight or not.
    pub fn tick(&mut self, now: u64, call_in_flight: bool) -> Tick {
        self.adopt_published();
        let call = if call_in_flight { None } else { self.keys.due(now) };
        let call = call.and_then(|fetch| {
            // Long enough for discovery and key set, each with its timeout.
            let until = now + 2 * self.config.callout_timeout_ms.div_ceil(1000) + 2;
            if take_lease(self.store.as_ref(), &self.names.lease(), "", now, until) {
                Some(self.key_call(fetch))
            } else {
                self.keys.abandon(); // another VM fetches, and publishes what it gets
                None
            }
        });
        let period = if self.keys.keys().is_some() { SLOW_TICK } else { FAST_TICK };
        Tick { call, period }
    }

    /// A request waits for this key-set fetch (its token named an unknown `kid`): the call to
    /// make, or `None` if another VM published new keys meanwhile (decide again at once).
    pub fn wait_for_keys(&mut self, fetch: Fetch) -> Option<KeyCall> {
        if self.adopt_published() != Adopted::No {
            self.keys.abandon();
            return None;
        }
        Some(self.key_call(fetch))
    }

    /// The answer to a [`KeyCall`]. Returns the next fetch to make (the key set, after discovery).
    pub fn on_key_answer(&mut self, fetch: &Fetch, answer: &Answer, now: u64, by: Fetcher) -> Option<KeyCall> {
        let next = match fetch {
            Fetch::Discovery(_) => {
                self.stats.count(Counter::DiscoveryFetch);
                match self.keys.on_discovery(now, answer.document()) {
                    Ok(next) => next,
                    Err(e) => {
                        self.fetch_failed(fetch, &e, now);
                        None
                    }
                }
            }
            Fetch::Jwks(_) => {
                self.stats.count(Counter::JwksFetch);
                match self.keys.on_jwks(now, answer.document()) {
                    Ok(installed) => self.installed(installed),
                    Err(e) => self.fetch_failed(fetch, &e, now),
                }
                None
            }
        };
        match next {
            Some(fetch) => Some(self.key_call(fetch)),
            None => {
                if by == Fetcher::Root {
                    release_lease(self.store.as_ref(), &self.names.lease());
                }
                None
            }
        }
    }

    /// A [`KeyCall`] the host could not start (`provider.cluster` names no cluster).
    pub fn on_key_call_failed(&mut self, fetch: &Fetch, now: u64, by: Fetcher) {
        self.stats.count(match fetch {
            Fetch::Discovery(_) => Counter::DiscoveryFetch,
            Fetch::Jwks(_) => Counter::JwksFetch,
        });
        self.keys.on_dispatch_failed(now);
        self.fetch_failed(fetch, &FetchError::NotStarted, now);
        if by == Fetcher::Root {
            release_lease(self.store.as_ref(), &self.names.lease());
        }
    }

    fn key_call(&self, fetch: Fetch) -> KeyCall {
        let path = match &fetch {
            Fetch::Discovery(p) | Fetch::Jwks(p) => p,
        };
        KeyCall { callout: Callout::get(&self.config, path), fetch }
    }

    /// Adopts the keys another VM published, if newer than ours.
    pub(super) fn adopt_published(&mut self) -> Adopted {
        let (Some(bytes), _) = self.store.get(&self.names.keys()) else {
            return Adopted::No;
        };
        let adopted = Snapshot::decode(&bytes).map_or(Adopted::No, |s| self.keys.adopt(&s));
        match adopted {
            Adopted::NewKeys => {
                // Verified tokens and sessions were checked under the old keys.
                self.cache.clear();
                log::debug!("adopted the key set fetched by another worker");
            }
            Adopted::SameKeys => log::debug!("adopted the key set fetched by another worker (same keys)"),
            Adopted::No => {}
        }
        adopted
    }

    /// A key set fetched here: cached verdicts go if the keys changed; published for the other VMs.
    fn installed(&mut self, Installed { snapshot, changed }: Installed) {
        if changed {
            self.cache.clear();
        }
        if !self.store.set(&self.names.keys(), &snapshot.encode(), None) {
            log::warn!("could not share the key set with other workers");
        }
        if let Some(keys) = self.keys.keys() {
            log::info!("key set loaded: {} usable key(s)", keys.keys.len());
            for skipped in &keys.skipped {
                log::info!("key skipped: {skipped}");
            }
        }
    }

    fn fetch_failed(&mut self, fetch: &Fetch, e: &FetchError, now: u64) {
        let (what, path, counter) = match fetch {
            Fetch::Discovery(p) => ("discovery", p, Counter::DiscoveryFetchFailure),
            Fetch::Jwks(p) => ("key set fetch", p, Counter::JwksFetchFailure),
        };
        self.stats.count(counter);
        let class = e.class();
        self.stats.count(Counter::ProviderError(class));
        let retry = self.keys.retry_in(now);
        match class {
            Class::Configuration => log::error!(
                "{what} at {path} failed: {e} (a configuration problem: check provider.issuer, provider.cluster and the provider's keys); keeping the previous keys, retrying in {retry}s"
            ),
            Class::Passing => {
                log::warn!("{what} at {path} failed: {e}; keeping the previous keys, retrying in {retry}s")
            }
        }
    }
}
