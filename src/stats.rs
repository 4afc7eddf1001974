//! What gatehouse counts. The core only counts (no host calls); the glue turns the counts into
//! Envoy metrics. Envoy shows Wasm metrics as `wasmcustom.<name>` in `/stats` and as `<name>` with
//! `_` for `.` on `/stats/prometheus` (`gatehouse_requests_denied_group_required`). The dotted
//! names put the variable part last, so one `stats_tags` regex per family can turn it into a tag.

use crate::callout::Class;
use crate::policy::Denial;

/// A counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// A request forwarded after authentication (bearer token or session).
    Allowed,
    /// A public-path request forwarded without authentication.
    Public,
    /// A request answered by gatehouse instead of forwarded, by reason.
    Denied(DenyReason),
    LoginStarted,
    LoginCompleted,
    LoginFailed,
    Refreshed,
    RefreshFailed,
    Logout,
    TokenCacheHit,
    TokenCacheMiss,
    /// A fetch of the discovery document or the key set, and one that gave nothing usable.
    DiscoveryFetch,
    DiscoveryFetchFailure,
    JwksFetch,
    JwksFetchFailure,
    /// A provider problem (fetch, or token endpoint), by whether it passes by itself.
    ProviderError(Class),
}

/// Why a request was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenyReason {
    /// No credentials (401, or a login redirect is counted as `LoginStarted` instead).
    Unauthenticated,
    /// A bearer token was refused (401 invalid_token).
    InvalidToken,
    /// A malformed request (400).
    BadRequest,
    /// Authenticated but not allowed (403), by the rule's reason.
    GroupRequired,
    RoleRequired,
    ClaimMismatch,
    NoRuleMatched,
    EmailDomain,
    EmailUnverified,
    /// Keys or discovery not loaded (503).
    Unavailable,
}

impl DenyReason {
    pub fn name(self) -> &'static str {
        match self {
            DenyReason::Unauthenticated => "unauthenticated",
            DenyReason::InvalidToken => "invalid_token",
            DenyReason::BadRequest => "bad_request",
            DenyReason::GroupRequired => "group_required",
            DenyReason::RoleRequired => "role_required",
            DenyReason::ClaimMismatch => "claim_mismatch",
            DenyReason::NoRuleMatched => "no_rule_matched",
            DenyReason::EmailDomain => "email_domain",
            DenyReason::EmailUnverified => "email_unverified",
            DenyReason::Unavailable => "unavailable",
        }
    }

    /// The reason of a policy verdict.
    pub fn of_policy(denial: Denial) -> DenyReason {
        match denial {
            Denial::GroupRequired => DenyReason::GroupRequired,
            Denial::RoleRequired => DenyReason::RoleRequired,
            Denial::ClaimMismatch => DenyReason::ClaimMismatch,
            Denial::NoRuleMatched => DenyReason::NoRuleMatched,
            Denial::EmailDomain => DenyReason::EmailDomain,
            Denial::EmailUnverified => DenyReason::EmailUnverified,
        }
    }

    pub const ALL: [DenyReason; 10] = [
        DenyReason::Unauthenticated,
        DenyReason::InvalidToken,
        DenyReason::BadRequest,
        DenyReason::GroupRequired,
        DenyReason::RoleRequired,
        DenyReason::ClaimMismatch,
        DenyReason::NoRuleMatched,
        DenyReason::EmailDomain,
        DenyReason::EmailUnverified,
        DenyReason::Unavailable,
    ];
}

impl Counter {
    /// The Envoy metric name (Envoy adds `wasmcustom.`).
    pub fn name(self) -> String {
        match self {
            Counter::Allowed => "gatehouse.requests.allowed".into(),
            Counter::Public => "gatehouse.requests.public".into(),
            Counter::Denied(r) => format!("gatehouse.requests.denied.{}", r.name()),
            Counter::LoginStarted => "gatehouse.logins.started".into(),
            Counter::LoginCompleted => "gatehouse.logins.completed".into(),
            Counter::LoginFailed => "gatehouse.logins.failed".into(),
            Counter::Refreshed => "gatehouse.sessions.refreshed".into(),
            Counter::RefreshFailed => "gatehouse.sessions.refresh_failed".into(),
            Counter::Logout => "gatehouse.logouts".into(),
            Counter::TokenCacheHit => "gatehouse.token_cache.hits".into(),
            Counter::TokenCacheMiss => "gatehouse.token_cache.misses".into(),
            Counter::DiscoveryFetch => "gatehouse.discovery.fetches".into(),
            Counter::DiscoveryFetchFailure => "gatehouse.discovery.fetch_failures".into(),
            Counter::JwksFetch => "gatehouse.jwks.fetches".into(),
            Counter::JwksFetchFailure => "gatehouse.jwks.fetch_failures".into(),
            Counter::ProviderError(Class::Passing) => "gatehouse.provider_errors.passing".into(),
            Counter::ProviderError(Class::Configuration) => "gatehouse.provider_errors.configuration".into(),
        }
    }

