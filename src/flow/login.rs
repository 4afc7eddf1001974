//! Signing a browser in: the login redirect with its per-attempt state cookie, the callback, and
//! the session made from the provider's tokens.

use super::idp::{HeldAnswer, Pending};
use super::pages::{error_page, redirect};
use super::request::{is_navigation, origin, query_params};
use super::session::{relayable, relays, request_cookies, session_scope, SessionData};
use super::{unauthorized, unavailable, Decision, Engine, Request, Response};
use crate::config::Browser;
use crate::cookie;
use crate::jwt;
use crate::oidc::login::{self, AuthorizeRequest, LoginState, TokenAnswer, TokenResponse};
use crate::session::Purpose;
use crate::stats::{Counter, DenyReason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::rc::Rc;

/// The state cookie's name for a `state` value (one cookie per login attempt, so that logins in
/// several tabs do not overwrite each other).
pub(super) fn state_cookie_name(b: &Browser, state: &str) -> Option<String> {
    let id = state.get(..16)?;
    id.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        .then(|| format!("{}_st_{id}", b.cookie_name))
}

pub(super) fn state_attrs(b: &Browser) -> cookie::Attributes {
    // Lax even if the session is Strict: the callback is a cross-site navigation from the provider.
    // Under the `__Host-` prefix the path must be `/`; otherwise only the callback needs them.
    cookie::Attributes {
        path: if b.host_prefix { "/".into() } else { b.callback_path.clone() },
        domain: b.cookie.domain.clone(),
        secure: b.cookie.secure,
        same_site: "Lax",
    }
}

/// Where a login started towards `target` may return: see [`Engine::start_login`]. An absolute
/// URL on this host must be on the request's own origin (no downgrade to `http`, no other port
/// on the same host), and becomes its path; one on an allowed domain must keep the request's
/// scheme.
fn return_target(b: &Browser, req: &Request<'_>, target: &str) -> String {
    if target.starts_with('/') {
        return login::safe_return_path(target);
    }
    let own = req.header(":authority").map(crate::policy::host_of).unwrap_or_default();
    let (Some(abs), Some(here)) = (login::allowed_return_url(target, &own, &b.allowed_redirect_domains), origin(req))
    else {
        return "/".into();
    };
    let Ok(url) = url::Url::parse(&abs) else { return "/".into() };
    if url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&own)) {
        return match abs.strip_prefix(here.as_str()) {
            Some(path) if path.starts_with('/') => path.to_string(),
            _ => "/".into(),
        };
    }
    if !here.starts_with(&format!("{}://", url.scheme())) {
        return "/".into();
    }
    abs
}

impl Engine {
    /// No valid credentials: a login redirect for a browser navigation, else 401.
    #[inline(never)] // a function of its own: see `Engine::decide`
    /// `p`: the provider that signs browsers in on this host (none: 401 only).
    pub(super) fn unauthenticated(
        &mut self,
        req: &Request<'_>,
        p: Option<usize>,
        now: u64,
        had_cookie: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        match (&cfg.browser, p) {
            (Some(b), Some(p)) if b.redirect_browsers && is_navigation(req) => {
                let r = self.start_login(b, p, req, req.header(":path").unwrap_or("/"), now, had_cookie, random);
                self.stats.count(if r.status == 302 {
                    Counter::LoginStarted
                } else {
                    Counter::Denied(DenyReason::Unavailable)
                });
                Decision::Respond(r)
            }
            _ => {
                self.stats.count(Counter::Denied(DenyReason::Unauthenticated));
                Decision::Respond(unauthorized(&cfg, None))
            }
        }
    }

