//! `provider` (or each of `providers`): the OpenID Provider, how to reach it, which issuers and
//! audiences its tokens name, where its keys come from and which browser hosts it signs in;
//! `timeouts` and `keys`: how long a callout to it may take and when its keys are fetched.

use super::raw::{RawKeys, RawProvider, RawTimeouts};
use super::validate::{self, Given, Without};
use super::{Env, Errors};
use crate::jwt::jwks::KeySet;
use crate::policy::HostPattern;
use crate::secret::Secret;

/// Providers one configuration may have (a request's view keeps one bit for each).
pub const MAX_PROVIDERS: usize = 64;

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
    /// `[clientId]` (empty without one): the audience of this client's own tokens.
    pub client_audience: Vec<String>,
    pub keys: KeySource,
    /// `hosts`: the browser hosts this provider signs in; empty: every host no other provider
    /// lists (at most one provider has none).
    pub hosts: Vec<HostPattern>,
}

/// Key fetching schedule, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTiming {
    pub refresh_interval: u64,
    pub unknown_kid_min_interval: u64,
    pub retry_min: u64,
    pub retry_max: u64,
}

/// The client gatehouse is at the provider, as far as configured: checked here, required by the
/// browser sign-in ([`super::browser`]), which keeps it.
pub(super) struct Client {
    pub id: Option<String>,
    pub secret: Option<Secret>,
    /// Where the provider was configured (`provider`, `providers.at(i)`), for error messages.
    pub at: String,
}

/// The `provider` section, or the `providers` list: each provider and its client, in order.
/// Issuers are each one provider's; a browser host belongs to one provider (an exact name
/// before a `*.` pattern), and at most one provider lists no hosts (it takes the others).
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn read_all(
    list: Vec<(String, RawProvider)>,
    env: &Env<'_>,
    errors: &mut Errors,
) -> Vec<(Provider, Client)> {
    if list.is_empty() {
        errors.add("providers", "at least one provider is required");
    }
    if list.len() > MAX_PROVIDERS {
        errors.add("providers", format!("at most {MAX_PROVIDERS} providers, found {}", list.len()));
    }
    let all: Vec<(Provider, Client)> = list.into_iter().map(|(at, p)| read(p, &at, env, errors)).collect();
    let several = all.len() > 1;
    let mut issuers: Vec<&str> = Vec::new();
    let mut hosts: Vec<&str> = Vec::new();
    let mut default = None;
    for (i, (p, _)) in all.iter().enumerate() {
        for iss in &p.issuers {
            if issuers.contains(&iss.as_str()) {
                errors.add(format!("providers[{i}].issuer"), format!("{iss:?} is another provider's issuer too"));
            }
            issuers.push(iss);
        }
        for h in &p.hosts {
            if hosts.contains(&h.as_str()) {
                errors.add(format!("providers[{i}].hosts"), format!("{} is another provider's host too", h.as_str()));
            }
            hosts.push(h.as_str());
        }
        if several && p.hosts.is_empty() {
            if let Some(first) = default.replace(i) {
                errors.add(
                    format!("providers[{i}].hosts"),
                    format!(
                        "providers[{first}] already takes every host no provider lists; list the hosts of one of them"
                    ),
                );
            }
        }
    }
    all
}

/// One provider, its fields under `at` (`provider` or `providers.at(i)`).
#[inline(never)] // configuration code: one copy, not one per caller
fn read(p: RawProvider, at: &str, env: &Env<'_>, errors: &mut Errors) -> (Provider, Client) {
    let field = |name: &str| format!("{at}.{name}");
    let issuer_url = validate::http_url(&p.issuer, Without::QueryOrFragment, &field("issuer"), errors);
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
            field("cluster"),
            "expected the name of the Envoy cluster that reaches the provider, found an empty string",
        );
    }
    let authority = match p.authority {
        Some(a) if validate::authority(&a, &field("authority"), errors) => a,
        Some(_) => String::new(),
        None => authority_default,
    };
    if p.client_id.as_deref() == Some("") {
        errors.add(field("clientId"), "must not be empty");
    }
    let secret = client_secret(p.client_secret, p.client_secret_env, &field("clientSecret"), env, errors);
    let client = Client { secret, id: p.client_id, at: at.to_string() };
    let issuers = issuers(&p.issuer, &p.extra_issuers, &field("extraIssuers"), errors);
    let audiences = match p.audiences {
        Some(list) => {
            validate::non_empty_items(&list, &field("audiences"), errors);
            list
        }
        None => client.id.iter().cloned().collect(),
    };
    if audiences.is_empty() {
        errors.add(
            field("audiences"),
            format!("at least one audience is required (or set {at}.clientId, the default audience)"),
        );
    }
    let keys = keys(p.jwks_uri, p.jwks, at, errors);
    let hosts = validate::host_patterns(&p.hosts, &field("hosts"), errors);
    let provider = Provider {
        issuer: p.issuer,
        issuers,
        audiences,
        cluster: p.cluster,
        authority,
        discovery_path,
        client_audience: client.id.iter().cloned().collect(),
        keys,
        hosts,
    };
    (provider, client)
}

