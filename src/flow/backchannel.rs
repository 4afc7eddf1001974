//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): the provider POSTs a logout
//! token when a user's session ends there (signed out at another client, ended by an admin);
//! from then on, every worker of this Envoy refuses the sessions it names (see
//! [`crate::revoked`]). Other gateway replicas learn at their next refresh, which the provider
//! refuses for an ended session.

use super::pages::json_response;
use super::{Decision, Engine, Request, Response};
use crate::cache::token_hash;
use crate::oidc::logout;
use crate::revoked::Revocation;
use crate::stats::{Counter, DenyReason};
use std::rc::Rc;

/// The largest logout POST read (a logout token is about 1 KB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Slots of the ring of logout-token ids seen (by hash).
const JTI_SLOTS: u16 = 1024;

/// 400, as §2.8 answers a logout request it cannot take.
fn refused(why: &str) -> Decision {
    Decision::Respond(json_response(
        400,
        Vec::new(),
        serde_json::json!({"error": "invalid_request", "error_description": why}),
    ))
}

impl Engine {
    /// The back-channel logout path: a form POST, whose body the glue reads next.
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn backchannel_logout(&mut self, req: &Request<'_>) -> Decision {
        if req.header(":method") != Some("POST") {
            return Decision::Respond(Response {
                status: 405,
                headers: vec![("allow".into(), "POST".into())],
                body: String::new(),
            });
        }
        let form = req
            .header("content-type")
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !form {
            self.stats.count(Counter::Denied(DenyReason::BadRequest));
            return refused("expected application/x-www-form-urlencoded");
        }
        log::debug!(
            "back-channel logout: reading the logout token (the Wasm filter needs allow_on_headers_stop_iteration)"
        );
        Decision::ReadBody
    }

    /// A request's body has arrived (see [`Decision::ReadBody`]): the back-channel logout.
    /// `refetch_allowed`: as for [`Engine::decide`] (a logout token may name a new key).
    pub fn on_request_body(&mut self, _req: &Request<'_>, body: &[u8], now: u64, refetch_allowed: bool) -> Decision {
        let d = self.logout_with(body, now, refetch_allowed);
        if let Decision::Respond(r) = &d {
            if r.status != 200 {
                self.stats.count(Counter::Denied(DenyReason::BadRequest));
            }
        }
        d
    }

    fn logout_with(&mut self, body: &[u8], now: u64, refetch_allowed: bool) -> Decision {
        let cfg = Rc::clone(&self.config);
        let Some(b) = &cfg.browser else { return refused("not configured") };
        if body.len() > MAX_BODY_BYTES {
            return refused("body too large");
        }
        let tokens: Vec<String> = url::form_urlencoded::parse(body)
            .filter(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .collect();
        let [token] = tokens.as_slice() else {
            return refused("expected one logout_token");
        };
        let Some(p) = self.token_provider(token) else {
            log::warn!("back-channel logout refused: the token's issuer is no configured provider's");
            return refused("issuer not accepted");
        };
        let Some(keys) = self.providers.at(p).keys.keys().cloned() else {
            log::warn!("back-channel logout refused: signing keys not loaded yet");
            return Decision::Respond(super::unavailable("signing keys are not loaded yet"));
        };
        let l = match logout::validate(token, &keys, &cfg.client_expectations(p), &b.clients.at(p).id, now) {
            Ok(l) => l,
            Err(logout::LogoutError::Jwt(crate::jwt::JwtError::UnknownKeyId)) if refetch_allowed => {
                match self.key_fetch_for_unknown_kid(p, "a logout token", now) {
                    Some(fetch) => return Decision::FetchKeys(fetch),
                    None => return refused("unknown key id"),
                }
            }
            Err(e) => {
                log::warn!("back-channel logout refused: {}", e.code());
                return refused(e.code());
            }
        };
        // Each logout token once (§2.6 step 10), across this Envoy's workers.
        let hash = token_hash(&l.jti);
        let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let slot = self.providers.at(p).names.logout_jti(u16::from_be_bytes([hash[0], hash[1]]) % JTI_SLOTS);
        let (seen, _) = self.store.get(&slot);
        let replay = seen
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.split_once('|').map(|(h, until)| (h == hex, until.parse::<u64>().unwrap_or(0))))
            .is_some_and(|(same, until)| same && now < until);
        if replay {
            log::warn!("back-channel logout refused: logout token used before");
            return refused("logout token used before");
        }
        let until = l.exp.saturating_add(cfg.tokens.leeway_secs);
        self.store.set(&slot, format!("{hex}|{until}").as_bytes(), None);
        let r = match (l.sid, l.sub) {
            (Some(sid), _) => Revocation::Session { sid },
            (None, Some(sub)) => Revocation::User { sub, at: l.iat.max(now) },
            (None, None) => return refused("neither sid nor sub"),
        };
        let provider = self.providers.at_mut(p);
        if !provider.revocations.revoke(self.store.as_ref(), &provider.names, r, now.saturating_add(b.lifetime_secs)) {
            log::error!("back-channel logout: could not share the logout with the other workers");
        }
        self.stats.count(Counter::Logout);
        log::info!("back-channel logout: the provider ended a session");
        Decision::Respond(Response {
            status: 200,
            headers: vec![("cache-control".into(), "no-store".into())],
            body: String::new(),
        })
    }
}
