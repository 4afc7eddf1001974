//! The answers gatehouse gives itself: JSON errors for APIs (RFC 6750 challenges, 400, 403, 503),
//! and for browsers pages in plain words — sign-in errors with a way to try again, the 403 page
//! with a way to sign in as someone else, the sign-out question — in the built-in template or the
//! operator's (`pages.template`), each with Envoy's request id for support; and redirects.

use super::session::request_cookies;
use super::sign_out::sign_out_token;
use super::{Request, Response};
use crate::config::Config;
use crate::cookie;
use crate::jwt::JwtError;

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// What a page offers its reader to do next.
pub(super) enum Offer<'a> {
    /// A link to try again.
    TryAgain(&'a str),
    /// A button that POSTs to `action` (gatehouse's own path, with its token).
    Form {
        action: String,
        button: &'static str,
    },
    Nothing,
}

/// A page of gatehouse's own, in plain words.
pub(super) struct Page<'a> {
    pub status: u32,
    pub title: &'a str,
    pub message: &'a str,
    /// A reason code for support (shown small), if any.
    pub detail: Option<&'a str>,
    pub offer: Offer<'a>,
}

/// The built-in page: a card with the title, the message, what to do next and the request's id.
/// Inline styles only (the pages' Content-Security-Policy loads nothing), light and dark.
const TEMPLATE: &str = concat!(
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    "<title>{{title}}</title><style>",
    ":root{color-scheme:light dark;--bg:#f4f5f7;--card:#fff;--text:#1d2330;--muted:#5c6475;--line:#e2e5ea;--accent:#2456d6}",
    "@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1d2128;--text:#e7e9ee;--muted:#a0a7b4;--line:#2e333c;--accent:#7ea2ff}}",
    "*{box-sizing:border-box}body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;",
    "background:var(--bg);color:var(--text);font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;padding:24px}",
    "main{background:var(--card);border:1px solid var(--line);border-radius:14px;max-width:460px;width:100%;padding:36px 32px;",
    "box-shadow:0 8px 30px rgba(0,0,0,.06)}",
    ".status{display:inline-block;font-size:13px;font-weight:600;letter-spacing:.04em;color:var(--accent);",
    "border:1px solid var(--line);border-radius:999px;padding:2px 10px;margin-bottom:14px}",
    "h1{font-size:22px;line-height:1.3;margin:0 0 10px}p{margin:0 0 14px;color:var(--muted)}",
    ".detail{font-size:13px}code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;color:var(--text)}",
    "a.button,button{display:inline-block;margin-top:8px;background:var(--accent);color:#fff;border:0;border-radius:8px;",
    "padding:10px 18px;font:600 15px system-ui,sans-serif;text-decoration:none;cursor:pointer}",
    "form{margin:0}.ref{margin:22px 0 0;padding-top:14px;border-top:1px solid var(--line);font-size:13px}",
    "</style></head><body><main><div class=\"status\">{{status}}</div><h1>{{title}}</h1><p>{{message}}</p>",
    "{{detail}}{{action}}{{reference}}</main></body></html>"
);

/// Envoy's request id (`x-request-id`), for support: only if it looks like one.
fn request_id<'a>(req: &Request<'a>) -> Option<&'a str> {
    req.header("x-request-id").filter(|id| {
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    })
}