/// `clientSecret` or `clientSecretEnv`, when set.
#[inline(never)] // configuration code: one copy, not one per caller
fn client_secret(
    inline: Option<String>,
    var: Option<String>,
    field: &str,
    env: &Env<'_>,
    errors: &mut Errors,
) -> Option<Secret> {
    match validate::inline_or_env(inline, var, field, env, errors)? {
        Given::Inline(s) if s.is_empty() => {
            errors.add(field, "must not be empty");
            None
        }
        Given::Inline(s) | Given::Env(s) => Some(Secret::new(s)),
        Given::Neither => None,
    }
}

/// The issuer, then each extra one (each once).
#[inline(never)] // configuration code: one copy, not one per caller
fn issuers(issuer: &str, extra: &[String], field: &str, errors: &mut Errors) -> Vec<String> {
    let mut issuers = vec![issuer.to_string()];
    for (i, extra) in extra.iter().enumerate() {
        if extra.is_empty() {
            errors.add(format!("{field}[{i}]"), "must not be empty");
        } else if issuers.contains(extra) {
            errors.add(format!("{field}[{i}]"), format!("{extra:?} is listed twice"));
        } else {
            issuers.push(extra.clone());
        }
    }
    issuers
}

/// `jwksUri` (a URL or a path on the cluster) or inline `jwks`; by default the discovery's.
#[inline(never)] // configuration code: one copy, not one per caller
fn keys(uri: Option<String>, inline: Option<serde_json::Value>, at: &str, errors: &mut Errors) -> KeySource {
    match (uri, inline) {
        (Some(_), Some(_)) => {
            errors.add(format!("{at}.jwks"), "set either jwks (inline keys) or jwksUri, not both");
            KeySource::Discovery
        }
        (Some(uri), None) if uri.starts_with('/') => KeySource::Path(uri),
        (Some(uri), None) => validate::http_url(&uri, Without::Nothing, &format!("{at}.jwksUri"), errors)
            .map_or(KeySource::Discovery, |u| KeySource::Path(crate::oidc::path_and_query(&u))),
        (None, Some(doc)) => match KeySet::from_value(&doc) {
            Ok(set) if !set.keys.is_empty() => KeySource::Inline(set),
            Ok(set) => {
                errors.add(
                    format!("{at}.jwks"),
                    format!(
                        "no usable key in the inline key set ({})",
                        set.skipped.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                    ),
                );
                KeySource::Discovery
            }
            Err(e) => {
                errors.add(format!("{at}.jwks"), e.to_string());
                KeySource::Discovery
            }
        },
        (None, None) => KeySource::Discovery,
    }
}

/// `timeouts.calloutMs` (milliseconds) and the `keys` schedule.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn timing(t: RawTimeouts, k: RawKeys, errors: &mut Errors) -> (u64, KeyTiming) {
    let callout_ms = validate::in_range(t.callout_ms.unwrap_or(5000), 100..=60_000, "timeouts.calloutMs", errors);
    let key_timing = KeyTiming {
        refresh_interval: validate::in_range(
            k.refresh_interval_seconds.unwrap_or(300),
            10..=86_400,
            "keys.refreshIntervalSeconds",
            errors,
        ),
        unknown_kid_min_interval: validate::in_range(
            k.unknown_kid_min_interval_seconds.unwrap_or(30),
            1..=3600,
            "keys.unknownKidMinIntervalSeconds",
            errors,
        ),
        retry_min: 1,
        retry_max: validate::in_range(k.retry_max_seconds.unwrap_or(30), 1..=3600, "keys.retryMaxSeconds", errors),
    };
    (callout_ms, key_timing)
}
