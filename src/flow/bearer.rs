//! Bearer tokens (RFC 6750): taking the token from `Authorization`, verifying it against the key
//! set (or finding it in the verified-token cache), and the one early key fetch for an unknown
//! `kid`.

use super::pages::unauthorized;
use super::pages::unavailable;
use super::{identity_of, Decision, Engine, Identity, Request, View};
use crate::jwt::{self, JwtError};
use crate::stats::{Counter, DenyReason};
use std::rc::Rc;

impl Engine {
    /// Verifies a bearer token (or finds it in the cache).
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn bearer_identity(
        &mut self,
        token: &str,
        now: u64,
        refetch_allowed: bool,
    ) -> Result<Rc<Identity>, Decision> {
        let cfg = Rc::clone(&self.config);
        if let Some(identity) = self.cache.get(token, now) {
            self.stats.count(Counter::TokenCacheHit);
            return Ok(identity);
        }
        let Some(p) = self.token_provider(token) else {
            log::warn!("rejecting token: its issuer is no configured provider's");
            self.stats.count(Counter::TokenCacheMiss);
            self.stats.count(Counter::Denied(DenyReason::InvalidToken));
            return Err(Decision::Respond(unauthorized(&cfg, Some(JwtError::IssuerNotAccepted))));
        };
        let Some(keys) = self.providers.at(p).keys.keys().cloned() else {
            log::warn!("rejecting request: signing keys not loaded yet");
            self.stats.count(Counter::Denied(DenyReason::Unavailable));
            return Err(Decision::Respond(unavailable("signing keys are not loaded yet")));
        };
        match jwt::verify(token, &keys, &cfg.token_expectations(p), now) {
            Ok(verified) => {
                self.stats.count(Counter::TokenCacheMiss);
                // Only the claims something reads stay: the cache holds up to `cache.tokens` of these.
                let mut claims = verified.claims;
                if let serde_json::Value::Object(map) = &mut claims {
                    crate::claims::keep_only(map, &cfg.kept_claims);
                }
                let identity = Rc::new(identity_of(&cfg, p, claims, Some(token)));
                let until = verified.exp.saturating_add(cfg.tokens.leeway_secs);
                self.cache.insert(token, until, Rc::clone(&identity), now);
                Ok(identity)
            }
            Err(e) => {
                if e == JwtError::UnknownKeyId && refetch_allowed {
                    if let Some(fetch) = self.key_fetch_for_unknown_kid(p, "a bearer token", now) {
                        return Err(Decision::FetchKeys(fetch));
                    }
                }
                log::warn!("rejecting token: {e}");
                self.stats.count(Counter::TokenCacheMiss);
                self.stats.count(Counter::Denied(DenyReason::InvalidToken));
                Err(Decision::Respond(unauthorized(&cfg, Some(e))))
            }
        }
    }
}

impl Engine {
    /// A bearer token's identity if its provider serves this host (a provider that lists
    /// `hosts` vouches for its users there only), else the refusal.
    pub(super) fn serves_here(&mut self, view: &View, identity: Rc<Identity>) -> Result<Rc<Identity>, Decision> {
        if view.served_by(identity.provider) {
            return Ok(identity);
        }
        log::warn!("rejecting token: its provider does not serve this host");
        self.stats.count(Counter::Denied(DenyReason::InvalidToken));
        Err(Decision::Respond(unauthorized(&self.config, Some(JwtError::IssuerNotAccepted))))
    }

    /// The provider whose keys check a token: the only one, or the one of the issuer the token
    /// names (unverified: only that provider's keys, issuers and audiences then check it, so
    /// one provider's keys never verify another's tokens). `None`: no provider's issuer.
    pub(super) fn token_provider(&self, token: &str) -> Option<usize> {
        if self.config.providers.len() == 1 {
            return Some(0);
        }
        jwt::unverified_issuer(token).and_then(|iss| self.config.provider_of_issuer(&iss))
    }
}

/// The bearer token of the `Authorization` header (RFC 6750 §2.1), `None` if there is no
/// bearer credential, an error for a request that is malformed (two `Authorization` headers).
pub(super) fn bearer_token<'a>(req: &Request<'a>) -> Result<Option<&'a str>, &'static str> {
    if req.count("authorization") > 1 {
        return Err("more than one Authorization header");
    }
    let Some(value) = req.header("authorization") else {
        return Ok(None);
    };
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    Ok(if token.is_empty() { None } else { Some(token) })
}
