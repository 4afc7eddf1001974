//! Plugin configuration: the JSON a `WasmPlugin`'s `pluginConfig` (or Envoy's `configuration`)
//! delivers, parsed in two phases — serde with defaults, then validation that reports every
//! problem with its field path — into an immutable [`Config`] built once per configure.

mod raw;

use crate::claims::ClaimPath;
use crate::jwt::alg::Alg;
use crate::jwt::jwks::KeySet;
use crate::policy::{
    ClaimCondition, ClaimOp, EscapedSlashes, HostPattern, Normalization, PathMatch, PathSettings, Policy, PublicPath,
    Rule,
};
use crate::secret::Secret;
use crate::session::Sealer;
use raw::{OneOrMany, RawConfig, RawPathMatch};
use serde_json::Value;
use std::fmt;

/// One problem in the configuration, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<FieldError>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `jwks_uri` from the discovery document.
    Discovery,
    /// A fixed path (and query) on the provider cluster.
    Path(String),
    /// Keys given inline in the configuration; nothing is fetched.
    Inline(KeySet),
}

/// The OpenID Provider and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The issuer as tokens name it.
    pub issuer: String,
    /// Every accepted `iss`: the issuer first, then the extra ones.
    pub issuers: Vec<String>,
    /// Accepted audiences (`aud`, or `azp`).
    pub audiences: Vec<String>,
    /// Envoy cluster for callouts.
    pub cluster: String,
    /// `:authority` of callouts.
    pub authority: String,
    /// Path of the discovery document on the cluster.
    pub discovery_path: String,
    pub client_id: Option<String>,
    /// `[client_id]` (empty without one): the audience of this client's own tokens.
    pub client_audience: Vec<String>,
    pub client_secret: Option<Secret>,
    pub keys: KeySource,
}

/// How bearer tokens are checked and passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub algorithms: Vec<Alg>,
    pub leeway_secs: u64,
    pub forward_authorization: bool,
    pub payload_header: Option<String>,
    pub realm: String,
}

/// A header set from claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// Lower-case header name.
    pub name: String,
    /// Claims whose values are concatenated, in order.
    pub claims: Vec<ClaimPath>,
}

/// Key fetching schedule, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTiming {
    pub refresh_interval: u64,
    pub unknown_kid_min_interval: u64,
    pub retry_min: u64,
    pub retry_max: u64,
}

/// The browser sign-in: the OIDC authorization-code flow and gatehouse's session cookie.
#[derive(Debug, PartialEq, Eq)]
pub struct Browser {
    /// The session cookie's name as sent: `cookieName`, with `__Host-` before it when
    /// `host_prefix`.
    pub cookie_name: String,
    /// The cookies carry the `__Host-` prefix (secure, host-only, path `/`): a sibling
    /// subdomain or a plain-http page cannot set, shadow or fixate them.
    pub host_prefix: bool,
    pub sealer: Sealer,
    pub lifetime_secs: u64,
    pub cookie: crate::cookie::Attributes,
    pub keep_id_token: bool,
    /// Keep the refresh token (encrypted) and refresh the session before the access token expires.
    pub refresh: bool,
    pub refresh_before_secs: u64,
    pub callback_path: String,
    pub sign_out_path: String,
    /// A fixed redirect URI; when `None` it is derived from the request's scheme and host.
    pub redirect_uri: Option<String>,
    pub scope: String,
    pub extra_params: Vec<(String, String)>,
    pub client_secret_post: bool,
    pub post_logout_redirect_uri: Option<String>,
    pub login_timeout_secs: u64,
    pub redirect_browsers: bool,
    /// Other hosts a login may return to (`example.com`, or `.example.com` for subdomains), when
    /// a fixed `redirectUri` puts the callback on another host than the page.
    pub allowed_redirect_domains: Vec<String>,
    /// Top-level claims kept in the session: those headers and rules read.
    pub kept_claims: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    pub provider: Provider,
    pub tokens: Tokens,
    /// How request paths are normalized and checked.
    pub paths: PathSettings,
    /// Method overrides (headers, `_method`) are readings of the request's method.
    pub method_overrides: bool,
    pub claim_headers: Vec<ClaimHeader>,
    pub policy: Policy,
    /// Every header gatehouse may set, and those that tell some upstreams to read another path
    /// ([`ROUTING_HEADERS`]): removed from each incoming request.
    pub managed_headers: Vec<String>,
    /// The first bytes of `managed_headers` (with `_` if one starts with `-`, which may come as `_`).
    pub managed_first_bytes: Vec<u8>,
    pub callout_timeout_ms: u64,
    pub key_timing: KeyTiming,
    pub token_cache_size: usize,
    /// Browser sign-in, when a `session` section is configured.
    pub browser: Option<Browser>,
}

