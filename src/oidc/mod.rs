//! OpenID Connect pieces that are pure: the discovery document, the authorization-code flow,
//! and how provider problems are classed.

pub mod discovery;
pub mod login;
pub mod logout;

/// The path and query of a URL, which is what a callout sends: callouts go to the provider's
/// cluster, not to the URL's host.
pub fn path_and_query(u: &url::Url) -> String {
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

/// Whether a token's `aud` itself (a string or a list) names `client_id` — stricter than
/// [`crate::jwt::verify`], which also takes `azp`: ID and logout tokens must name the client.
pub(crate) fn aud_names(claims: &serde_json::Value, client_id: &str) -> bool {
    match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == client_id,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    }
}

/// Whether a problem goes away by itself or needs someone to change a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// A provider down or slow, a proxy's error page: retried with backoff, and it passes.
    Passing,
    /// The provider's answer, or gatehouse's config, is wrong (another issuer, no such cluster,
    /// a 404, a key set with no usable key): retrying will not help until one of them changes.
    Configuration,
}
