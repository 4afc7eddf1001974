//! OpenID Connect pieces that are pure: the discovery document.

pub mod discovery;
pub mod login;

/// The path and query of a URL, which is what a callout sends: callouts go to the provider's
/// cluster, not to the URL's host.
pub fn path_and_query(u: &url::Url) -> String {
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}
