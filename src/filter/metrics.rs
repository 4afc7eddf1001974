//! Envoy metrics for the engine's counts (Envoy shows them as `wasmcustom.<name>`), the callout
//! latency and the VM's memory.

use super::host::{Host, MetricKind};
use crate::stats::{Counter, COUNTERS};

/// The metric ids of this VM. A metric that could not be defined is skipped, never fatal.
pub struct Metrics {
    /// By `Counter::index`.
    counters: [Option<u32>; COUNTERS],
    callout_ms: Option<u32>,
    memory: Option<u32>,
}

impl Default for Metrics {
    /// No metrics (before the plugin is configured).
    fn default() -> Metrics {
        Metrics { counters: [None; COUNTERS], callout_ms: None, memory: None }
    }
}

impl Metrics {
    pub fn define(host: &dyn Host) -> Metrics {
        let mut counters = [None; COUNTERS];
        for c in Counter::all() {
            if let Some(slot) = counters.get_mut(c.index()) {
                *slot = host.define_metric(MetricKind::Counter, &c.name());
            }
        }
        Metrics {
            counters,
            callout_ms: host.define_metric(MetricKind::Histogram, "gatehouse.callout_ms"),
            memory: host.define_metric(MetricKind::Gauge, "gatehouse.vm_memory_bytes"),
        }
    }

    /// The VM's linear memory (the VMs of all workers share the gauge: the last one to tick
    /// shows; they are alike).
    pub fn memory(&self, host: &dyn Host) {
        if let Some(id) = self.memory {
            host.record_metric(id, host.memory_bytes());
        }
    }

    pub fn add(&self, host: &dyn Host, counts: Vec<(Counter, u64)>) {
        for (c, n) in counts {
            if let Some(id) = self.counters.get(c.index()).copied().flatten() {
                host.increment_metric(id, n);
            }
        }
    }

    pub fn callout(&self, host: &dyn Host, millis: u64) {
        if let Some(id) = self.callout_ms {
            host.record_metric(id, millis);
        }
    }
}