/// Headers that make some upstreams read another path than `:path` (IIS's URL Rewrite and
/// Symfony read `X-Original-URL`/`X-Rewrite-URL`, Spring's `ForwardedHeaderFilter` prepends
/// `X-Forwarded-Prefix`, Traefik-style setups pass `X-Forwarded-Uri`): removed from every request,
/// so that the path gatehouse matched is the only one the upstream sees.
pub const ROUTING_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
];

/// Header names gatehouse refuses to set from claims: they carry routing, framing or credentials.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "set-cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-envoy-original-path",
];

impl Config {
    /// How bearer tokens are checked: this provider's issuers, the configured audiences, the
    /// allowed algorithms and the leeway.
    pub fn token_expectations(&self) -> crate::jwt::Expectations<'_> {
        self.expectations(&self.provider.audiences)
    }

    /// How this client's own tokens are checked (the ID token, the access token of a login):
    /// the same, with the client id as the one audience.
    pub fn client_expectations(&self) -> crate::jwt::Expectations<'_> {
        self.expectations(&self.provider.client_audience)
    }

    fn expectations<'a>(&'a self, audiences: &'a [String]) -> crate::jwt::Expectations<'a> {
        crate::jwt::Expectations {
            issuers: &self.provider.issuers,
            audiences,
            algorithms: &self.tokens.algorithms,
            leeway_secs: self.tokens.leeway_secs,
        }
    }

    /// Parses and validates a configuration. `env` reads the VM's environment (for secrets).
    pub fn parse(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut errors = Errors::default();
        let doc: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                errors.add("(root)", format!("not valid JSON: {e}"));
                return Err(ConfigError(errors.0));
            }
        };
        let raw = RawConfig::read(&doc, &mut errors);
        let config = raw.and_then(|raw| build(raw, env, &mut errors));
        match config {
            Some(c) if errors.0.is_empty() => Ok(c),
            _ => Err(ConfigError(errors.0)),
        }
    }
}

/// Collects field errors.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }
}

