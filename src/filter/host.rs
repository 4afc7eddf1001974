//! What the glue asks of the host. `super::abi` answers with proxy-wasm's host calls into
//! Envoy; the tests with a recording fake. Each method is one host call (or a few), and none
//! decides anything.

use crate::callout::Callout;
use crate::flow::Response;
use crate::shared::Store;
use std::time::Duration;

/// A metric's kind, as Envoy keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

pub trait Host {
    /// The host's clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Fills `buf` from the host's CSPRNG.
    fn random(&self, buf: &mut [u8]);
    /// The plugin's configuration as Envoy hands it over.
    fn plugin_config(&self) -> Vec<u8>;
    /// An environment variable of the VM (`vmConfig.env`).
    fn env(&self, name: &str) -> Option<String>;
    /// The store shared by this Envoy's VMs.
    fn store(&self) -> Box<dyn Store>;
    fn set_tick(&self, period: Duration);

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, by: u64);
    fn record_metric(&self, id: u32, value: u64);
    /// The VM's linear memory, in bytes.
    fn memory_bytes(&self) -> u64;

    /// Starts a callout; its token, or why it could not start.
    fn dispatch(&self, call: &Callout) -> Result<u32, String>;
    /// The `:status` of the callout answer being delivered.
    fn call_status(&self) -> Option<String>;
    /// The first `size` bytes of the callout answer being delivered.
    fn call_body(&self, size: usize) -> Option<Vec<u8>>;

    fn request_headers(&self) -> Vec<(String, String)>;
    /// The first `size` bytes of the request body buffered so far.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Sets (or with `None` removes) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    fn add_response_header(&self, name: &str, value: &str);
    fn send_response(&self, response: &Response);
    fn resume_request(&self);
}
