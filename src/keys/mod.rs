//! When to fetch the discovery document and the key set, and what to keep.
//!
//! A pure state machine driven by the glue: `due` says what to fetch now, `on_*` take the
//! answers. At start it fetches with exponential backoff until the provider answers; then it
//! refreshes every `refresh_interval`, keeping the last good keys whatever happens to later
//! fetches (the provider being down must not take verification down). A token naming an unknown
//! `kid` may trigger an early key-set fetch, at most once per `unknown_kid_min_interval`, so a
//! flood of bogus kids cannot hammer the provider.
//!
//! Envoy runs one VM per worker; the fetched documents are published as a [`Snapshot`] in
//! proxy-wasm shared data so that the other VMs adopt them instead of fetching themselves.

use crate::callout::FetchError;
use crate::config::{Config, KeySource};
use crate::jwt::jwks::KeySet;
use crate::oidc::discovery::Discovery;
use serde::{Deserialize, Serialize};
use std::rc::Rc;

/// A fetch to make on a provider's cluster: the provider (its index in the configuration) and
/// the document, with the path to GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub provider: usize,
    pub doc: Doc,
}

/// A document to fetch, with its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    Discovery(String),
    Jwks(String),
}

impl Fetch {
    pub fn path(&self) -> &str {
        match &self.doc {
            Doc::Discovery(p) | Doc::Jwks(p) => p,
        }
    }
}

/// What one VM publishes for the others: the raw documents and when they were fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub fetched_at: u64,
    pub discovery: Option<String>,
    pub jwks: String,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A key set taken in: the snapshot to publish, and whether the keys differ from those held
/// before (tokens verified with the old ones must then be checked again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub snapshot: Snapshot,
    pub changed: bool,
}

/// What adopting another VM's snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Nothing: not newer than ours, unreadable, or our keys are inline.
    No,
    /// Newer, with the same keys.
    SameKeys,
    NewKeys,
}

/// One provider's documents.
pub struct KeyManager {
    /// Where the keys come from, the issuer, the timing: all read from the configuration.
    config: Rc<Config>,
    /// Which of the configuration's providers.
    provider: usize,
    discovery: Option<Discovery>,
    discovery_body: Option<String>,
    keys: Option<Rc<KeySet>>,
    fetched_at: u64,
    next_attempt: u64,
    failures: u32,
    in_flight: bool,
    last_unknown_kid_fetch: Option<u64>,
}

impl KeyManager {
    /// The key manager of the configuration's provider `provider`.
    pub fn new(config: Rc<Config>, provider: usize) -> Self {
        let keys = match &config.providers.at(provider).keys {
            KeySource::Inline(set) => Some(Rc::new(set.clone())),
            KeySource::Path(_) | KeySource::Discovery => None,
        };
        Self {
            config,
            provider,
            discovery: None,
            discovery_body: None,
            keys,
            fetched_at: 0,
            next_attempt: 0,
            failures: 0,
            in_flight: false,
            last_unknown_kid_fetch: None,
        }
    }

    /// The keys, once loaded.
    pub fn keys(&self) -> Option<&Rc<KeySet>> {
        self.keys.as_ref()
    }

