//! `session` and `login`: the browser sign-in — the OIDC authorization-code flow as the
//! provider's client, and gatehouse's session cookie. Configured by a `session` section.

use super::provider::Client;
use super::raw::{RawLogin, RawSession};
use super::validate::{self, Given, Without};
use super::{Env, Errors};
use crate::cookie::Attributes;
use crate::nonempty::NonEmpty;
use crate::secret::Secret;
use crate::session::Sealer;

/// The browser sign-in: the OIDC authorization-code flow and gatehouse's session cookie.
#[derive(Debug, PartialEq, Eq)]
pub struct Browser {
    /// Who gatehouse is at each provider's authorization and token endpoints, in the order of
    /// [`super::Config::providers`].
    pub clients: NonEmpty<ClientCredentials>,
    /// The session cookie's name as sent: `cookieName`, with `__Host-` before it when
    /// `host_prefix`.
    pub cookie_name: String,
    /// The cookies carry the `__Host-` prefix (secure, host-only, path `/`): a sibling
    /// subdomain or a plain-http page cannot set, shadow or fixate them.
    pub host_prefix: bool,
    pub sealer: Sealer,
    pub lifetime_secs: u64,
    pub cookie: Attributes,
    pub keep_id_token: bool,
    /// Keep the refresh token (encrypted) and refresh the session before the access token expires.
    pub refresh: bool,
    pub refresh_before_secs: u64,
    /// `relayAccessToken`: the session's access token goes upstream as `Authorization: Bearer`.
    pub relay_authorization: bool,
    /// `relayAccessToken`: the session's access token goes upstream in these headers too.
    pub relay_headers: Vec<String>,
    pub callback_path: String,
    pub sign_out_path: String,
    /// `login.userinfoPath`: the session's identity as JSON here (`None`: switched off).
    pub userinfo_path: Option<String>,
    /// `login.startPath`: a login towards `?rd=` starts here (`None`: switched off).
    pub start_path: Option<String>,
    /// `login.authPath`: 200 or 401/403 for a subrequest, with the identity headers on 200.
    pub auth_path: Option<String>,
    /// `login.backchannelLogoutPath`: the provider POSTs logout tokens here (`None`: off).
    pub backchannel_logout_path: Option<String>,
    /// A fixed redirect URI; when `None` it is derived from the request's scheme and host.
    pub redirect_uri: Option<String>,
    pub scope: String,
    pub extra_params: Vec<(String, String)>,
    pub client_secret_post: bool,
    pub post_logout_redirect_uri: Option<String>,
    pub login_timeout_secs: u64,
    pub redirect_browsers: bool,
    /// Other hosts a login may return to (`example.com`, or `.example.com` for subdomains), when
    /// a fixed `redirectUri` puts the callback on another host than the page.
    pub allowed_redirect_domains: Vec<String>,
    /// Top-level claims kept in the session: those headers and rules read.
    pub kept_claims: Vec<String>,
}

/// A provider's `clientId` and `clientSecret` (or `clientSecretEnv`).
#[derive(Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: Secret,
}

/// Login parameters gatehouse sets itself.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
];

