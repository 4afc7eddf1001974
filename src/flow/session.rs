//! gatehouse's session: what its cookie holds, reading it on a request (with the cache and the
//! site it was made for), writing it, and forwarding a request it authenticates.

use super::{
    authorize, identity_of, managed_headers_present, unauthorized, unavailable, Decision, Engine, Identity, Request,
    View,
};
use crate::config::{Browser, Config};
use crate::cookie;
use crate::policy::host_of;
use crate::session::Purpose;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::rc::Rc;

/// The result of looking at a request's session cookie.
pub enum SessionOutcome {
    /// A valid session of this provider, its cookie (chunks joined), and whether the request
    /// carries only gatehouse's cookies (then the upstream gets no `Cookie` header at all).
    Valid { provider: usize, identity: Rc<Identity>, cookie: String, only_ours: bool },
    /// An old cookie of a session refreshed moments ago: the new session, and its cookies.
    Refreshed { identity: Rc<Identity>, set_cookies: Vec<String> },
    /// No valid session; `had_cookie` if an invalid or expired one was sent.
    None { had_cookie: bool },
}

/// What the session cookie holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionData {
    /// Unix seconds after which the session is over.
    pub exp: u64,
    /// The claims headers and rules read (top-level members only). Empty in a cached identity's
    /// session data: `session_identity_of` moves them into `Identity::claims`.
    pub claims: Map<String, Value>,
    /// The ID token, for `id_token_hint` at sign-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
    /// The refresh token, encrypted (never readable by the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    /// When to refresh: the access token's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rexp: Option<u64>,
    /// When the user signed in (Unix seconds; kept across refreshes): a back-channel logout of
    /// the user ends the sessions made until then. 0 in sessions made before it was recorded.
    #[serde(default)]
    pub iat: u64,
    /// The access token, encrypted, when `relayAccessToken` sends it upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Where the session is valid (see `session_scope`); a session without one is refused.
    #[serde(default)]
    pub scope: String,
}

/// A sealed session's data, if its MAC holds under a configured key and it parses (whether it
/// has expired, or belongs to this site, is the caller's to check).
pub(super) fn open_session(b: &Browser, sealed: &str) -> Option<SessionData> {
    serde_json::from_slice(&b.sealer.open(Purpose::Session, sealed)?).ok()
}

/// The identity of a session's data, with the headers of its relayed access token; `None` if
/// `relayAccessToken` is set and the session has no access token it can decrypt (one made before
/// relaying was switched on, or under a retired key): such a session cannot serve.
///
/// The claims move into the identity (`Identity::claims`), leaving the session data's empty: a
/// cached session holds them once.
pub(super) fn session_identity_of(cfg: &Config, p: usize, mut data: SessionData) -> Option<Identity> {
    let mut identity = identity_of(cfg, p, Value::Object(std::mem::take(&mut data.claims)), None);
    if let Some(b) = cfg.browser.as_ref().filter(|b| relays(b)) {
        // Without the token's expiry it could be relayed dead, never refreshed.
        data.rexp?;
        let token = data.at.as_deref().and_then(|at| b.sealer.decrypt(at)).and_then(|t| String::from_utf8(t).ok())?;
        identity.relay = relay_headers(b, &token);
    }
    identity.session = Some(data);
    Some(identity)
}

