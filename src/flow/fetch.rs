//! Fetching the provider's discovery document and key set, for the engine: the root context's
//! ticks (the schedule, the cross-VM fetch lease, adopting what other VMs published) and a
//! request that waits for the keys because its token named an unknown `kid`.
//!
//! The glue only makes the calls it is handed ([`KeyCall`]) and hands back their answers.

use super::Engine;
use crate::callout::{Answer, Callout, Class, FetchError};
use crate::keys::{Adopted, Doc, Fetch, Installed, Snapshot};
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
    /// The fetches to start now.
    pub calls: Vec<KeyCall>,
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
    /// On a tick of the root context at `now`; `in_flight`: the providers whose fetch it made
    /// is still running. The fetches to start, one per provider at most.
    pub fn tick(&mut self, now: u64, in_flight: &[usize]) -> Tick {
        self.adopt_published();
        let mut calls = Vec::new();
        for p in 0..self.providers.len() {
            if in_flight.contains(&p) {
                continue;
            }
            let Some(fetch) = self.providers.at_mut(p).keys.due(now) else { continue };
            // Long enough for discovery and key set, each with its timeout.
            let until = now + 2 * self.config.callout_timeout_ms.div_ceil(1000) + 2;
            if take_lease(self.store.as_ref(), &self.providers.at(p).names.lease(), "", now, until) {
                calls.push(self.key_call(fetch));
            } else {
                self.providers.at_mut(p).keys.abandon(); // another VM fetches, and publishes what it gets
            }
        }
        let loaded = self.providers.iter().all(|p| p.keys.keys().is_some());
        Tick { calls, period: if loaded { SLOW_TICK } else { FAST_TICK } }
    }

    /// A request waits for this key-set fetch (its token named an unknown `kid`): the call to
    /// make, or `None` if another VM published new keys meanwhile (decide again at once).
    pub fn wait_for_keys(&mut self, fetch: Fetch) -> Option<KeyCall> {
        if self.adopt_published_by(fetch.provider) != Adopted::No {
            self.providers.at_mut(fetch.provider).keys.abandon();
            return None;
        }
        Some(self.key_call(fetch))
    }

    /// The answer to a [`KeyCall`]. Returns the next fetch to make (the key set, after discovery).
    pub fn on_key_answer(&mut self, fetch: &Fetch, answer: &Answer, now: u64, by: Fetcher) -> Option<KeyCall> {
        let p = fetch.provider;
        let next = match &fetch.doc {
            Doc::Discovery(_) => {
                self.stats.count(Counter::DiscoveryFetch);
                match self.providers.at_mut(p).keys.on_discovery(now, answer.document()) {
                    Ok(next) => next,
                    Err(e) => {
                        self.fetch_failed(fetch, &e, now);
                        None
                    }
                }
            }
            Doc::Jwks(_) => {
                self.stats.count(Counter::JwksFetch);
                match self.providers.at_mut(p).keys.on_jwks(now, answer.document()) {
                    Ok(installed) => self.installed(p, installed),
                    Err(e) => self.fetch_failed(fetch, &e, now),
                }
                None
            }
        };
        match next {
            Some(fetch) => Some(self.key_call(fetch)),
            None => {
                if by == Fetcher::Root {
                    release_lease(self.store.as_ref(), &self.providers.at(p).names.lease());
                }
                None
            }
        }
    }

    /// A [`KeyCall`] the host could not start (`provider.cluster` names no cluster).
    pub fn on_key_call_failed(&mut self, fetch: &Fetch, now: u64, by: Fetcher) {
        self.stats.count(match fetch.doc {
            Doc::Discovery(_) => Counter::DiscoveryFetch,
            Doc::Jwks(_) => Counter::JwksFetch,
        });
        let p = fetch.provider;
        self.providers.at_mut(p).keys.on_dispatch_failed(now);
        self.fetch_failed(fetch, &FetchError::NotStarted, now);
        if by == Fetcher::Root {
            release_lease(self.store.as_ref(), &self.providers.at(p).names.lease());
        }
    }

    fn key_call(&self, fetch: Fetch) -> KeyCall {
        KeyCall { callout: Callout::get(&self.config, fetch.provider, fetch.path()), fetch }
    }

    /// Adopts the keys other VMs published, for each provider whose are newer than ours.
    pub(super) fn adopt_published(&mut self) {
        for p in 0..self.providers.len() {
            self.adopt_published_by(p);
        }
    }

    /// Adopts the keys of provider `p` another VM published, if newer than ours.
    fn adopt_published_by(&mut self, p: usize) -> Adopted {
        let provider = self.providers.at_mut(p);
        let (Some(bytes), _) = self.store.get(&provider.names.keys()) else {
            return Adopted::No;
        };
        let adopted = Snapshot::decode(&bytes).map_or(Adopted::No, |s| provider.keys.adopt(&s));
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
    fn installed(&mut self, p: usize, Installed { snapshot, changed }: Installed) {
        if changed {
            self.cache.clear();
        }
        if !self.store.set(&self.providers.at(p).names.keys(), &snapshot.encode(), None) {
            log::warn!("could not share the key set with other workers");
        }
        if let Some(keys) = self.providers.at(p).keys.keys() {
            log::info!("key set loaded: {} usable key(s)", keys.keys.len());
            for skipped in &keys.skipped {
                log::info!("key skipped: {skipped}");
            }
        }
    }

    fn fetch_failed(&mut self, fetch: &Fetch, e: &FetchError, now: u64) {
        let (what, path, counter) = match &fetch.doc {
            Doc::Discovery(p) => ("discovery", p, Counter::DiscoveryFetchFailure),
            Doc::Jwks(p) => ("key set fetch", p, Counter::JwksFetchFailure),
        };
        let issuer = &self.config.providers.at(fetch.provider).issuer;
        self.stats.count(counter);
        let class = e.class();
        self.stats.count(Counter::ProviderError(class));
        let retry = self.providers.at(fetch.provider).keys.retry_in(now);
        match class {
            Class::Configuration => log::error!(
                "{what} at {path} for {issuer} failed: {e} (a configuration problem: check the provider's issuer, cluster and keys); keeping the previous keys, retrying in {retry}s"
            ),
            Class::Passing => {
                log::warn!("{what} at {path} for {issuer} failed: {e}; keeping the previous keys, retrying in {retry}s")
            }
        }
    }
}