/// The `session` and `login` sections, with the `provider`'s client they require.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn read(
    s: RawSession,
    l: RawLogin,
    clients: Vec<Client>,
    kept_claims: Vec<String>,
    env: &Env<'_>,
    errors: &mut Errors,
) -> Option<Browser> {
    let providers = clients.len();
    let mut credentials = Vec::new();
    for client in clients {
        if client.id.is_none() {
            errors.add(
                format!("{}.clientId", client.at),
                "required for browser sign-in (a `session` section is configured)",
            );
        }
        if client.secret.is_none() {
            errors.add(
                format!("{}.clientSecret", client.at),
                "required for browser sign-in (set clientSecret or clientSecretEnv)",
            );
        }
        if let (Some(id), Some(secret)) = (client.id, client.secret) {
            credentials.push(ClientCredentials { id, secret });
        }
    }
    let (cookie_name, host_prefix, cookie) = session_cookie(&s, errors);
    let (relay_authorization, relay_headers) = relay(&s, errors);
    let keys = session_keys(s.keys, s.keys_env, env, errors);
    let lifetime_secs = validate::in_range(
        s.lifetime_seconds.unwrap_or(12 * 3600),
        60..=30 * 86_400,
        "session.lifetimeSeconds",
        errors,
    );
    let refresh_before_secs =
        validate::in_range(s.refresh_before_seconds.unwrap_or(30), 0..=3600, "session.refreshBeforeSeconds", errors);
    let Endpoints { callback_path, sign_out_path, userinfo_path, start_path, auth_path, backchannel_logout_path } =
        login_endpoints(&l, errors);
    let mut kept_claims = kept_claims;
    if backchannel_logout_path.is_some() && !kept_claims.iter().any(|c| c == "sid") {
        // A logout token names the provider session it ends: sessions keep theirs.
        kept_claims.push("sid".into());
    }
    let scope = scope(l.scopes, errors);
    let extra_params = extra_params(l.extra_params, errors);
    let client_secret_post = client_secret_post(l.token_endpoint_auth.as_deref(), errors);
    let allowed_redirect_domains = l
        .allowed_redirect_domains
        .iter()
        .enumerate()
        .filter_map(|(i, d)| validate::redirect_domain(d, &format!("login.allowedRedirectDomains[{i}]"), errors))
        .collect();
    let login_timeout_secs =
        validate::in_range(l.timeout_seconds.unwrap_or(600), 30..=3600, "login.timeoutSeconds", errors);
    let clients = NonEmpty::new(credentials).filter(|c| c.len() == providers)?; // recorded above
    Some(Browser {
        clients,
        cookie_name,
        host_prefix,
        sealer: Sealer::new(&keys),
        lifetime_secs,
        cookie,
        keep_id_token: s.keep_id_token.unwrap_or(true),
        refresh: s.refresh.unwrap_or(false),
        refresh_before_secs,
        relay_authorization,
        relay_headers,
        callback_path,
        sign_out_path,
        userinfo_path,
        start_path,
        auth_path,
        backchannel_logout_path,
        redirect_uri: l.redirect_uri,
        scope,
        extra_params,
        client_secret_post,
        post_logout_redirect_uri: l.post_logout_redirect_uri,
        login_timeout_secs,
        redirect_browsers: l.redirect_browsers.unwrap_or(true),
        allowed_redirect_domains,
        kept_claims,
    })
}

/// `relayAccessToken`: `authorization` (as `Bearer`) and other headers, each once; it needs
/// `refresh`, which keeps the relayed token fresh.
#[inline(never)] // configuration code: one copy, not one per caller
fn relay(s: &RawSession, errors: &mut Errors) -> (bool, Vec<String>) {
    let mut authorization = false;
    let mut headers: Vec<String> = Vec::new();
    for (i, name) in s.relay_access_token.iter().enumerate() {
        let field = format!("session.relayAccessToken[{i}]");
        let lower = name.to_ascii_lowercase();
        let seen = if lower == "authorization" {
            std::mem::replace(&mut authorization, true)
        } else {
            let h = validate::header_name(name, &field, errors);
            let seen = headers.contains(&h);
            if !seen {
                headers.push(h);
            }
            seen
        };
        if seen {
            errors.add(field, format!("{lower} is listed twice"));
        }
    }
    if (authorization || !headers.is_empty()) && s.refresh != Some(true) {
        errors.add(
            "session.relayAccessToken",
            "needs session.refresh: true (refreshing the session keeps the relayed access token fresh)",
        );
    }
    (authorization, headers)
}

