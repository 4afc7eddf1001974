//! Refreshing a session before its access token expires, once per session at a time, shared
//! between Envoy's workers through refresh notes.

use super::idp::Pending;
use super::pages::redirect;
use super::request::is_navigation;
use super::session::{open_session, request_cookies, session_identity_of, session_scope};
use super::{unauthorized, Decision, Engine, Identity, Request};
use crate::cache::token_hash;
use crate::cache::TokenHash;
use crate::cookie;
use crate::oidc::login::{self, TokenAnswer};
use crate::shared::{release_lease_of, take_lease};
use crate::stats::Counter;
use std::rc::Rc;

/// A refresh one worker made, for the others: requests carrying the old cookie (`old`, its hash)
/// until `until` get the session sealed in `cookie` instead of refreshing again with a refresh
/// token the provider may have rotated out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshNote {
    pub old: TokenHash,
    pub until: u64,
    pub cookie: String,
}

impl RefreshNote {
    /// Shared-data slots are a fixed ring (Envoy's shared data cannot be deleted): this note's.
    pub fn slot(hash: &TokenHash) -> u8 {
        hash[0]
    }

    pub fn encode(&self) -> String {
        let hex: String = self.old.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}|{}|{}", self.until, self.cookie)
    }

    pub fn decode(text: &str) -> Option<RefreshNote> {
        let mut parts = text.splitn(3, '|');
        let (hex, until, cookie) = (parts.next()?, parts.next()?, parts.next()?);
        if hex.len() != 64 {
            return None;
        }
        let mut old = [0u8; 32];
        for (i, byte) in old.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(RefreshNote { old, until: until.parse().ok()?, cookie: cookie.to_string() })
    }
}

impl Engine {
    /// Another worker already refreshed this session (its note, in the store the VMs share, is
    /// about this cookie and still fresh): the held request goes on with that worker's session.
    fn refreshed_by_peer(
        &mut self,
        p: usize,
        hash: &TokenHash,
        old_cookie: &str,
        req: &Request<'_>,
        now: u64,
    ) -> Option<Decision> {
        let (bytes, _) = self.store.get(&self.providers.at(p).names.refreshed(RefreshNote::slot(hash)));
        let note = RefreshNote::decode(std::str::from_utf8(&bytes?).ok()?)?;
        if note.old != *hash || now >= note.until {
            return None;
        }
        let cfg = Rc::clone(&self.config);
        let b = cfg.browser.as_ref()?;
        let data = open_session(b, &note.cookie)?;
        if now >= data.exp {
            return None;
        }
        let set_cookies = cookie::set_chunked(
            &b.cookie_name,
            &note.cookie,
            &b.cookie,
            data.exp.saturating_sub(now),
            &request_cookies(req),
        )?;
        let identity = Rc::new(session_identity_of(&cfg, p, data)?);
        self.refreshed.insert(old_cookie, note.until, Rc::new((Rc::clone(&identity), set_cookies.clone())), now);
        log::debug!("session refreshed by another worker");
        Some(self.session_answer(req, &identity, set_cookies, now))
    }

    /// A refresh is over, whatever its outcome: the next worker that sees the session may refresh
    /// it (and learns that the provider ended it, or takes the note of its new session).
    pub(super) fn refresh_done(&self, p: usize, hash: &TokenHash) {
        let lease = self.providers.at(p).names.refreshing(RefreshNote::slot(hash));
        release_lease_of(self.store.as_ref(), &lease, &lease_holder(hash));
    }

    /// Tells the other workers' VMs about a refresh made here.
    fn share_refresh(&self, p: usize, note: &RefreshNote) {
        let key = self.providers.at(p).names.refreshed(RefreshNote::slot(&note.old));
        if !self.store.set(&key, note.encode().as_bytes(), None) {
            log::warn!("could not share a session refresh with other workers");
        }
    }
}