fn build(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>, errors: &mut Errors) -> Option<Config> {
    let p = raw.provider;

    // provider.issuer: an absolute http(s) URL without query or fragment (OIDC Discovery §2).
    let issuer_url = match url::Url::parse(&p.issuer) {
        Ok(u)
            if (u.scheme() == "https" || u.scheme() == "http")
                && u.host_str().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            Some(u)
        }
        Ok(_) => {
            errors.add(
                "provider.issuer",
                format!("expected an http(s) URL without query or fragment, found {:?}", p.issuer),
            );
            None
        }
        Err(e) => {
            errors.add("provider.issuer", format!("expected an http(s) URL, found {:?} ({e})", p.issuer));
            None
        }
    };
    let (authority_default, discovery_path) = match &issuer_url {
        Some(u) => {
            let host = u.host_str().unwrap_or_default();
            let authority = match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            (authority, format!("{}/.well-known/openid-configuration", u.path().trim_end_matches('/')))
        }
        None => (String::new(), String::new()),
    };
    if p.cluster.trim().is_empty() {
        errors.add(
            "provider.cluster",
            "expected the name of the Envoy cluster that reaches the provider, found an empty string",
        );
    }
    let authority = match p.authority {
        Some(a) if a.is_empty() || a.bytes().any(|b| !b.is_ascii_graphic()) => {
            errors.add("provider.authority", format!("expected a host[:port], found {a:?}"));
            String::new()
        }
        Some(a) => a,
        None => authority_default,
    };
    if let Some(id) = &p.client_id {
        if id.is_empty() {
            errors.add("provider.clientId", "must not be empty");
        }
    }
    let client_secret = match (p.client_secret, p.client_secret_env) {
        (Some(_), Some(_)) => {
            errors.add("provider.clientSecret", "set either clientSecret or clientSecretEnv, not both");
            None
        }
        (Some(s), None) if s.is_empty() => {
            errors.add("provider.clientSecret", "must not be empty");
            None
        }
        (Some(s), None) => Some(Secret::new(s)),
        (None, Some(var)) => match env(&var) {
            Some(s) if !s.is_empty() => Some(Secret::new(s)),
            _ => {
                errors.add("provider.clientSecretEnv", format!("environment variable {var:?} is not set (or empty) in the Wasm VM; pass it with vmConfig.env / environment_variables"));
                None
            }
        },
        (None, None) => None,
    };
    let mut issuers = vec![p.issuer.clone()];
    for (i, extra) in p.extra_issuers.iter().enumerate() {
        if extra.is_empty() {
            errors.add(format!("provider.extraIssuers[{i}]"), "must not be empty");
        } else if issuers.contains(extra) {
            errors.add(format!("provider.extraIssuers[{i}]"), format!("{extra:?} is listed twice"));
        } else {
            issuers.push(extra.clone());
        }
    }
    let audiences = match p.audiences {
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                if a.is_empty() {
                    errors.add(format!("provider.audiences[{i}]"), "must not be empty");
                }
            }
            list
        }
        None => p.client_id.iter().cloned().collect(),
    };
    if audiences.is_empty() {
        errors.add(
            "provider.audiences",
            "at least one audience is required (or set provider.clientId, the default audience)",
        );
    }
    let keys = match (p.jwks_uri, p.jwks) {
        (Some(_), Some(_)) => {
            errors.add("provider.jwks", "set either jwks (inline keys) or jwksUri, not both");
            KeySource::Discovery
        }
        (Some(uri), None) => match jwks_path(&uri) {
            Ok(path) => KeySource::Path(path),
            Err(e) => {
                errors.add("provider.jwksUri", e);
                KeySource::Discovery
            }
        },
        (None, Some(doc)) => match KeySet::from_value(&doc) {
            Ok(set) if !set.keys.is_empty() => KeySource::Inline(set),
            Ok(set) => {
                errors.add(
                    "provider.jwks",
                    format!(
                        "no usable key in the inline key set ({})",
                        set.skipped.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                    ),
                );
                KeySource::Discovery
            }
            Err(e) => {
                errors.add("provider.jwks", e.to_string());
                KeySource::Discovery
            }
        },
        (None, None) => KeySource::Discovery,
    };

    // tokens
    let t = raw.tokens;
    let algorithms = match t.allowed_algorithms {
        None => Alg::ALL.to_vec(),
        Some(names) => {
            let mut algs = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match Alg::from_name(name) {
                    Some(a) if !algs.contains(&a) => algs.push(a),
                    Some(_) => errors.add(format!("tokens.allowedAlgorithms[{i}]"), format!("{name} is listed twice")),
                    None => errors.add(
                        format!("tokens.allowedAlgorithms[{i}]"),
                        format!(
                            "expected one of {}, found {name:?} (symmetric and `none` algorithms are never accepted)",
                            Alg::ALL.map(Alg::name).join(", ")
                        ),
                    ),
                }
            }
            if names.is_empty() {
                errors.add("tokens.allowedAlgorithms", "must list at least one algorithm");
            }
            algs
        }
    };
    let leeway_secs = t.leeway_seconds.unwrap_or(30);
    if leeway_secs > 300 {
        errors.add("tokens.leewaySeconds", format!("expected at most 300, found {leeway_secs}"));
    }
    let realm = t.realm.unwrap_or_else(|| "gatehouse".into());
    if realm.contains(['"', '\\']) || realm.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        errors.add("tokens.realm", "must be printable ASCII without quotes or backslashes");
    }
    let payload_header = t.payload_header.map(|h| header_name(&h, "tokens.payloadHeader", errors));

    // pathNormalization
    let pn = raw.path_normalization;
    let normalization = match pn.normalization.as_deref() {
        None => PathSettings::default().normalization,
        Some(name) => Normalization::from_name(name).unwrap_or_else(|| {
            errors.add(
                "pathNormalization.normalization",
                format!("expected one of {}, found {name:?}", Normalization::NAMES.join(", ")),
            );
            PathSettings::default().normalization
        }),
    };
    let escaped_slashes = match pn.escaped_slashes.as_deref() {
        None if normalization == Normalization::DecodeAndMergeSlashes => EscapedSlashes::UnescapeAndForward,
        None => PathSettings::default().escaped_slashes,
        Some(name) => EscapedSlashes::from_name(name).unwrap_or_else(|| {
            errors.add(
                "pathNormalization.escapedSlashes",
                format!("expected one of {}, found {name:?}", EscapedSlashes::NAMES.join(", ")),
            );
            PathSettings::default().escaped_slashes
        }),
    };
    if normalization == Normalization::DecodeAndMergeSlashes && escaped_slashes != EscapedSlashes::UnescapeAndForward {
        errors.add(
            "pathNormalization.escapedSlashes",
            "DECODE_AND_MERGE_SLASHES unescapes slashes: leave this unset or UNESCAPE_AND_FORWARD",
        );
    }
    let paths_settings = PathSettings { normalization, escaped_slashes };
    let case_sensitive = pn.case_sensitive.unwrap_or(true);

    // publicPaths
    let public_paths = raw
        .public_paths
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let field = format!("publicPaths[{i}]");
            let raw_match =
                RawPathMatch { exact: m.exact.clone(), prefix: m.prefix.clone(), case_sensitive: m.case_sensitive };
            let path = path_match(&raw_match, &field, case_sensitive, errors)?;
            let hosts = host_patterns(&m.hosts, &format!("{field}.hosts"), errors);
            Some(PublicPath { path, hosts })
        })
        .collect();

    // identity
    let id = raw.identity;
    let groups_claim = claim_path(id.groups_claim.as_deref().unwrap_or("groups"), "identity.groupsClaim", errors);
    let roles_claims: Vec<ClaimPath> = match id.roles_claims {
        Some(list) => {
            list.iter().enumerate().map(|(i, c)| claim_path(c, &format!("identity.rolesClaims[{i}]"), errors)).collect()
        }
        None => {
            let mut v = vec![ClaimPath::from_segments(["realm_access", "roles"])];
            if let Some(client) = &p.client_id {
                v.push(ClaimPath::from_segments(["resource_access", client.as_str(), "roles"]));
            }
            v
        }
    };

    // claimHeaders
    let claim_headers: Vec<ClaimHeader> = match raw.claim_headers {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let field = format!("claimHeaders[{i}]");
                let name = header_name(&h.header, &format!("{field}.header"), errors);
                let texts: Vec<&str> = match &h.claim {
                    OneOrMany::One(c) => vec![c.as_str()],
                    OneOrMany::Many(cs) => cs.iter().map(String::as_str).collect(),
                };
                if texts.is_empty() {
                    errors.add(format!("{field}.claim"), "must name at least one claim");
                }
                let claims = texts.iter().map(|c| claim_path(c, &format!("{field}.claim"), errors)).collect();
                ClaimHeader { name, claims }
            })
            .collect(),
        None => {
            let path = |s: &str| ClaimPath::from_segments([s]);
            vec![
                ClaimHeader { name: "x-auth-request-user".into(), claims: vec![path("sub")] },
                ClaimHeader { name: "x-auth-request-email".into(), claims: vec![path("email")] },
                ClaimHeader {
                    name: "x-auth-request-preferred-username".into(),
                    claims: vec![path("preferred_username")],
                },
                ClaimHeader { name: "x-auth-request-groups".into(), claims: vec![groups_claim.clone()] },
                ClaimHeader { name: "x-auth-request-roles".into(), claims: roles_claims.clone() },
            ]
        }
    };
    let mut managed_headers: Vec<String> = Vec::new();
    for (i, h) in claim_headers.iter().enumerate() {
        if managed_headers.contains(&h.name) {
            errors.add(format!("claimHeaders[{i}].header"), format!("{} is set twice", h.name));
        } else {
            managed_headers.push(h.name.clone());
        }
    }
    if let Some(h) = &payload_header {
        if managed_headers.contains(h) {
            errors.add("tokens.payloadHeader", format!("{h} is also a claim header"));
        } else {
            managed_headers.push(h.clone());
        }
    }
    for h in ROUTING_HEADERS {
        if !managed_headers.iter().any(|m| m == h) {
            managed_headers.push(h.to_string());
        }
    }

    // rules
    let mut rules = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("rule-{i}"));
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            errors.add(format!("{field}.name"), format!("expected letters, digits, `-_.:`, found {name:?}"));
        }
        if names.contains(&name) {
            errors.add(format!("{field}.name"), format!("{name:?} is used by another rule"));
        }
        names.push(name.clone());
        let m = &r.match_;
        let hosts = host_patterns(&m.hosts, &format!("{field}.match.hosts"), errors);
        let paths = m
            .paths
            .iter()
            .enumerate()
            .filter_map(|(j, pm)| path_match(pm, &format!("{field}.match.paths[{j}]"), case_sensitive, errors))
            .collect();
        let methods = m
            .methods
            .iter()
            .enumerate()
            .filter_map(|(j, meth)| {
                if !meth.is_empty() && meth.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Some(meth.to_ascii_uppercase())
                } else {
                    errors.add(
                        format!("{field}.match.methods[{j}]"),
                        format!("expected an HTTP method such as GET, found {meth:?}"),
                    );
                    None
                }
            })
            .collect();
        let q = &r.require;
        for (j, g) in q.groups.iter().enumerate() {
            if g.is_empty() {
                errors.add(format!("{field}.require.groups[{j}]"), "must not be empty");
            }
        }
        for (j, role) in q.roles.iter().enumerate() {
            if role.is_empty() {
                errors.add(format!("{field}.require.roles[{j}]"), "must not be empty");
            }
        }
        let claims = q
            .claims
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                let cf = format!("{field}.require.claims[{j}]");
                let path = claim_path(&c.claim, &format!("{cf}.claim"), errors);
                let scalar = |v: &Value, f: &str, errors: &mut Errors| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
                    _ => {
                        errors.add(format!("{cf}.{f}"), format!("expected a string, number or boolean, found {v}"));
                        None
                    }
                };
                let op = match (&c.equals, &c.contains, &c.one_of) {
                    (Some(v), None, None) => scalar(v, "equals", errors).map(ClaimOp::Equals),
                    (None, Some(v), None) => scalar(v, "contains", errors).map(ClaimOp::Contains),
                    (None, None, Some(list)) => {
                        if list.is_empty() {
                            errors.add(format!("{cf}.oneOf"), "must list at least one value");
                        }
                        let vals: Vec<String> = list.iter().filter_map(|v| scalar(v, "oneOf", errors)).collect();
                        Some(ClaimOp::OneOf(vals))
                    }
                    _ => {
                        errors.add(cf.clone(), "expected exactly one of equals, contains, oneOf");
                        None
                    }
                };
                op.map(|op| ClaimCondition { claim: path, op })
            })
            .collect();
        rules.push(Rule { name, hosts, paths, methods, groups: q.groups.clone(), roles: q.roles.clone(), claims });
    }
    let default_allow = match raw.default_action.as_deref() {
        None | Some("allow") => true,
        Some("deny") => false,
        Some(other) => {
            errors.add("defaultAction", format!("expected \"allow\" or \"deny\", found {other:?}"));
            true
        }
    };

    // timeouts, keys, cache
    let callout_timeout_ms = raw.timeouts.callout_ms.unwrap_or(5000);
    if !(100..=60_000).contains(&callout_timeout_ms) {
        errors.add("timeouts.calloutMs", format!("expected 100 to 60000, found {callout_timeout_ms}"));
    }
    let k = raw.keys;
    let key_timing = KeyTiming {
        refresh_interval: k.refresh_interval_seconds.unwrap_or(300),
        unknown_kid_min_interval: k.unknown_kid_min_interval_seconds.unwrap_or(30),
        retry_min: 1,
        retry_max: k.retry_max_seconds.unwrap_or(30),
    };
    if !(10..=86_400).contains(&key_timing.refresh_interval) {
        errors
            .add("keys.refreshIntervalSeconds", format!("expected 10 to 86400, found {}", key_timing.refresh_interval));
    }
    if !(1..=3600).contains(&key_timing.unknown_kid_min_interval) {
        errors.add(
            "keys.unknownKidMinIntervalSeconds",
            format!("expected 1 to 3600, found {}", key_timing.unknown_kid_min_interval),
        );
    }
    if !(1..=3600).contains(&key_timing.retry_max) {
        errors.add("keys.retryMaxSeconds", format!("expected 1 to 3600, found {}", key_timing.retry_max));
    }
    let token_cache_size = raw.cache.tokens.unwrap_or(1024);
    if token_cache_size > 100_000 {
        errors.add("cache.tokens", format!("expected at most 100000, found {token_cache_size}"));
    }

    let browser = raw.session.and_then(|session| {
        browser(
            session,
            raw.login,
            &p.client_id,
            &client_secret,
            &claim_headers,
            &groups_claim,
            &roles_claims,
            &rules,
            env,
            errors,
        )
    });

    Some(Config {
        browser,
        provider: Provider {
            issuer: p.issuer,
            issuers,
            audiences,
            cluster: p.cluster,
            authority,
            discovery_path,
            client_audience: p.client_id.iter().cloned().collect(),
            client_id: p.client_id,
            client_secret,
            keys,
        },
        tokens: Tokens {
            algorithms,
            leeway_secs,
            forward_authorization: t.forward_authorization.unwrap_or(false),
            payload_header,
            realm,
        },
        paths: paths_settings,
        method_overrides: pn.method_overrides.unwrap_or(true),
        claim_headers,
        policy: Policy { public_paths, rules, default_allow, groups_claim, roles_claims },
        managed_first_bytes: {
            let mut firsts: Vec<u8> = managed_headers.iter().filter_map(|h| h.as_bytes().first().copied()).collect();
            if firsts.contains(&b'-') {
                firsts.push(b'_');
            }
            firsts.sort_unstable();
            firsts.dedup();
            firsts
        },
        managed_headers,
        callout_timeout_ms,
        key_timing,
        token_cache_size,
    })
}