/// The session cookie: its name as sent, whether it has the `__Host-` prefix, its attributes.
#[inline(never)] // configuration code: one copy, not one per caller
fn session_cookie(s: &RawSession, errors: &mut Errors) -> (String, bool, Attributes) {
    let name = s.cookie_name.clone().unwrap_or_else(|| "_gatehouse".into());
    validate::cookie_name(&name, "session.cookieName", errors);
    let same_site = match s.same_site.as_deref().unwrap_or("Lax") {
        "Lax" | "lax" => "Lax",
        "Strict" | "strict" => "Strict",
        "None" | "none" => "None",
        other => {
            errors.add("session.sameSite", format!("expected Lax, Strict or None, found {other:?}"));
            "Lax"
        }
    };
    let secure = s.secure.unwrap_or(true);
    if same_site == "None" && !secure {
        errors.add("session.sameSite", "SameSite=None requires secure: true (browsers refuse it otherwise)");
    }
    let path = s.path.clone().unwrap_or_else(|| "/".into());
    validate::cookie_path(&path, "session.path", errors);
    // RFC 6265bis §4.1.3: `__Host-` needs Secure, no Domain and Path=/; `__Secure-` needs Secure.
    let prefix_possible = secure && s.domain.is_none() && path == "/";
    let named_host = name.starts_with("__Host-");
    let host_prefix = match s.host_prefix {
        Some(true) if !prefix_possible => {
            errors.add("session.hostPrefix", "the __Host- prefix needs secure: true, no domain and path \"/\"");
            false
        }
        Some(wanted) => wanted || named_host,
        None => prefix_possible || named_host,
    };
    if named_host && !prefix_possible {
        errors.add("session.cookieName", "a __Host- cookie needs secure: true, no domain and path \"/\"");
    }
    if name.starts_with("__Secure-") && !secure {
        errors.add("session.cookieName", "a __Secure- cookie needs secure: true");
    }
    let host_prefix = host_prefix && !name.starts_with("__Secure-");
    let name = if host_prefix && !named_host { format!("__Host-{name}") } else { name };
    if let Some(d) = &s.domain {
        validate::cookie_domain(d, "session.domain", errors);
    }
    (name, host_prefix, Attributes { path, domain: s.domain.clone(), secure, same_site })
}

/// The cookie keys, `keys` or `keysEnv` (comma-separated), newest first; each of 32 bytes or more.
#[inline(never)] // configuration code: one copy, not one per caller
fn session_keys(inline: Option<Vec<String>>, var: Option<String>, env: &Env<'_>, errors: &mut Errors) -> Vec<Secret> {
    let keys: Vec<Secret> = match validate::inline_or_env(inline, var, "session.keys", env, errors) {
        None => Vec::new(),
        Some(Given::Inline(list)) => list.into_iter().map(Secret::new).collect(),
        Some(Given::Env(v)) => v.split(',').map(|k| Secret::new(k.trim().to_string())).collect(),
        Some(Given::Neither) => {
            errors.add("session.keys", "required: at least one cookie key of 32 bytes or more (or keysEnv)");
            Vec::new()
        }
    };
    for (i, k) in keys.iter().enumerate() {
        if k.expose().len() < 32 {
            errors.add(format!("session.keys[{i}]"), format!("expected at least 32 bytes, found {}", k.expose().len()));
        }
    }
    keys
}

/// The paths gatehouse answers itself.
struct Endpoints {
    callback_path: String,
    sign_out_path: String,
    userinfo_path: Option<String>,
    start_path: Option<String>,
    auth_path: Option<String>,
    backchannel_logout_path: Option<String>,
}

