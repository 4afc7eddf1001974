use super::*;
use crate::claims::ClaimPath;
use crate::jwt::alg::Alg;
use crate::policy::{ClaimOp, HostPattern};
use crate::secret::Secret;
use serde_json::json;

fn no_env(_: &str) -> Option<String> {
    None
}

fn base() -> Value {
    json!({"provider": {"issuer": "http://127.0.0.1:8180/realms/demo", "cluster": "idp", "clientId": "gateway"}})
}

fn parse(v: &Value) -> Result<Config, ConfigError> {
    Config::parse(v.to_string().as_bytes(), &no_env)
}

/// Sets `pointer` (a JSON pointer) in the base config to `value`.
fn with(pointer: &str, value: Value) -> Value {
    let mut doc = base();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut doc
    } else {
        if doc.pointer(parent).is_none() {
            let (pp, pk) = parent.rsplit_once('/').unwrap();
            doc.pointer_mut(if pp.is_empty() { "" } else { pp }).unwrap()[pk] = json!({});
        }
        doc.pointer_mut(parent).unwrap()
    };
    target[key] = value;
    doc
}

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn with_session(session: Value) -> Value {
    let mut doc = base();
    doc["provider"]["clientSecret"] = json!("s");
    doc["session"] = session;
    doc
}

fn with_login(login: Value) -> Value {
    let mut doc = with_session(json!({"keys": [KEY]}));
    doc["login"] = login;
    doc
}

#[test]
fn browser_defaults_and_full_settings() {
    let c = parse(&with_session(json!({"keys": [KEY]}))).unwrap();
    let b = c.browser.unwrap();
    assert_eq!(b.cookie_name, "__Host-_gatehouse", "secure, host-only and path /: the __Host- prefix");
    assert!(b.host_prefix);
    assert_eq!(b.lifetime_secs, 43_200, "12h, as in seed 002");
    assert_eq!(b.cookie, crate::cookie::Attributes { path: "/".into(), domain: None, secure: true, same_site: "Lax" });
    assert!(b.keep_id_token && !b.refresh && b.redirect_browsers && !b.client_secret_post);
    assert_eq!((b.callback_path.as_str(), b.sign_out_path.as_str()), ("/oauth2/callback", "/oauth2/sign_out"));
    assert_eq!(b.scope, "openid profile email");
    assert_eq!(b.login_timeout_secs, 600);
    assert_eq!(b.kept_claims, vec!["sub", "email", "preferred_username", "groups", "realm_access", "resource_access"]);
    assert!(parse(&base()).unwrap().browser.is_none(), "no session section: API only");

    let env = |name: &str| (name == "KEYS").then(|| format!("{KEY}-new, {KEY}-old"));
    let mut doc = with_session(json!({"keysEnv": "KEYS", "cookieName": "sso", "lifetimeSeconds": 3600, "secure": true,
        "sameSite": "Strict", "domain": "example.com", "path": "/app", "keepIdToken": false, "refresh": true, "refreshBeforeSeconds": 60}));
    doc["login"] = json!({"callbackPath": "/auth/cb", "signOutPath": "/auth/out", "redirectUri": "https://app.example.com/auth/cb",
        "scopes": ["openid", "groups"], "extraParams": {"kc_idp_hint": "entra"}, "tokenEndpointAuth": "client_secret_post",
        "postLogoutRedirectUri": "https://app.example.com/", "timeoutSeconds": 300, "redirectBrowsers": false});
    let c = Config::parse(doc.to_string().as_bytes(), &env).unwrap();
    let b = c.browser.unwrap();
    assert_eq!(
        b.sealer,
        crate::session::Sealer::new(&[Secret::new(format!("{KEY}-new")), Secret::new(format!("{KEY}-old"))])
    );
    assert_eq!(b.extra_params, vec![("kc_idp_hint".to_string(), "entra".to_string())]);
    assert!(b.client_secret_post && b.refresh && !b.keep_id_token && !b.redirect_browsers);
    assert_eq!(b.cookie.same_site, "Strict");
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = parse(&base()).unwrap();
    assert_eq!(c.providers.at(0).issuers, vec!["http://127.0.0.1:8180/realms/demo"]);
    assert_eq!(c.providers.at(0).audiences, vec!["gateway"]);
    assert_eq!(c.providers.at(0).authority, "127.0.0.1:8180");
    assert_eq!(c.providers.at(0).discovery_path, "/realms/demo/.well-known/openid-configuration");
    assert_eq!(c.providers.at(0).keys, KeySource::Discovery);
    assert_eq!(c.tokens.algorithms, Alg::ALL.to_vec());
    assert_eq!(c.tokens.leeway_secs, 30);
    assert!(!c.tokens.forward_authorization);
    assert_eq!(c.tokens.realm, "gatehouse");
    let mut managed = vec![
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-auth-request-roles",
    ];
    managed.extend(crate::config::ROUTING_HEADERS);
    assert_eq!(c.managed_headers, managed);
    assert_eq!(
        c.paths,
        crate::policy::PathSettings {
            normalization: crate::policy::Normalization::MergeSlashes,
            escaped_slashes: crate::policy::EscapedSlashes::RejectRequest
        }
    );
    assert_eq!(
        c.claim_headers[4].claims,
        vec![
            ClaimPath::parse("realm_access.roles").unwrap(),
            ClaimPath::parse("resource_access.gateway.roles").unwrap()
        ]
    );
    assert!(c.policy.default_allow);
    assert_eq!(c.callout_timeout_ms, 5000);
    assert_eq!(
        c.key_timing,
        KeyTiming { refresh_interval: 300, unknown_kid_min_interval: 30, retry_min: 1, retry_max: 30 }
    );
    assert_eq!(c.token_cache_size, 1024);
}