    /// Every counter, so that the glue can define them all up front (they then show as 0).
    pub fn all() -> Vec<Counter> {
        let mut v = vec![
            Counter::Allowed,
            Counter::Public,
            Counter::LoginStarted,
            Counter::LoginCompleted,
            Counter::LoginFailed,
            Counter::Refreshed,
            Counter::RefreshFailed,
            Counter::Logout,
            Counter::TokenCacheHit,
            Counter::TokenCacheMiss,
            Counter::DiscoveryFetch,
            Counter::DiscoveryFetchFailure,
            Counter::JwksFetch,
            Counter::JwksFetchFailure,
            Counter::ProviderError(Class::Passing),
            Counter::ProviderError(Class::Configuration),
        ];
        v.extend(DenyReason::ALL.map(Counter::Denied));
        v
    }
}

/// The reasons a request is denied.
const DENIED: usize = DenyReason::ALL.len();
/// How many counters there are.
pub(crate) const COUNTERS: usize = 16 + DENIED;

impl Counter {
    /// Its place in counter order (the order of `Ord`: `Denied` after `Public`).
    pub(crate) fn index(self) -> usize {
        match self {
            Counter::Allowed => 0,
            Counter::Public => 1,
            Counter::Denied(r) => 2 + r as usize,
            Counter::LoginStarted => 2 + DENIED,
            Counter::LoginCompleted => 3 + DENIED,
            Counter::LoginFailed => 4 + DENIED,
            Counter::Refreshed => 5 + DENIED,
            Counter::RefreshFailed => 6 + DENIED,
            Counter::Logout => 7 + DENIED,
            Counter::TokenCacheHit => 8 + DENIED,
            Counter::TokenCacheMiss => 9 + DENIED,
            Counter::DiscoveryFetch => 10 + DENIED,
            Counter::DiscoveryFetchFailure => 11 + DENIED,
            Counter::JwksFetch => 12 + DENIED,
            Counter::JwksFetchFailure => 13 + DENIED,
            Counter::ProviderError(Class::Passing) => 14 + DENIED,
            Counter::ProviderError(Class::Configuration) => 15 + DENIED,
        }
    }
}

/// Counts since the glue last took them. The glue hands them to Envoy once per tick rather
/// than per request: each metric update is a host call. One slot per counter: counting is an
/// increment (a map here was 3 KB of code and a search on every request).
#[derive(Debug)]
pub struct Stats {
    counts: [u64; COUNTERS],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { counts: [0; COUNTERS] }
    }
}

impl Stats {
    pub fn count(&mut self, c: Counter) {
        if let Some(n) = self.counts.get_mut(c.index()) {
            *n = n.saturating_add(1);
        }
    }

    /// The counts since the last call, per counter, in counter order.
    pub fn take_counts(&mut self) -> Vec<(Counter, u64)> {
        let counts = std::mem::replace(&mut self.counts, [0; COUNTERS]);
        let mut slots: [Option<Counter>; COUNTERS] = [None; COUNTERS];
        for c in Counter::all() {
            if let Some(slot) = slots.get_mut(c.index()) {
                *slot = Some(c);
            }
        }
        slots.into_iter().zip(counts).filter_map(|(c, n)| c.filter(|_| n > 0).map(|c| (c, n))).collect()
    }

    /// The counts since the last call, one entry per count, in counter order.
    pub fn take(&mut self) -> Vec<Counter> {
        self.take_counts()
            .into_iter()
            .flat_map(|(c, n)| std::iter::repeat_n(c, usize::try_from(n).unwrap_or(usize::MAX)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_envoy_shaped() {
        let names: Vec<String> = Counter::all().iter().map(|c| c.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(names.iter().all(
            |n| n.starts_with("gatehouse.") && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        ));
        assert_eq!(Counter::Denied(DenyReason::GroupRequired).name(), "gatehouse.requests.denied.group_required");
    }

    #[test]
    fn each_counter_has_its_own_slot_in_counter_order() {
        let mut all = Counter::all();
        assert_eq!(all.len(), COUNTERS);
        all.sort();
        let indexes: Vec<usize> = all.iter().map(|c| c.index()).collect();
        assert_eq!(indexes, (0..COUNTERS).collect::<Vec<_>>());
    }

    #[test]
    fn take_drains() {
        let mut s = Stats::default();
        s.count(Counter::Allowed);
        s.count(Counter::Allowed);
        s.count(Counter::Public);
        assert_eq!(s.take(), vec![Counter::Allowed, Counter::Allowed, Counter::Public]);
        assert!(s.take().is_empty());
        s.count(Counter::Logout);
        assert_eq!(s.take_counts(), vec![(Counter::Logout, 1)]);
    }
}