    /// The login redirect to provider `p`, to come back to `target`: a path on this host
    /// (anything else becomes `/`), or an absolute URL on this host or an allowed domain
    /// (`login.allowedRedirectDomains`; anything else becomes `/`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_login(
        &self,
        b: &Browser,
        p: usize,
        req: &Request<'_>,
        target: &str,
        now: u64,
        had_cookie: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Response {
        let cfg = Rc::clone(&self.config);
        let mut return_to = return_target(b, req, target);
        let Some(endpoint) = self.providers.at(p).keys.discovery().and_then(|d| d.authorization_endpoint.clone())
        else {
            log::warn!("cannot start a login: the provider's discovery document is not loaded");
            return error_page(
                &cfg,
                req,
                503,
                "Sign-in unavailable",
                "The identity provider cannot be reached right now. Please try again in a moment.",
                &return_to,
                Vec::new(),
            );
        };
        let redirect_uri = match &b.redirect_uri {
            Some(u) => u.clone(),
            None => match origin(req) {
                Some(o) => format!("{o}{}", b.callback_path),
                None => {
                    return error_page(
                        &cfg,
                        req,
                        400,
                        "Bad request",
                        "The request has no usable host.",
                        "/",
                        Vec::new(),
                    )
                }
            },
        };
        // A fixed redirect URI on another host: come back to this host with an absolute URL, if
        // it is allowed (checked again at the callback).
        if let (Some(fixed), Some(here), true) = (&b.redirect_uri, origin(req), return_to.starts_with('/')) {
            let callback_origin = url::Url::parse(fixed).ok().map(|u| u.origin().ascii_serialization());
            if callback_origin.as_deref() != Some(here.as_str()) {
                let callback_host =
                    url::Url::parse(fixed).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
                if let Some(abs) = login::allowed_return_url(
                    &format!("{here}{return_to}"),
                    &callback_host,
                    &b.allowed_redirect_domains,
                ) {
                    return_to = abs;
                }
            }
        }
        let mut fresh = || {
            let mut bytes = [0u8; 32];
            random(&mut bytes);
            B64.encode(bytes)
        };
        let state = fresh();
        let nonce = fresh();
        let verifier = fresh();
        let Some(cookie_name) = state_cookie_name(b, &state) else {
            return error_page(
                &cfg,
                req,
                500,
                "Sign-in failed",
                "Could not start the sign-in.",
                &return_to,
                Vec::new(),
            );
        };
        let challenge = login::pkce_challenge(&verifier);
        let url = login::authorize_url(&AuthorizeRequest {
            endpoint: &endpoint,
            client_id: &b.clients.at(p).id,
            redirect_uri: &redirect_uri,
            scope: &b.scope,
            state: &state,
            nonce: &nonce,
            code_challenge: &challenge,
            extra: &b.extra_params,
        });
        let attempt = LoginState {
            state,
            nonce,
            verifier,
            return_to: return_to.clone(),
            redirect_uri,
            exp: now + b.login_timeout_secs,
            iss: cfg.providers.at(p).issuer.clone(),
        };
        let sealed = serde_json::to_vec(&attempt).ok().and_then(|json| b.sealer.seal(Purpose::LoginState, &json));
        let (Some(url), Some(sealed)) = (url, sealed) else {
            log::error!("cannot build the authorization request (authorization_endpoint {endpoint:.100})");
            return error_page(
                &cfg,
                req,
                502,
                "Sign-in unavailable",
                "The identity provider's configuration is not usable.",
                &return_to,
                Vec::new(),
            );
        };
        let mut cookies = vec![cookie::set_cookie(&cookie_name, &sealed, &state_attrs(b), Some(b.login_timeout_secs))];
        if had_cookie {
            cookies.extend(cookie::delete_chunked(&b.cookie_name, &b.cookie, &request_cookies(req)));
        }
        log::debug!("starting a login");
        redirect(&url, cookies)
    }

    /// The provider sent the browser back: check the state, then redeem the code.
    #[inline(never)] // a function of its own: see `Engine::decide`
    pub(super) fn callback(&mut self, req: &Request<'_>, now: u64) -> Decision {
        let d = self.check_callback(req, now);
        if let Decision::Respond(_) = d {
            self.stats.count(Counter::LoginFailed);
        }
        d
    }