#[test]
fn the_demo_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/wasm-test/configs/demo.json");
    let text = std::fs::read(path).unwrap();
    let c = Config::parse(&text, &no_env).unwrap();
    assert_eq!(c.policy.rules[0].groups, vec!["admins"]);
}

#[test]
fn full_config_with_every_field() {
    let doc = json!({
        "provider": {
            "issuer": "https://sso.example.com/realms/prod", "cluster": "outbound|8080||keycloak.keycloak.svc.cluster.local",
            "authority": "keycloak.keycloak.svc.cluster.local:8080", "clientId": "gateway", "clientSecretEnv": "GW_SECRET",
            "audiences": ["api", "gateway"], "extraIssuers": ["https://sso.internal/realms/prod"],
            "jwksUri": "https://sso.example.com/realms/prod/protocol/openid-connect/certs?x=1"
        },
        "tokens": {"allowedAlgorithms": ["RS256", "ES256"], "leewaySeconds": 10, "forwardAuthorization": true,
                   "payloadHeader": "X-JWT-Payload", "realm": "example"},
        "publicPaths": [{"prefix": "/auth/"}, {"exact": "/healthz"}],
        "claimHeaders": [{"header": "X-User", "claim": "preferred_username"},
                         {"header": "x-roles", "claim": ["realm_access.roles", "resource_access.my\\.client.roles"]}],
        "identity": {"groupsClaim": "groups", "rolesClaims": ["realm_access.roles"]},
        "rules": [
            {"name": "admins", "match": {"hosts": ["*.example.com"], "paths": [{"prefix": "/admin/"}], "methods": ["get", "POST"]},
             "require": {"groups": ["admins"]}},
            {"name": "backend", "match": {"paths": [{"prefix": "/backend/"}]},
             "require": {"roles": ["backendaccess"], "claims": [{"claim": "preferred_username", "equals": "testuser"},
                                                              {"claim": "scope", "contains": "email"},
                                                              {"claim": "level", "oneOf": [1, "2", true]}]}}
        ],
        "defaultAction": "deny",
        "timeouts": {"calloutMs": 2000},
        "keys": {"refreshIntervalSeconds": 600, "unknownKidMinIntervalSeconds": 5, "retryMaxSeconds": 60},
        "cache": {"tokens": 0},
        "session": {"keys": [KEY]}
    });
    let env = |name: &str| (name == "GW_SECRET").then(|| "from-env".to_string());
    let c = Config::parse(doc.to_string().as_bytes(), &env).unwrap();
    assert_eq!(c.browser.as_ref().unwrap().clients.at(0).secret.expose(), "from-env");
    assert_eq!(c.providers.at(0).keys, KeySource::Path("/realms/prod/protocol/openid-connect/certs?x=1".into()));
    assert_eq!(c.providers.at(0).issuers.len(), 2);
    assert_eq!(c.tokens.algorithms, vec![Alg::RS256, Alg::ES256]);
    let mut managed = vec!["x-user", "x-roles", "x-jwt-payload"];
    managed.extend(crate::config::ROUTING_HEADERS);
    assert_eq!(c.managed_headers, managed);
    assert_eq!(c.policy.rules[0].methods, vec!["GET", "POST"]);
    assert_eq!(c.policy.rules[0].hosts, vec![HostPattern::parse("*.example.com").unwrap()]);
    assert_eq!(c.policy.rules[1].claims[2].op, ClaimOp::OneOf(vec!["1".into(), "2".into(), "true".into()]));
    assert!(!c.policy.default_allow);
    assert_eq!(c.token_cache_size, 0);
}

#[test]
fn inline_keys() {
    let key = crate::testutil::TestKey::ec(Alg::ES256).jwk("k1", Alg::ES256);
    let c = parse(&with("/provider/jwks", json!({"keys": [key]}))).unwrap();
    assert!(matches!(c.providers.at(0).keys, KeySource::Inline(ref set) if set.keys.len() == 1));
}

