//! The per-request decision, as a pure function of the request, the time, the config and the
//! VM's key and token caches. The glue gathers the inputs, calls [`Engine::on_request`] once and
//! applies the [`Decision`].
//!
//! By concern: `view` reads the request once (path, host, method readings); `bearer`, `session`,
//! `login`, `refresh` and `sign_out` are the cases of [`Engine::decide`]; `idp` makes the
//! token-endpoint calls and routes their answers; `fetch` fetches the provider's documents;
//! `pages` is every answer gatehouse gives itself; `request` tells page navigations from API
//! calls.

use crate::cache::TokenCache;
use crate::claims::{header_value, values_of};
use crate::config::Config;
use crate::keys::{Fetch, KeyManager};
use crate::nonempty::NonEmpty;
use crate::policy::Verdict;
use crate::shared::{Names, Store};
use crate::stats::{Counter, DenyReason, Stats};
use std::rc::Rc;

/// What the filter needs from a request's headers. Names are lower case, as Envoy gives them.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a [(String, String)],
}

impl<'a> Request<'a> {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

/// A response gatehouse sends itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The same response, setting these cookies.
    pub fn with_cookies(mut self, set_cookies: Vec<String>) -> Response {
        self.headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
        self
    }
}

/// A request header gatehouse sets. Shared strings: an identity's claim headers are built once
/// and cached, and every request forwarded with them copies pointers, not text.
pub type Header = (Rc<str>, Rc<str>);

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Forward it, after removing then setting these request headers; add these `Set-Cookie`
    /// headers to the response (a refreshed session).
    Forward { remove: Vec<String>, set: Vec<Header>, set_cookies: Vec<String> },
    /// Answer it directly.
    Respond(Response),
    /// Hold it, fetch the key set (a token named an unknown `kid`; see [`Engine::wait_for_keys`]),
    /// then decide again with `refetch_allowed = false`.
    FetchKeys(Fetch),
    /// Hold it, make this call to the provider, and give the answer to [`Engine::on_idp_answer`].
    CallIdp(Box<idp::IdpCall>),
    /// Hold it until its body has arrived, then give the body to [`Engine::on_request_body`]
    /// (the back-channel logout's POST).
    ReadBody,
    /// Keep this provider answer, fetch the key set (its ID token named an unknown `kid`: the
    /// provider rotated its keys), then give the answer to [`Engine::on_idp_answer`] again with
    /// `refetch_allowed = false`. The authorization code is spent: the answer is kept, never
    /// asked for twice.
    FetchKeysForAnswer(Fetch, Box<HeldAnswer>),
}

/// An authenticated identity, as cached per token or session cookie.
#[derive(Debug, PartialEq)]
pub struct Identity {
    /// The provider whose token or session this is (its index in `Config::providers`).
    pub provider: usize,
    pub claims: serde_json::Value,
    /// The claim headers for the upstream.
    pub headers: Vec<Header>,
    /// For a session under `relayAccessToken`: the headers that carry its access token upstream.
    pub relay: Vec<Header>,
    /// For a session: what refreshing it needs.
    pub session: Option<session::SessionData>,
}

/// Per-VM state: configuration, keys, verified-token cache, sessions being refreshed, counts.
/// The glue drives it through its methods: [`Engine::on_request`] and [`Engine::on_idp_answer`]
/// for requests, [`Engine::tick`] and [`Engine::on_key_answer`] for the key fetches.
pub struct Engine {
    config: Rc<Config>,
    /// Each provider's documents and shared entries, in the order of `config.providers`.
    providers: NonEmpty<ProviderState>,
    /// What the VMs of this Envoy share (keys, the fetch lease, refresh notes).
    store: Box<dyn Store>,
    cache: TokenCache<Identity>,
    /// Sessions being refreshed (by cookie hash), or waiting to retry, until the given time.
    refreshing: std::collections::HashMap<crate::cache::TokenHash, u64>,
    /// Sessions just refreshed: requests still carrying the old cookie get the new session.
    refreshed: TokenCache<(Rc<Identity>, Vec<String>)>,
    /// Counts for the glue to turn into Envoy metrics.
    stats: Stats,
}

