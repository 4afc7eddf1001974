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
use crate::policy::{canonical_host, path, PathError, RequestPath, Route, Routes};

/// Headers from which some upstreams take the request's host.
pub const HOST_HEADERS: &[&str] = &["x-forwarded-host", "x-host", "x-original-host"];
/// Headers with which some upstreams take another method.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &["x-http-method-override", "x-http-method", "x-method-override"];

/// What gatehouse matched a request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub path: RequestPath,
    /// Canonical host of `:authority`.
    pub host: String,
    /// Every public path or rule the readings fall under.
    pub routes: Routes,
    /// The provider that signs browsers in here (see [`Config::provider_for_host`]): the one
    /// every reading of the host names; `None` if there is none, or the readings disagree.
    pub provider: Option<usize>,
    /// Bit `i`: provider `i` serves every reading of the host (see [`Config::serves`]), so
    /// its bearer tokens are accepted here.
    pub served: u64,
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
        let raw = req.header(":path").ok_or(Refusal::Path(PathError::NotAbsolute))?;
        let path = path::prepare(raw, &cfg.paths).map_err(Refusal::Path)?;
        let host = canonical_host(req.header(":authority").unwrap_or("")).map_err(|_| Refusal::Host)?;
        let method = req.header(":method").unwrap_or("GET");
        if !is_token(method) {
            return Err(Refusal::Method);
        }
        let (more_hosts, more_methods) = other_readings(req, raw, cfg, &host, method)?;
        // Most requests have one host and one method: no list is built for them.
        let mut hosts: Vec<&str> = Vec::new();
        if !more_hosts.is_empty() {
            hosts.push(&host);
            hosts.extend(more_hosts.iter().map(String::as_str));
        }
        let mut methods: Vec<&str> = Vec::new();
        if !more_methods.is_empty() {
            methods.push(method);
            methods.extend(more_methods.iter().map(String::as_str));
        }
        let one_host = host.as_str();
        let hosts = if hosts.is_empty() { std::slice::from_ref(&one_host) } else { &hosts[..] };
        // A CORS preflight under `preflightPaths` passes unauthenticated: OPTIONS read one way
        // only (no method override gives it another method), with `Origin` and
        // `Access-Control-Request-Method`, every reading of its target under those paths.
        let preflight = method == "OPTIONS"
            && methods.is_empty()
            && req.header("origin").is_some_and(|v| !v.is_empty())
            && req.header("access-control-request-method").is_some_and(|v| !v.is_empty());
        let routes = if preflight && cfg.policy.preflight_passes(hosts, path.readings()) {
            Routes::one(Route::Public)
        } else {
            cfg.policy.route(
                hosts,
                path.readings(),
                if methods.is_empty() { std::slice::from_ref(&method) } else { &methods },
            )
        };
        if routes.is_ambiguous() {
            log::info!("the request reads several ways; the rules of every reading apply");
        }
        let provider = hosts_provider(cfg, hosts);
        let served = served_by(cfg, hosts);
        Ok(View { path, host, routes, provider, served })
    }

    /// Whether provider `p` serves every reading of this request's host.
    pub fn served_by(&self, p: usize) -> bool {
        u32::try_from(p).ok().and_then(|p| 1u64.checked_shl(p)).is_some_and(|bit| self.served & bit != 0)
    }

    /// The `:path` to set on the forwarded request, when normalization changed it.
    pub fn path_header(&self) -> Option<super::Header> {
        self.path.rewritten.as_deref().map(|p| (std::rc::Rc::from(":path"), std::rc::Rc::from(p)))
    }
}

/// The provider of every reading of the host, if they name the same one: a session of one
/// provider's users must not reach a host an upstream takes for another's.
fn hosts_provider(cfg: &Config, hosts: &[&str]) -> Option<usize> {
    let (first, rest) = hosts.split_first()?;
    let p = cfg.provider_for_host(first)?;
    rest.iter().all(|h| cfg.provider_for_host(h) == Some(p)).then_some(p)
}

/// The providers (bit `i` for provider `i`) that serve every one of these hosts.
fn served_by(cfg: &Config, hosts: &[&str]) -> u64 {
    let mut served = 0u64;
    for (i, _) in cfg.providers.iter().enumerate() {
        let serves = hosts.iter().all(|h| cfg.serves(i, h));
        if let Some(bit) = u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)).filter(|_| serves) {
            served |= bit;
        }
    }
    served
}

