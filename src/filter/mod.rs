//! The proxy-wasm glue: the only module that talks to the host. It translates between the ABI
//! and the pure core — gather inputs, call the core once, apply its decision — and decides
//! nothing itself.

use crate::config::Config;
use crate::flow::{Decision, Engine, HeldAnswer, Pending, RefreshNote, Request, Response};
use crate::keys::{Fetch, Snapshot};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod metrics;
use metrics::{Glue, Metrics};

/// Provider answers larger than this are refused (a JWKS or discovery document is a few KB).
const MAX_CALLOUT_BODY: usize = 512 * 1024;

proxy_wasm::main! {{
    // Also installs a panic hook that logs at critical level.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

type Shared = Rc<RefCell<Engine>>;

/// Fills a buffer from the WASI random source (`random_get`, backed by the host's CSPRNG).
/// There is no usable fallback for a login secret: on failure the process aborts (the VM is
/// restarted by Envoy) rather than issuing a guessable state or PKCE verifier.
fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        log::error!("no randomness from the host");
        std::process::abort();
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Shared-data keys, per issuer, so that several gatehouse configurations in one VM group
/// do not mix their keys.
fn snapshot_key(cfg: &Config) -> String {
    format!("gatehouse|{}|keys", cfg.provider.issuer)
}

/// One of 256 slots where refreshed sessions are noted for the other workers.
fn refresh_slot_key(cfg: &Config, slot: u8) -> String {
    format!("gatehouse|{}|refreshed|{slot}", cfg.provider.issuer)
}

fn lease_key(cfg: &Config) -> String {
    format!("gatehouse|{}|lease", cfg.provider.issuer)
}

/// Starts a GET on the provider cluster.
fn dispatch_get(ctx: &dyn Context, cfg: &Config, fetch: &Fetch) -> Result<u32, String> {
    let path = match fetch {
        Fetch::Discovery(p) | Fetch::Jwks(p) => p.as_str(),
    };
    ctx.dispatch_http_call(
        &cfg.provider.cluster,
        vec![
            (":method", "GET"),
            (":path", path),
            (":authority", &cfg.provider.authority),
            ("accept", "application/json"),
            ("user-agent", "gatehouse"),
        ],
        None,
        vec![],
        Duration::from_millis(cfg.callout_timeout_ms),
    )
    .map_err(|status| {
        format!(
            "could not start a callout to cluster {:?} ({status:?}); check provider.cluster names an Envoy cluster",
            cfg.provider.cluster
        )
    })
}

/// The body of a callout answer if it is a 200 of bounded size; otherwise why not.
fn callout_answer(ctx: &dyn Context, body_size: usize) -> Result<Vec<u8>, String> {
    let status = ctx.get_http_call_response_header(":status").ok_or("no answer (connection failure or timeout)")?;
    if status != "200" {
        return Err(format!("answered HTTP {status:.3}"));
    }
    if body_size > MAX_CALLOUT_BODY {
        return Err(format!("answer of {body_size} bytes is too large"));
    }
    Ok(ctx.get_http_call_response_body(0, body_size).unwrap_or_default())
}

/// Publishes fetched keys for the VMs of the other workers.
fn publish(ctx: &dyn Context, cfg: &Config, snapshot: &Snapshot) {
    if let Err(status) = ctx.set_shared_data(&snapshot_key(cfg), Some(&snapshot.encode()), None) {
        log::warn!("could not share the key set with other workers: {status:?}");
    }
}

/// Adopts keys another worker's VM published, if newer. Returns whether it did.
fn adopt_shared(ctx: &dyn Context, engine: &mut Engine) -> bool {
    let key = snapshot_key(&engine.config);
    let (Some(bytes), _) = ctx.get_shared_data(&key) else {
        return false;
    };
    let adopted = Snapshot::decode(&bytes).is_some_and(|s| engine.keys.adopt(&s));
    if adopted {
        log::debug!("adopted the key set fetched by another worker");
    }
    adopted
}

/// Hands a key-set answer to the key manager: publishes and logs the keys, or logs why not.
fn take_jwks_answer(
    ctx: &dyn Context,
    metrics: &Metrics,
    engine: &mut Engine,
    now: u64,
    answer: Result<Vec<u8>, String>,
    what: &str,
) {
    metrics.glue(Glue::JwksFetch);
    let cfg = Rc::clone(&engine.config);
    match engine.keys.on_jwks(now, answer.as_deref().map_err(Clone::clone)) {
        Ok(snapshot) => {
            publish(ctx, &cfg, &snapshot);
            log_keys_loaded(engine);
        }
        Err(e) => {
            metrics.glue(Glue::JwksFetchFailure);
            log::error!(
                "key set fetch {what} failed: {e}; keeping the previous keys, retrying in {}s",
                engine.keys.retry_in(now)
            );
        }
    }
}

fn log_keys_loaded(engine: &Engine) {
    if let Some(keys) = engine.keys.keys() {
        log::info!("key set loaded: {} usable key(s)", keys.keys.len());
        for reason in &keys.skipped {
            log::info!("key skipped: {reason}");
        }
    }
}

/// Tick periods: the first tick soon after configure (it starts the key fetch), fast while no
/// keys are loaded, then the period of refresh checks and of adopting keys other workers
/// fetched.
const FIRST_TICK: Duration = Duration::from_millis(10);
const FAST_TICK: Duration = Duration::from_millis(200);
const SLOW_TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Root {
    engine: Option<Shared>,
    metrics: Rc<Metrics>,
    /// When the callout in flight started (ms), for the latency histogram.
    call_started_ms: u64,
    /// The tick period set last.
    tick: Duration,
    /// Whether this VM has served requests (the main thread's VM never does).
    served: std::cell::Cell<bool>,
    /// The callout in flight, if any, and what it fetches.
    call: Option<(u32, Fetch)>,
}

impl Root {
    /// Takes the cross-VM fetch lease: one worker fetches, the others adopt its snapshot.
    fn take_lease(&self, cfg: &Config, now: u64) -> bool {
        let key = lease_key(cfg);
        let (mut value, mut cas) = self.get_shared_data(&key);
        if cas.is_none() {
            // First use: create the entry, then compete with compare-and-swap like later uses,
            // so that two workers starting together cannot both win.
            let _ = self.set_shared_data(&key, Some(b"0"), None);
            (value, cas) = self.get_shared_data(&key);
        }
        let held_until = value.and_then(|v| String::from_utf8(v).ok()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if held_until > now {
            return false;
        }
        // Long enough for discovery + key set, each with its timeout.
        let until = now + 2 * cfg.callout_timeout_ms.div_ceil(1000) + 2;
        self.set_shared_data(&key, Some(until.to_string().as_bytes()), cas).is_ok()
    }

    fn set_tick(&mut self, period: Duration) {
        if self.tick != period {
            self.set_tick_period(period);
            self.tick = period;
        }
    }

    fn release_lease(&self, cfg: &Config) {
        let _ = self.set_shared_data(&lease_key(cfg), Some(b"0"), None);
    }

    fn start(&mut self, engine: &mut Engine, fetch: Fetch, now: u64) {
        match dispatch_get(self, &engine.config, &fetch) {
            Ok(token) => {
                self.call = Some((token, fetch));
                self.call_started_ms = unix_millis(self.get_current_time());
            }
            Err(e) => {
                log::error!("{e}");
                let (attempt, failure) = match fetch {
                    Fetch::Discovery(_) => (Glue::DiscoveryFetch, Glue::DiscoveryFetchFailure),
                    Fetch::Jwks(_) => (Glue::JwksFetch, Glue::JwksFetchFailure),
                };
                self.metrics.glue(attempt);
                self.metrics.glue(failure);
                engine.keys.on_dispatch_failed(now);
                self.release_lease(&engine.config);
            }
        }
    }

    fn poll(&mut self) {
        let Some(shared) = self.engine.clone() else { return };
        let mut engine = shared.borrow_mut();
        let now = unix_secs(self.get_current_time());
        let _ = adopt_shared(self, &mut engine);
        if self.call.is_some() {
            return;
        }
        if let Some(fetch) = engine.keys.due(now) {
            if self.take_lease(&engine.config, now) {
                self.start(&mut engine, fetch, now);
            } else {
                engine.keys.abandon();
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(shared) = self.engine.clone() else { return };
        let Some((expected, fetch)) = self.call.take() else { return };
        if expected != token {
            return;
        }
        let mut engine = shared.borrow_mut();
        let now = unix_secs(self.get_current_time());
        let answer = callout_answer(self, body_size);
        self.metrics.callout(unix_millis(self.get_current_time()).saturating_sub(self.call_started_ms));
        let cfg = Rc::clone(&engine.config);
        match fetch {
            Fetch::Discovery(_) => match engine.keys.on_discovery(now, answer.as_deref().map_err(Clone::clone)) {
                Ok(Some(next)) => {
                    self.metrics.glue(Glue::DiscoveryFetch);
                    self.start(&mut engine, next, now);
                }
                Ok(None) => {
                    self.metrics.glue(Glue::DiscoveryFetch);
                    self.release_lease(&cfg);
                }
                Err(e) => {
                    self.metrics.glue(Glue::DiscoveryFetch);
                    self.metrics.glue(Glue::DiscoveryFetchFailure);
                    log::error!(
                        "discovery at {} failed: {e}; retrying in {}s",
                        cfg.provider.discovery_path,
                        engine.keys.retry_in(now)
                    );
                    self.release_lease(&cfg);
                }
            },
            Fetch::Jwks(path) => {
                take_jwks_answer(self, &self.metrics, &mut engine, now, answer, &path);
                self.release_lease(&cfg);
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                let engine = Engine::new(Rc::new(config));
                log::info!(
                    "configured for issuer {} via cluster {}",
                    engine.config.provider.issuer,
                    engine.config.provider.cluster
                );
                self.engine = Some(Rc::new(RefCell::new(engine)));
                self.metrics = Rc::new(Metrics::define());
                self.call = None;
                // No fetch from here: Envoy also configures a throw-away VM that is destroyed at
                // once, and its callout would hold the fetch lease. The first tick starts it.
                self.set_tick(FIRST_TICK);
                true
            }
            Err(errors) => {
                for e in &errors.0 {
                    log::error!("invalid configuration: {e}");
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        // Request counts go to Envoy once per tick (a host call per metric, not per request).
        if let Some(shared) = &self.engine {
            self.metrics.add(shared.borrow_mut().stats.take_counts());
        }
        if self.served.get() {
            self.metrics.memory();
        }
        self.poll();
        // Tick fast until the keys are in, then once a second.
        let loaded = self.engine.as_ref().is_some_and(|e| e.borrow().keys.keys().is_some());
        self.set_tick(if loaded { SLOW_TICK } else { FAST_TICK });
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.served.set(true);
        Some(Box::new(Http {
            engine: self.engine.clone(),
            metrics: Rc::clone(&self.metrics),
            call_started_ms: 0,
            headers: Vec::new(),
            pending: None,
            idp_call: None,
            held: None,
            response_cookies: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    engine: Option<Shared>,
    metrics: Rc<Metrics>,
    /// When this request's callout started (ms), for the latency histogram.
    call_started_ms: u64,
    headers: Vec<(String, String)>,
    /// A key-set fetch this request waits for (unknown `kid`).
    pending: Option<u32>,
    /// A provider answer that waits for that fetch (its ID token named an unknown `kid`).
    held: Option<Box<HeldAnswer>>,
    /// A token-endpoint call this request waits for (login callback, session refresh).
    idp_call: Option<(u32, Pending)>,
    /// `Set-Cookie` values for the upstream's response (a refreshed session).
    response_cookies: Vec<String>,
}

impl Http {
    fn respond(&self, r: &Response) {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        self.send_http_response(r.status, headers, Some(r.body.as_bytes()));
    }

    /// Holds the request for a key-set fetch (a token or an ID token named an unknown `kid`),
    /// unless another worker has fetched the keys already or the fetch cannot start: then decides
    /// again at once.
    fn fetch_keys(&mut self, shared: &Shared, fetch: &Fetch, held: Option<Box<HeldAnswer>>, now: u64) -> Action {
        let adopted = {
            let mut engine = shared.borrow_mut();
            let adopted = adopt_shared(self, &mut engine);
            if adopted {
                engine.keys.abandon();
            }
            adopted
        };
        if !adopted {
            let cfg = Rc::clone(&shared.borrow().config);
            match dispatch_get(self, &cfg, fetch) {
                Ok(token) => {
                    self.pending = Some(token);
                    self.held = held;
                    self.call_started_ms = unix_millis(self.get_current_time());
                    return Action::Pause;
                }
                Err(e) => {
                    log::error!("{e}");
                    shared.borrow_mut().keys.on_dispatch_failed(now);
                }
            }
        }
        self.decide_again(shared, held, now)
    }

    /// After a key-set fetch (or instead of one): the request again, or the provider answer that
    /// waited for the keys, without another fetch.
    fn decide_again(&mut self, shared: &Shared, held: Option<Box<HeldAnswer>>, now: u64) -> Action {
        match held {
            Some(held) => {
                let decision = shared.borrow_mut().on_idp_answer(
                    *held,
                    &Request { headers: &self.headers },
                    now,
                    false,
                    &mut fill_random,
                );
                self.apply(shared, decision, now)
            }
            None => self.run(false),
        }
    }

    /// Decides and applies. Returns the action for the current callback.
    fn run(&mut self, refetch_allowed: bool) -> Action {
        let Some(shared) = self.engine.clone() else {
            self.respond(&Response {
                status: 503,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: "gatehouse is not configured".into(),
            });
            return Action::Pause;
        };
        let now = unix_secs(self.get_current_time());
        let decision =
            shared.borrow_mut().decide(&Request { headers: &self.headers }, now, refetch_allowed, &mut fill_random);
        self.apply(&shared, decision, now)
    }

    /// Applies a decision. Returns the action for the current callback.
    fn apply(&mut self, shared: &Shared, decision: Decision, now: u64) -> Action {
        match decision {
            Decision::Forward { remove, set, set_cookies } => {
                for name in &remove {
                    self.set_http_request_header(name, None);
                }
                for (name, value) in &set {
                    self.set_http_request_header(name, Some(value));
                }
                self.response_cookies = set_cookies;
                Action::Continue
            }
            Decision::Respond(r) => {
                self.respond(&r);
                Action::Pause
            }
            Decision::FetchKeys(fetch) => self.fetch_keys(shared, &fetch, None, now),
            Decision::FetchKeysForAnswer(fetch, held) => self.fetch_keys(shared, &fetch, Some(held), now),
            Decision::CallIdp(call) => {
                let cfg = Rc::clone(&shared.borrow().config);
                if let Pending::Refresh { hash, .. } = &call.pending {
                    // Another worker may have refreshed this session a moment ago.
                    let note = self
                        .get_shared_data(&refresh_slot_key(&cfg, RefreshNote::slot(hash)))
                        .0
                        .and_then(|v| String::from_utf8(v).ok())
                        .and_then(|t| RefreshNote::decode(&t));
                    let adopted = note.and_then(|n| {
                        shared.borrow_mut().adopt_peer_refresh(
                            &n,
                            &call.pending,
                            &Request { headers: &self.headers },
                            now,
                        )
                    });
                    if let Some(decision) = adopted {
                        return self.apply(shared, decision, now);
                    }
                }
                let mut headers: Vec<(&str, &str)> = vec![
                    (":method", "POST"),
                    (":path", &call.path),
                    (":authority", &cfg.provider.authority),
                    ("user-agent", "gatehouse"),
                ];
                headers.extend(call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                let dispatched = self.dispatch_http_call(
                    &cfg.provider.cluster,
                    headers,
                    Some(call.body.as_bytes()),
                    vec![],
                    Duration::from_millis(cfg.callout_timeout_ms),
                );
                match dispatched {
                    Ok(token) => {
                        self.idp_call = Some((token, call.pending));
                        self.call_started_ms = unix_millis(self.get_current_time());
                        Action::Pause
                    }
                    Err(status) => {
                        log::error!("could not start a callout to cluster {:?} ({status:?})", cfg.provider.cluster);
                        let decision = shared.borrow_mut().on_idp_answer(
                            HeldAnswer { pending: call.pending, status: None, body: Vec::new() },
                            &Request { headers: &self.headers },
                            now,
                            true,
                            &mut fill_random,
                        );
                        self.apply(shared, decision, now)
                    }
                }
            }
        }
    }
}

impl Context for Http {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        match self.idp_call.take() {
            Some((expected, pending)) if expected == token => {
                let Some(shared) = self.engine.clone() else { return };
                let now = unix_secs(self.get_current_time());
                self.metrics.callout(unix_millis(self.get_current_time()).saturating_sub(self.call_started_ms));
                let status = self.get_http_call_response_header(":status").and_then(|s| s.parse::<u32>().ok());
                let body = if body_size <= MAX_CALLOUT_BODY {
                    self.get_http_call_response_body(0, body_size).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let decision = shared.borrow_mut().on_idp_answer(
                    HeldAnswer { pending, status, body },
                    &Request { headers: &self.headers },
                    now,
                    true,
                    &mut fill_random,
                );
                let notes = std::mem::take(&mut shared.borrow_mut().refresh_outbox);
                let cfg = Rc::clone(&shared.borrow().config);
                for note in notes {
                    let key = refresh_slot_key(&cfg, RefreshNote::slot(&note.old));
                    if let Err(status) = self.set_shared_data(&key, Some(note.encode().as_bytes()), None) {
                        log::warn!("could not share a session refresh with other workers: {status:?}");
                    }
                }
                if let Action::Continue = self.apply(&shared, decision, now) {
                    self.resume_http_request();
                }
                return;
            }
            other => self.idp_call = other,
        }
        if self.pending != Some(token) {
            return;
        }
        self.pending = None;
        let Some(shared) = self.engine.clone() else { return };
        let now = unix_secs(self.get_current_time());
        let answer = callout_answer(self, body_size);
        self.metrics.callout(unix_millis(self.get_current_time()).saturating_sub(self.call_started_ms));
        take_jwks_answer(self, &self.metrics, &mut shared.borrow_mut(), now, answer, "(unknown kid)");
        let held = self.held.take();
        if let Action::Continue = self.decide_again(&shared, held, now) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.headers = self.get_http_request_headers();
        if let Some(shared) = &self.engine {
            let mut engine = shared.borrow_mut();
            if engine.keys.keys().is_none() {
                let _ = adopt_shared(self, &mut engine);
            }
        }
        self.run(true)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for cookie in std::mem::take(&mut self.response_cookies) {
            self.add_http_response_header("set-cookie", &cookie);
        }
        Action::Continue
    }
}
