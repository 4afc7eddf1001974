//! Plugin configuration: the JSON a `WasmPlugin`'s `pluginConfig` (or Envoy's `configuration`)
//! delivers, parsed in two phases — serde with defaults (`raw.rs`), then validation that reports
//! every problem with its field path — into an immutable [`Config`] built once per configure.
//!
//! One file per part of the JSON: its validated types and the function that checks its section.
//! To add a field, add it to the section's `Raw*` type in `raw.rs` and read it in the section's
//! file; checks shared by several sections (URLs, paths, hosts, header names, ranges…) are in
//! `validate.rs`.
//!
//! | sections                               | file          |
//! |----------------------------------------|---------------|
//! | `provider`, `timeouts`, `keys`         | `provider.rs` |
//! | `tokens`, `cache`                      | `tokens.rs`   |
//! | `identity`, `claimHeaders`             | `identity.rs` |
//! | `pathNormalization`, `publicPaths`, `preflightPaths`, `email`, `rules`, `defaultAction` | `rules.rs` |
//! | `session`, `login`                     | `browser.rs`  |

mod browser;
mod identity;
mod pages;
mod provider;
mod raw;
mod rules;
mod tokens;
mod validate;

pub use browser::{Browser, ClientCredentials};
pub use identity::{ClaimHeader, ROUTING_HEADERS};
pub use pages::{Pages, DEFAULT_CSP};
pub use provider::{KeySource, KeyTiming, Provider};
pub use tokens::Tokens;

use crate::nonempty::NonEmpty;
use crate::policy::{PathSettings, Policy};
use raw::RawConfig;
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

/// The validated configuration.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    /// The providers, in configured order (`provider` is a list of one): a provider is named by
    /// its index here.
    pub providers: NonEmpty<Provider>,
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
    /// `managed_headers` with every `_` as `-`: a header a client sends matches one if it is
    /// the same with `_` read as `-` (upstreams that map headers to variables read both alike).
    pub managed_dashed: Vec<String>,
    /// The first bytes of `managed_headers` (with `_` if one starts with `-`, which may come as `_`).
    pub managed_first_bytes: Vec<u8>,
    pub callout_timeout_ms: u64,
    pub key_timing: KeyTiming,
    pub token_cache_size: usize,
    /// The top-level claims a verified token's identity keeps (`sub` and those that claim headers,
    /// rules and `email` read): the rest is dropped before the token cache holds it.
    pub kept_claims: Vec<String>,
    /// Browser sign-in, when a `session` section is configured.
    pub browser: Option<Browser>,
    /// How gatehouse's own pages look.
    pub pages: Pages,
}

impl Config {
    /// How provider `p`'s bearer tokens are checked: its issuers, its audiences, the allowed
    /// algorithms and the leeway.
    pub fn token_expectations(&self, p: usize) -> crate::jwt::Expectations<'_> {
        let provider = self.providers.at(p);
        self.expectations(provider, &provider.audiences)
    }

    /// How this client's own tokens from provider `p` are checked (the ID token, the access
    /// token of a login, a logout token): the same, with the client id as the one audience.
    pub fn client_expectations(&self, p: usize) -> crate::jwt::Expectations<'_> {
        let provider = self.providers.at(p);
        self.expectations(provider, &provider.client_audience)
    }

    fn expectations<'a>(&'a self, provider: &'a Provider, audiences: &'a [String]) -> crate::jwt::Expectations<'a> {
        crate::jwt::Expectations {
            issuers: &provider.issuers,
            audiences,
            algorithms: &self.tokens.algorithms,
            leeway_secs: self.tokens.leeway_secs,
        }
    }

    /// The provider whose tokens name this issuer (its `issuer` or one of its `extraIssuers`).
    pub fn provider_of_issuer(&self, iss: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.issuers.iter().any(|i| i == iss))
    }

    /// The provider whose `issuer` is exactly this one (what a login state or a session seals;
    /// `extraIssuers` name no provider here).
    pub fn provider_with_issuer(&self, issuer: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.issuer == issuer)
    }

    /// Whether provider `p` serves this (canonical) host: it lists it (by name or pattern), or
    /// lists no hosts. Its bearer tokens are accepted only on the hosts it serves.
    pub fn serves(&self, p: usize, host: &str) -> bool {
        let provider = self.providers.at(p);
        provider.hosts.is_empty() || provider.hosts.iter().any(|h| h.matches(host))
    }

    /// The provider that signs browsers in on this (canonical) host: the one listing it by
    /// name, else the one whose `*.` pattern is the longest that matches, else the one that
    /// lists no hosts; `None` if there is none.
    pub fn provider_for_host(&self, host: &str) -> Option<usize> {
        if self.providers.len() == 1 {
            // The common case, without a search.
            let only = self.providers.first();
            return (only.hosts.is_empty() || only.hosts.iter().any(|h| h.matches(host))).then_some(0);
        }
        let exact = self.providers.iter().position(|p| p.hosts.iter().any(|h| h.as_str() == host));
        let wildcard = || {
            let mut best: Option<(usize, usize)> = None; // (pattern length, provider)
            for (i, p) in self.providers.iter().enumerate() {
                for h in p.hosts.iter().filter(|h| h.as_str().starts_with('*') && h.matches(host)) {
                    if best.is_none_or(|(len, _)| h.as_str().len() > len) {
                        best = Some((h.as_str().len(), i));
                    }
                }
            }
            best.map(|(_, i)| i)
        };
        exact.or_else(wildcard).or_else(|| self.providers.iter().position(|p| p.hosts.is_empty()))
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

/// The VM's environment, as [`Config::parse`] is given it.
type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Collects field errors.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(FieldError { field: field.into(), message: message.into() });
    }

    #[inline(never)] // one copy of the push, not one per error message
    fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }
}

