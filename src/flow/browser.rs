//! The browser side of the decision: the session cookie, starting a login, the callback, and
//! signing out. Pure like the rest of `flow`: calls to the provider are returned as
//! [`Decision::CallIdp`] and their answers come back through [`Engine::on_idp_answer`].

use crate::policy::host_of;
use super::{authorize, identity_of, managed_headers_present, unauthorized, unavailable, Decision, Engine, Identity, Request, Response, View};
use crate::cache::TokenHash;
use crate::cache::token_hash;
use crate::config::{Browser, Config};
use crate::cookie;
use crate::jwt::{self, Expectations};
use crate::oidc::login::{self, AuthorizeRequest, LoginState, TokenResponse};
use crate::session::Purpose;
use crate::stats::{Counter, DenyReason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::rc::Rc;

/// A call to the provider's token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct IdpCall {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub pending: Pending,
}

/// A provider answer kept while the key set is fetched (see [`Decision::FetchKeysForAnswer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeldAnswer {
    pub pending: Pending,
    pub status: Option<u32>,
    pub body: Vec<u8>,
}

/// What a provider call was for.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Redeeming an authorization code; the login attempt and its cookie's name.
    Code { login: LoginState, state_cookie: String },
    /// Refreshing a session: its cookie, the cookie's hash (how other workers name it), and
    /// its identity.
    Refresh { cookie: Rc<str>, hash: TokenHash, old: Rc<Identity> },
}

/// The result of looking at a request's session cookie.
pub enum SessionOutcome {
    /// A valid session, its cookie (chunks joined), and whether the request carries only
    /// gatehouse's cookies (then the upstream gets no `Cookie` header at all).
    Valid { identity: Rc<Identity>, cookie: String, only_ours: bool },
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
    /// The claims headers and rules read (top-level members only).
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
    /// Where the session is valid (see [`session_scope`]); a session without one is refused.
    #[serde(default)]
    pub scope: String,
}

/// A session's data, kept with its identity.
pub type SessionInfo = SessionData;

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
    /// Another worker already refreshed this session: take its result (if the note is about this
    /// cookie and still fresh) and go on with the held request.
    pub fn adopt_peer_refresh(&mut self, note: &RefreshNote, pending: &Pending, req: &Request<'_>, now: u64) -> Option<Decision> {
        let Pending::Refresh { cookie: old_cookie, hash, .. } = pending else { return None };
        if note.old != *hash || now >= note.until {
            return None;
        }
        let cfg = Rc::clone(&self.config);
        let b = cfg.browser.as_ref()?;
        let data: SessionData = serde_json::from_slice(&b.sealer.open(Purpose::Session, &note.cookie)?).ok()?;
        if now >= data.exp {
            return None;
        }
        let set_cookies = cookie::set_chunked(&b.cookie_name, &note.cookie, &b.cookie, data.exp.saturating_sub(now), &request_cookies(req))?;
        let identity = Rc::new(session_identity_of(&cfg, data));
        self.refreshing.remove(hash);
        self.refreshed.insert(old_cookie, note.until, Rc::new((Rc::clone(&identity), set_cookies.clone())), now);
        log::debug!("session refreshed by another worker");
        Some(self.forward_session(req, None, &identity, set_cookies, false))
    }
}

/// The identity of a session's data.
fn session_identity_of(cfg: &Config, data: SessionData) -> Identity {
    let mut identity = identity_of(cfg, Value::Object(data.claims.clone()), None);
    identity.session = Some(data);
    identity
}

/// What a session is valid for: the cookie's `domain` when one is set (its subdomains share the
/// session), else the exact host; and the cookie's path. Sealed into the session and checked on
/// every request, so that a session made for one site is refused on another that shares the
/// cookie key (one gateway serving several hosts, or a key reused across gateways).
fn session_scope(b: &Browser, req: &Request<'_>) -> String {
    let site = match &b.cookie.domain {
        Some(domain) => domain.trim_start_matches('.').to_ascii_lowercase(),
        None => host_of(req.header(":authority").unwrap_or("")),
    };
    format!("{site}|{}", b.cookie.path)
}

