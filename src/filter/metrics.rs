//! Envoy metrics for the engine's counts (Envoy shows them as `wasmcustom.<name>`), the callout
//! latency and the VM's memory.

use super::host::{Host, MetricKind};
use crate::stats::Counter;
use std::collections::HashMap;

/// The metric ids of this VM. A metric that could not be defined is skipped, never fatal.
#[derive(Default)]
pub struct Metrics {
    counters: HashMap<Counter, u32>,
    callout_ms: Option<u32>,
    memory: Option<u32>,
}

impl Metrics {
    pub fn define(host: &dyn Host) -> Metrics {
        let counters = Counter::all()
            .into_iter()
            .filter_map(|c| Some((c, host.define_metric(MetricKind::Counter, &c.name())?)))
            .collect();
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
            if let Some(id) = self.counters.get(&c) {
                host.increment_metric(*id, n);
            }
        }
    }

    pub fn callout(&self, host: &dyn Host, millis: u64) {
        if let Some(id) = self.callout_ms {
            host.record_metric(id, millis);
        }
    }
}
