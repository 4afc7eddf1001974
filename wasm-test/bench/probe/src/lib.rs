//! One kind of host call, `n` times per request (`{"op": "...", "n": 50}` as the plugin
//! configuration): the price of each under V8 is the throughput lost against `op: "none"`.
//! Ops: none, get_header, get_headers, replace_header, remove_header, add_remove_header, clock,
//! shared_get, metric, log_filtered (a `log::debug!` below the SDK's level), log_sent (a debug
//! line handed to Envoy, which drops it at its default level), property.
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { op: Op::None, n: 0, metric: 0 }) });
}}

#[derive(Clone, Copy)]
enum Op {
    None,
    GetHeader,
    GetHeaders,
    ReplaceHeader,
    RemoveHeader,
    AddRemoveHeader,
    Clock,
    SharedGet,
    Metric,
    LogFiltered,
    LogSent,
    Property,
}

struct Root {
    op: Op,
    n: u32,
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return false };
        let text = String::from_utf8_lossy(&raw);
        // A tiny hand parse: the probe takes one string and one number, and has no other input.
        let field = |name: &str| -> Option<String> {
            let at = text.find(&format!("\"{name}\""))? + name.len() + 2;
            let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().trim_matches('"').to_string())
        };
        self.op = match field("op").as_deref() {
            Some("none") => Op::None,
            Some("get_header") => Op::GetHeader,
            Some("get_headers") => Op::GetHeaders,
            Some("replace_header") => Op::ReplaceHeader,
            Some("remove_header") => Op::RemoveHeader,
            Some("add_remove_header") => Op::AddRemoveHeader,
            Some("clock") => Op::Clock,
            Some("shared_get") => Op::SharedGet,
            Some("metric") => Op::Metric,
            Some("log_filtered") => Op::LogFiltered,
            Some("log_sent") => Op::LogSent,
            Some("property") => Op::Property,
            _ => return false,
        };
        self.n = field("n").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.metric = hostcalls::define_metric(MetricType::Counter, "probe.calls").unwrap_or(0);
        let _ = hostcalls::set_shared_data("probe", Some(b"a value of some forty bytes, like a note"), None);
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { op: self.op, n: self.n, metric: self.metric }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    op: Op,
    n: u32,
    metric: u32,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _headers: usize, _end: bool) -> Action {
        let mut sink = 0usize;
        for _ in 0..self.n {
            match self.op {
                Op::None => {}
                Op::GetHeader => sink += self.get_http_request_header(":path").map_or(0, |v| v.len()),
                Op::GetHeaders => sink += self.get_http_request_headers().len(),
                Op::ReplaceHeader => self.set_http_request_header("x-probe", Some("value")),
                Op::RemoveHeader => self.set_http_request_header("x-probe-absent", None),
                Op::AddRemoveHeader => {
                    self.add_http_request_header("x-probe", "value");
                    self.set_http_request_header("x-probe", None);
                }
                Op::Clock => {
                    sink +=
                        hostcalls::get_current_time().map_or(0, |t| t.elapsed().map_or(1, |d| d.as_nanos() as usize))
                }
                Op::SharedGet => {
                    sink += hostcalls::get_shared_data("probe").ok().and_then(|(v, _)| v).map_or(0, |v| v.len())
                }
                Op::Metric => {
                    let _ = hostcalls::increment_metric(self.metric, 1);
                }
                Op::LogFiltered => log::debug!("probe {sink}"),
                Op::LogSent => {
                    let _ = hostcalls::log(LogLevel::Debug, &format!("probe {sink}"));
                }
                Op::Property => {
                    sink += hostcalls::get_property(vec!["request", "path"]).ok().flatten().map_or(0, |v| v.len());
                }
            }
        }
        if sink == usize::MAX {
            let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
        }
        Action::Continue
    }
}
