//! The proxy-wasm ABI: the only code that calls into Envoy. Each context hands its callbacks to
//! [`Root`] or [`Http`] with [`Abi`] as their [`Host`]: proxy-wasm's host calls act on the
//! context whose callback is running, so one zero-sized value serves every context.

use super::host::{Host, MetricKind};
use super::http::{Http, Next};
use super::root::Root;
use crate::callout::Callout;
use crate::flow::Response;
use crate::shared::Store;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    // Also installs a panic hook that logs at critical level.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AbiRoot(Root::default())) });
}}

/// Envoy, through proxy-wasm's host calls.
struct Abi;

/// Envoy's shared data, which the VMs of one Envoy (one per worker) all see.
struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

impl Host for Abi {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// WASI `random_get`, backed by the host's CSPRNG. There is no usable fallback for a login
    /// secret: on failure the VM aborts (Envoy restarts it) rather than issue a guessable state
    /// or PKCE verifier.
    fn random(&self, buf: &mut [u8]) {
        if getrandom::fill(buf).is_err() {
            log::error!("no randomness from the host");
            std::process::abort();
        }
    }

    fn plugin_config(&self) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default()
    }

    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn store(&self) -> Box<dyn Store> {
        Box::new(SharedData)
    }

    fn set_tick(&self, period: Duration) {
        let _ = hostcalls::set_tick_period(period);
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).ok()
    }

    fn increment_metric(&self, id: u32, by: u64) {
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn memory_bytes(&self) -> u64 {
        let pages = core::arch::wasm32::memory_size(0);
        u64::try_from(pages.saturating_mul(65536)).unwrap_or(u64::MAX)
    }

    fn dispatch(&self, call: &Callout) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            call.body.as_deref().map(str::as_bytes),
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| {
            format!(
                "could not start a callout to cluster {:?} ({status:?}); check provider.cluster names an Envoy cluster",
                call.cluster
            )
        })
    }

    fn call_status(&self) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten()
    }

    fn call_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size).ok().flatten()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn send_response(&self, r: &Response) {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let _ = hostcalls::send_http_response(r.status, headers, Some(r.body.as_bytes()));
    }

    fn resume_request(&self) {
        let _ = hostcalls::resume_http_request();
    }
}

struct AbiRoot(Root);

impl Context for AbiRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.0.on_http_call_response(&Abi, token, body_size);
    }
}

impl RootContext for AbiRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.0.on_configure(&Abi)
    }

    fn on_tick(&mut self) {
        self.0.on_tick(&Abi);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AbiHttp(self.0.http())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AbiHttp(Http);

impl Context for AbiHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.0.on_http_call_response(&Abi, token, body_size);
    }
}

impl HttpContext for AbiHttp {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        match self.0.on_request_headers(&Abi, end_of_stream) {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.0.on_request_body(&Abi, body_size, end_of_stream) {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        match self.0.on_request_trailers(&Abi) {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.0.on_response_headers(&Abi);
        Action::Continue
    }
}
