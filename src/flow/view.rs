//! The request as the rules see it, read once at the top of [`Engine::decide`](super::Engine::decide):
//! the path the upstream will receive, the canonical host, and the route — the public path or
//! rule that applies to every reading of the request an upstream could make.
//!
//! Readings come from three places: the path's own transformations (see `policy::path`); the
//! headers with which some upstreams take another host (`X-Forwarded-Host`, `Forwarded: host=`,
//! `X-Host`, `X-Original-Host`: Django, Rails, Spring, Keycloak's proxy mode); and method
//! overrides (`X-HTTP-Method-Override` and kin, and a `_method` query parameter: Rails,
//! Laravel, Symfony, Express's method-override), the method in upper case, and — for a form POST,
//! whose body may hold `_method` — every method a rule names. The request must
//! pass the rules of every one of them.

use super::{Request, Response};
use crate::config::Config;
use crate::policy::{canonical_host, path, PathError, RequestPath, Routes};

/// Headers from which some upstreams take the request's host.
pub const HOST_HEADERS: &[&str] = &["x-forwarded-host", "x-host", "x-original-host"];
/// Headers with which some upstreams take another method.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What gatehouse matched a request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub path: RequestPath,
    /// Canonical host of `:authority`.
    pub host: String,
    /// Every public path or rule the readings fall under.
    pub routes: Routes,
}

/// Why a request is refused before anything else is looked at (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Path(PathError),
    Host,
    Method,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Path(e) => e.code(),
            Refusal::Host => "invalid_host",
            Refusal::Method => "invalid_method",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Refusal::Path(e) => e.description(),
            Refusal::Host => "the request's host is not a valid host name",
            Refusal::Method => "the request's method is not a valid method",
        }
    }

    /// The 400 answer.
    pub fn response(self) -> Response {
        super::json_response(
            400,
            Vec::new(),
            serde_json::json!({"error": "invalid_request", "reason": self.code(), "error_description": self.description()}),
        )
    }
}

impl View {
    /// Reads the request's target and routes it.
    pub fn read(cfg: &Config, req: &Request<'_>) -> Result<View, Refusal> {
        let raw = req
            .header(":path")
            .ok_or(Refusal::Path(PathError::NotAbsolute))?;
        let path = path::prepare(raw, &cfg.paths).map_err(Refusal::Path)?;
        let host =
            canonical_host(req.header(":authority").unwrap_or("")).map_err(|_| Refusal::Host)?;
        let hosts = host_readings(req, &host)?;
        let methods = method_readings(req, raw, cfg)?;
        let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let method_refs: Vec<&str> = methods.iter().map(String::as_str).collect();
        let routes = cfg.policy.route(&host_refs, path.readings(), &method_refs);
        if routes.is_ambiguous() {
            log::info!("the request reads several ways; the rules of every reading apply");
        }
        Ok(View { path, host, routes })
    }

    /// The `:path` to set on the forwarded request, when normalization changed it.
    pub fn path_header(&self) -> Option<super::Header> {
        self.path
            .rewritten
            .as_deref()
            .map(|p| (std::rc::Rc::from(":path"), std::rc::Rc::from(p)))
    }
}

/// The canonical host, then every other host the request names in headers upstreams read.
fn host_readings(req: &Request<'_>, host: &str) -> Result<Vec<String>, Refusal> {
    let mut hosts = vec![host.to_string()];
    let mut add = |value: &str| -> Result<(), Refusal> {
        let value = value.trim_matches([' ', '\t', '"']);
        let h = canonical_host(value).map_err(|_| Refusal::Host)?;
        if !hosts.contains(&h) {
            hosts.push(h);
        }
        Ok(())
    };
    for (name, value) in req.headers {
        if HOST_HEADERS.contains(&name.as_str()) {
            for v in value.split(',') {
                add(v)?;
            }
        } else if name == "forwarded" {
            // RFC 7239: elements by `,`, pairs by `;`, `host=` possibly quoted.
            for pair in value.split([',', ';']) {
                if let Some((k, v)) = pair.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("host") {
                        add(v)?;
                    }
                }
            }
        }
    }
    Ok(hosts)
}

/// The method, then the other methods some upstream may take the request for.
fn method_readings(
    req: &Request<'_>,
    raw_path: &str,
    cfg: &Config,
) -> Result<Vec<String>, Refusal> {
    let token = |m: &str| {
        !m.is_empty()
            && m.len() <= 32
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let method = req.header(":method").unwrap_or("GET");
    if !token(method) {
        return Err(Refusal::Method);
    }
    let mut methods = vec![method.to_string()];
    let mut add = |m: &str| -> Result<(), Refusal> {
        let m = m.trim();
        if !token(m) {
            return Err(Refusal::Method);
        }
        let upper = m.to_ascii_uppercase();
        if !methods.contains(&upper) {
            methods.push(upper);
        }
        Ok(())
    };
    add(method)?;
    for (name, value) in req.headers {
        if METHOD_OVERRIDE_HEADERS.contains(&name.as_str()) {
            add(value)?;
        }
    }
    if let Some((_, query)) = raw_path.split_once('?') {
        // `;` separates parameters too for older Rack and Python parsers.
        for part in query.split(';') {
            for (k, v) in url::form_urlencoded::parse(part.as_bytes()) {
                if k.eq_ignore_ascii_case("_method") {
                    add(&v)?;
                }
            }
        }
    }
    // A form POST may carry `_method` in its body, which gatehouse does not read: to Rails,
    // Laravel or Symfony it may be any method, so it is every method a rule names.
    let form = |ct: &str| {
        let ct = ct.trim_start().to_ascii_lowercase();
        ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/form-data")
    };
    if method.eq_ignore_ascii_case("POST") && req.header("content-type").is_some_and(form) {
        for rule in &cfg.policy.rules {
            for m in &rule.methods {
                add(m)?;
            }
        }
    }
    Ok(methods)
}