#[test]
fn every_bad_field_is_named() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("not json", Value::Null, "(root)"),
        ("missing provider", json!({}), "provider"),
        ("unknown top-level field", with("/cookie", json!({})), "cookie"),
        ("unknown provider field", with("/provider/issuerUrl", json!("x")), "provider.issuerUrl"),
        ("issuer not a URL", with("/provider/issuer", json!("realms/demo")), "provider.issuer"),
        ("issuer ftp", with("/provider/issuer", json!("ftp://x/realms/demo")), "provider.issuer"),
        ("issuer with query", with("/provider/issuer", json!("https://x/realms/demo?a=1")), "provider.issuer"),
        ("issuer wrong type", with("/provider/issuer", json!(5)), "provider.issuer"),
        ("cluster empty", with("/provider/cluster", json!("")), "provider.cluster"),
        ("authority with space", with("/provider/authority", json!("a b")), "provider.authority"),
        ("client id empty", with("/provider/clientId", json!("")), "provider.clientId"),
        ("secret twice", with("/provider/clientSecretEnv", json!("X")), "provider.clientSecretEnv"),
        ("secret env missing", with("/provider/clientSecretEnv", json!("NOPE")), "provider.clientSecretEnv"),
        ("empty audience", with("/provider/audiences", json!([""])), "provider.audiences[0]"),
        ("no audience", with("/provider/audiences", json!([])), "provider.audiences"),
        (
            "duplicate issuer",
            with("/provider/extraIssuers", json!(["http://127.0.0.1:8180/realms/demo"])),
            "provider.extraIssuers[0]",
        ),
        ("jwksUri bad", with("/provider/jwksUri", json!("ftp://x/certs")), "provider.jwksUri"),
        ("jwks not a set", with("/provider/jwks", json!({"nokeys": []})), "provider.jwks"),
        (
            "jwks no usable key",
            with("/provider/jwks", json!({"keys": [{"kty": "oct", "alg": "HS256", "k": "AA"}]})),
            "provider.jwks",
        ),
        ("alg none", with("/tokens/allowedAlgorithms", json!(["RS256", "none"])), "tokens.allowedAlgorithms[1]"),
        ("alg HS256", with("/tokens/allowedAlgorithms", json!(["HS256"])), "tokens.allowedAlgorithms[0]"),
        ("alg twice", with("/tokens/allowedAlgorithms", json!(["RS256", "RS256"])), "tokens.allowedAlgorithms[1]"),
        ("no algs", with("/tokens/allowedAlgorithms", json!([])), "tokens.allowedAlgorithms"),
        ("leeway too big", with("/tokens/leewaySeconds", json!(3600)), "tokens.leewaySeconds"),
        ("leeway negative", with("/tokens/leewaySeconds", json!(-1)), "tokens.leewaySeconds"),
        ("realm quote", with("/tokens/realm", json!("a\"b")), "tokens.realm"),
        ("payload header bad", with("/tokens/payloadHeader", json!("x y")), "tokens.payloadHeader"),
        ("forward not bool", with("/tokens/forwardAuthorization", json!("yes")), "tokens.forwardAuthorization"),
        ("public path relative", with("/publicPaths", json!([{"prefix": "public/"}])), "publicPaths[0]"),
        ("public path both", with("/publicPaths", json!([{"prefix": "/a/", "exact": "/b"}])), "publicPaths[0]"),
        ("public path none", with("/publicPaths", json!([{}])), "publicPaths[0]"),
        ("public path dotdot", with("/publicPaths", json!([{"prefix": "/a/../b/"}])), "publicPaths[0]"),
        ("public path query", with("/publicPaths", json!([{"exact": "/a?b"}])), "publicPaths[0]"),
        ("preflight path relative", with("/preflightPaths", json!([{"prefix": "api/"}])), "preflightPaths[0]"),
        (
            "preflight path both",
            with("/preflightPaths", json!([{"prefix": "/a/", "exact": "/b"}])),
            "preflightPaths[0]",
        ),
        (
            "preflight path bad host",
            with("/preflightPaths", json!([{"prefix": "/a/", "hosts": ["a b"]}])),
            "preflightPaths[0].hosts[0]",
        ),
        ("preflight paths not a list", with("/preflightPaths", json!({"prefix": "/a/"})), "preflightPaths"),
        ("email without domains", with("/email", json!({"requireVerified": true})), "email.domains"),
        ("email no domain", with("/email", json!({"domains": []})), "email.domains"),
        ("email bad domain", with("/email", json!({"domains": ["example.com", "a b"]})), "email.domains[1]"),
        ("email at domain", with("/email", json!({"domains": ["@example.com"]})), "email.domains[0]"),
        ("email wildcard inside", with("/email", json!({"domains": ["a.*.example"]})), "email.domains[0]"),
        (
            "email verified not bool",
            with("/email", json!({"domains": ["x.example"], "requireVerified": "no"})),
            "email.requireVerified",
        ),
        ("email unknown field", with("/email", json!({"domains": ["x.example"], "domain": "y"})), "email.domain"),
        ("public path unknown key", with("/publicPaths", json!([{"regex": ".*"}])), "publicPaths[0].regex"),
        ("public path escape", with("/publicPaths", json!([{"prefix": "/a%2Fb/"}])), "publicPaths[0]"),
        ("public path backslash", with("/publicPaths", json!([{"prefix": "/a\\b/"}])), "publicPaths[0]"),
        ("public path double slash", with("/publicPaths", json!([{"prefix": "//a/"}])), "publicPaths[0]"),
        (
            "public path host with port",
            with("/publicPaths", json!([{"prefix": "/a/", "hosts": ["a.example:443"]}])),
            "publicPaths[0].hosts[0]",
        ),
        (
            "public path host bad",
            with("/publicPaths", json!([{"prefix": "/a/", "hosts": ["a..example"]}])),
            "publicPaths[0].hosts[0]",
        ),
        (
            "public path case not bool",
            with("/publicPaths", json!([{"prefix": "/a/", "caseSensitive": "no"}])),
            "publicPaths[0].caseSensitive",
        ),
        (
            "normalization unknown",
            with("/pathNormalization", json!({"normalization": "RFC3986"})),
            "pathNormalization.normalization",
        ),
        (
            "escaped slashes unknown",
            with("/pathNormalization", json!({"escapedSlashes": "UNESCAPE_AND_REDIRECT"})),
            "pathNormalization.escapedSlashes",
        ),
        (
            "decode but reject",
            with(
                "/pathNormalization",
                json!({"normalization": "DECODE_AND_MERGE_SLASHES", "escapedSlashes": "REJECT_REQUEST"}),
            ),
            "pathNormalization.escapedSlashes",
        ),
        (
            "path normalization unknown key",
            with("/pathNormalization", json!({"mergeSlashes": true})),
            "pathNormalization.mergeSlashes",
        ),
        (
            "rule host with port",
            with("/rules", json!([{"match": {"hosts": ["a.example:8443"]}}])),
            "rules[0].match.hosts[0]",
        ),
        (
            "rule host wildcard inside",
            with("/rules", json!([{"match": {"hosts": ["a.*.example"]}}])),
            "rules[0].match.hosts[0]",
        ),
        (
            "header reserved",
            with("/claimHeaders", json!([{"header": "Authorization", "claim": "sub"}])),
            "claimHeaders[0].header",
        ),
        (
            "header envoy",
            with("/claimHeaders", json!([{"header": "x-envoy-foo", "claim": "sub"}])),
            "claimHeaders[0].header",
        ),
        (
            "header bad chars",
            with("/claimHeaders", json!([{"header": "x:y", "claim": "sub"}])),
            "claimHeaders[0].header",
        ),
        (
            "header twice",
            with("/claimHeaders", json!([{"header": "x-a", "claim": "sub"}, {"header": "X-A", "claim": "email"}])),
            "claimHeaders[1].header",
        ),
        ("claim path bad", with("/claimHeaders", json!([{"header": "x-a", "claim": "a..b"}])), "claimHeaders[0].claim"),
        ("claim list empty", with("/claimHeaders", json!([{"header": "x-a", "claim": []}])), "claimHeaders[0].claim"),
        ("payload header clash", with("/tokens/payloadHeader", json!("x-auth-request-email")), "tokens.payloadHeader"),
        (
            "non-ASCII issuer host (write it in punycode)",
            with("/provider/issuer", json!("https://k\u{e4}se.example/realms/demo")),
            "provider.issuer",
        ),
        ("groups claim bad", with("/identity/groupsClaim", json!("")), "identity.groupsClaim"),
        ("roles claim bad", with("/identity/rolesClaims", json!(["a."])), "identity.rolesClaims[0]"),
        ("rule name bad", with("/rules", json!([{"name": "a b"}])), "rules[0].name"),
        ("rule name twice", with("/rules", json!([{"name": "a"}, {"name": "a"}])), "rules[1].name"),
        ("rule host bad", with("/rules", json!([{"match": {"hosts": ["a/b"]}}])), "rules[0].match.hosts[0]"),
        ("rule host inner star", with("/rules", json!([{"match": {"hosts": ["a.*.com"]}}])), "rules[0].match.hosts[0]"),
        ("rule path bad", with("/rules", json!([{"match": {"paths": [{"prefix": "x"}]}}])), "rules[0].match.paths[0]"),
        ("rule method bad", with("/rules", json!([{"match": {"methods": ["GE T"]}}])), "rules[0].match.methods[0]"),
        ("rule unknown match field", with("/rules", json!([{"match": {"path": "/x"}}])), "rules[0].match.path"),
        ("rule empty group", with("/rules", json!([{"require": {"groups": [""]}}])), "rules[0].require.groups[0]"),
        ("rule empty role", with("/rules", json!([{"require": {"roles": [""]}}])), "rules[0].require.roles[0]"),
        (
            "claim cond two ops",
            with("/rules", json!([{"require": {"claims": [{"claim": "a", "equals": "x", "contains": "y"}]}}])),
            "rules[0].require.claims[0]",
        ),
        (
            "claim cond no op",
            with("/rules", json!([{"require": {"claims": [{"claim": "a"}]}}])),
            "rules[0].require.claims[0]",
        ),
        (
            "claim cond object",
            with("/rules", json!([{"require": {"claims": [{"claim": "a", "equals": {}}]}}])),
            "rules[0].require.claims[0].equals",
        ),
        (
            "claim cond empty oneOf",
            with("/rules", json!([{"require": {"claims": [{"claim": "a", "oneOf": []}]}}])),
            "rules[0].require.claims[0].oneOf",
        ),
        ("default action", with("/defaultAction", json!("maybe")), "defaultAction"),
        ("timeout small", with("/timeouts/calloutMs", json!(10)), "timeouts.calloutMs"),
        ("refresh small", with("/keys/refreshIntervalSeconds", json!(1)), "keys.refreshIntervalSeconds"),
        (
            "kid interval zero",
            with("/keys/unknownKidMinIntervalSeconds", json!(0)),
            "keys.unknownKidMinIntervalSeconds",
        ),
        ("retry max zero", with("/keys/retryMaxSeconds", json!(0)), "keys.retryMaxSeconds"),
        ("cache huge", with("/cache/tokens", json!(10_000_000)), "cache.tokens"),
        ("cache unknown", with("/cache/sessions", json!(1)), "cache.sessions"),
        ("session without keys", with_session(json!({})), "session.keys"),
        ("session key short", with_session(json!({"keys": ["short"]})), "session.keys[0]"),
        ("session keys twice", with_session(json!({"keys": [KEY], "keysEnv": "K"})), "session.keys"),
        ("session keys env unset", with_session(json!({"keysEnv": "NOPE"})), "session.keysEnv"),
        ("session cookie name dot", with_session(json!({"keys": [KEY], "cookieName": "a.b"})), "session.cookieName"),
        ("session lifetime", with_session(json!({"keys": [KEY], "lifetimeSeconds": 10})), "session.lifetimeSeconds"),
        ("session samesite", with_session(json!({"keys": [KEY], "sameSite": "Sometimes"})), "session.sameSite"),
        (
            "session none insecure",
            with_session(json!({"keys": [KEY], "sameSite": "None", "secure": false})),
            "session.sameSite",
        ),
        ("session path", with_session(json!({"keys": [KEY], "path": "app"})), "session.path"),
        ("session domain", with_session(json!({"keys": [KEY], "domain": "a b"})), "session.domain"),
        (
            "session refresh window",
            with_session(json!({"keys": [KEY], "refreshBeforeSeconds": 99999})),
            "session.refreshBeforeSeconds",
        ),
        ("session unknown", with_session(json!({"keys": [KEY], "cookieSecret": "x"})), "session.cookieSecret"),
        (
            "session needs secret",
            {
                let mut d = with_session(json!({"keys": [KEY]}));
                d["provider"].as_object_mut().unwrap().remove("clientSecret");
                d
            },
            "provider.clientSecret",
        ),
        (
            "session needs client",
            {
                let mut d = with_session(json!({"keys": [KEY]}));
                d["provider"].as_object_mut().unwrap().remove("clientId");
                d["provider"]["audiences"] = json!(["x"]);
                d
            },
            "provider.clientId",
        ),
        ("callback path", with_login(json!({"callbackPath": "callback"})), "login.callbackPath"),
        ("callback path dots", with_login(json!({"callbackPath": "/a/../cb"})), "login.callbackPath"),
        ("sign out same as callback", with_login(json!({"signOutPath": "/oauth2/callback"})), "login.signOutPath"),
        ("userinfo same as sign out", with_login(json!({"userinfoPath": "/oauth2/sign_out"})), "login.userinfoPath"),
        ("userinfo relative", with_login(json!({"userinfoPath": "oauth2/userinfo"})), "login.userinfoPath"),
        ("userinfo not a string", with_login(json!({"userinfoPath": false})), "login.userinfoPath"),
        (
            "relay without refresh",
            with_session(json!({"keys": [KEY], "relayAccessToken": ["authorization"]})),
            "session.relayAccessToken",
        ),
        (
            "relay twice",
            with_session(json!({"keys": [KEY], "refresh": true, "relayAccessToken": ["x-t", "X-T"]})),
            "session.relayAccessToken[1]",
        ),
        (
            "relay a reserved header",
            with_session(json!({"keys": [KEY], "refresh": true, "relayAccessToken": ["cookie"]})),
            "session.relayAccessToken[0]",
        ),
        (
            "relay into a claim header",
            with_session(json!({"keys": [KEY], "refresh": true, "relayAccessToken": ["x-auth-request-email"]})),
            "session.relayAccessToken",
        ),
        (
            "relay not a list",
            with_session(json!({"keys": [KEY], "refresh": true, "relayAccessToken": "authorization"})),
            "session.relayAccessToken",
        ),
        (
            "template with an unknown placeholder",
            with("/pages", json!({"template": "{{action}}{{user}}"})),
            "pages.template",
        ),
        ("template without action", with("/pages", json!({"template": "<p>{{title}}</p>"})), "pages.template"),
        ("template unclosed", with("/pages", json!({"template": "{{action}} {{title"})), "pages.template"),
        (
            "csp with a newline",
            with("/pages", json!({"contentSecurityPolicy": "default-src 'none'\nx: y"})),
            "pages.contentSecurityPolicy",
        ),
        ("start same as userinfo", with_login(json!({"startPath": "/oauth2/userinfo"})), "login.startPath"),
        ("start relative", with_login(json!({"startPath": "start"})), "login.startPath"),
        ("auth same as callback", with_login(json!({"authPath": "/oauth2/callback"})), "login.authPath"),
        ("auth same as start", with_login(json!({"authPath": "/s", "startPath": "/s"})), "login.authPath"),
        ("auth with a query", with_login(json!({"authPath": "/oauth2/auth?x"})), "login.authPath"),
        ("redirect uri relative", with_login(json!({"redirectUri": "/oauth2/callback"})), "login.redirectUri"),
        ("redirect uri other path", with_login(json!({"redirectUri": "https://a.example/cb"})), "login.redirectUri"),
        ("post logout relative", with_login(json!({"postLogoutRedirectUri": "/bye"})), "login.postLogoutRedirectUri"),
        ("scopes without openid", with_login(json!({"scopes": ["email"]})), "login.scopes"),
        ("scope with quote", with_login(json!({"scopes": ["openid", "a\"b"]})), "login.scopes[1]"),
        ("extra param reserved", with_login(json!({"extraParams": {"state": "x"}})), "login.extraParams.state"),
        ("token auth", with_login(json!({"tokenEndpointAuth": "private_key_jwt"})), "login.tokenEndpointAuth"),
        ("login timeout", with_login(json!({"timeoutSeconds": 5})), "login.timeoutSeconds"),
        ("login unknown", with_login(json!({"rd": "x"})), "login.rd"),
        (
            "redirect domain bad",
            with_login(json!({"allowedRedirectDomains": ["*.example.com"]})),
            "login.allowedRedirectDomains[0]",
        ),
        (
            "redirect domain tld",
            with_login(json!({"allowedRedirectDomains": [".com"]})),
            "login.allowedRedirectDomains[0]",
        ),
        (
            "redirect domain idn",
            with_login(json!({"allowedRedirectDomains": ["b\u{fc}cher.example"]})),
            "login.allowedRedirectDomains[0]",
        ),
    ];
    for (name, doc, field) in cases {
        let result = if doc.is_null() { Config::parse(b"{not json", &no_env) } else { parse(&doc) };
        let err = result.err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(err.0.iter().any(|e| e.field == field), "{name}: expected an error on {field}, got:\n{err}");
    }
    // The secret-twice case needs both set.
    let mut both = with("/provider/clientSecretEnv", json!("X"));
    both["provider"]["clientSecret"] = json!("s");
    assert!(parse(&both).unwrap_err().0.iter().any(|e| e.field == "provider.clientSecret"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let doc = json!({
        "provider": {"issuer": "nope", "cluster": ""},
        "tokens": {"leewaySeconds": "x"},
        "rules": [{"name": "a b", "match": {"methods": ["G T"]}}],
        "timeouts": {"calloutMs": 1},
        "extra": 1
    });
    let err = parse(&doc).unwrap_err();
    let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
    for want in ["extra", "tokens.leewaySeconds"] {
        assert!(fields.contains(&want), "{fields:?}");
    }
    // With the structural error fixed, every semantic error shows at once.
    let doc = json!({
        "provider": {"issuer": "nope", "cluster": ""},
        "rules": [{"name": "a b", "match": {"methods": ["G T"]}}],
        "timeouts": {"calloutMs": 1}
    });
    let err = parse(&doc).unwrap_err();
    let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "provider.issuer",
            "provider.cluster",
            "provider.audiences",
            "rules[0].name",
            "rules[0].match.methods[0]",
            "timeouts.calloutMs"
        ]
    );
}