#[allow(clippy::too_many_arguments)]
fn browser(
    s: raw::RawSession,
    l: raw::RawLogin,
    client_id: &Option<String>,
    client_secret: &Option<Secret>,
    claim_headers: &[ClaimHeader],
    groups_claim: &ClaimPath,
    roles_claims: &[ClaimPath],
    rules: &[Rule],
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<Browser> {
    if client_id.is_none() {
        errors.add("provider.clientId", "required for browser sign-in (a `session` section is configured)");
    }
    if client_secret.is_none() {
        errors.add("provider.clientSecret", "required for browser sign-in (set clientSecret or clientSecretEnv)");
    }
    let cookie_name = s.cookie_name.unwrap_or_else(|| "_gatehouse".into());
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-^_`|~".contains(&b);
    if cookie_name.is_empty() || !cookie_name.bytes().all(tchar) {
        errors.add(
            "session.cookieName",
            format!("expected letters, digits and !#$%&'*+-^_`|~ (no dots), found {cookie_name:?}"),
        );
    }
    let keys: Vec<Secret> = match (s.keys, s.keys_env) {
        (Some(_), Some(_)) => {
            errors.add("session.keys", "set either keys or keysEnv, not both");
            Vec::new()
        }
        (Some(list), None) => list.into_iter().map(Secret::new).collect(),
        (None, Some(var)) => match env(&var) {
            Some(v) if !v.trim().is_empty() => v.split(',').map(|k| Secret::new(k.trim().to_string())).collect(),
            _ => {
                errors.add(
                    "session.keysEnv",
                    format!("environment variable {var:?} is not set (or empty) in the Wasm VM"),
                );
                Vec::new()
            }
        },
        (None, None) => {
            errors.add("session.keys", "required: at least one cookie key of 32 bytes or more (or keysEnv)");
            Vec::new()
        }
    };
    for (i, k) in keys.iter().enumerate() {
        if k.expose().len() < 32 {
            errors.add(format!("session.keys[{i}]"), format!("expected at least 32 bytes, found {}", k.expose().len()));
        }
    }
    let lifetime_secs = s.lifetime_seconds.unwrap_or(12 * 3600);
    if !(60..=30 * 86_400).contains(&lifetime_secs) {
        errors.add("session.lifetimeSeconds", format!("expected 60 to 2592000, found {lifetime_secs}"));
    }
    let refresh_before_secs = s.refresh_before_seconds.unwrap_or(30);
    if refresh_before_secs > 3600 {
        errors.add("session.refreshBeforeSeconds", format!("expected 0 to 3600, found {refresh_before_secs}"));
    }
    let same_site = match s.same_site.as_deref().unwrap_or("Lax") {
        "Lax" | "lax" => "Lax",
        "Strict" | "strict" => "Strict",
        "None" | "none" => "None",
        other => {
            errors.add("session.sameSite", format!("expected Lax, Strict or None, found {other:?}"));
            "Lax"
        }
    };
    let secure = s.secure.unwrap_or(true);
    if same_site == "None" && !secure {
        errors.add("session.sameSite", "SameSite=None requires secure: true (browsers refuse it otherwise)");
    }
    let path = s.path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic() || b == b';') {
        errors.add("session.path", format!("expected a path starting with `/`, found {path:?}"));
    }
    // RFC 6265bis §4.1.3: `__Host-` needs Secure, no Domain and Path=/; `__Secure-` needs Secure.
    let prefix_possible = secure && s.domain.is_none() && path == "/";
    let named_host = cookie_name.starts_with("__Host-");
    let host_prefix = match s.host_prefix {
        Some(true) if !prefix_possible => {
            errors.add("session.hostPrefix", "the __Host- prefix needs secure: true, no domain and path \"/\"");
            false
        }
        Some(wanted) => wanted || named_host,
        None => prefix_possible || named_host,
    };
    if named_host && !prefix_possible {
        errors.add("session.cookieName", "a __Host- cookie needs secure: true, no domain and path \"/\"");
    }
    if cookie_name.starts_with("__Secure-") && !secure {
        errors.add("session.cookieName", "a __Secure- cookie needs secure: true");
    }
    let host_prefix = host_prefix && !cookie_name.starts_with("__Secure-");
    let cookie_name = if host_prefix && !named_host { format!("__Host-{cookie_name}") } else { cookie_name };
    if let Some(d) = &s.domain {
        if d.is_empty() || !d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
            errors.add("session.domain", format!("expected a domain such as example.com, found {d:?}"));
        }
    }
    let abs_path = |v: Option<String>, default: &str, field: &str, errors: &mut Errors| {
        let v = v.unwrap_or_else(|| default.into());
        if !v.starts_with('/')
            || v.contains(['?', '#'])
            || v.bytes().any(|b| !b.is_ascii_graphic())
            || !is_normal_path(&v)
        {
            errors.add(field, format!("expected a normalized path such as {default}, found {v:?}"));
        }
        v
    };
    let callback_path = abs_path(l.callback_path, "/oauth2/callback", "login.callbackPath", errors);
    let sign_out_path = abs_path(l.sign_out_path, "/oauth2/sign_out", "login.signOutPath", errors);
    if callback_path == sign_out_path {
        errors.add("login.signOutPath", "must differ from login.callbackPath");
    }
    let absolute_url = |v: &Option<String>, field: &str, errors: &mut Errors| {
        if let Some(u) = v {
            match url::Url::parse(u) {
                Ok(parsed)
                    if (parsed.scheme() == "https" || parsed.scheme() == "http")
                        && parsed.host_str().is_some()
                        && parsed.fragment().is_none() => {}
                _ => errors.add(field, format!("expected an absolute http(s) URL, found {u:?}")),
            }
        }
    };
    absolute_url(&l.redirect_uri, "login.redirectUri", errors);
    if let Some(u) = l.redirect_uri.as_deref().and_then(|u| url::Url::parse(u).ok()) {
        if u.path() != callback_path {
            errors.add(
                "login.redirectUri",
                format!("its path must be login.callbackPath ({callback_path}), found {}", u.path()),
            );
        }
    }
    absolute_url(&l.post_logout_redirect_uri, "login.postLogoutRedirectUri", errors);
    let scopes = l.scopes.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        errors.add("login.scopes", "must include \"openid\"");
    }
    for (i, sc) in scopes.iter().enumerate() {
        if sc.is_empty() || sc.bytes().any(|b| !(0x21..0x7f).contains(&b) || b == b'"' || b == b'\\') {
            errors.add(format!("login.scopes[{i}]"), format!("expected a scope token, found {sc:?}"));
        }
    }
    const RESERVED: &[&str] = &[
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
    ];
    for name in l.extra_params.keys() {
        if RESERVED.contains(&name.as_str()) || name.is_empty() {
            errors.add(format!("login.extraParams.{name}"), "is set by gatehouse and cannot be overridden");
        }
    }
    let client_secret_post = match l.token_endpoint_auth.as_deref().unwrap_or("client_secret_basic") {
        "client_secret_basic" => false,
        "client_secret_post" => true,
        other => {
            errors.add(
                "login.tokenEndpointAuth",
                format!("expected client_secret_basic or client_secret_post, found {other:?}"),
            );
            false
        }
    };
    let mut allowed_redirect_domains = Vec::new();
    for (i, d) in l.allowed_redirect_domains.iter().enumerate() {
        let bare = d.strip_prefix('.').unwrap_or(d);
        let valid = !bare.is_empty() && bare.contains('.') || bare == "localhost";
        if !valid || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') || bare.starts_with('.')
        {
            errors.add(
                format!("login.allowedRedirectDomains[{i}]"),
                format!(
                    "expected a domain such as app.example.com or .example.com (ASCII, punycode for IDN), found {d:?}"
                ),
            );
        } else {
            allowed_redirect_domains.push(d.to_ascii_lowercase());
        }
    }
    let login_timeout_secs = l.timeout_seconds.unwrap_or(600);
    if !(30..=3600).contains(&login_timeout_secs) {
        errors.add("login.timeoutSeconds", format!("expected 30 to 3600, found {login_timeout_secs}"));
    }
    // The session keeps the top-level claims that headers and rules read, and nothing else.
    let mut kept_claims: Vec<String> = vec!["sub".into()];
    let paths = claim_headers
        .iter()
        .flat_map(|h| h.claims.iter())
        .chain(std::iter::once(groups_claim))
        .chain(roles_claims.iter())
        .chain(rules.iter().flat_map(|r| r.claims.iter().map(|c| &c.claim)));
    for p in paths {
        if let Some(root) = p.root() {
            if !kept_claims.iter().any(|k| k == root) {
                kept_claims.push(root.to_string());
            }
        }
    }
    Some(Browser {
        cookie_name,
        host_prefix,
        sealer: Sealer::new(&keys),
        lifetime_secs,
        cookie: crate::cookie::Attributes { path, domain: s.domain, secure, same_site },
        keep_id_token: s.keep_id_token.unwrap_or(true),
        refresh: s.refresh.unwrap_or(false),
        refresh_before_secs,
        callback_path,
        sign_out_path,
        redirect_uri: l.redirect_uri,
        scope: scopes.join(" "),
        extra_params: l.extra_params.into_iter().collect(),
        client_secret_post,
        post_logout_redirect_uri: l.post_logout_redirect_uri,
        login_timeout_secs,
        redirect_browsers: l.redirect_browsers.unwrap_or(true),
        allowed_redirect_domains,
        kept_claims,
    })
}

