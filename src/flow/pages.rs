//! The answers gatehouse gives itself: JSON errors for APIs (RFC 6750 challenges, 400, 403, 503),
//! and for browsers error pages with a way to try again, the 403 page and redirects.

use super::{Request, Response};
use crate::config::Config;
use crate::jwt::JwtError;

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A page of gatehouse's own: `title` (escaped here) as title and heading, `content` (HTML the
/// caller escaped) below it; never cached, never framed, no referrer sent from it.
pub(super) fn html_page(status: u32, title: &str, content: &str) -> Response {
    let t = html_escape(title);
    Response {
        status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
            ("content-security-policy".into(), "frame-ancestors 'none'".into()),
            ("x-frame-options".into(), "DENY".into()),
            ("referrer-policy".into(), "no-referrer".into()),
        ],
        body: format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1>{content}</body></html>"
        ),
    }
}

/// A small error page with a way to try again.
pub(crate) fn error_page(status: u32, title: &str, message: &str, retry: &str, set_cookies: Vec<String>) -> Response {
    let content = format!("<p>{}</p><p><a href=\"{}\">Try again</a></p>", html_escape(message), html_escape(retry));
    let mut page = html_page(status, title, &content).with_cookies(set_cookies);
    if status == 503 {
        // As for API calls (`unavailable`): when trying again makes sense (RFC 9110 §10.2.3).
        page.headers.push(("retry-after".into(), "5".into()));
    }
    page
}

pub(super) fn redirect(location: &str, set_cookies: Vec<String>) -> Response {
    let headers =
        vec![("location".to_string(), location.to_string()), ("cache-control".to_string(), "no-store".to_string())];
    Response { status: 302, headers, body: String::new() }.with_cookies(set_cookies)
}

pub(crate) fn json_response(status: u32, mut headers: Vec<(String, String)>, body: serde_json::Value) -> Response {
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("cache-control".into(), "no-store".into()));
    Response { status, headers, body: body.to_string() }
}

/// 401 with a `WWW-Authenticate` challenge (RFC 6750 §3). Without credentials the challenge
/// carries no error code (§3.1); for a bad token, `invalid_token` and a short reason.
pub(crate) fn unauthorized(cfg: &Config, error: Option<JwtError>) -> Response {
    let realm = &cfg.tokens.realm;
    match error {
        None => json_response(
            401,
            vec![("www-authenticate".into(), format!("Bearer realm=\"{realm}\""))],
            serde_json::json!({"error": "unauthorized", "error_description": "authentication required"}),
        ),
        Some(e) => json_response(
            401,
            vec![(
                "www-authenticate".into(),
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"", e.description()),
            )],
            serde_json::json!({"error": "invalid_token", "error_description": e.description()}),
        ),
    }
}

pub(super) fn bad_request(cfg: &Config, reason: &str) -> Response {
    json_response(
        400,
        vec![(
            "www-authenticate".into(),
            format!("Bearer realm=\"{}\", error=\"invalid_request\", error_description=\"{reason}\"", cfg.tokens.realm),
        )],
        serde_json::json!({"error": "invalid_request", "error_description": reason}),
    )
}

pub(crate) fn unavailable(reason: &str) -> Response {
    json_response(
        503,
        vec![("retry-after".into(), "5".into())],
        serde_json::json!({"error": "temporarily_unavailable", "error_description": reason}),
    )
}

/// 403: JSON with the reason code for APIs, a small page for browsers.
pub(super) fn forbidden(req: &Request<'_>, rule: Option<&str>, reason: &str) -> Response {
    let wants_html = req.header("accept").is_some_and(|a| a.contains("text/html"));
    if wants_html {
        let content = format!(
            "<p>You are signed in, but not allowed to see this page.</p><p>Reason: <code>{}</code></p>",
            html_escape(reason)
        );
        return html_page(403, "Access denied", &content);
    }
    json_response(403, Vec::new(), serde_json::json!({"error": "access_denied", "reason": reason, "rule": rule}))
}

/// 503 for a request that reaches a VM whose configuration was refused (the reason is in
/// Envoy's log, at configure).
pub fn not_configured() -> Response {
    Response {
        status: 503,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: "gatehouse is not configured".into(),
    }
}