/// An HTTP method (RFC 9110 `token`).
fn is_token(m: &str) -> bool {
    !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The hosts and methods, other than `host` and `method`, that some upstream may take the request
/// for: from the headers in [`HOST_HEADERS`] and `Forwarded: host=`, and (unless
/// `pathNormalization.methodOverrides` is off) from [`METHOD_OVERRIDE_HEADERS`], a `_method` query
/// parameter, the method in upper case, and — for a POST whose body may hold `_method` (a form,
/// or JSON, which Laravel reads) — every method a rule names.
fn other_readings(
    req: &Request<'_>,
    raw_path: &str,
    cfg: &Config,
    host: &str,
    method: &str,
) -> Result<(Vec<String>, Vec<String>), Refusal> {
    let mut hosts: Vec<String> = Vec::new();
    let mut add_host = |value: &str| -> Result<(), Refusal> {
        let h = canonical_host(value.trim_matches([' ', '\t', '"'])).map_err(|_| Refusal::Host)?;
        if h != host && !hosts.contains(&h) {
            hosts.push(h);
        }
        Ok(())
    };
    let overrides = cfg.method_overrides;
    let mut methods: Vec<String> = Vec::new();
    let mut add_method = |m: &str| -> Result<(), Refusal> {
        let m = m.trim();
        if !is_token(m) {
            return Err(Refusal::Method);
        }
        let upper = m.to_ascii_uppercase();
        if upper != method && !methods.contains(&upper) {
            methods.push(upper);
        }
        Ok(())
    };
    if overrides && method.bytes().any(|b| b.is_ascii_lowercase()) {
        add_method(method)?;
    }
    let mut body_may_override = false;
    for (name, value) in req.headers {
        // Every name below starts with `x-`, `f` or `c`: most headers are passed over at once.
        if !matches!(name.as_bytes().first(), Some(b'x' | b'f' | b'c')) {
            continue;
        }
        if HOST_HEADERS.contains(&name.as_str()) {
            for v in value.split(',') {
                add_host(v)?;
            }
        } else if name == "forwarded" {
            // RFC 7239: elements by `,`, pairs by `;`, `host=` possibly quoted.
            for pair in value.split([',', ';']) {
                if let Some((k, v)) = pair.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("host") {
                        add_host(v)?;
                    }
                }
            }
        } else if overrides && METHOD_OVERRIDE_HEADERS.contains(&name.as_str()) {
            add_method(value)?;
        } else if name == "content-type" {
            body_may_override = body_may_carry_method(value);
        }
    }
    if !overrides {
        return Ok((hosts, methods));
    }
    if let Some((_, query)) = raw_path.split_once('?') {
        // Only parsed when it may hold `_method` (or `%5Fmethod`); `;` separates parameters too
        // for older Rack and Python parsers.
        if contains_ignoring_case(query, "method") {
            for part in query.split(';') {
                for (k, v) in url::form_urlencoded::parse(part.as_bytes()) {
                    if k.eq_ignore_ascii_case("_method") {
                        add_method(&v)?;
                    }
                }
            }
        }
    }
    // A POST body gatehouse does not read may carry `_method`: to Rails, Laravel or Symfony the
    // request may be any method, so it is held to every method a rule names.
    if body_may_override && method.eq_ignore_ascii_case("POST") {
        for rule in &cfg.policy.rules {
            for m in &rule.methods {
                add_method(m)?;
            }
        }
    }
    Ok((hosts, methods))
}

/// A body type whose `_method` field Rails, Symfony or Laravel may obey: a form, or JSON.
/// Compared without allocating: this runs for every request with a body.
fn body_may_carry_method(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let is = |want: &str| media.eq_ignore_ascii_case(want);
    let json_suffix = media.len() > 5
        && media.get(media.len() - 5..).is_some_and(|s| s.eq_ignore_ascii_case("+json"))
        && media.get(..12).is_some_and(|p| p.eq_ignore_ascii_case("application/"));
    is("application/x-www-form-urlencoded") || is("multipart/form-data") || is("application/json") || json_suffix
}

/// `haystack` contains the ASCII `needle` in any case.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}