    /// The provider's discovery document, once loaded.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref()
    }

    fn source(&self) -> &crate::config::Provider {
        self.config.providers.at(self.provider)
    }

    fn fetch(&self, doc: Doc) -> Fetch {
        Fetch { provider: self.provider, doc }
    }

    fn inline(&self) -> bool {
        matches!(self.source().keys, KeySource::Inline(_))
    }

    /// The browser flow needs the discovery document's endpoints, whatever the key source.
    fn needs_discovery(&self) -> bool {
        self.config.browser.is_some() || matches!(self.source().keys, KeySource::Discovery)
    }

    fn jwks_path(&self) -> Option<String> {
        match &self.source().keys {
            KeySource::Path(p) => Some(p.clone()),
            KeySource::Discovery => self.discovery.as_ref().map(|d| d.jwks_path.clone()),
            KeySource::Inline(_) => None,
        }
    }

    /// The periodic fetch to start now, if any. Marks it in flight.
    pub fn due(&mut self, now: u64) -> Option<Fetch> {
        if self.in_flight || now < self.next_attempt {
            return None;
        }
        let discovery_missing = self.needs_discovery() && self.discovery.is_none();
        let refresh = now >= self.fetched_at.saturating_add(self.config.key_timing.refresh_interval);
        let stale = discovery_missing || (!self.inline() && (self.keys.is_none() || refresh));
        if !stale {
            return None;
        }
        self.in_flight = true;
        // Each refresh re-reads discovery too (two small GETs): a changed jwks_uri is followed.
        Some(self.fetch(match &self.source().keys {
            KeySource::Path(p) if !self.needs_discovery() => Doc::Jwks(p.clone()),
            _ => Doc::Discovery(self.source().discovery_path.clone()),
        }))
    }

    /// A key-set fetch because a token named an unknown `kid`, if the rate limit allows.
    pub fn unknown_kid(&mut self, now: u64) -> Option<Fetch> {
        if self.inline() || self.in_flight {
            return None;
        }
        if let Some(last) = self.last_unknown_kid_fetch {
            if now < last.saturating_add(self.config.key_timing.unknown_kid_min_interval) {
                return None;
            }
        }
        let path = self.jwks_path()?;
        self.last_unknown_kid_fetch = Some(now);
        self.in_flight = true;
        Some(self.fetch(Doc::Jwks(path)))
    }

    /// The answer to a discovery fetch (the document, or why there is none). Returns the key-set
    /// fetch to make next, or `None` when the keys are inline and nothing more is needed.
    pub fn on_discovery(&mut self, now: u64, answer: Result<&[u8], FetchError>) -> Result<Option<Fetch>, FetchError> {
        let parsed = answer.and_then(|body| {
            Discovery::parse(body, &self.source().issuer)
                .map(|d| (d, String::from_utf8_lossy(body).into_owned()))
                .map_err(FetchError::Discovery)
        });
        match parsed {
            Ok((d, body)) => {
                self.discovery = Some(d);
                self.discovery_body = Some(body);
                match self.jwks_path() {
                    Some(path) => Ok(Some(self.fetch(Doc::Jwks(path)))),
                    None => {
                        self.succeed();
                        Ok(None)
                    }
                }
            }
            Err(e) => {
                self.fail(now);
                Err(e)
            }
        }
    }

    /// The answer to a key-set fetch. On success, what to publish for the other VMs.
    pub fn on_jwks(&mut self, now: u64, answer: Result<&[u8], FetchError>) -> Result<Installed, FetchError> {
        let parsed = answer.and_then(|body| KeySet::parse(body).map(|set| (set, body)).map_err(FetchError::KeySet));
        match parsed {
            Ok((set, body)) if !set.keys.is_empty() => {
                let changed = self.install(set, now);
                self.succeed();
                let snapshot = Snapshot {
                    fetched_at: now,
                    discovery: self.discovery_body.clone(),
                    jwks: String::from_utf8_lossy(body).into_owned(),
                };
                Ok(Installed { snapshot, changed })
            }
            Ok((set, _)) => {
                self.fail(now);
                Err(FetchError::NoUsableKey(set.skipped))
            }
            Err(e) => {
                self.fail(now);
                Err(e)
            }
        }
    }

    /// Gives up a fetch `due` or `unknown_kid` handed out without starting it (another VM holds
    /// the fetch lease, or has published the keys already).
    pub fn abandon(&mut self) {
        self.in_flight = false;
    }

    /// A fetch the glue could not even start (e.g. unknown cluster).
    pub fn on_dispatch_failed(&mut self, now: u64) {
        self.fail(now);
    }

    /// Adopts keys another VM published, if newer than ours.
    pub fn adopt(&mut self, snapshot: &Snapshot) -> Adopted {
        if self.inline() || snapshot.fetched_at <= self.fetched_at {
            return Adopted::No;
        }
        let Ok(set) = KeySet::parse(snapshot.jwks.as_bytes()) else {
            return Adopted::No;
        };
        if let Some(body) = &snapshot.discovery {
            if let Ok(d) = Discovery::parse(body.as_bytes(), &self.source().issuer) {
                self.discovery = Some(d);
                self.discovery_body = Some(body.clone());
            }
        }
        let changed = self.install(set, snapshot.fetched_at);
        self.failures = 0;
        self.next_attempt = 0;
        if changed {
            Adopted::NewKeys
        } else {
            Adopted::SameKeys
        }
    }

    /// Takes a key set in; whether it differs from the one held.
    fn install(&mut self, set: KeySet, at: u64) -> bool {
        let changed = self.keys.as_deref() != Some(&set);
        self.keys = Some(Rc::new(set));
        self.fetched_at = at;
        changed
    }

    fn succeed(&mut self) {
        self.in_flight = false;
        self.failures = 0;
        self.next_attempt = 0;
    }

    fn fail(&mut self, now: u64) {
        self.in_flight = false;
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let timing = &self.config.key_timing;
        let delay = timing.retry_min.saturating_mul(1 << exp).min(timing.retry_max);
        self.next_attempt = now.saturating_add(delay);
    }

    /// Seconds until the next retry (for logs).
    pub fn retry_in(&self, now: u64) -> u64 {
        self.next_attempt.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests;