/// What a VM keeps of one provider.
struct ProviderState {
    keys: KeyManager,
    /// The names of its entries in the store (keys, leases, refresh notes, logouts).
    names: Names,
    /// Sessions it ended (back-channel logout), as this VM knows them.
    revocations: crate::revoked::Revocations,
}

impl Engine {
    /// The engine of one VM, sharing what VMs share through `store`.
    pub fn new(config: Rc<Config>, store: Box<dyn Store>) -> Self {
        let providers = config.providers.map(|i, p| {
            log::info!("configured for issuer {} via cluster {}", p.issuer, p.cluster);
            ProviderState {
                keys: KeyManager::new(Rc::clone(&config), i),
                names: Names::new(&p.issuer),
                revocations: crate::revoked::Revocations::default(),
            }
        });
        Self {
            providers,
            store,
            cache: TokenCache::new(config.token_cache_size),
            refreshing: std::collections::HashMap::new(),
            refreshed: TokenCache::new(256),
            stats: Stats::default(),
            config,
        }
    }

    pub fn config(&self) -> &Rc<Config> {
        &self.config
    }

    /// The counts since the last call, for Envoy's metrics.
    pub fn take_counts(&mut self) -> Vec<(crate::stats::Counter, u64)> {
        self.stats.take_counts()
    }

    /// A request's headers have arrived: [`Engine::decide`], after adopting the keys another VM
    /// published if this one has none yet (a VM that just started serves at once).
    ///
    /// `clock` gives the time (Unix seconds); it is asked only when the decision depends on it,
    /// at most once: a refused target, a public path and the sign-out path never read it, which
    /// in Envoy saves a host call.
    pub fn on_request(
        &mut self,
        req: &Request<'_>,
        clock: &mut dyn FnMut() -> u64,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        if self.providers.iter().any(|p| p.keys.keys().is_none()) {
            self.adopt_published();
        }
        self.decide_with(req, clock, true, random)
    }

    /// The one early key-set fetch when a token of provider `p` (`what`: a bearer token, an ID
    /// token) names a `kid` its key set does not hold: `None` if one ran less than
    /// `keys.unknownKidMinIntervalSeconds` ago or is in flight (the token is then refused).
    pub(crate) fn key_fetch_for_unknown_kid(&mut self, p: usize, what: &str, now: u64) -> Option<Fetch> {
        let fetch = self.providers.at_mut(p).keys.unknown_kid(now)?;
        log::info!("{what} names an unknown key id; fetching the key set");
        Some(fetch)
    }

    /// Decides what to do with a request at time `now` (Unix seconds). `random` fills buffers
    /// with cryptographically secure random bytes (used only to start a login).
    ///
    /// The cases, in the order they are tried:
    /// 1. The target is malformed (path, host, method): 400 ([`View::read`]).
    /// 2. The login callback path: finish the login ([`Engine::callback`]).
    /// 3. The sign-out path: sign out, or ask first ([`Engine::sign_out`]); the userinfo, start and
    ///    auth paths (see `endpoints`).
    /// 4. Every reading of the request is public: forward it without identity.
    /// 5. A bearer token: verify it, then the rules ([`Engine::with_bearer`]).
    /// 6. A session cookie: check it (refreshing it when due), then the rules; without one, a
    ///    login redirect for a page navigation or 401 ([`Engine::with_session`]).
    ///
    /// Each case is a function of its own (`#[inline(never)]`): inlined, they made this one 25 KB
    /// function, which V8 compiles with several megabytes of working memory at every start, and
    /// the allocator keeps what it took.
    pub fn decide(
        &mut self,
        req: &Request<'_>,
        now: u64,
        refetch_allowed: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        self.decide_with(req, &mut || now, refetch_allowed, random)
    }

