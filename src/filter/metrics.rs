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
    memory: Option<u32>,
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
        m.memory = hostcalls::define_metric(MetricType::Gauge, "gatehouse.vm_memory_bytes").ok();
        m
    }

    /// The VM's linear memory (the VMs of all workers share the gauge: the last one to tick
    /// shows; they are alike).
    pub fn memory(&self) {
        if let Some(id) = self.memory {
            let bytes = core::arch::wasm32::memory_size(0).saturating_mul(65536);
            let _ = hostcalls::record_metric(id, u64::try_from(bytes).unwrap_or(u64::MAX));
        }
    }

    pub fn add(&self, counts: Vec<(Counter, u64)>) {
        for (c, n) in counts {
            if let Some(id) = self.counters.get(&c) {
                let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
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
