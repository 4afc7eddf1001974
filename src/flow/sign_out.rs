//! Signing out: only on this site's word (the form's token, or the browser's fetch metadata);
//! then every gatehouse cookie is cleared and the provider's session ended (RP-initiated logout).

use super::login::state_attrs;
use super::pages::{page, redirect, Offer, Page};
use super::request::{origin, query_params};
use super::session::{open_session, request_cookies, session_scope};
use super::{unauthorized, Decision, Engine, Request, Response};
use crate::config::Browser;
use crate::cookie;
use crate::session::Purpose;
use crate::stats::Counter;
use sha2::{Digest, Sha256};
use std::rc::Rc;

impl Engine {
    /// Signs out: clears gatehouse's cookies and sends the browser to the logout of `p`, the
    /// host's provider. Cross-site requests only get a confirmation form (logout CSRF).
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn sign_out(&mut self, req: &Request<'_>, p: Option<usize>) -> Decision {
        let cfg = Rc::clone(&self.config);
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let method = req.header(":method").unwrap_or("GET");
        if method != "GET" && method != "POST" {
            return Decision::Respond(Response {
                status: 405,
                headers: vec![("allow".into(), "GET, POST".into())],
                body: String::new(),
            });
        }
        let cookies = request_cookies(req);
        let token = sign_out_token(b, cookie::get_chunked(&cookies, &b.cookie_name).as_deref());
        if !sign_out_is_ours(req, &token) {
            // A form the user submits themselves, carrying a token a cross-site page cannot
            // know: neither a cross-site request nor one from a browser that sends no
            // `Sec-Fetch-Site` (older ones) signs anybody out unasked.
            let p = Page {
                status: 200,
                title: "Sign out?",
                message: "Do you want to sign out of this site?",
                detail: None,
                offer: Offer::Form { action: format!("{}?csrf={token}", b.sign_out_path), button: "Sign out" },
            };
            return Decision::Respond(page(Some(&cfg), req, p));
        }
        // The ID token goes to the provider as a hint only if that provider issued it.
        let id_token = (cookie::get_chunked(&cookies, &b.cookie_name).and_then(|v| open_session(b, &v)))
            .filter(|d| p.is_some_and(|p| d.scope == session_scope(&cfg, b, req, p)))
            .and_then(|d| d.idt);
        let mut set_cookies = cookie::delete_chunked(&b.cookie_name, &b.cookie, &cookies);
        let state_prefix = format!("{}_st_", b.cookie_name);
        for (name, _) in &cookies {
            if name.starts_with(&state_prefix) {
                set_cookies.push(cookie::set_cookie(name, "", &state_attrs(b), Some(0)));
            }
        }
        let end_session =
            p.and_then(|p| self.providers.at(p).keys.discovery()).and_then(|d| d.end_session_endpoint.clone());
        let client_id = p.map(|p| b.clients.at(p).id.as_str()).unwrap_or_default();
        let location = match end_session.and_then(|e| url::Url::parse(&e).ok()) {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(hint) = &id_token {
                        q.append_pair("id_token_hint", hint);
                    }
                    q.append_pair("client_id", client_id);
                    if let Some(after) = &b.post_logout_redirect_uri {
                        q.append_pair("post_logout_redirect_uri", after);
                    }
                }
                url.to_string()
            }
            None => b.post_logout_redirect_uri.clone().unwrap_or_else(|| "/".into()),
        };
        log::info!("signed out");
        self.stats.count(Counter::Logout);
        Decision::Respond(redirect(&location, set_cookies))
    }
}

/// The sign-out form's token: a MAC of the session cookie (or of its absence) under the cookie
/// key, so a page on another site can neither read nor make it, and it dies with the session.
pub(super) fn sign_out_token(b: &Browser, session: Option<&str>) -> String {
    let digest = Sha256::digest(session.unwrap_or("-").as_bytes());
    let sealed = b.sealer.seal(Purpose::SignOut, &digest).unwrap_or_default();
    // The MAC part only: `v1.<kid>.<payload>.<mac>`.
    sealed.rsplit('.').next().unwrap_or_default().to_string()
}

/// Constant-time equality of two secrets of public length (ring's helper for this is deprecated,
/// and a crate for six lines is not worth its weight).
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A sign-out the user asked for on this site: the form's token, or a browser saying so —
/// `Sec-Fetch-Site: same-origin` (or `none`: typed, bookmarked) with no foreign `Origin`, or
/// (browsers without fetch metadata) a POST whose `Origin` is this site. Anything else, and a
/// request that says nothing, is in doubt: the stricter answer is the confirmation form.
pub(super) fn sign_out_is_ours(req: &Request<'_>, token: &str) -> bool {
    let given = query_params(req.header(":path").unwrap_or("/")).into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v);
    if given.is_some_and(|g| !token.is_empty() && same_secret(g.as_bytes(), token.as_bytes())) {
        return true;
    }
    let ours = origin(req);
    let origin_ok = req.header("origin").map(|o| ours.as_deref() == Some(o));
    match (req.header("sec-fetch-site"), origin_ok) {
        (Some("same-origin" | "none"), None | Some(true)) => true,
        // Without fetch metadata, only a same-origin page can make the browser send our Origin.
        (None, Some(true)) => true,
        _ => false,
    }
}