    /// [`Engine::decide`] with the time read from `clock` only on the paths that need it.
    fn decide_with(
        &mut self,
        req: &Request<'_>,
        clock: &mut dyn FnMut() -> u64,
        refetch_allowed: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        let view = match View::read(&cfg, req) {
            Ok(v) => v,
            Err(refusal) => return self.refuse(refusal),
        };
        if let Some(b) = &cfg.browser {
            if view.path.path == b.callback_path {
                return self.callback(req, clock());
            }
            if view.path.path == b.sign_out_path {
                return self.sign_out(req, view.provider);
            }
            let here = Some(view.path.path.as_str());
            if b.backchannel_logout_path.as_deref() == here {
                return self.backchannel_logout(req);
            }
            if b.userinfo_path.as_deref() == here {
                return self.userinfo(req, view.provider, clock());
            }
            if b.start_path.as_deref() == here {
                return self.start(req, view.provider, clock(), random);
            }
            if b.auth_path.as_deref() == here {
                return self.auth(req, &view, clock(), refetch_allowed);
            }
        }
        if view.routes.is_public() {
            return self.forward_public(req, &view);
        }
        match bearer_token(req) {
            Err(reason) => {
                self.stats.count(Counter::Denied(DenyReason::BadRequest));
                Decision::Respond(bad_request(&cfg, reason))
            }
            Ok(Some(token)) => self.with_bearer(req, &view, token, clock(), refetch_allowed),
            Ok(None) => self.with_session(req, &view, clock(), random),
        }
    }

    /// Case 1: a target no server reads one way.
    #[inline(never)] // a function of its own: see `Engine::decide`
    fn refuse(&mut self, refusal: Refusal) -> Decision {
        log::warn!("refusing request: {}", refusal.code());
        self.stats.count(Counter::Denied(DenyReason::BadRequest));
        Decision::Respond(refusal.response())
    }

    /// Case 4: public paths skip authentication, but never let identity headers through.
    #[inline(never)] // a function of its own: see `Engine::decide`
    fn forward_public(&mut self, req: &Request<'_>, view: &View) -> Decision {
        self.stats.count(Counter::Public);
        let remove = managed_headers_present(&self.config, req);
        let set = view.path_header().into_iter().collect();
        Decision::Forward { remove, set, set_cookies: Vec::new() }
    }

    /// Case 5: a bearer token, verified (or found in the cache), then the rules.
    #[inline(never)] // a function of its own: see `Engine::decide`
    fn with_bearer(
        &mut self,
        req: &Request<'_>,
        view: &View,
        token: &str,
        now: u64,
        refetch_allowed: bool,
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        match self.bearer_identity(token, now, refetch_allowed).and_then(|i| self.serves_here(view, i)) {
            Ok(identity) => {
                let mut remove = managed_headers_present(&cfg, req);
                // Under `relayAccessToken` the upstream gets the verified token as it gets a
                // session's: in `Authorization` and the configured headers.
                let relay = cfg.browser.as_ref().filter(|b| session::relays(b));
                if !cfg.tokens.forward_authorization && !relay.is_some_and(|b| b.relay_authorization) {
                    remove.push("authorization".into());
                }
                let extra = relay.map(|b| session::relay_headers(b, token)).unwrap_or_default();
                let extra = extra.into_iter().filter(|(n, _)| &**n != "authorization").collect();
                authorize(&cfg, &mut self.stats, req, view, &identity, remove, extra, Vec::new())
            }
            Err(decision) => decision,
        }
    }

    /// Case 6: the session cookie, refreshed when due, then the rules; or none.
    #[inline(never)] // a function of its own: see `Engine::decide`
    fn with_session(
        &mut self,
        req: &Request<'_>,
        view: &View,
        now: u64,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        match self.session_identity(req, view.provider, now) {
            SessionOutcome::Valid { provider, identity, cookie, only_ours } => {
                match self.refresh_due(provider, &identity, cookie, req, now) {
                    Some(call) => call,
                    None => self.forward_session(req, Some(view), &identity, Vec::new(), only_ours, now),
                }
            }
            SessionOutcome::Refreshed { identity, set_cookies } => {
                self.forward_session(req, Some(view), &identity, set_cookies, false, now)
            }
            SessionOutcome::None { had_cookie } => self.unauthenticated(req, view.provider, now, had_cookie, random),
        }
    }
}

