//! `provider`: the OpenID Provider, how to reach it, which issuers and audiences its tokens name
//! and where its keys come from; `timeouts` and `keys`: how long a callout to it may take and
//! when its keys are fetched.

use super::raw::{RawKeys, RawProvider, RawTimeouts};
use super::validate::{self, Given, Without};
use super::{Env, Errors};
use crate::jwt::jwks::KeySet;
use crate::secret::Secret;

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
}

/// The `provider` section.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn read(p: RawProvider, env: &Env<'_>, errors: &mut Errors) -> (Provider, Client) {
    let issuer_url = validate::http_url(&p.issuer, Without::QueryOrFragment, "provider.issuer", errors);
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
        Some(a) if validate::authority(&a, "provider.authority", errors) => a,
        Some(_) => String::new(),
        None => authority_default,
    };
    if p.client_id.as_deref() == Some("") {
        errors.add("provider.clientId", "must not be empty");
    }
    let client = Client { secret: client_secret(p.client_secret, p.client_secret_env, env, errors), id: p.client_id };
    let issuers = issuers(&p.issuer, &p.extra_issuers, errors);
    let audiences = match p.audiences {
        Some(list) => {
            validate::non_empty_items(&list, "provider.audiences", errors);
            list
        }
        None => client.id.iter().cloned().collect(),
    };
    if audiences.is_empty() {
        errors.add(
            "provider.audiences",
            "at least one audience is required (or set provider.clientId, the default audience)",
        );
    }
    let keys = keys(p.jwks_uri, p.jwks, errors);
    let provider = Provider {
        issuer: p.issuer,
        issuers,
        audiences,
        cluster: p.cluster,
        authority,
        discovery_path,
        client_audience: client.id.iter().cloned().collect(),
        keys,
    };
    (provider, client)
}

/// `clientSecret` or `clientSecretEnv`, when set.
fn client_secret(inline: Option<String>, var: Option<String>, env: &Env<'_>, errors: &mut Errors) -> Option<Secret> {
    match validate::inline_or_env(inline, var, "provider.clientSecret", env, errors)? {
        Given::Inline(s) if s.is_empty() => {
            errors.add("provider.clientSecret", "must not be empty");
            None
        }
        Given::Inline(s) | Given::Env(s) => Some(Secret::new(s)),
        Given::Neither => None,
    }
}

/// The issuer, then each extra one (each once).
fn issuers(issuer: &str, extra: &[String], errors: &mut Errors) -> Vec<String> {
    let mut issuers = vec![issuer.to_string()];
    for (i, extra) in extra.iter().enumerate() {
        if extra.is_empty() {
            errors.add(format!("provider.extraIssuers[{i}]"), "must not be empty");
        } else if issuers.contains(extra) {
            errors.add(format!("provider.extraIssuers[{i}]"), format!("{extra:?} is listed twice"));
        } else {
            issuers.push(extra.clone());
        }
    }
    issuers
}

/// `jwksUri` (a URL or a path on the cluster) or inline `jwks`; by default the discovery's.
fn keys(uri: Option<String>, inline: Option<serde_json::Value>, errors: &mut Errors) -> KeySource {
    match (uri, inline) {
        (Some(_), Some(_)) => {
            errors.add("provider.jwks", "set either jwks (inline keys) or jwksUri, not both");
            KeySource::Discovery
        }
        (Some(uri), None) if uri.starts_with('/') => KeySource::Path(uri),
        (Some(uri), None) => validate::http_url(&uri, Without::Nothing, "provider.jwksUri", errors)
            .map_or(KeySource::Discovery, |u| KeySource::Path(crate::oidc::path_and_query(&u))),
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