    pub(super) fn check_callback(&mut self, req: &Request<'_>, now: u64) -> Decision {
        let cfg = Rc::clone(&self.config);
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let params = query_params(req.header(":path").unwrap_or("/"));
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let cookies = request_cookies(req);
        let state_cookie = param("state").and_then(|s| state_cookie_name(b, s));
        let clear_state = || match &state_cookie {
            Some(name) if cookie::get(&cookies, name).is_some() => {
                vec![cookie::set_cookie(name, "", &state_attrs(b), Some(0))]
            }
            _ => Vec::new(),
        };
        let attempt = state_cookie
            .as_deref()
            .and_then(|name| cookie::get(&cookies, name))
            .and_then(|v| b.sealer.open(Purpose::LoginState, v))
            .and_then(|json| serde_json::from_slice::<LoginState>(&json).ok())
            .filter(|a| Some(a.state.as_str()) == param("state") && now < a.exp);
        let retry = attempt.as_ref().map_or_else(|| "/".to_string(), |a| a.return_to.clone());

        if let Some(error) = param("error") {
            let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            log::warn!("login failed at the provider: {code}");
            let (status, message) = if code == "access_denied" {
                (403, "Sign-in was cancelled or access was denied by the identity provider.".to_string())
            } else {
                (400, format!("The identity provider reported an error ({code})."))
            };
            return Decision::Respond(error_page(&cfg, req, status, "Sign-in failed", &message, &retry, clear_state()));
        }
        // The provider the browser was sent to (one no longer configured voids the attempt).
        let provider = attempt.as_ref().and_then(|a| cfg.provider_with_issuer(&a.iss));
        let (Some(attempt), Some(p)) = (attempt, provider) else {
            log::warn!("callback rejected: state missing, unknown, expired or not matching its cookie");
            return Decision::Respond(error_page(&cfg, req,
                400,
                "Sign-in expired",
                "This sign-in could not be matched to your browser: it expired, was already used, or cookies are blocked.",
                "/",
                clear_state(),
            ));
        };
        // RFC 9207: an `iss` in the response must be our provider's (mix-up defence).
        if let Some(iss) = param("iss") {
            if iss != cfg.providers.at(p).issuer {
                log::warn!("callback rejected: iss parameter names another issuer");
                return Decision::Respond(error_page(
                    &cfg,
                    req,
                    400,
                    "Sign-in failed",
                    "The response came from an unexpected identity provider.",
                    &retry,
                    clear_state(),
                ));
            }
        }
        let Some(code) = param("code").filter(|c| !c.is_empty() && c.len() <= 4096) else {
            return Decision::Respond(error_page(
                &cfg,
                req,
                400,
                "Sign-in failed",
                "The identity provider's response has no authorization code.",
                &retry,
                clear_state(),
            ));
        };
        let client = &b.clients.at(p);
        let form = login::token_request(
            code,
            &attempt.redirect_uri,
            &attempt.verifier,
            &client.id,
            client.secret.expose(),
            b.client_secret_post,
        );
        let cleared = clear_state();
        let pending = Pending::Code { login: attempt, state_cookie: state_cookie.unwrap_or_default() };
        self.token_call(p, form, pending).unwrap_or_else(|| {
            Decision::Respond(error_page(
                &cfg,
                req,
                503,
                "Sign-in unavailable",
                "The identity provider cannot be reached right now.",
                &retry,
                cleared,
            ))
        })
    }