/// An access token fit to go into a header: RFC 6750's `b64token` (what a JWT is), not empty
/// and of bounded size — a provider's answer is not trusted to be one.
pub(super) fn relayable(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= 16 * 1024
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Whether the session's access token goes upstream (`relayAccessToken`).
pub(super) fn relays(b: &Browser) -> bool {
    b.relay_authorization || !b.relay_headers.is_empty()
}

/// The headers that carry an access token upstream under `relayAccessToken`.
pub(super) fn relay_headers(b: &Browser, token: &str) -> Vec<super::Header> {
    let mut set = Vec::new();
    if b.relay_authorization {
        set.push((Rc::from("authorization"), Rc::from(format!("Bearer {token}"))));
    }
    let token: Rc<str> = Rc::from(token);
    set.extend(b.relay_headers.iter().map(|h| (Rc::from(h.as_str()), Rc::clone(&token))));
    set
}

/// What a session is valid for: the cookie's `domain` when one is set (its subdomains share the
/// session), else the exact host; the cookie's path; and the issuer of the provider that signed
/// the user in. Sealed into the session and checked on every request, so that a session made
/// for one site is refused on another that shares the cookie key (one gateway serving several
/// hosts, or a key reused across gateways), and one provider's session on another's hosts.
pub(super) fn session_scope(cfg: &Config, b: &Browser, req: &Request<'_>, p: usize) -> String {
    let site = match &b.cookie.domain {
        Some(domain) => domain.trim_start_matches('.').to_ascii_lowercase(),
        None => host_of(req.header(":authority").unwrap_or("")),
    };
    format!("{site}|{}|{}", b.cookie.path, cfg.providers.at(p).issuer)
}

/// Whether a cookie is one of gatehouse's: the session (or one of its chunks) or a login's state.
pub(super) fn is_ours(b: &Browser, name: &str) -> bool {
    name == b.cookie_name
        || name
            .strip_prefix(b.cookie_name.as_str())
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("_st_"))
}

/// The cookies of a request.
pub(super) fn request_cookies<'a>(req: &Request<'a>) -> Vec<(&'a str, &'a str)> {
    cookie::parse(req.headers.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_str()))
}

impl Engine {
    /// The identity of the request's session cookie, if valid for provider `p` (the host's:
    /// none, no session).
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub fn session_identity(&mut self, req: &Request<'_>, p: Option<usize>, now: u64) -> SessionOutcome {
        let cfg = Rc::clone(&self.config);
        let (Some(b), Some(p)) = (&cfg.browser, p) else {
            return SessionOutcome::None { had_cookie: false };
        };
        let cookies = request_cookies(req);
        let Some(value) = cookie::get_chunked(&cookies, &b.cookie_name) else {
            let had_cookie = cookie::get(&cookies, &b.cookie_name).is_some();
            return SessionOutcome::None { had_cookie };
        };
        if !self.refreshed.is_empty() {
            if let Some(done) = self.refreshed.get(&value, now) {
                let (identity, set_cookies) = (*done).clone();
                // The old cookie was checked for this site when it was refreshed; a request on
                // another site sharing the key must not get the new session either.
                if identity.session.as_ref().is_none_or(|d| d.scope != session_scope(&cfg, b, req, p)) {
                    log::info!("session cookie rejected (made for another site)");
                    return SessionOutcome::None { had_cookie: true };
                }
                if self.ended_by_provider(b, p, &identity, now) {
                    return SessionOutcome::None { had_cookie: true };
                }
                return SessionOutcome::Refreshed { identity, set_cookies };
            }
        }
        let identity = match self.cache.get(&value, now) {
            Some(identity) => identity,
            None => {
                let Some(data) = open_session(b, &value).filter(|d| now < d.exp) else {
                    log::info!("session cookie rejected (invalid, expired or signed with a retired key)");
                    return SessionOutcome::None { had_cookie: true };
                };
                let Some(identity) = session_identity_of(&cfg, p, data) else {
                    log::info!("session cookie rejected (no access token to relay)");
                    return SessionOutcome::None { had_cookie: true };
                };
                let identity = Rc::new(identity);
                let until = identity.session.as_ref().map_or(now, |d| d.exp);
                self.cache.insert(&value, until, Rc::clone(&identity), now);
                identity
            }
        };
        // Checked on cache hits too: the cache is keyed by the cookie alone.
        let scope = session_scope(&cfg, b, req, p);
        if identity.session.as_ref().is_none_or(|d| d.scope != scope) {
            log::info!("session cookie rejected (made for another site, or by another provider)");
            return SessionOutcome::None { had_cookie: true };
        }
        if self.ended_by_provider(b, p, &identity, now) {
            return SessionOutcome::None { had_cookie: true };
        }
        let only_ours = cookies.iter().all(|(name, _)| is_ours(b, name));
        SessionOutcome::Valid { provider: p, identity, cookie: value, only_ours }
    }