/// Checks the sections one after the other (their errors come in this order), each by its file's
/// function. `None` only when the browser sign-in lacks its client (recorded).
// Each section's reader is a function of its own (`#[inline(never)]`): inlined, they made this
// one 34 KB function, which V8's optimizing compiler took a tenth of a second and 11 MB of
// working memory to compile at every Envoy start, memory the allocator then keeps.
#[inline(never)]
fn build(raw: RawConfig, env: &Env<'_>, errors: &mut Errors) -> Option<Config> {
    let (providers, clients): (Vec<Provider>, Vec<_>) =
        provider::read_all(raw.providers, env, errors).into_iter().unzip();
    let providers = NonEmpty::new(providers)?; // recorded: at least one is required
    let tokens = tokens::read(raw.tokens, errors);
    let paths = rules::path_normalization(raw.path_normalization, errors);
    let public_paths = rules::public_paths("publicPaths", &raw.public_paths, paths.case_sensitive, errors);
    let preflight_paths = rules::public_paths("preflightPaths", &raw.preflight_paths, paths.case_sensitive, errors);
    let client_ids: Vec<&str> = clients.iter().filter_map(|c| c.id.as_deref()).collect();
    let identity =
        identity::read(raw.identity, raw.claim_headers, &client_ids, tokens.payload_header.as_deref(), errors);
    let policy = Policy {
        public_paths,
        preflight_paths,
        email: rules::email(raw.email, errors),
        rules: rules::rules(&raw.rules, paths.case_sensitive, errors),
        default_allow: rules::default_allow(raw.default_action.as_deref(), errors),
        groups_claim: identity.groups_claim,
        roles_claims: identity.roles_claims,
    };
    let (callout_timeout_ms, key_timing) = provider::timing(raw.timeouts, raw.keys, errors);
    let token_cache_size = tokens::cache_size(raw.cache, errors);
    let kept_claims = identity::kept_claims(&identity.claim_headers, &policy);
    let browser = match raw.session {
        Some(session) => Some(browser::read(session, raw.login, clients, kept_claims.clone(), env, errors)?),
        None => None,
    };
    let pages = pages::read(raw.pages, errors);
    let mut managed_headers = identity.managed_headers;
    // The relayed access token's own headers: a client's copies are removed from every request.
    for h in browser.iter().flat_map(|b| b.relay_headers.iter()) {
        if managed_headers.contains(h) {
            errors.add("session.relayAccessToken", format!("{h} is also set from claims"));
        } else {
            managed_headers.push(h.clone());
        }
    }
    Some(Config {
        providers,
        tokens,
        paths: paths.settings,
        method_overrides: paths.method_overrides,
        claim_headers: identity.claim_headers,
        policy,
        managed_first_bytes: identity::first_bytes(&managed_headers),
        managed_dashed: managed_headers.iter().map(|h| h.replace('_', "-")).collect(),
        managed_headers,
        callout_timeout_ms,
        key_timing,
        token_cache_size,
        kept_claims,
        browser,
        pages,
    })
}

#[cfg(test)]
mod tests;