#[test]
fn errors_never_print_secrets() {
    let mut doc = with("/provider/clientSecret", json!("super-secret-value"));
    doc["provider"]["issuer"] = json!("bad");
    doc["provider"]["clientSecretEnv"] = json!("X");
    let text = parse(&doc).unwrap_err().to_string();
    assert!(!text.contains("super-secret-value"), "{text}");
    let c = parse(&with("/provider/clientSecret", json!("super-secret-value"))).unwrap();
    assert!(!format!("{c:?}").contains("super-secret-value"));
}

#[test]
fn path_settings_and_scoped_public_paths() {
    use crate::policy::{EscapedSlashes, Normalization, PathMatch, PathSettings, PublicPath};
    let doc = with("/pathNormalization", json!({"normalization": "DECODE_AND_MERGE_SLASHES", "caseSensitive": false}));
    let c = parse(&doc).unwrap();
    assert_eq!(
        c.paths,
        PathSettings {
            normalization: Normalization::DecodeAndMergeSlashes,
            escaped_slashes: EscapedSlashes::UnescapeAndForward
        }
    );
    let doc = with("/pathNormalization", json!({"normalization": "NONE", "escapedSlashes": "KEEP_UNCHANGED"}));
    assert_eq!(
        parse(&doc).unwrap().paths,
        PathSettings { normalization: Normalization::None, escaped_slashes: EscapedSlashes::KeepUnchanged }
    );
    let mut doc = with("/pathNormalization", json!({"caseSensitive": false}));
    doc["publicPaths"] =
        json!([{"prefix": "/Status/", "hosts": ["Status.Example."]}, {"exact": "/Health", "caseSensitive": true}]);
    doc["rules"] = json!([{"match": {"paths": [{"prefix": "/Admin/"}]}}]);
    let c = parse(&doc).unwrap();
    assert_eq!(
        c.policy.public_paths,
        vec![
            PublicPath {
                path: PathMatch::prefix("/Status/").ignoring_case(),
                hosts: vec![crate::policy::HostPattern::parse("status.example").unwrap()]
            },
            PublicPath { path: PathMatch::exact("/Health"), hosts: vec![] },
        ]
    );
    assert_eq!(c.policy.rules[0].paths, vec![PathMatch::prefix("/admin/").ignoring_case()]);
}