    /// Builds session data from provider `p`'s token response. `previous` is the identity of the
    /// session being refreshed (its claims are the identity's; its session data holds the rest).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn session_from_tokens(
        &self,
        b: &Browser,
        p: usize,
        scope: String,
        tokens: &TokenResponse,
        id_claims: Option<Value>,
        previous: Option<&super::Identity>,
        exp: u64,
        now: u64,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> SessionData {
        let cfg = &self.config;
        // Keycloak puts roles in the access token, not the ID token: take them from there when
        // the access token is a JWT that verifies for this client.
        let expect = cfg.client_expectations(p);
        let access = self
            .providers
            .at(p)
            .keys
            .keys()
            .and_then(|keys| jwt::verify(&tokens.access_token, keys, &expect, now).ok());
        let mut merged = match id_claims {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let access_exp = access.as_ref().map(|a| a.exp);
        if let Some(Value::Object(claims)) = access.map(|a| a.claims) {
            for (k, v) in claims {
                merged.entry(k).or_insert(v);
            }
        }
        if let Some(Value::Object(prev)) = previous.map(|p| &p.claims) {
            for (k, v) in prev {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        // The rest of the old session: its refresh token, ID token and sign-in time.
        let old_data = previous.and_then(|p| p.session.as_ref());
        crate::claims::keep_only(&mut merged, &b.kept_claims);
        let claims = merged;
        let (rt, rexp) = if b.refresh {
            let rt = match &tokens.refresh_token {
                Some(token) => {
                    let mut nonce = [0u8; 12];
                    random(&mut nonce);
                    b.sealer.encrypt(token.as_bytes(), nonce)
                }
                None => old_data.and_then(|d| d.rt.clone()),
            };
            let rexp = tokens.expires_in.map(|s| now.saturating_add(s)).or(access_exp);
            (rt, rexp)
        } else {
            (None, None)
        };
        let idt = if b.keep_id_token {
            tokens.id_token.clone().or_else(|| old_data.and_then(|d| d.idt.clone()))
        } else {
            None
        };
        // Relayed upstream: encrypted, as the refresh token (a copied cookie shows no token).
        let at = (relays(b) && relayable(&tokens.access_token)).then(|| {
            let mut nonce = [0u8; 12];
            random(&mut nonce);
            b.sealer.encrypt(tokens.access_token.as_bytes(), nonce)
        });
        let iat = old_data.map_or(now, |d| d.iat);
        SessionData { exp, claims, idt, rt, rexp, scope, iat, at: at.flatten() }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_login(
        &mut self,
        attempt: LoginState,
        state_cookie: String,
        req: &Request<'_>,
        status: Option<u32>,
        body: &[u8],
        now: u64,
        refetch_allowed: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        let provider = cfg.provider_with_issuer(&attempt.iss);
        let (Some(b), Some(p)) = (&cfg.browser, provider) else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let cookies = request_cookies(req);
        let mut set_cookies = vec![cookie::set_cookie(&state_cookie, "", &state_attrs(b), Some(0))];
        let retry = attempt.return_to.clone();
        let fail = |status: u32, message: &str, set_cookies: Vec<String>| {
            Decision::Respond(error_page(&cfg, req, status, "Sign-in failed", message, &retry, set_cookies))
        };
        let answer = TokenAnswer::classify(status, body);
        self.count_problem(&answer);
        let tokens = match answer {
            TokenAnswer::Tokens(t) => t,
            TokenAnswer::Unavailable(_) => {
                log::error!("token endpoint unavailable: {answer}");
                return Decision::Respond(error_page(
                    &cfg,
                    req,
                    503,
                    "Sign-in unavailable",
                    "The identity provider cannot be reached right now. Please try again in a moment.",
                    &retry,
                    set_cookies,
                ));
            }
            TokenAnswer::Refused { ref error, .. } => {
                if error == "invalid_grant" {
                    log::warn!("token endpoint answered {answer}");
                } else {
                    log::error!("token endpoint answered {answer}: check provider.clientId, the client secret and the client's settings at the provider");
                }
                return if error == "invalid_grant" {
                    fail(
                        400,
                        "The sign-in could not be completed: the authorization code expired or was already used.",
                        set_cookies,
                    )
                } else {
                    fail(502, "The identity provider refused to complete the sign-in.", set_cookies)
                };
            }
            TokenAnswer::Unreadable(_) => {
                log::error!("token endpoint: {answer}");
                return fail(502, "The identity provider's answer could not be read.", set_cookies);
            }
        };
        let Some(keys) = self.providers.at(p).keys.keys().cloned() else {
            return Decision::Respond(unavailable("signing keys are not loaded yet"));
        };
        let id_claims = match login::validate_id_token(
            tokens.id_token.as_deref(),
            &keys,
            &cfg.client_expectations(p),
            Some(&attempt.nonce),
            now,
        ) {
            Ok(c) => c,
            Err(e) => {
                // The provider signs with a key we have not seen yet (it rotated its keys):
                // fetch the key set once, then check this same answer again.
                if e == login::IdTokenError::Jwt(jwt::JwtError::UnknownKeyId) && refetch_allowed {
                    if let Some(fetch) = self.key_fetch_for_unknown_kid(p, "an ID token", now) {
                        let held = HeldAnswer {
                            pending: Pending::Code { login: attempt, state_cookie },
                            status,
                            body: body.to_vec(),
                        };
                        return Decision::FetchKeysForAnswer(fetch, Box::new(held));
                    }
                }
                log::warn!("ID token rejected: {}", e.description());
                return fail(502, "The identity provider's answer could not be verified.", set_cookies);
            }
        };
        let mut data = self.session_from_tokens(
            b,
            p,
            session_scope(&cfg, b, req, p),
            &tokens,
            Some(id_claims),
            None,
            now + b.lifetime_secs,
            now,
            random,
        );
        if relays(b) && (data.at.is_none() || data.rexp.is_none()) {
            log::error!(
                "cannot relay the access token: the token endpoint gave none fit for a header, or no lifetime for it"
            );
            return fail(502, "The identity provider's answer cannot be used for this site.", set_cookies);
        }
        let Some((_, session_cookies)) = self.session_cookies(b, &mut data, &cookies, now) else {
            return fail(500, "The session is too large to be stored.", set_cookies);
        };
        set_cookies.splice(0..0, session_cookies);
        log::info!("login completed");
        let target = if attempt.return_to.starts_with('/') {
            login::safe_return_path(&attempt.return_to)
        } else {
            let own = req.header(":authority").map(crate::policy::host_of).unwrap_or_default();
            login::allowed_return_url(&attempt.return_to, &own, &b.allowed_redirect_domains)
                .unwrap_or_else(|| "/".into())
        };
        Decision::Respond(redirect(&target, set_cookies))
    }
}
