//! The root context: configure, ticks, and the answers to the fetches it starts. One per VM.

use super::host::Host;
use super::http::Http;
use super::metrics::Metrics;
use super::Shared;
use crate::callout::Answer;
use crate::config::Config;
use crate::flow::{Engine, Fetcher, KeyCall, FIRST_TICK};
use crate::keys::Fetch;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

#[derive(Default)]
pub struct Root {
    engine: Option<Shared>,
    metrics: Rc<Metrics>,
    /// The fetches in flight (one per provider at most): token, what it fetches, when it
    /// started (ms).
    calls: Vec<(u32, Fetch, u64)>,
    /// The tick period set last.
    tick: Duration,
    /// Whether this VM has served requests (the main thread's VM never does).
    served: Cell<bool>,
}

impl Root {
    /// Reads the configuration; `false` (Envoy then refuses the plugin) if it is invalid.
    pub fn on_configure(&mut self, host: &dyn Host) -> bool {
        match Config::parse(&host.plugin_config(), &|name| host.env(name)) {
            Ok(config) => {
                self.engine = Some(Rc::new(RefCell::new(Engine::new(Rc::new(config), host.store()))));
                self.metrics = Rc::new(Metrics::define(host));
                self.calls.clear();
                // No fetch from here: Envoy also configures a throw-away VM that is destroyed at
                // once, and its callout would hold the fetch lease. The first tick starts it.
                self.set_tick(host, FIRST_TICK);
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

    pub fn on_tick(&mut self, host: &dyn Host) {
        let Some(shared) = self.engine.clone() else { return };
        let now_ms = host.now_ms();
        // Counts go to Envoy once per tick (a host call per metric, not per request).
        self.metrics.add(host, shared.borrow_mut().take_counts());
        if self.served.get() {
            self.metrics.memory(host);
        }
        let in_flight: Vec<usize> = self.calls.iter().map(|(_, f, _)| f.provider).collect();
        let tick = shared.borrow_mut().tick(now_ms / 1000, &in_flight);
        for call in tick.calls {
            self.start(host, &shared, call);
        }
        self.set_tick(host, tick.period);
    }

    pub fn on_http_call_response(&mut self, host: &dyn Host, token: u32, body_size: usize) {
        let Some(shared) = self.engine.clone() else { return };
        let Some(i) = self.calls.iter().position(|(t, _, _)| *t == token) else { return };
        let (_, fetch, started_ms) = self.calls.swap_remove(i);
        let now_ms = host.now_ms();
        self.metrics.callout(host, now_ms.saturating_sub(started_ms));
        let answer = Answer::read(host.call_status().as_deref(), body_size, |n| host.call_body(n));
        let next = shared.borrow_mut().on_key_answer(&fetch, &answer, now_ms / 1000, Fetcher::Root);
        if let Some(call) = next {
            self.start(host, &shared, call);
        }
    }

    /// The context of a new request.
    pub fn http(&self) -> Http {
        self.served.set(true);
        Http::new(self.engine.clone(), Rc::clone(&self.metrics))
    }

    fn start(&mut self, host: &dyn Host, shared: &Shared, KeyCall { fetch, callout }: KeyCall) {
        match host.dispatch(&callout) {
            Ok(token) => self.calls.push((token, fetch, host.now_ms())),
            Err(e) => {
                log::error!("{e}");
                shared.borrow_mut().on_key_call_failed(&fetch, host.now_ms() / 1000, Fetcher::Root);
            }
        }
    }

    fn set_tick(&mut self, host: &dyn Host, period: Duration) {
        if self.tick != period {
            host.set_tick(period);
            self.tick = period;
        }
    }
}