/// Fills a template's `{{name}}` placeholders (config checked that it names only known ones).
fn fill(template: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(rest.get(..start).unwrap_or(""));
        let after = rest.get(start + 2..).unwrap_or("");
        match after.find("}}") {
            Some(end) => {
                out.push_str(&value(after.get(..end).unwrap_or("")));
                rest = after.get(end + 2..).unwrap_or("");
            }
            None => {
                out.push_str(rest.get(start..).unwrap_or(""));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A page, in the operator's template (`pages.template`) or the built-in one; never cached,
/// never framed, no referrer sent from it.
pub(super) fn page(cfg: Option<&Config>, req: &Request<'_>, p: Page<'_>) -> Response {
    let id = request_id(req);
    let action = match &p.offer {
        Offer::TryAgain(url) => format!("<a class=\"button\" href=\"{}\">Try again</a>", html_escape(url)),
        Offer::Form { action, button } => format!(
            "<form method=\"post\" action=\"{}\"><button type=\"submit\">{button}</button></form>",
            html_escape(action)
        ),
        Offer::Nothing => String::new(),
    };
    let value = |name: &str| match name {
        "status" => p.status.to_string(),
        "title" => html_escape(p.title),
        "message" => html_escape(p.message),
        "detail" => p
            .detail
            .map_or_else(String::new, |d| format!("<p class=\"detail\">Reason: <code>{}</code></p>", html_escape(d))),
        "action" => action.clone(),
        "requestId" => id.map(html_escape).unwrap_or_default(),
        "reference" => id
            .map_or_else(String::new, |id| format!("<p class=\"ref\">Request ID <code>{}</code></p>", html_escape(id))),
        _ => String::new(),
    };
    let template = cfg.and_then(|c| c.pages.template.as_deref()).unwrap_or(TEMPLATE);
    let csp = cfg.map_or(crate::config::DEFAULT_CSP, |c| c.pages.content_security_policy.as_str());
    Response {
        status: p.status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
            ("content-security-policy".into(), csp.into()),
            ("x-frame-options".into(), "DENY".into()),
            ("referrer-policy".into(), "no-referrer".into()),
        ],
        body: fill(template, &value),
    }
}

/// An error page with a way to try again.
pub(crate) fn error_page(
    cfg: &Config,
    req: &Request<'_>,
    status: u32,
    title: &str,
    message: &str,
    retry: &str,
    set_cookies: Vec<String>,
) -> Response {
    let p = Page { status, title, message, detail: None, offer: Offer::TryAgain(retry) };
    let mut page = page(Some(cfg), req, p).with_cookies(set_cookies);
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

/// 403: JSON with the reason code for APIs; for browsers a page that says why in plain words
/// and, to a signed-in browser, offers to sign in as someone else (sign out, then sign in).
pub(super) fn forbidden(cfg: &Config, req: &Request<'_>, rule: Option<&str>, reason: &str) -> Response {
    let wants_html = req.header("accept").is_some_and(|a| a.contains("text/html"));
    if !wants_html {
        return json_response(
            403,
            Vec::new(),
            serde_json::json!({"error": "access_denied", "reason": reason, "rule": rule}),
        );
    }
    let message = match reason {
        "group_required" => "You are signed in, but this page is for members of a group your account is not in.",
        "role_required" => "You are signed in, but this page needs a role your account does not have.",
        "claim_mismatch" => "You are signed in, but your account does not meet a condition this page sets.",
        "email_domain" => "You are signed in, but your email address is not in a domain this site accepts.",
        "email_unverified" => "You are signed in, but your email address has not been verified yet.",
        _ => "You are signed in, but your account is not allowed to open this page.",
    };
    let offer = match &cfg.browser {
        Some(b) => {
            let session = cookie::get_chunked(&request_cookies(req), &b.cookie_name);
            match session {
                Some(s) => Offer::Form {
                    action: format!("{}?csrf={}", b.sign_out_path, sign_out_token(b, Some(&s))),
                    button: "Sign in as someone else",
                },
                None => Offer::Nothing,
            }
        }
        None => Offer::Nothing,
    };
    page(Some(cfg), req, Page { status: 403, title: "Access denied", message, detail: Some(reason), offer })
}

/// 503 for a request that reaches a VM whose configuration was refused (the reason is in
/// Envoy's log, at configure): a page for browsers, text for the rest.
pub fn not_configured(req: &Request<'_>) -> Response {
    if req.header("accept").is_some_and(|a| a.contains("text/html")) {
        let p = Page {
            status: 503,
            title: "Sign-in unavailable",
            message:
                "This site's sign-in is not set up correctly. Its operator can find the reason in the gateway's log.",
            detail: None,
            offer: Offer::Nothing,
        };
        return page(None, req, p);
    }
    Response {
        status: 503,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: "gatehouse is not configured".into(),
    }
}
