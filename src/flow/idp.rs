//! Calls to the provider's token endpoint, held requests, and where their answers go: the
//! login callback and the session refresh share one way of making the call and of routing the
//! answer.

use super::{Decision, Engine, Identity, Request};
use crate::cache::TokenHash;
use crate::callout::{Answer, Callout};
use crate::oidc::login::LoginState;
use crate::stats::Counter;
use std::rc::Rc;

/// A call to the provider's token endpoint, and what it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct IdpCall {
    pub callout: Callout,
    pub pending: Pending,
}

/// A provider's answer, with what the call was for: handed to [`Engine::on_idp_answer`], and kept
/// while the key set is fetched (see [`Decision::FetchKeysForAnswer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeldAnswer {
    pub pending: Pending,
    pub status: Option<u32>,
    pub body: Vec<u8>,
}

impl HeldAnswer {
    pub fn new(pending: Pending, answer: Answer) -> HeldAnswer {
        HeldAnswer { pending, status: answer.status, body: answer.body }
    }
}

/// What a provider call was for.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Redeeming an authorization code; the login attempt and its cookie's name.
    Code { login: LoginState, state_cookie: String },
    /// Refreshing a session of a provider: its cookie, the cookie's hash (how other workers
    /// name it), and its identity.
    Refresh { provider: usize, cookie: Rc<str>, hash: TokenHash, old: Rc<Identity> },
}

impl Engine {
    /// A POST of `form` (body, client `Authorization`) to provider `p`'s token endpoint.
    pub(super) fn token_call(
        &self,
        p: usize,
        (body, auth): (String, Option<String>),
        pending: Pending,
    ) -> Option<Decision> {
        let path = self.providers.at(p).keys.discovery().and_then(|d| d.token_endpoint.as_deref()).and_then(path_of)?;
        let mut headers = vec![
            ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if let Some(auth) = auth {
            headers.push(("authorization".to_string(), auth));
        }
        let callout = Callout::new(&self.config, p, "POST", &path, headers, Some(body));
        Some(Decision::CallIdp(Box::new(IdpCall { callout, pending })))
    }

    /// The provider's answer to a call made for a [`Decision::CallIdp`] (its `status` is `None`
    /// if the call failed: connection failure, timeout), or one held for a key-set fetch.
    /// `refetch_allowed`: whether an ID token naming an unknown `kid` may hold the answer for a
    /// key-set fetch ([`Decision::FetchKeysForAnswer`]); false when the answer comes back after one.
    pub fn on_idp_answer(
        &mut self,
        answer: HeldAnswer,
        req: &Request<'_>,
        now: u64,
        refetch_allowed: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let HeldAnswer { pending, status, body } = answer;
        let body = body.as_slice();
        match pending {
            Pending::Code { login, state_cookie } => {
                let d = self.finish_login(login, state_cookie, req, status, body, now, refetch_allowed, random);
                match &d {
                    Decision::FetchKeysForAnswer(..) => {}
                    Decision::Respond(r) if r.status == 302 => self.stats.count(Counter::LoginCompleted),
                    _ => self.stats.count(Counter::LoginFailed),
                }
                d
            }
            Pending::Refresh { provider, cookie, hash, old } => {
                let d = self.finish_refresh(provider, &cookie, hash, &old, req, status, body, now, random);
                self.refresh_done(provider, &hash);
                d
            }
        }
    }
}

impl Engine {
    /// Counts a token-endpoint answer that is a provider problem, by class.
    pub(super) fn count_problem(&mut self, answer: &crate::oidc::login::TokenAnswer) {
        if let Some(class) = answer.problem() {
            self.stats.count(Counter::ProviderError(class));
        }
    }
}

/// The path and query of an absolute URL (see [`crate::oidc::path_and_query`]).
pub(super) fn path_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|u| crate::oidc::path_and_query(&u))
}