    /// Whether a back-channel logout ended this session (on any worker of this Envoy): with
    /// `login.backchannelLogoutPath`, one shared-data read per session request.
    fn ended_by_provider(&mut self, b: &Browser, p: usize, identity: &Identity, now: u64) -> bool {
        if b.backchannel_logout_path.is_none() {
            return false;
        }
        let provider = self.providers.at_mut(p);
        provider.revocations.sync(self.store.as_ref(), &provider.names, now);
        let Some(data) = identity.session.as_ref() else { return false };
        let claim = |name: &str| identity.claims.get(name).and_then(Value::as_str);
        let ended = provider.revocations.ended(claim("sid"), claim("sub"), data.iat, now);
        if ended {
            log::info!("session cookie rejected (the provider ended the session: back-channel logout)");
        }
        ended
    }

    /// Forwards a request authenticated by a session: gatehouse's cookies are taken out of the
    /// `Cookie` header (the upstream does not need them), then the rules apply.
    /// `only_ours`: the caller saw that every cookie of the request is gatehouse's (saves
    /// reading a large `Cookie` header again); `false` if not known.
    /// `view`: the request as [`View::read`] saw it, or `None` to read it again (a request
    /// held for a callout). `now`: a relayed access token must not have expired.
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn forward_session(
        &mut self,
        req: &Request<'_>,
        view: Option<&View>,
        identity: &Identity,
        set_cookies: Vec<String>,
        only_ours: bool,
        now: u64,
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        let cfg = &cfg;
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(cfg, None));
        };
        // An access token that expired (its refresh failed, the provider being unreachable) is
        // never relayed: the upstream would refuse it anyway.
        if relays(b) && identity.session.as_ref().and_then(|d| d.rexp).is_some_and(|exp| now >= exp) {
            log::warn!("not relaying an expired access token (the session could not be refreshed)");
            self.stats.count(crate::stats::Counter::Denied(crate::stats::DenyReason::Unavailable));
            return Decision::Respond(unavailable("the session's access token expired and could not be refreshed"));
        }
        let read;
        let view = match view {
            Some(v) => v,
            None => match View::read(cfg, req) {
                Ok(v) => {
                    read = v;
                    &read
                }
                Err(refusal) => return Decision::Respond(refusal.response()),
            },
        };
        let mut remove = managed_headers_present(cfg, req);
        let rest = if only_ours {
            Vec::new()
        } else {
            cookie::raw_pairs_except(
                req.headers.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_str()),
                |name| is_ours(b, name),
            )
        };
        let mut set = identity.relay.clone();
        if rest.is_empty() {
            remove.push("cookie".into());
        } else {
            set.push((Rc::from("cookie"), Rc::from(rest.join("; "))));
        }
        authorize(cfg, &mut self.stats, req, view, identity, remove, set, set_cookies)
    }

    /// Seals session data into `Set-Cookie` values (chunked if large). If the ID token makes the
    /// session too large, it is left out (sign-out then names the client instead).
    pub(super) fn session_cookies(
        &self,
        b: &Browser,
        data: &mut SessionData,
        request_cookies: &[(&str, &str)],
        now: u64,
    ) -> Option<(String, Vec<String>)> {
        let max_age = data.exp.saturating_sub(now);
        let seal = |data: &SessionData| {
            let sealed = serde_json::to_vec(data).ok().and_then(|json| b.sealer.seal(Purpose::Session, &json))?;
            let cookies = cookie::set_chunked(&b.cookie_name, &sealed, &b.cookie, max_age, request_cookies)?;
            Some((sealed, cookies))
        };
        if let Some(cookies) = seal(data) {
            return Some(cookies);
        }
        if data.idt.take().is_some() {
            if let Some(cookies) = seal(data) {
                log::info!("session without the ID token (too large to keep)");
                return Some(cookies);
            }
        }
        log::error!("session too large for {} cookies; map fewer claims to headers", cookie::MAX_CHUNKS);
        None
    }
}
