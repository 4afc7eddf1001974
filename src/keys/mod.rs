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

use crate::config::{KeySource, KeyTiming};
use crate::jwt::jwks::KeySet;
use crate::oidc::discovery::Discovery;
use serde::{Deserialize, Serialize};
use std::rc::Rc;

/// A fetch the glue should make on the provider cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    Discovery(String),
    Jwks(String),
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

pub struct KeyManager {
    timing: KeyTiming,
    issuer: String,
    discovery_path: String,
    fixed_jwks_path: Option<String>,
    inline: bool,
    /// The browser flow needs the discovery document's endpoints, whatever the key source.
    need_discovery: bool,
    pub discovery: Option<Discovery>,
    discovery_body: Option<String>,
    keys: Option<Rc<KeySet>>,
    /// Bumped whenever the key set changes (the token cache is dropped then).
    pub generation: u64,
    fetched_at: u64,
    next_attempt: u64,
    failures: u32,
    in_flight: bool,
    last_unknown_kid_fetch: Option<u64>,
}

impl KeyManager {
    pub fn new(
        source: &KeySource,
        issuer: &str,
        discovery_path: &str,
        timing: KeyTiming,
        need_discovery: bool,
    ) -> Self {
        let (keys, fixed, inline) = match source {
            KeySource::Inline(set) => (Some(Rc::new(set.clone())), None, true),
            KeySource::Path(p) => (None, Some(p.clone()), false),
            KeySource::Discovery => (None, None, false),
        };
        Self {
            timing,
            issuer: issuer.to_string(),
            discovery_path: discovery_path.to_string(),
            fixed_jwks_path: fixed,
            inline,
            need_discovery,
            discovery: None,
            discovery_body: None,
            keys,
            generation: 0,
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

    /// When the keys in hand were fetched (0: never).
    pub fn fetched_at(&self) -> u64 {
        self.fetched_at
    }

    fn jwks_path(&self) -> Option<String> {
        self.fixed_jwks_path.clone().or_else(|| self.discovery.as_ref().map(|d| d.jwks_path.clone()))
    }

    /// The periodic fetch to start now, if any. Marks it in flight.
    pub fn due(&mut self, now: u64) -> Option<Fetch> {
        if self.in_flight || now < self.next_attempt {
            return None;
        }
        let discovery_missing = self.need_discovery && self.discovery.is_none();
        let stale = if self.inline {
            discovery_missing
        } else {
            discovery_missing
                || self.keys.is_none()
                || now >= self.fetched_at.saturating_add(self.timing.refresh_interval)
        };
        if !stale {
            return None;
        }
        self.in_flight = true;
        // Each refresh re-reads discovery too (two small GETs): a changed jwks_uri is followed.
        Some(match &self.fixed_jwks_path {
            Some(p) if !self.need_discovery => Fetch::Jwks(p.clone()),
            _ => Fetch::Discovery(self.discovery_path.clone()),
        })
    }

    /// A key-set fetch because a token named an unknown `kid`, if the rate limit allows.
    pub fn unknown_kid(&mut self, now: u64) -> Option<Fetch> {
        if self.inline || self.in_flight {
            return None;
        }
        if let Some(last) = self.last_unknown_kid_fetch {
            if now < last.saturating_add(self.timing.unknown_kid_min_interval) {
                return None;
            }
        }
        let path = self.jwks_path()?;
        self.last_unknown_kid_fetch = Some(now);
        self.in_flight = true;
        Some(Fetch::Jwks(path))
    }

    /// The answer to a discovery fetch (the body, or why there is none). Returns the key-set
    /// fetch to make next, or `None` when the keys are inline and nothing more is needed.
    pub fn on_discovery(&mut self, now: u64, answer: Result<&[u8], String>) -> Result<Option<Fetch>, String> {
        let parsed = answer.and_then(|body| {
            Discovery::parse(body, &self.issuer).map(|d| (d, String::from_utf8_lossy(body).into_owned()))
        });
        match parsed {
            Ok((d, body)) => {
                let path = self.fixed_jwks_path.clone().unwrap_or_else(|| d.jwks_path.clone());
                self.discovery = Some(d);
                self.discovery_body = Some(body);
                if self.inline {
                    self.in_flight = false;
                    self.failures = 0;
                    self.next_attempt = 0;
                    return Ok(None);
                }
                Ok(Some(Fetch::Jwks(path)))
            }
            Err(e) => {
                self.fail(now);
                Err(e)
            }
        }
    }

    /// The answer to a key-set fetch. On success returns the snapshot to publish.
    pub fn on_jwks(&mut self, now: u64, answer: Result<&[u8], String>) -> Result<Snapshot, String> {
        let parsed = answer.and_then(|body| KeySet::parse(body).map(|set| (set, body)));
        match parsed {
            Ok((set, body)) if !set.keys.is_empty() => {
                self.install(set, now);
                self.in_flight = false;
                self.failures = 0;
                self.next_attempt = 0;
                Ok(Snapshot {
                    fetched_at: now,
                    discovery: self.discovery_body.clone(),
                    jwks: String::from_utf8_lossy(body).into_owned(),
                })
            }
            Ok((set, _)) => {
                self.fail(now);
                Err(format!("key set has no usable key ({})", set.skipped.join("; ")))
            }
            Err(e) => {
                self.fail(now);
                Err(e)
            }
        }
    }

    /// Gives up a fetch `due` handed out without starting it (another worker holds the fetch
    /// lease and will publish what it gets).
    pub fn abandon(&mut self) {
        self.in_flight = false;
    }

    /// A fetch the glue could not even start (e.g. unknown cluster).
    pub fn on_dispatch_failed(&mut self, now: u64) {
        self.fail(now);
    }

    /// Adopts keys another VM published, if newer than ours. Returns whether anything changed.
    pub fn adopt(&mut self, snapshot: &Snapshot) -> bool {
        if self.inline || snapshot.fetched_at <= self.fetched_at {
            return false;
        }
        let Ok(set) = KeySet::parse(snapshot.jwks.as_bytes()) else {
            return false;
        };
        if let Some(body) = &snapshot.discovery {
            if let Ok(d) = Discovery::parse(body.as_bytes(), &self.issuer) {
                self.discovery = Some(d);
                self.discovery_body = Some(body.clone());
            }
        }
        self.install(set, snapshot.fetched_at);
        self.failures = 0;
        self.next_attempt = 0;
        true
    }

    fn install(&mut self, set: KeySet, at: u64) {
        if self.keys.as_deref() != Some(&set) {
            self.generation += 1;
        }
        self.keys = Some(Rc::new(set));
        self.fetched_at = at;
    }

    fn fail(&mut self, now: u64) {
        self.in_flight = false;
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(16);
        let delay = self.timing.retry_min.saturating_mul(1 << exp).min(self.timing.retry_max);
        self.next_attempt = now.saturating_add(delay);
    }

    /// Seconds until the next retry (for logs).
    pub fn retry_in(&self, now: u64) -> u64 {
        self.next_attempt.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests;
