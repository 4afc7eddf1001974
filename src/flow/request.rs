//! What kind of request this is: a browser's page navigation or an API call, its origin, its
//! query parameters.

use super::Request;

/// Is this a page navigation by a browser (which may be sent to a login page), rather than an
/// API or XHR call (which gets a 401)?
pub(super) fn is_navigation(req: &Request<'_>) -> bool {
    let method = req.header(":method").unwrap_or("GET");
    if method != "GET" && method != "HEAD" {
        return false;
    }
    if req.header("x-requested-with").is_some() {
        return false;
    }
    match req.header("sec-fetch-mode") {
        Some(mode) => mode == "navigate",
        None => req.header("accept").is_some_and(|a| a.contains("text/html")),
    }
}

/// `scheme://authority` of the request, for a derived redirect URI.
pub(super) fn origin(req: &Request<'_>) -> Option<String> {
    let authority = req.header(":authority")?;
    if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
        return None;
    }
    let scheme = match req.header("x-forwarded-proto").or(req.header(":scheme")) {
        Some("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{authority}"))
}

pub(super) fn query_params(raw_path: &str) -> Vec<(String, String)> {
    raw_path
        .split_once('?')
        .map(|(_, q)| url::form_urlencoded::parse(q.split('#').next().unwrap_or("").as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