#[test]
fn host_prefix_whenever_it_is_valid() {
    let name = |session: Value| parse(&with_session(session)).map(|c| c.browser.unwrap().cookie_name);
    assert_eq!(name(json!({"keys": [KEY]})).unwrap(), "__Host-_gatehouse");
    assert_eq!(name(json!({"keys": [KEY], "cookieName": "sid"})).unwrap(), "__Host-sid");
    assert_eq!(name(json!({"keys": [KEY], "cookieName": "__Host-sid"})).unwrap(), "__Host-sid", "not twice");
    assert_eq!(name(json!({"keys": [KEY], "hostPrefix": false})).unwrap(), "_gatehouse");
    assert_eq!(name(json!({"keys": [KEY], "secure": false})).unwrap(), "_gatehouse", "plain http cannot use it");
    assert_eq!(
        name(json!({"keys": [KEY], "domain": "example.com"})).unwrap(),
        "_gatehouse",
        "shared across subdomains"
    );
    assert_eq!(name(json!({"keys": [KEY], "path": "/app/"})).unwrap(), "_gatehouse");
    assert_eq!(name(json!({"keys": [KEY], "cookieName": "__Secure-sid"})).unwrap(), "__Secure-sid");
    let field = |session: Value| {
        parse(&with_session(session)).unwrap_err().0.iter().map(|e| e.field.clone()).collect::<Vec<_>>()
    };
    assert_eq!(field(json!({"keys": [KEY], "hostPrefix": true, "domain": "example.com"})), vec!["session.hostPrefix"]);
    assert_eq!(field(json!({"keys": [KEY], "cookieName": "__Host-sid", "secure": false})), vec!["session.cookieName"]);
    assert_eq!(
        field(json!({"keys": [KEY], "cookieName": "__Secure-sid", "secure": false})),
        vec!["session.cookieName"]
    );
}