/// Whether a cookie is one of gatehouse's: the session (or one of its chunks) or a login's state.
fn is_ours(b: &Browser, name: &str) -> bool {
    name == b.cookie_name || name.strip_prefix(b.cookie_name.as_str()).is_some_and(|rest| rest.starts_with('.') || rest.starts_with("_st_"))
}

/// The cookies of a request.
fn request_cookies<'a>(req: &Request<'a>) -> Vec<(&'a str, &'a str)> {
    cookie::parse(req.headers.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_str()))
}

/// The state cookie's name for a `state` value (one cookie per login attempt, so that logins in
/// several tabs do not overwrite each other).
fn state_cookie_name(b: &Browser, state: &str) -> Option<String> {
    let id = state.get(..16)?;
    id.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        .then(|| format!("{}_st_{id}", b.cookie_name))
}

fn state_attrs(b: &Browser) -> cookie::Attributes {
    // Lax even if the session is Strict: the callback is a cross-site navigation from the provider.
    // Under the `__Host-` prefix the path must be `/`; otherwise only the callback needs them.
    cookie::Attributes {
        path: if b.host_prefix { "/".into() } else { b.callback_path.clone() },
        domain: b.cookie.domain.clone(),
        secure: b.cookie.secure,
        same_site: "Lax",
    }
}

/// Is this a page navigation by a browser (which may be sent to a login page), rather than an
/// API or XHR call (which gets a 401)?
fn is_navigation(req: &Request<'_>) -> bool {
    let method = req.header(":method").unwrap_or("GET");
    if method != "GET" && method != "HEAD" {
        return false;
    }
    if req.header("x-requested-with").is_some() {
        return false;
    }
    match req.header("sec-fetch-mode") {
        Some(mode) => mode == "navigate",
        None => req.header("accept").is_some_and(|a| a.contains("text/html")),
    }
}

