//! Envoy metrics for gatehouse's counts (Envoy shows them as `wasmcustom.<name>`).

use crate::stats::Counter;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// Metrics the glue records itself (provider fetches and callout latency).
#[derive(Clone, Copy)]
pub enum Glue {
    DiscoveryFetch,
    DiscoveryFetchFailure,
    JwksFetch,
    JwksFetchFailure,
}

impl Glue {
    fn name(self) -> &'static str {
        match self {
            Glue::DiscoveryFetch => "gatehouse.discovery.fetches",
            Glue::DiscoveryFetchFailure => "gatehouse.discovery.fetch_failures",
            Glue::JwksFetch => "gatehouse.jwks.fetches",
            Glue::JwksFetchFailure => "gatehouse.jwks.fetch_failures",
        }
    }

    const ALL: [Glue; 4] = [Glue::DiscoveryFetch, Glue::DiscoveryFetchFailure, Glue::JwksFetch, Glue::JwksFetchFailure];
}

/// The metric ids of this VM. A metric that could not be defined is skipped, never fatal.
#[derive(Default)]
pub struct Metrics {
    counters: HashMap<Counter, u32>,
    glue: HashMap<&'static str, u32>,
    callout_ms: Option<u32>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let mut m = Metrics::default();
        for c in Counter::all() {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &c.name()) {
                m.counters.insert(c, id);
            }
        }
        for g in Glue::ALL {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, g.name()) {
                m.glue.insert(g.name(), id);
            }
        }
        m.callout_ms = hostcalls::define_metric(MetricType::Histogram, "gatehouse.callout_ms").ok();
        m
    }

    pub fn add(&self, counts: Vec<Counter>) {
        for c in counts {
            if let Some(id) = self.counters.get(&c) {
                let _ = hostcalls::increment_metric(*id, 1);
            }
        }
    }

    pub fn glue(&self, g: Glue) {
        if let Some(id) = self.glue.get(g.name()) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    pub fn callout(&self, millis: u64) {
        if let Some(id) = self.callout_ms {
            let _ = hostcalls::record_metric(id, millis);
        }
    }
}