#[test]
fn structural_errors_name_the_field_and_say_what_was_found() {
    let message = |doc: &Value, field: &str| -> String {
        let err = parse(doc).unwrap_err();
        err.0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
            .unwrap_or_else(|| panic!("no error on {field}: {err}"))
    };
    assert_eq!(
        message(&with("/tokens/leewaySeconds", json!("x")), "tokens.leewaySeconds"),
        "expected a whole number, 0 or more, found a string"
    );
    assert_eq!(
        message(&with("/tokens/leewaySeconds", json!(-1)), "tokens.leewaySeconds"),
        "expected a whole number, 0 or more, found an integer"
    );
    assert_eq!(
        message(&with("/tokens/leewaySeconds", json!(1.5)), "tokens.leewaySeconds"),
        "expected a whole number, 0 or more, found a number with a fraction"
    );
    assert_eq!(
        message(&with("/tokens/forwardAuthorization", json!("yes")), "tokens.forwardAuthorization"),
        "expected true or false, found a string"
    );
    assert_eq!(
        message(&with("/provider/audiences", json!(["a", 5])), "provider.audiences[1]"),
        "expected a string, found an integer"
    );
    assert_eq!(
        message(&with("/provider/audiences", json!("a")), "provider.audiences"),
        "expected a list of strings, found a string"
    );
    assert_eq!(
        message(
            &with("/rules", json!([{"match": {"paths": [{"prefix": "/a", "regex": "x"}]}}])),
            "rules[0].match.paths[0].regex"
        ),
        "unknown field; expected one of exact, prefix, caseSensitive"
    );
    assert_eq!(message(&with("/rules", json!({"name": "a"})), "rules"), "expected a list, found an object");
    assert_eq!(message(&with("/tokens", json!([1])), "tokens"), "expected a JSON object, found a list");
    assert_eq!(
        message(&with("/login", json!({"extraParams": {"prompt": 1}})), "login.extraParams.prompt"),
        "expected a string, found an integer"
    );
    let mut no_issuer = base();
    no_issuer["provider"].as_object_mut().unwrap().remove("issuer");
    assert_eq!(message(&no_issuer, "provider.issuer"), "required");
    assert_eq!(message(&json!([1]), "(root)"), "expected a JSON object, found a list");
    // Several structural errors in one section are all reported.
    let err = parse(&with("/tokens", json!({"leewaySeconds": "x", "realm": 1, "foo": true}))).unwrap_err();
    let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["tokens.leewaySeconds", "tokens.realm", "tokens.foo"]);
    // JSON null is the same as leaving a field out.
    assert!(parse(&with("/tokens", json!({"leewaySeconds": null}))).is_ok());
    assert!(parse(&with("/session", Value::Null)).is_ok());
}