/// `scheme://authority` of the request, for a derived redirect URI.
fn origin(req: &Request<'_>) -> Option<String> {
    let authority = req.header(":authority")?;
    if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
        return None;
    }
    let scheme = match req.header("x-forwarded-proto").or(req.header(":scheme")) {
        Some("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{authority}"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A small error page with a way to try again.
pub(crate) fn error_page(status: u32, title: &str, message: &str, retry: &str, set_cookies: Vec<String>) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body>\
         <h1>{t}</h1><p>{m}</p><p><a href=\"{r}\">Try again</a></p></body></html>",
        t = html_escape(title),
        m = html_escape(message),
        r = html_escape(retry),
    );
    let mut headers = vec![
        ("content-type".to_string(), "text/html; charset=utf-8".to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Response { status, headers, body }
}

fn redirect(location: &str, set_cookies: Vec<String>) -> Response {
    let mut headers = vec![
        ("location".to_string(), location.to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Response { status: 302, headers, body: String::new() }
}

fn query_params(raw_path: &str) -> Vec<(String, String)> {
    raw_path
        .split_once('?')
        .map(|(_, q)| url::form_urlencoded::parse(q.split('#').next().unwrap_or("").as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

impl Engine {
    /// The identity of the request's session cookie, if valid.
    pub fn session_identity(&mut self, req: &Request<'_>, now: u64) -> SessionOutcome {
        let cfg = Rc::clone(&self.config);
        let Some(b) = &cfg.browser else {
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
                return SessionOutcome::Refreshed { identity, set_cookies };
            }
        }
        let identity = match self.cache.get(&value, now) {
            Some(identity) => identity,
            None => {
                let data = b
                    .sealer
                    .open(Purpose::Session, &value)
                    .and_then(|json| serde_json::from_slice::<SessionData>(&json).ok());
                let Some(data) = data.filter(|d| now < d.exp) else {
                    log::info!("session cookie rejected (invalid, expired or signed with a retired key)");
                    return SessionOutcome::None { had_cookie: true };
                };
                let identity = Rc::new(session_identity_of(&cfg, data));
                let until = identity.session.as_ref().map_or(now, |d| d.exp);
                self.cache.insert(&value, until, Rc::clone(&identity), now);
                identity
            }
        };
        // Checked on cache hits too: the cache is keyed by the cookie alone.
        let scope = session_scope(b, req);
        if identity.session.as_ref().is_none_or(|d| d.scope != scope) {
            log::info!("session cookie rejected (made for another site)");
            return SessionOutcome::None { had_cookie: true };
        }
        let only_ours = cookies.iter().all(|(name, _)| is_ours(b, name));
        SessionOutcome::Valid { identity, cookie: value, only_ours }
    }

    /// Forwards a request authenticated by a session: gatehouse's cookies are taken out of the
    /// `Cookie` header (the upstream does not need them), then the rules apply.
    /// `only_ours`: the caller saw that every cookie of the request is gatehouse's (saves
    /// reading a large `Cookie` header again); `false` if not known.
    /// `view`: the request as [`View::read`] saw it, or `None` to read it again (a request
    /// held for a callout).
    pub(super) fn forward_session(&mut self, req: &Request<'_>, view: Option<&View>, identity: &Identity, set_cookies: Vec<String>, only_ours: bool) -> Decision {
        let cfg = Rc::clone(&self.config);
        let cfg = &cfg;
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(cfg, None));
        };
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
            cookie::raw_pairs_except(req.headers.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_str()), |name| is_ours(b, name))
        };
        let mut set = Vec::new();
        if rest.is_empty() {
            remove.push("cookie".into());
        } else {
            set.push((Rc::from("cookie"), Rc::from(rest.join("; "))));
        }
        authorize(cfg, &mut self.stats, req, view, identity, remove, set, set_cookies)
    }

    /// A refresh call for this session if it is due and none is running.
    pub(super) fn refresh_due(&mut self, identity: &Rc<Identity>, cookie: String, now: u64) -> Option<Decision> {
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
        let refresh_token = b.sealer.decrypt(rt).and_then(|p| String::from_utf8(p).ok())?;
        let (client_id, secret) = client_credentials(&cfg);
        let form = login::refresh_request(&refresh_token, client_id, secret, b.client_secret_post);
        let call = self.token_call(form, Pending::Refresh { cookie: Rc::from(cookie), hash, old: Rc::clone(identity) })?;
        if self.refreshing.len() > 4096 {
            self.refreshing.retain(|_, until| now < *until);
        }
        self.refreshing.insert(hash, now + 2 * cfg.callout_timeout_ms.div_ceil(1000) + 1);
        log::debug!("refreshing a session");
        Some(call)
    }

    /// A POST of `form` (body, client `Authorization`) to the provider's token endpoint.
    fn token_call(&self, (body, auth): (String, Option<String>), pending: Pending) -> Option<Decision> {
        let path = self.keys.discovery.as_ref().and_then(|d| d.token_endpoint.as_deref()).and_then(path_of)?;
        let mut headers = vec![
            ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if let Some(auth) = auth {
            headers.push(("authorization".to_string(), auth));
        }
        Some(Decision::CallIdp(Box::new(IdpCall { path, headers, body, pending })))
    }

    /// No valid credentials: a login redirect for a browser navigation, else 401.
    pub(super) fn unauthenticated(
        &mut self,
        req: &Request<'_>,
        now: u64,
        had_cookie: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
        let cfg = Rc::clone(&self.config);
        match &cfg.browser {
            Some(b) if b.redirect_browsers && is_navigation(req) => {
                let r = self.start_login(&cfg, b, req, now, had_cookie, random);
                self.stats.count(if r.status == 302 { Counter::LoginStarted } else { Counter::Denied(DenyReason::Unavailable) });
                Decision::Respond(r)
            }
            _ => {
                self.stats.count(Counter::Denied(DenyReason::Unauthenticated));
                Decision::Respond(unauthorized(&cfg, None))
            }
        }
    }

    fn start_login(
        &self,
        cfg: &Config,
        b: &Browser,
        req: &Request<'_>,
        now: u64,
        had_cookie: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Response {
        let mut return_to = login::safe_return_path(req.header(":path").unwrap_or("/"));
        let Some(endpoint) = self.keys.discovery.as_ref().and_then(|d| d.authorization_endpoint.clone()) else {
            log::warn!("cannot start a login: the provider's discovery document is not loaded");
            return error_page(503, "Sign-in unavailable", "The identity provider cannot be reached right now. Please try again in a moment.", &return_to, Vec::new());
        };
        let redirect_uri = match &b.redirect_uri {
            Some(u) => u.clone(),
            None => match origin(req) {
                Some(o) => format!("{o}{}", b.callback_path),
                None => return error_page(400, "Bad request", "The request has no usable host.", "/", Vec::new()),
            },
        };
        // A fixed redirect URI on another host: come back to this host with an absolute URL, if
        // it is allowed (checked again at the callback).
        if let (Some(fixed), Some(here)) = (&b.redirect_uri, origin(req)) {
            let callback_origin = url::Url::parse(fixed).ok().map(|u| u.origin().ascii_serialization());
            if callback_origin.as_deref() != Some(here.as_str()) {
                let callback_host = url::Url::parse(fixed).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
                if let Some(abs) = login::allowed_return_url(&format!("{here}{return_to}"), &callback_host, &b.allowed_redirect_domains) {
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
            return error_page(500, "Sign-in failed", "Could not start the sign-in.", &return_to, Vec::new());
        };
        let challenge = login::pkce_challenge(&verifier);
        let client_id = cfg.provider.client_id.as_deref().unwrap_or_default();
        let url = login::authorize_url(&AuthorizeRequest {
            endpoint: &endpoint,
            client_id,
            redirect_uri: &redirect_uri,
            scope: &b.scope,
            state: &state,
            nonce: &nonce,
            code_challenge: &challenge,
            extra: &b.extra_params,
        });
        let attempt = LoginState { state, nonce, verifier, return_to: return_to.clone(), redirect_uri, exp: now + b.login_timeout_secs };
        let sealed = serde_json::to_vec(&attempt).ok().and_then(|json| b.sealer.seal(Purpose::LoginState, &json));
        let (Some(url), Some(sealed)) = (url, sealed) else {
            log::error!("cannot build the authorization request (authorization_endpoint {endpoint:.100})");
            return error_page(502, "Sign-in unavailable", "The identity provider's configuration is not usable.", &return_to, Vec::new());
        };
        let mut cookies = vec![cookie::set_cookie(&cookie_name, &sealed, &state_attrs(b), Some(b.login_timeout_secs))];
        if had_cookie {
            cookies.extend(cookie::delete_chunked(&b.cookie_name, &b.cookie, &request_cookies(req)));
        }
        log::debug!("starting a login");
        redirect(&url, cookies)
    }

    /// The provider sent the browser back: check the state, then redeem the code.
    pub(super) fn callback(&mut self, req: &Request<'_>, now: u64) -> Decision {
        let d = self.check_callback(req, now);
        if let Decision::Respond(_) = d {
            self.stats.count(Counter::LoginFailed);
        }
        d
    }

    fn check_callback(&mut self, req: &Request<'_>, now: u64) -> Decision {
        let cfg = Rc::clone(&self.config);
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let params = query_params(req.header(":path").unwrap_or("/"));
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let cookies = request_cookies(req);
        let state_cookie = param("state").and_then(|s| state_cookie_name(b, s));
        let clear_state = || match &state_cookie {
            Some(name) if cookie::get(&cookies, name).is_some() => vec![cookie::set_cookie(name, "", &state_attrs(b), Some(0))],
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
            return Decision::Respond(error_page(status, "Sign-in failed", &message, &retry, clear_state()));
        }
        let Some(attempt) = attempt else {
            log::warn!("callback rejected: state missing, unknown, expired or not matching its cookie");
            return Decision::Respond(error_page(
                400,
                "Sign-in expired",
                "This sign-in could not be matched to your browser: it expired, was already used, or cookies are blocked.",
                "/",
                clear_state(),
            ));
        };
        // RFC 9207: an `iss` in the response must be our provider's (mix-up defence).
        if let Some(iss) = param("iss") {
            if iss != cfg.provider.issuer {
                log::warn!("callback rejected: iss parameter names another issuer");
                return Decision::Respond(error_page(400, "Sign-in failed", "The response came from an unexpected identity provider.", &retry, clear_state()));
            }
        }
        let Some(code) = param("code").filter(|c| !c.is_empty() && c.len() <= 4096) else {
            return Decision::Respond(error_page(400, "Sign-in failed", "The identity provider's response has no authorization code.", &retry, clear_state()));
        };
        let (client_id, secret) = client_credentials(&cfg);
        let form = login::token_request(code, &attempt.redirect_uri, &attempt.verifier, client_id, secret, b.client_secret_post);
        let cleared = clear_state();
        let pending = Pending::Code { login: attempt, state_cookie: state_cookie.unwrap_or_default() };
        self.token_call(form, pending).unwrap_or_else(|| {
            Decision::Respond(error_page(503, "Sign-in unavailable", "The identity provider cannot be reached right now.", &retry, cleared))
        })
    }

    /// The provider's answer to a call made for a [`Decision::CallIdp`]. `status` is `None` if
    /// the call failed (connection failure, timeout).
    /// `refetch_allowed`: whether an ID token naming an unknown `kid` may hold the answer for a
    /// key-set fetch ([`Decision::FetchKeysForAnswer`]); false when the answer comes back after one.
    #[allow(clippy::too_many_arguments)]
    pub fn on_idp_answer(
        &mut self,
        pending: Pending,
        req: &Request<'_>,
        status: Option<u32>,
        body: &[u8],
        now: u64,
        refetch_allowed: bool,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Decision {
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
            Pending::Refresh { cookie, hash, old } => self.finish_refresh(&cookie, hash, &old, req, status, body, now, random),
        }
    }

    /// Builds session data from a token response. `previous` is the session being refreshed.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn session_from_tokens(
        &self,
        b: &Browser,
        scope: String,
        tokens: &TokenResponse,
        id_claims: Option<Value>,
        previous: Option<&SessionData>,
        exp: u64,
        now: u64,
        random: &mut dyn FnMut(&mut [u8]),
    ) -> SessionData {
        let cfg = &self.config;
        let client_id = cfg.provider.client_id.clone().unwrap_or_default();
        // Keycloak puts roles in the access token, not the ID token: take them from there when
        // the access token is a JWT that verifies for this client.
        let audiences = [client_id];
        let expect = Expectations { issuers: &cfg.provider.issuers, audiences: &audiences, algorithms: &cfg.tokens.algorithms, leeway_secs: cfg.tokens.leeway_secs };
        let access = self.keys.keys().and_then(|keys| jwt::verify(&tokens.access_token, keys, &expect, now).ok());
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
        if let Some(prev) = previous {
            for (k, v) in &prev.claims {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let claims: Map<String, Value> = merged.into_iter().filter(|(k, _)| b.kept_claims.contains(k)).collect();
        let (rt, rexp) = if b.refresh {
            let rt = match &tokens.refresh_token {
                Some(token) => {
                    let mut nonce = [0u8; 12];
                    random(&mut nonce);
                    b.sealer.encrypt(token.as_bytes(), nonce)
                }
                None => previous.and_then(|p| p.rt.clone()),
            };
            let rexp = tokens.expires_in.map(|s| now.saturating_add(s)).or(access_exp);
            (rt, rexp)
        } else {
            (None, None)
        };
        let idt = if b.keep_id_token { tokens.id_token.clone().or_else(|| previous.and_then(|p| p.idt.clone())) } else { None };
        SessionData { exp, claims, idt, rt, rexp, scope }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_login(
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
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let cookies = request_cookies(req);
        let mut set_cookies = vec![cookie::set_cookie(&state_cookie, "", &state_attrs(b), Some(0))];
        let retry = attempt.return_to.clone();
        let fail = |status: u32, message: &str, set_cookies: Vec<String>| Decision::Respond(error_page(status, "Sign-in failed", message, &retry, set_cookies));
        match status {
            None => {
                log::error!("token endpoint unreachable (timeout)");
                return Decision::Respond(error_page(503, "Sign-in unavailable", "The identity provider cannot be reached right now. Please try again in a moment.", &retry, set_cookies));
            }
            // 5xx: the provider failing, or Envoy's own 503 when it cannot connect to it (a
            // callout gets that as an answer, not as a failure). Transient: try again later.
            Some(code) if code >= 500 => {
                log::error!("token endpoint unavailable: HTTP {code}");
                return Decision::Respond(error_page(503, "Sign-in unavailable", "The identity provider cannot be reached right now. Please try again in a moment.", &retry, set_cookies));
            }
            Some(200) => {}
            Some(code) => {
                let error = login::token_error(body).unwrap_or_else(|| "-".into());
                log::warn!("token endpoint answered HTTP {code} ({error})");
                return if error == "invalid_grant" {
                    fail(400, "The sign-in could not be completed: the authorization code expired or was already used.", set_cookies)
                } else {
                    fail(502, "The identity provider refused to complete the sign-in.", set_cookies)
                };
            }
        }
        let tokens = match TokenResponse::parse(body) {
            Ok(t) => t,
            Err(e) => {
                log::error!("token endpoint: {e}");
                return fail(502, "The identity provider's answer could not be read.", set_cookies);
            }
        };
        let Some(keys) = self.keys.keys().cloned() else {
            return Decision::Respond(unavailable("signing keys are not loaded yet"));
        };
        let client_id = cfg.provider.client_id.clone().unwrap_or_default();
        let id_claims = match login::validate_id_token(
            tokens.id_token.as_deref(),
            &keys,
            &cfg.provider.issuers,
            &client_id,
            &cfg.tokens.algorithms,
            cfg.tokens.leeway_secs,
            Some(&attempt.nonce),
            now,
        ) {
            Ok(c) => c,
            Err(login::IdTokenError::Jwt(jwt::JwtError::UnknownKeyId)) if refetch_allowed => {
                // The provider signs with a key we have not seen yet (it rotated its keys):
                // fetch the key set once, then check this same answer again.
                if let Some(fetch) = self.keys.unknown_kid(now) {
                    log::info!("ID token names an unknown key id; fetching the key set");
                    let held = HeldAnswer { pending: Pending::Code { login: attempt, state_cookie }, status, body: body.to_vec() };
                    return Decision::FetchKeysForAnswer(fetch, Box::new(held));
                }
                log::warn!("ID token rejected: {}", jwt::JwtError::UnknownKeyId.description());
                return fail(502, "The identity provider's answer could not be verified.", set_cookies);
            }
            Err(e) => {
                log::warn!("ID token rejected: {}", e.description());
                return fail(502, "The identity provider's answer could not be verified.", set_cookies);
            }
        };
        let mut data = self.session_from_tokens(b, session_scope(b, req), &tokens, Some(id_claims), None, now + b.lifetime_secs, now, random);
        let Some((_, session_cookies)) = self.session_cookies(b, &mut data, &cookies, now) else {
            return fail(500, "The session is too large to be stored.", set_cookies);
        };
        set_cookies.splice(0..0, session_cookies);
        log::info!("login completed");
        let target = if attempt.return_to.starts_with('/') {
            login::safe_return_path(&attempt.return_to)
        } else {
            let own = req.header(":authority").map(crate::policy::host_of).unwrap_or_default();
            login::allowed_return_url(&attempt.return_to, &own, &b.allowed_redirect_domains).unwrap_or_else(|| "/".into())
        };
        Decision::Respond(redirect(&target, set_cookies))
    }

    /// Seals session data into `Set-Cookie` values (chunked if large). If the ID token makes the
    /// session too large, it is left out (sign-out then names the client instead).
    fn session_cookies(&self, b: &Browser, data: &mut SessionData, request_cookies: &[(&str, &str)], now: u64) -> Option<(String, Vec<String>)> {
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

    #[allow(clippy::too_many_arguments)]
    fn finish_refresh(
        &mut self,
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
            engine.forward_session(req, None, old, Vec::new(), false)
        };
        match status {
            None => return transient(self, "provider unreachable"),
            Some(code) if code >= 500 => return transient(self, &format!("HTTP {code}")),
            Some(200) => {}
            Some(code) => {
                // invalid_grant and friends: the refresh token was revoked or expired. The
                // session is over; a page is sent round once to start a new login.
                self.refreshing.remove(&hash);
                self.cache.clear();
                self.stats.count(Counter::RefreshFailed);
                let error = login::token_error(body).unwrap_or_else(|| "-".into());
                log::info!("session refresh refused (HTTP {code}, {error}); session ended");
                let set_cookies = cookie::delete_chunked(&b.cookie_name, &b.cookie, &cookies);
                return if is_navigation(req) {
                    Decision::Respond(redirect(&login::safe_return_path(req.header(":path").unwrap_or("/")), set_cookies))
                } else {
                    let mut r = unauthorized(&cfg, None);
                    r.headers.extend(set_cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
                    Decision::Respond(r)
                };
            }
        }
        let tokens = match TokenResponse::parse(body) {
            Ok(t) => t,
            Err(e) => return transient(self, &e),
        };
        let client_id = cfg.provider.client_id.clone().unwrap_or_default();
        let id_claims = match (&tokens.id_token, self.keys.keys()) {
            (Some(idt), Some(keys)) => {
                match login::validate_id_token(Some(idt), keys, &cfg.provider.issuers, &client_id, &cfg.tokens.algorithms, cfg.tokens.leeway_secs, None, now) {
                    // OIDC Core §12.2: the refreshed ID token is about the same user.
                    Ok(c) if c.get("sub") == previous.claims.get("sub") => Some(c),
                    Ok(_) => return transient(self, "refreshed ID token names another subject"),
                    Err(e) => return transient(self, e.description()),
                }
            }
            _ => None,
        };
        let mut data = self.session_from_tokens(b, session_scope(b, req), &tokens, id_claims, Some(previous), previous.exp, now, random);
        let Some((sealed, set_cookies)) = self.session_cookies(b, &mut data, &cookies, now) else {
            return transient(self, "session too large");
        };
        let identity = Rc::new(session_identity_of(&cfg, data));
        self.refreshing.remove(&hash);
        // Other workers' VMs may see the old cookie too: publish the outcome for them.
        self.refresh_outbox.push(RefreshNote { old: hash, until: now + 60, cookie: sealed });
        self.stats.count(Counter::Refreshed);
        // Requests still carrying the old cookie (other tabs, requests in flight) get the new
        // session for a minute instead of refreshing again with a rotated-out token.
        self.refreshed.insert(old_cookie, now + 60, Rc::new((Rc::clone(&identity), set_cookies.clone())), now);
        log::debug!("session refreshed");
        self.forward_session(req, None, &identity, set_cookies, false)
    }

    /// Signs out: clears gatehouse's cookies and sends the browser to the provider's logout.
    /// Cross-site requests only get a confirmation form (logout CSRF).
    pub(super) fn sign_out(&mut self, req: &Request<'_>) -> Decision {
        let cfg = Rc::clone(&self.config);
        let Some(b) = &cfg.browser else {
            return Decision::Respond(unauthorized(&cfg, None));
        };
        let method = req.header(":method").unwrap_or("GET");
        if method != "GET" && method != "POST" {
            return Decision::Respond(Response { status: 405, headers: vec![("allow".into(), "GET, POST".into())], body: String::new() });
        }
        let cookies = request_cookies(req);
        let token = sign_out_token(b, cookie::get_chunked(&cookies, &b.cookie_name).as_deref());
        if !sign_out_is_ours(req, &token) {
            // A form the user submits themselves, carrying a token a cross-site page cannot
            // know: neither a cross-site request nor one from a browser that sends no
            // `Sec-Fetch-Site` (older ones) signs anybody out unasked.
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign out</title></head><body>\
                 <h1>Sign out?</h1><form method=\"post\" action=\"{}?csrf={token}\"><button type=\"submit\">Sign out</button></form></body></html>",
                html_escape(&b.sign_out_path)
            );
            return Decision::Respond(Response {
                status: 200,
                headers: vec![
                    ("content-type".into(), "text/html; charset=utf-8".into()),
                    ("cache-control".into(), "no-store".into()),
                    ("content-security-policy".into(), "frame-ancestors 'none'".into()),
                    ("x-frame-options".into(), "DENY".into()),
                    ("referrer-policy".into(), "no-referrer".into()),
                ],
                body,
            });
        }
        let id_token = cookie::get_chunked(&cookies, &b.cookie_name)
            .and_then(|v| b.sealer.open(Purpose::Session, &v))
            .and_then(|json| serde_json::from_slice::<SessionData>(&json).ok())
            .and_then(|d| d.idt);
        let mut set_cookies = cookie::delete_chunked(&b.cookie_name, &b.cookie, &cookies);
        let state_prefix = format!("{}_st_", b.cookie_name);
        for (name, _) in &cookies {
            if name.starts_with(&state_prefix) {
                set_cookies.push(cookie::set_cookie(name, "", &state_attrs(b), Some(0)));
            }
        }
        let end_session = self.keys.discovery.as_ref().and_then(|d| d.end_session_endpoint.clone());
        let location = match end_session.and_then(|e| url::Url::parse(&e).ok()) {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(hint) = &id_token {
                        q.append_pair("id_token_hint", hint);
                    }
                    if let Some(client) = &cfg.provider.client_id {
                        q.append_pair("client_id", client);
                    }
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
fn sign_out_token(b: &Browser, session: Option<&str>) -> String {
    let digest = Sha256::digest(session.unwrap_or("-").as_bytes());
    let sealed = b.sealer.seal(Purpose::SignOut, &digest).unwrap_or_default();
    // The MAC part only: `v1.<kid>.<payload>.<mac>`.
    sealed.rsplit('.').next().unwrap_or_default().to_string()
}

/// Constant-time equality of two secrets of public length (ring's helper for this is deprecated,
/// and a crate for six lines is not worth its weight).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A sign-out the user asked for on this site: the form's token, or a browser saying so —
/// `Sec-Fetch-Site: same-origin` (or `none`: typed, bookmarked) with no foreign `Origin`, or
/// (browsers without fetch metadata) a POST whose `Origin` is this site. Anything else, and a
/// request that says nothing, is in doubt: the stricter answer is the confirmation form.
fn sign_out_is_ours(req: &Request<'_>, token: &str) -> bool {
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

/// The client id and secret (validated present when a `session` is configured).
fn client_credentials(cfg: &Config) -> (&str, &str) {
    (
        cfg.provider.client_id.as_deref().unwrap_or_default(),
        cfg.provider.client_secret.as_ref().map(|s| s.expose()).unwrap_or_default(),
    )
}

/// The path and query of an absolute URL (callouts go to the cluster, not the URL's host).
fn path_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    })
}