/// Applies the rules to an authenticated request: forwards it with the identity headers (after
/// `remove`, plus `extra_set` and the normalized `:path`), or answers 403.
#[allow(clippy::too_many_arguments)]
pub(crate) fn authorize(
    cfg: &Config,
    stats: &mut Stats,
    req: &Request<'_>,
    view: &View,
    identity: &Identity,
    mut remove: Vec<String>,
    extra_set: Vec<Header>,
    set_cookies: Vec<String>,
) -> Decision {
    match cfg.policy.verdict_all(&view.routes, &identity.claims) {
        Verdict::Allow => {
            stats.count(Counter::Allowed);
            let mut set = identity.headers.clone();
            set.extend(extra_set);
            set.extend(view.path_header());
            remove.retain(|r| !set.iter().any(|(n, _)| **n == **r));
            Decision::Forward { remove, set, set_cookies }
        }
        Verdict::Deny { rule, reason } => {
            stats.count(Counter::Denied(DenyReason::of_policy(reason)));
            log::warn!("access denied: {} (rule {})", reason.code(), rule.as_deref().unwrap_or("-"));
            Decision::Respond(forbidden(cfg, req, rule.as_deref(), reason.code()).with_cookies(set_cookies))
        }
    }
}

/// Headers to strip from the request: every managed header it carries, in any spelling Envoy lets
/// through, including `_` for `-` (CGI-style upstreams map both to the same variable). Only those
/// present are listed: each removal is a host call, and most requests carry none.
pub(crate) fn managed_headers_present(cfg: &Config, req: &Request<'_>) -> Vec<String> {
    let mut remove: Vec<String> = Vec::new();
    for (name, _) in req.headers {
        // Most headers start with a byte no managed header starts with: passed over at once.
        let first = name.as_bytes().first().copied().unwrap_or_default();
        if !cfg.managed_first_bytes.contains(&first) || remove.contains(name) {
            continue;
        }
        let managed = cfg.managed_headers.contains(name) || cfg.managed_dashed.iter().any(|m| same_dashed(name, m));
        if managed {
            remove.push(name.clone());
        }
    }
    remove
}

/// Whether a header name is `dashed` (a managed header with `_` as `-`) when its `_` are read as
/// `-`.
fn same_dashed(name: &str, dashed: &str) -> bool {
    name.len() == dashed.len() && name.bytes().zip(dashed.bytes()).all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Builds the identity (claim headers) of claims provider `provider` vouched for.
pub fn identity_of(cfg: &Config, provider: usize, claims: serde_json::Value, token: Option<&str>) -> Identity {
    let mut headers = Vec::new();
    for h in &cfg.claim_headers {
        let values: Vec<String> = h.claims.iter().filter_map(|p| p.lookup(&claims)).flat_map(values_of).collect();
        if let Some(v) = header_value(&values) {
            headers.push((Rc::clone(&h.name), Rc::from(v)));
        }
    }
    if let (Some(name), Some(token)) = (&cfg.tokens.payload_header, token) {
        // The payload segment as the token carries it: base64url of the verified JSON.
        if let Some(payload) = token.split('.').nth(1) {
            headers.push((Rc::from(name.as_str()), Rc::from(payload)));
        }
    }
    Identity { provider, claims, headers, relay: Vec::new(), session: None }
}

mod backchannel;
mod bearer;
mod endpoints;
mod fetch;
mod idp;
mod login;
mod pages;
mod refresh;
mod request;
mod session;
mod sign_out;
mod view;
pub use backchannel::MAX_BODY_BYTES;
use bearer::bearer_token;
pub use fetch::{Fetcher, KeyCall, Tick, FIRST_TICK};
pub use idp::{HeldAnswer, IdpCall, Pending};
pub use pages::not_configured;
use pages::{bad_request, forbidden};
pub(crate) use pages::{json_response, unauthorized, unavailable};
pub use refresh::RefreshNote;
pub use session::{SessionData, SessionOutcome};
pub use view::{Refusal, View};

#[cfg(test)]
mod providers_tests;
#[cfg(test)]
mod tests;