#[test]
fn several_providers_each_with_their_issuers_hosts_and_client() {
    let a = json!({"issuer": "https://sso.test/realms/a", "cluster": "kc", "clientId": "gw-a", "clientSecret": "sa",
                   "hosts": ["a.test", "*.a.test"]});
    let b = json!({"issuer": "https://sso.test/realms/b", "cluster": "kc", "clientId": "gw-b", "clientSecret": "sb",
                   "extraIssuers": ["https://sso.internal/realms/b"]});
    let c = parse(&json!({"providers": [a, b], "session": {"keys": [KEY]}})).unwrap();
    assert_eq!(c.providers.len(), 2);
    assert_eq!(c.providers.at(1).discovery_path, "/realms/b/.well-known/openid-configuration");
    let clients: Vec<&str> = c.browser.as_ref().unwrap().clients.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(clients, vec!["gw-a", "gw-b"]);
    assert_eq!(c.provider_of_issuer("https://sso.internal/realms/b"), Some(1));
    assert_eq!(c.provider_of_issuer("https://sso.test/realms/c"), None);
    // Default roles: the realm's, and each client's.
    for client in ["gw-a", "gw-b"] {
        let path = ClaimPath::from_segments(["resource_access", client, "roles"]);
        assert!(c.policy.roles_claims.contains(&path), "{client}");
    }
    // Hosts: by name, then the longest `*.` pattern, then the provider that lists none.
    for (host, want) in [("a.test", Some(0)), ("x.y.a.test", Some(0)), ("b.test", Some(1)), ("xa.test", Some(1))] {
        assert_eq!(c.provider_for_host(host), want, "{host}");
    }
    let c = parse(&json!({"providers": [
        {"issuer": "https://sso.test/realms/a", "cluster": "kc", "audiences": ["x"], "hosts": ["*.test"]},
        {"issuer": "https://sso.test/realms/b", "cluster": "kc", "audiences": ["x"], "hosts": ["*.b.test", "a.b.test"]},
        {"issuer": "https://sso.test/realms/c", "cluster": "kc", "audiences": ["x"], "hosts": ["c.b.test"]}
    ]}))
    .unwrap();
    for (host, want) in [("a.test", Some(0)), ("x.b.test", Some(1)), ("a.b.test", Some(1)), ("c.b.test", Some(2))] {
        assert_eq!(c.provider_for_host(host), want, "{host}");
    }
    assert_eq!(c.provider_for_host("other.example"), None, "every provider lists its hosts");
    // One provider with hosts signs in only those.
    let one = with("/provider/hosts", json!(["app.test"]));
    let c = parse(&one).unwrap();
    assert_eq!((c.provider_for_host("app.test"), c.provider_for_host("other.test")), (Some(0), None));
}