fn claim_path(text: &str, field: &str, errors: &mut Errors) -> ClaimPath {
    ClaimPath::parse(text).unwrap_or_else(|e| {
        errors.add(field, e);
        ClaimPath::from_segments(["-"])
    })
}

/// Validates a header name (RFC 9110 `token`) and lower-cases it.
fn header_name(name: &str, field: &str, errors: &mut Errors) -> String {
    let lower = name.to_ascii_lowercase();
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if lower.is_empty() || !lower.bytes().all(tchar) {
        errors.add(field, format!("expected a header name, found {name:?}"));
    } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-envoy-") {
        errors.add(field, format!("{lower} is reserved and cannot be set from claims"));
    }
    lower
}

/// Whether a configured path is one gatehouse can match as it is: the form every normalization
/// leaves alone (no escapes, `\\`, `//`, `.` or `..` segments).
fn is_normal_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains(['%', '\\', '?', '#'])
        && !p.contains("//")
        && crate::policy::path::remove_dot_segments(p) == p
}

fn path_match(m: &RawPathMatch, field: &str, case_sensitive: bool, errors: &mut Errors) -> Option<PathMatch> {
    let check = |p: &str, errors: &mut Errors| {
        if !p.starts_with('/') || p.contains(['?', '#']) || p.bytes().any(|b| !b.is_ascii_graphic()) {
            errors.add(field, format!("expected a path starting with `/` (no query), found {p:?}"));
            false
        } else if !is_normal_path(p) {
            errors.add(
                field,
                format!("{p:?} is not in normal form (no `//`, `.` or `..` segments, no `\\` or percent-escapes)"),
            );
            false
        } else {
            true
        }
    };
    let pattern = match (&m.exact, &m.prefix) {
        (Some(p), None) => check(p, errors).then(|| PathMatch::exact(p)),
        (None, Some(p)) => check(p, errors).then(|| PathMatch::prefix(p)),
        _ => {
            errors.add(field, "expected exactly one of exact, prefix");
            None
        }
    }?;
    Some(if m.case_sensitive.unwrap_or(case_sensitive) { pattern } else { pattern.ignoring_case() })
}

/// Host patterns: names or `*.domain`, in canonical form (lower case, no trailing dot, no port).
fn host_patterns(hosts: &[String], field: &str, errors: &mut Errors) -> Vec<HostPattern> {
    hosts
        .iter()
        .enumerate()
        .filter_map(|(j, h)| {
            let pattern = HostPattern::parse(h);
            if pattern.is_none() {
                errors.add(
                    format!("{field}[{j}]"),
                    format!("expected a host name, an address or *.domain, without port, found {h:?}"),
                );
            }
            pattern
        })
        .collect()
}

/// The path and query of a `jwksUri` (an absolute URL or a path), sent to the provider cluster.
fn jwks_path(uri: &str) -> Result<String, String> {
    if uri.starts_with('/') {
        return Ok(uri.to_string());
    }
    let u = url::Url::parse(uri).map_err(|e| format!("expected a URL or a path, found {uri:?} ({e})"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("expected an http(s) URL, found {uri:?}"));
    }
    Ok(crate::oidc::path_and_query(&u))
}

#[cfg(test)]
mod tests;