impl Engine {
    /// A refresh call for this session if it is due and none is running — or, if another
    /// worker refreshed it a moment ago, the request with that worker's session.
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn refresh_due(
        &mut self,
        p: usize,
        identity: &Rc<Identity>,
        cookie: String,
        req: &Request<'_>,
        now: u64,
    ) -> Option<Decision> {
        let cfg = Rc::clone(&self.config);
        let b = cfg.browser.as_ref().filter(|b| b.refresh)?;
        let info = identity.session.as_ref()?;
        let (rexp, rt) = (info.rexp?, info.rt.as_deref()?);
        if now.saturating_add(b.refresh_before_secs) < rexp {
            return None;
        }
        let hash = token_hash(&cookie);
        if self.refreshing.get(&hash).is_some_and(|until| now < *until) {
            return None; // one refresh per session at a time; others go on with the session
        }
        if let Some(adopted) = self.refreshed_by_peer(p, &hash, &cookie, req, now) {
            return Some(adopted);
        }
        let refresh_token = b.sealer.decrypt(rt).and_then(|t| String::from_utf8(t).ok())?;
        let client = &b.clients.at(p);
        let form = login::refresh_request(&refresh_token, &client.id, client.secret.expose(), b.client_secret_post);
        let pending = Pending::Refresh { provider: p, cookie: Rc::from(cookie), hash, old: Rc::clone(identity) };
        let call = self.token_call(p, form, pending)?;
        let until = now + 2 * cfg.callout_timeout_ms.div_ceil(1000) + 1;
        // One refresh per session across the workers too: a provider that rotates refresh tokens
        // refuses a second use, which would end the session. The worker that holds the lease
        // refreshes and leaves a note; the others go on with the session, then take the note.
        if !take_lease(
            self.store.as_ref(),
            &self.providers.at(p).names.refreshing(RefreshNote::slot(&hash)),
            &lease_holder(&hash),
            now,
            until,
        ) {
            log::debug!("another worker is refreshing this session");
            return None;
        }
        if self.refreshing.len() > 4096 {
            self.refreshing.retain(|_, until| now < *until);
        }
        self.refreshing.insert(hash, until);
        log::debug!("refreshing a session");
        Some(call)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_refresh(
        &mut self,
        p: usize,
        old_cookie: &str,
        hash: TokenHash,
        old: &Rc<Identity>,
        req: &Request<'_>,
        status: Option<u32>,
        body: &[u8],
        now: u64,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        let (Some(b), Some(previous)) = (&cfg.browser, old.session.as_ref()) else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let cookies = request_cookies(req);
        let transient = |engine: &mut Engine, why: &str| {
            // The provider is unavailable: the session stays valid until its own expiry; retry later.
            log::warn!("session refresh failed ({why}); keeping the session, retrying in 30s");
            engine.stats.count(Counter::RefreshFailed);
            engine.refreshing.insert(hash, now + 30);
            engine.session_answer(req, old, Vec::new(), now)
        };
        let answer = TokenAnswer::classify(status, body);
        self.count_problem(&answer);
        let tokens = match answer {
            TokenAnswer::Tokens(t) => t,
            TokenAnswer::Unavailable(_) | TokenAnswer::Unreadable(_) => return transient(self, &answer.to_string()),
            TokenAnswer::Refused { status: code, error } => {
                // A worker that refreshed this session meanwhile used up the refresh token (a
                // provider that rotates them refuses a second use): its session is the one to take.
                if let Some(adopted) = self.refreshed_by_peer(p, &hash, old_cookie, req, now) {
                    return adopted;
                }
                // invalid_grant and friends: the refresh token was revoked or expired. The
                // session is over; a page is sent round once to start a new login.
                self.refreshing.remove(&hash);
                self.cache.clear();
                self.stats.count(Counter::RefreshFailed);
                log::info!("session refresh refused (HTTP {code}, {error}); session ended");
                let set_cookies = cookie::delete_chunked(&b.cookie_name, &b.cookie, &cookies);
                return if is_navigation(req) {
                    Decision::Respond(redirect(
                        &login::safe_return_path(req.header(":path").unwrap_or("/")),
                        set_cookies,
                    ))
                } else {
                    Decision::Respond(unauthorized(&cfg, None).with_cookies(set_cookies))
                };
            }
        };
        let id_claims = match (&tokens.id_token, self.providers.at(p).keys.keys()) {
            (Some(idt), Some(keys)) => {
                match login::validate_id_token(Some(idt), keys, &cfg.client_expectations(p), None, now) {
                    // OIDC Core §12.2: the refreshed ID token is about the same user.
                    Ok(c) if c.get("sub") == old.claims.get("sub") => Some(c),
                    Ok(_) => return transient(self, "refreshed ID token names another subject"),
                    Err(e) => return transient(self, e.description()),
                }
            }
            _ => None,
        };
        let mut data = self.session_from_tokens(
            b,
            p,
            session_scope(&cfg, b, req, p),
            &tokens,
            id_claims,
            Some(old),
            previous.exp,
            now,
            random,
        );
        let Some((sealed, set_cookies)) = self.session_cookies(b, &mut data, &cookies, now) else {
            return transient(self, "session too large");
        };
        let Some(identity) = session_identity_of(&cfg, p, data) else {
            return transient(self, "the refreshed session has no access token to relay");
        };
        let identity = Rc::new(identity);
        self.refreshing.remove(&hash);
        // Other workers' VMs may see the old cookie too: publish the outcome for them.
        self.share_refresh(p, &RefreshNote { old: hash, until: now + 60, cookie: sealed });
        self.stats.count(Counter::Refreshed);
        // Requests still carrying the old cookie (other tabs, requests in flight) get the new
        // session for a minute instead of refreshing again with a rotated-out token.
        self.refreshed.insert(old_cookie, now + 60, Rc::new((Rc::clone(&identity), set_cookies.clone())), now);
        log::debug!("session refreshed");
        self.session_answer(req, &identity, set_cookies, now)
    }
}

/// Who holds a session's refresh lease: the first bytes of its cookie's hash.
fn lease_holder(hash: &TokenHash) -> String {
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