/// The endpoint paths — `callbackPath`, `signOutPath`, and `userinfoPath`, `startPath` and
/// `authPath`, which an empty string switches off — all different; and the URIs the provider
/// sends the browser back to: `redirectUri` (on the callback path) and `postLogoutRedirectUri`.
#[inline(never)] // configuration code: one copy, not one per caller
fn login_endpoints(l: &RawLogin, errors: &mut Errors) -> Endpoints {
    let path = |v: &Option<String>, default: &str, field: &str, errors: &mut Errors| {
        let v = v.clone().unwrap_or_else(|| default.into());
        validate::request_path(&v, field, errors);
        v
    };
    let optional = |v: &Option<String>, default: &str, field: &str, errors: &mut Errors| match v.as_deref() {
        Some("") => None,
        _ => Some(path(v, default, field, errors)),
    };
    let callback_path = path(&l.callback_path, "/oauth2/callback", "login.callbackPath", errors);
    let sign_out_path = path(&l.sign_out_path, "/oauth2/sign_out", "login.signOutPath", errors);
    let userinfo_path = optional(&l.userinfo_path, "/oauth2/userinfo", "login.userinfoPath", errors);
    let start_path = optional(&l.start_path, "/oauth2/start", "login.startPath", errors);
    let auth_path = optional(&l.auth_path, "/oauth2/auth", "login.authPath", errors);
    // Off unless set: the provider must be told the URL, and it needs Envoy to hand over the body.
    let backchannel_logout_path = match l.backchannel_logout_path.as_deref() {
        None | Some("") => None,
        Some(_) => Some(path(&l.backchannel_logout_path, "", "login.backchannelLogoutPath", errors)),
    };
    let all = [
        ("login.callbackPath", Some(&callback_path)),
        ("login.signOutPath", Some(&sign_out_path)),
        ("login.userinfoPath", userinfo_path.as_ref()),
        ("login.startPath", start_path.as_ref()),
        ("login.authPath", auth_path.as_ref()),
        ("login.backchannelLogoutPath", backchannel_logout_path.as_ref()),
    ];
    for (i, (field, p)) in all.iter().enumerate() {
        if let Some((other, _)) = all.iter().take(i).find(|(_, q)| p.is_some() && q == p) {
            errors.add(*field, format!("must differ from {other}"));
        }
    }
    if let Some(uri) = &l.redirect_uri {
        let url = validate::http_url(uri, Without::Fragment, "login.redirectUri", errors);
        if let Some(path) = url.as_ref().map(url::Url::path).filter(|p| *p != callback_path) {
            errors.add(
                "login.redirectUri",
                format!("its path must be login.callbackPath ({callback_path}), found {path}"),
            );
        }
    }
    if let Some(uri) = &l.post_logout_redirect_uri {
        validate::http_url(uri, Without::Fragment, "login.postLogoutRedirectUri", errors);
    }
    Endpoints { callback_path, sign_out_path, userinfo_path, start_path, auth_path, backchannel_logout_path }
}

/// `scopes`, space-separated: `openid` among them.
#[inline(never)] // configuration code: one copy, not one per caller
fn scope(scopes: Option<Vec<String>>, errors: &mut Errors) -> String {
    let scopes = scopes.unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        errors.add("login.scopes", "must include \"openid\"");
    }
    for (i, sc) in scopes.iter().enumerate() {
        if sc.is_empty() || sc.contains(' ') || !validate::is_quotable(sc) {
            errors.add(format!("login.scopes[{i}]"), format!("expected a scope token, found {sc:?}"));
        }
    }
    scopes.join(" ")
}

/// `extraParams` of the authorization request: none that gatehouse sets.
#[inline(never)] // configuration code: one copy, not one per caller
fn extra_params(params: Vec<(String, String)>, errors: &mut Errors) -> Vec<(String, String)> {
    for (name, _) in &params {
        if RESERVED_PARAMS.contains(&name.as_str()) || name.is_empty() {
            errors.add(format!("login.extraParams.{name}"), "is set by gatehouse and cannot be overridden");
        }
    }
    params
}

/// `tokenEndpointAuth`: whether the client secret goes in the body (else in `Authorization`).
#[inline(never)] // configuration code: one copy, not one per caller
fn client_secret_post(auth: Option<&str>, errors: &mut Errors) -> bool {
    match auth.unwrap_or("client_secret_basic") {
        "client_secret_basic" => false,
        "client_secret_post" => true,
        other => {
            errors.add(
                "login.tokenEndpointAuth",
                format!("expected client_secret_basic or client_secret_post, found {other:?}"),
            );
            false
        }
    }
}
