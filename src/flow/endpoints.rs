//! The endpoints people wire in beside the sign-in, as oauth2-proxy has them: `userinfo` (the
//! session's identity as JSON), `start` (a login towards `?rd=`) and `auth` (200 or 401/403 for
//! a subrequest). Each answers itself: nothing here reaches the upstream.

use super::bearer::bearer_token;
use super::pages::{bad_request, forbidden};
use super::request::query_params;
use super::{json_response, unauthorized, Decision, Engine, Identity, Request, Response, SessionOutcome, View};
use crate::claims::values_of;
use crate::policy::Verdict;
use crate::stats::{Counter, DenyReason};
use std::rc::Rc;

impl Engine {
    /// The userinfo path: the session's identity as JSON, for single-page apps; 401 without a
    /// valid session (never a login redirect, never the upstream), 403 where `email` refuses it.
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn userinfo(&mut self, req: &Request<'_>, p: Option<usize>, now: u64) -> Decision {
        match self.session_identity(req, p, now) {
            // Refreshed when due, as for any request: a session Keycloak ended ends here too.
            SessionOutcome::Valid { provider, identity, cookie, .. } => {
                match self.refresh_due(provider, &identity, cookie, req, now) {
                    Some(call) => call,
                    None => self.userinfo_answer(req, &identity, Vec::new()),
                }
            }
            SessionOutcome::Refreshed { identity, set_cookies } => self.userinfo_answer(req, &identity, set_cookies),
            SessionOutcome::None { .. } => {
                self.stats.count(Counter::Denied(DenyReason::Unauthenticated));
                Decision::Respond(json_response(
                    401,
                    Vec::new(),
                    serde_json::json!({"error": "unauthenticated", "error_description": "no valid session"}),
                ))
            }
        }
    }

    /// The userinfo answer for a session's identity.
    pub(super) fn userinfo_answer(
        &mut self,
        req: &Request<'_>,
        identity: &Identity,
        set_cookies: Vec<String>,
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        if let Some(reason) = cfg.policy.email.as_ref().and_then(|e| e.refusal(&identity.claims)) {
            self.stats.count(Counter::Denied(DenyReason::of_policy(reason)));
            return Decision::Respond(forbidden(&cfg, req, None, reason.code()).with_cookies(set_cookies));
        }
        self.stats.count(Counter::Allowed);
        let c = &identity.claims;
        let text = |name: &str| c.get(name).and_then(serde_json::Value::as_str);
        let groups = cfg.policy.groups_claim.lookup(c).map(values_of).unwrap_or_default();
        let roles: Vec<String> =
            cfg.policy.roles_claims.iter().filter_map(|p| p.lookup(c)).flat_map(values_of).collect();
        let body = serde_json::json!({
            "user": text("sub"),
            "email": text("email"),
            "preferredUsername": text("preferred_username"),
            "groups": groups,
            "roles": roles,
        });
        // `Cache-Control: no-store`, as every JSON answer.
        Decision::Respond(json_response(200, Vec::new(), body).with_cookies(set_cookies))
    }

    /// The start path: a login towards `?rd=` (a path here, or a URL on this host or an allowed
    /// domain; anything else comes back to `/`), whether or not a session exists — the way to
    /// a sign-in button. GET and HEAD only. `p`: the host's provider (none: 401).
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn start(
        &mut self,
        req: &Request<'_>,
        p: Option<usize>,
        now: u64,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        let (Some(b), Some(p)) = (&cfg.browser, p) else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        if !matches!(req.header(":method"), Some("GET" | "HEAD")) {
            return Decision::Respond(Response {
                status: 405,
                headers: vec![("allow".into(), "GET, HEAD".into())],
                body: String::new(),
            });
        }
        let params = query_params(req.header(":path").unwrap_or("/"));
        let rd = params.iter().find(|(k, _)| k == "rd").map_or("/", |(_, v)| v.as_str());
        let r = self.start_login(b, p, req, rd, now, false, random);
        self.stats.count(if r.status == 302 {
            Counter::LoginStarted
        } else {
            Counter::Denied(DenyReason::Unavailable)
        });
        Decision::Respond(r)
    }

    /// The auth path, for a subrequest (nginx `auth_request`, a script asking whether it is
    /// signed in): a valid bearer token or session cookie that the rules for this path allow is
    /// `200` with the identity headers on the response; no valid credentials `401` (never a
    /// login redirect); refused by the rules `403`. Nothing is forwarded.
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn auth(&mut self, req: &Request<'_>, view: &View, now: u64, refetch_allowed: bool) -> Decision {
        let cfg = Rc::clone(&self.config);
        let (identity, set_cookies) = match bearer_token(req) {
            Err(reason) => {
                self.stats.count(Counter::Denied(DenyReason::BadRequest));
                return Decision::Respond(bad_request(&cfg, reason));
            }
            Ok(Some(token)) => {
                match self.bearer_identity(token, now, refetch_allowed).and_then(|i| self.serves_here(view, i)) {
                    Ok(identity) => (identity, Vec::new()),
                    Err(decision) => return decision,
                }
            }
            Ok(None) => match self.session_identity(req, view.provider, now) {
                SessionOutcome::Valid { provider, identity, cookie, .. } => {
                    match self.refresh_due(provider, &identity, cookie, req, now) {
                        Some(call) => return call,
                        None => (identity, Vec::new()),
                    }
                }
                SessionOutcome::Refreshed { identity, set_cookies } => (identity, set_cookies),
                SessionOutcome::None { .. } => {
                    self.stats.count(Counter::Denied(DenyReason::Unauthenticated));
                    return Decision::Respond(unauthorized(&cfg, None));
                }
            },
        };
        self.auth_answer(req, view, &identity, set_cookies)
    }

    /// The auth answer for an identity: the rules for the auth path.
    pub(super) fn auth_answer(
        &mut self,
        req: &Request<'_>,
        view: &View,
        identity: &Identity,
        set_cookies: Vec<String>,
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        match cfg.policy.verdict_all(&view.routes, &identity.claims) {
            Verdict::Allow => {
                self.stats.count(Counter::Allowed);
                let mut headers: Vec<(String, String)> =
                    identity.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
                headers.push(("cache-control".into(), "no-store".into()));
                Decision::Respond(Response { status: 200, headers, body: String::new() }.with_cookies(set_cookies))
            }
            Verdict::Deny { rule, reason } => {
                self.stats.count(Counter::Denied(DenyReason::of_policy(reason)));
                Decision::Respond(forbidden(&cfg, req, rule.as_deref(), reason.code()).with_cookies(set_cookies))
            }
        }
    }
}

impl Engine {
    /// A session's request after a refresh (made here, by another worker, or failed for now):
    /// the userinfo or auth answer when that is what it asked for, else the request forwarded.
    pub(super) fn session_answer(
        &mut self,
        req: &Request<'_>,
        identity: &Identity,
        set_cookies: Vec<String>,
        now: u64,
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        let view = match View::read(&cfg, req) {
            Ok(v) => v,
            Err(refusal) => return Decision::Respond(refusal.response()),
        };
        let here = Some(view.path.path.as_str());
        match &cfg.browser {
            Some(b) if b.userinfo_path.as_deref() == here => self.userinfo_answer(req, identity, set_cookies),
            Some(b) if b.auth_path.as_deref() == here => self.auth_answer(req, &view, identity, set_cookies),
            _ => self.forward_session(req, Some(&view), identity, set_cookies, false, now),
        }
    }
}