#[test]
fn several_providers_bad_fields_are_named() {
    let p = |realm: &str, extra: Value| {
        let mut v = json!({"issuer": format!("https://sso.test/realms/{realm}"), "cluster": "kc", "clientId": "gw",
                           "clientSecret": "s"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("both forms", json!({"provider": p("a", json!({})), "providers": [p("b", json!({}))]}), "providers"),
        ("none", json!({"providers": []}), "providers"),
        ("not a list", json!({"providers": {}}), "providers"),
        (
            "bad item",
            json!({"providers": [p("a", json!({"hosts": ["a.test"]})), p("b", json!({"cluster": ""}))]}),
            "providers[1].cluster",
        ),
        (
            "one issuer twice",
            json!({"providers": [p("a", json!({"hosts": ["a.test"]})), p("b", json!({"extraIssuers": ["https://sso.test/realms/a"]}))]}),
            "providers[1].issuer",
        ),
        (
            "one host twice",
            json!({"providers": [p("a", json!({"hosts": ["a.test"]})), p("b", json!({"hosts": ["b.test", "a.test"]}))]}),
            "providers[1].hosts",
        ),
        ("two without hosts", json!({"providers": [p("a", json!({})), p("b", json!({}))]}), "providers[1].hosts"),
        ("bad host", json!({"providers": [p("a", json!({"hosts": ["a.test:443"]}))]}), "providers[0].hosts[0]"),
        (
            "no secret for sign-in",
            json!({"providers": [p("a", json!({"hosts": ["a.test"]})), p("b", json!({"clientSecret": null}))], "session": {"keys": [KEY]}}),
            "providers[1].clientSecret",
        ),
        ("unknown field", json!({"providers": [p("a", json!({"host": ["a.test"]}))]}), "providers[0].host"),
    ];
    for (name, doc, field) in cases {
        let err = parse(&doc).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(err.0.iter().any(|e| e.field == field), "{name}: expected an error on {field}, got:\n{err}");
    }
}
