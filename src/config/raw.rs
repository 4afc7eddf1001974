//! The configuration as JSON has it, read from `serde_json::Value` by hand: `camelCase` names,
//! no unknown fields, every error named by its path (`rules[2].match.paths[0].prefix`). Each
//! top-level section is read on its own, so that one bad section does not hide the errors of
//! the others, and within a section every field is checked.
//!
//! Why by hand and not with serde's derive: the derived deserializers, with
//! `serde_path_to_error` to name the failing field, were ~110 KB of the module (a tenth of it)
//! and a fifth of the time V8 takes to compile it at every Envoy start, for code that runs once
//! per configuration. The reader below is a few kilobytes.

use super::Errors;
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct RawProvider {
    pub issuer: String,
    pub cluster: String,
    pub authority: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub extra_issuers: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<Value>,
    /// The browser hosts this provider signs in (`*.example.com` for subdomains).
    pub hosts: Vec<String>,
}

/// The `email` section (absent: no email rule).
#[derive(Debug)]
pub struct RawEmail {
    pub domains: Option<Vec<String>>,
    pub require_verified: Option<bool>,
}

#[derive(Debug, Default)]
pub struct RawTokens {
    pub allowed_algorithms: Option<Vec<String>>,
    pub leeway_seconds: Option<u64>,
    pub forward_authorization: Option<bool>,
    pub payload_header: Option<String>,
    pub realm: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawPathMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub case_sensitive: Option<bool>,
}

#[derive(Debug, Default)]
pub struct RawPublicPath {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub case_sensitive: Option<bool>,
    pub hosts: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RawPathNormalization {
    pub normalization: Option<String>,
    pub escaped_slashes: Option<String>,
    pub case_sensitive: Option<bool>,
    pub method_overrides: Option<bool>,
}

#[derive(Debug)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug)]
pub struct RawClaimHeader {
    pub header: String,
    pub claim: OneOrMany,
}

#[derive(Debug, Default)]
pub struct RawIdentity {
    pub groups_claim: Option<String>,
    pub roles_claims: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct RawMatch {
    pub hosts: Vec<String>,
    pub paths: Vec<RawPathMatch>,
    pub methods: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RawClaimCondition {
    pub claim: String,
    pub equals: Option<Value>,
    pub contains: Option<Value>,
    pub one_of: Option<Vec<Value>>,
}

#[derive(Debug, Default)]
pub struct RawRequire {
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub claims: Vec<RawClaimCondition>,
}

#[derive(Debug)]
pub struct RawRule {
    pub name: Option<String>,
    pub match_: RawMatch,
    pub require: RawRequire,
}

#[derive(Debug, Default)]
pub struct RawTimeouts {
    pub callout_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawKeys {
    pub refresh_interval_seconds: Option<u64>,
    pub unknown_kid_min_interval_seconds: Option<u64>,
    pub retry_max_seconds: Option<u64>,
}

#[derive(Debug, Default)]
pub struct RawCache {
    pub tokens: Option<usize>,
}

#[derive(Debug, Default)]
pub struct RawSession {
    pub cookie_name: Option<String>,
    pub host_prefix: Option<bool>,
    pub keys: Option<Vec<String>>,
    pub keys_env: Option<String>,
    pub lifetime_seconds: Option<u64>,
    pub secure: Option<bool>,
    pub same_site: Option<String>,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub keep_id_token: Option<bool>,
    pub refresh: Option<bool>,
    pub refresh_before_seconds: Option<u64>,
    pub relay_access_token: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RawLogin {
    pub callback_path: Option<String>,
    pub sign_out_path: Option<String>,
    pub userinfo_path: Option<String>,
    pub start_path: Option<String>,
    pub auth_path: Option<String>,
    pub backchannel_logout_path: Option<String>,
    pub redirect_uri: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// In key order (a JSON object's names are unique; serde_json keeps them sorted).
    pub extra_params: Vec<(String, String)>,
    pub token_endpoint_auth: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub redirect_browsers: Option<bool>,
    pub allowed_redirect_domains: Vec<String>,
}

/// The whole configuration.
#[derive(Debug)]
pub struct RawConfig {
    /// `provider`, or each of `providers`: the field path it was read at, and the section.
    pub providers: Vec<(String, RawProvider)>,
    pub tokens: RawTokens,
    pub public_paths: Vec<RawPublicPath>,
    pub preflight_paths: Vec<RawPublicPath>,
    pub email: Option<RawEmail>,
    pub path_normalization: RawPathNormalization,
    pub claim_headers: Option<Vec<RawClaimHeader>>,
    pub identity: RawIdentity,
    pub rules: Vec<RawRule>,
    pub default_action: Option<String>,
    pub timeouts: RawTimeouts,
    pub keys: RawKeys,
    pub cache: RawCache,
    pub session: Option<RawSession>,
    pub login: RawLogin,
    pub pages: RawPages,
}

#[derive(Debug, Default)]
pub struct RawPages {
    pub template: Option<String>,
    pub content_security_policy: Option<String>,
}

impl RawConfig {
    /// Reads every section, recording each structural error with its path; `None` if there was
    /// any (the semantic checks then do not run).
    #[inline(never)] // see `build` in config/mod.rs
    pub fn read(doc: &Value, errors: &mut Errors) -> Option<RawConfig> {
        let before = errors.0.len();
        let mut root = Obj::new(String::new(), doc, errors)?;
        let providers = match (root.field("provider"), root.field("providers")) {
            (Some(_), Some(_)) => {
                root.errors.add("providers", "set either provider (one) or providers (several), not both");
                None
            }
            (None, None) => {
                root.errors.add("provider", "required (issuer and cluster at least; or a list under providers)");
                None
            }
            (Some(v), None) => {
                Obj::read(root.path("provider"), v, root.errors, provider).map(|p| vec![("provider".into(), p)])
            }
            (None, Some(v)) => {
                let path = root.path("providers");
                list_of(path.clone(), v, root.errors, provider).map(|list| {
                    list.into_iter().enumerate().map(|(i, p)| (format!("{path}[{i}]"), p)).collect::<Vec<_>>()
                })
            }
        };
        let tokens = root.section("tokens", tokens);
        let public_paths = root.list("publicPaths", public_path);
        let preflight_paths = root.list("preflightPaths", public_path);
        let email = root.field("email").and_then(|v| {
            Obj::read(root.path("email"), v, root.errors, |o| RawEmail {
                domains: o.strings("domains"),
                require_verified: o.bool("requireVerified"),
            })
        });
        let path_normalization = root.section("pathNormalization", path_normalization);
        let claim_headers = root.field("claimHeaders").map(|v| {
            let path = root.path("claimHeaders");
            list_of(path, v, root.errors, claim_header)
        });
        let identity = root.section("identity", identity);
        let rules = root.list("rules", rule);
        let default_action = root.string("defaultAction");
        let timeouts = root.section("timeouts", |o| RawTimeouts { callout_ms: o.u64("calloutMs") });
        let keys = root.section("keys", |o| RawKeys {
            refresh_interval_seconds: o.u64("refreshIntervalSeconds"),
            unknown_kid_min_interval_seconds: o.u64("unknownKidMinIntervalSeconds"),
            retry_max_seconds: o.u64("retryMaxSeconds"),
        });
        let cache = root.section("cache", |o| RawCache {
            tokens: o.u64("tokens").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        });
        let session = root.field("session").and_then(|v| Obj::read(root.path("session"), v, root.errors, session));
        let login = root.section("login", login);
        let pages = root.section("pages", |o| RawPages {
            template: o.string("template"),
            content_security_policy: o.string("contentSecurityPolicy"),
        });
        root.finish();
        if errors.0.len() > before {
            return None;
        }
        Some(RawConfig {
            providers: providers?,
            tokens,
            public_paths,
            preflight_paths,
            email,
            path_normalization,
            claim_headers: claim_headers.flatten(),
            identity,
            rules,
            default_action,
            timeouts,
            keys,
            cache,
            session,
            login,
            pages,
        })
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn provider(o: &mut Obj<'_, '_>) -> RawProvider {
    RawProvider {
        issuer: o.required_string("issuer"),
        cluster: o.required_string("cluster"),
        authority: o.string("authority"),
        client_id: o.string("clientId"),
        client_secret: o.string("clientSecret"),
        client_secret_env: o.string("clientSecretEnv"),
        audiences: o.strings("audiences"),
        extra_issuers: o.strings("extraIssuers").unwrap_or_default(),
        jwks_uri: o.string("jwksUri"),
        jwks: o.value("jwks"),
        hosts: o.strings("hosts").unwrap_or_default(),
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn tokens(o: &mut Obj<'_, '_>) -> RawTokens {
    RawTokens {
        allowed_algorithms: o.strings("allowedAlgorithms"),
        leeway_seconds: o.u64("leewaySeconds"),
        forward_authorization: o.bool("forwardAuthorization"),
        payload_header: o.string("payloadHeader"),
        realm: o.string("realm"),
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn path_match(o: &mut Obj<'_, '_>) -> RawPathMatch {
    RawPathMatch { exact: o.string("exact"), prefix: o.string("prefix"), case_sensitive: o.bool("caseSensitive") }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn public_path(o: &mut Obj<'_, '_>) -> RawPublicPath {
    RawPublicPath {
        exact: o.string("exact"),
        prefix: o.string("prefix"),
        case_sensitive: o.bool("caseSensitive"),
        hosts: o.strings("hosts").unwrap_or_default(),
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn path_normalization(o: &mut Obj<'_, '_>) -> RawPathNormalization {
    RawPathNormalization {
        normalization: o.string("normalization"),
        escaped_slashes: o.string("escapedSlashes"),
        case_sensitive: o.bool("caseSensitive"),
        method_overrides: o.bool("methodOverrides"),
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn claim_header(o: &mut Obj<'_, '_>) -> RawClaimHeader {
    let header = o.required_string("header");
    let claim = match o.field("claim") {
        Some(Value::String(s)) => OneOrMany::One(s.clone()),
        Some(v @ Value::Array(_)) => {
            let path = o.path("claim");
            OneOrMany::Many(strings_of(path, v, o.errors).unwrap_or_default())
        }
        Some(other) => {
            let path = o.path("claim");
            o.errors.add(path, format!("expected a claim name or a list of them, found {}", kind(other)));
            OneOrMany::Many(Vec::new())
        }
        None => {
            o.missing("claim");
            OneOrMany::Many(Vec::new())
        }
    };
    RawClaimHeader { header, claim }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn identity(o: &mut Obj<'_, '_>) -> RawIdentity {
    RawIdentity { groups_claim: o.string("groupsClaim"), roles_claims: o.strings("rolesClaims") }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn rule(o: &mut Obj<'_, '_>) -> RawRule {
    RawRule {
        name: o.string("name"),
        match_: o.section("match", |m| RawMatch {
            hosts: m.strings("hosts").unwrap_or_default(),
            paths: m.list("paths", path_match),
            methods: m.strings("methods").unwrap_or_default(),
        }),
        require: o.section("require", |r| RawRequire {
            groups: r.strings("groups").unwrap_or_default(),
            roles: r.strings("roles").unwrap_or_default(),
            claims: r.list("claims", |c| RawClaimCondition {
                claim: c.required_string("claim"),
                equals: c.value("equals"),
                contains: c.value("contains"),
                one_of: c.field("oneOf").and_then(|v| match v {
                    Value::Array(items) => Some(items.clone()),
                    other => {
                        let path = c.path("oneOf");
                        c.errors.add(path, format!("expected a list, found {}", kind(other)));
                        None
                    }
                }),
            }),
        }),
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn session(o: &mut Obj<'_, '_>) -> RawSession {
    RawSession {
        cookie_name: o.string("cookieName"),
        host_prefix: o.bool("hostPrefix"),
        keys: o.strings("keys"),
        keys_env: o.string("keysEnv"),
        lifetime_seconds: o.u64("lifetimeSeconds"),
        secure: o.bool("secure"),
        same_site: o.string("sameSite"),
        domain: o.string("domain"),
        path: o.string("path"),
        keep_id_token: o.bool("keepIdToken"),
        refresh: o.bool("refresh"),
        refresh_before_seconds: o.u64("refreshBeforeSeconds"),
        relay_access_token: o.strings("relayAccessToken").unwrap_or_default(),
    }
}

#[inline(never)] // one function per section: see `build` in config/mod.rs
fn login(o: &mut Obj<'_, '_>) -> RawLogin {
    RawLogin {
        callback_path: o.string("callbackPath"),
        sign_out_path: o.string("signOutPath"),
        userinfo_path: o.string("userinfoPath"),
        start_path: o.string("startPath"),
        auth_path: o.string("authPath"),
        backchannel_logout_path: o.string("backchannelLogoutPath"),
        redirect_uri: o.string("redirectUri"),
        scopes: o.strings("scopes"),
        extra_params: o.string_map("extraParams"),
        token_endpoint_auth: o.string("tokenEndpointAuth"),
        post_logout_redirect_uri: o.string("postLogoutRedirectUri"),
        timeout_seconds: o.u64("timeoutSeconds"),
        redirect_browsers: o.bool("redirectBrowsers"),
        allowed_redirect_domains: o.strings("allowedRedirectDomains").unwrap_or_default(),
    }
}

/// What a JSON value is, for error messages.
#[inline(never)]
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number with a fraction",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A list of strings at `path`; records an error (and gives `None`) for anything else.
#[inline(never)]
fn strings_of(path: String, v: &Value, errors: &mut Errors) -> Option<Vec<String>> {
    let Value::Array(items) = v else {
        errors.add(path, format!("expected a list of strings, found {}", kind(v)));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => out.push(s.clone()),
            other => {
                errors.add(format!("{path}[{i}]"), format!("expected a string, found {}", kind(other)));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A list of objects at `path`, each read by `item`; `None` (recorded) if it is not a list.
fn list_of<T>(path: String, v: &Value, errors: &mut Errors, item: impl Fn(&mut Obj<'_, '_>) -> T) -> Option<Vec<T>> {
    let Value::Array(items) = v else {
        errors.add(path, format!("expected a list, found {}", kind(v)));
        return None;
    };
    Some(items.iter().enumerate().filter_map(|(i, x)| Obj::read(format!("{path}[{i}]"), x, errors, &item)).collect())
}

/// One JSON object being read: where it is, which of its fields were asked for (any other is
/// an unknown field), and where errors go.
struct Obj<'a, 'e> {
    at: String,
    map: &'a Map<String, Value>,
    asked: Vec<&'static str>,
    errors: &'e mut Errors,
}

impl<'a, 'e> Obj<'a, 'e> {
    /// `v` as an object at `at` (`""` for the root); records an error if it is not one.
    fn new(at: String, v: &'a Value, errors: &'e mut Errors) -> Option<Obj<'a, 'e>> {
        match v {
            Value::Object(map) => Some(Obj { at, map, asked: Vec::new(), errors }),
            other => {
                let field = if at.is_empty() { "(root)".to_string() } else { at };
                errors.add(field, format!("expected a JSON object, found {}", kind(other)));
                None
            }
        }
    }

    /// Reads `v` as an object with `read`, then checks it has no unknown fields.
    fn read<T>(at: String, v: &Value, errors: &mut Errors, read: impl FnOnce(&mut Obj<'_, '_>) -> T) -> Option<T> {
        let mut o = Obj::new(at, v, errors)?;
        let out = read(&mut o);
        o.finish();
        Some(out)
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn path(&self, name: &str) -> String {
        if self.at.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.at)
        }
    }

    /// The field's value; JSON `null` counts as absent.
    #[inline(never)] // config code runs once: one copy, not one per field
    fn field(&mut self, name: &'static str) -> Option<&'a Value> {
        self.asked.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn missing(&mut self, name: &str) {
        let path = self.path(name);
        self.errors.add(path, "required");
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn wrong(&mut self, name: &str, expected: &str, found: &Value) {
        let path = self.path(name);
        self.errors.add(path, format!("expected {expected}, found {}", kind(found)));
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn string(&mut self, name: &'static str) -> Option<String> {
        match self.field(name)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong(name, "a string", other);
                None
            }
        }
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn required_string(&mut self, name: &'static str) -> String {
        match self.string(name) {
            Some(s) => s,
            None => {
                if self.map.get(name).is_none_or(Value::is_null) {
                    self.missing(name);
                }
                String::new()
            }
        }
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn bool(&mut self, name: &'static str) -> Option<bool> {
        match self.field(name)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong(name, "true or false", other);
                None
            }
        }
    }

    /// A whole number ≥ 0 (istiod renders numbers as doubles, but whole ones without a fraction).
    #[inline(never)] // config code runs once: one copy, not one per field
    fn u64(&mut self, name: &'static str) -> Option<u64> {
        let v = self.field(name)?;
        match v.as_u64() {
            Some(n) => Some(n),
            None => {
                self.wrong(name, "a whole number, 0 or more", v);
                None
            }
        }
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn strings(&mut self, name: &'static str) -> Option<Vec<String>> {
        let v = self.field(name)?;
        strings_of(self.path(name), v, self.errors)
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn value(&mut self, name: &'static str) -> Option<Value> {
        self.field(name).cloned()
    }

    #[inline(never)] // config code runs once: one copy, not one per field
    fn string_map(&mut self, name: &'static str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(v) = self.field(name) else { return out };
        let Value::Object(map) = v else {
            self.wrong(name, "an object of strings", v);
            return out;
        };
        for (k, item) in map {
            match item {
                Value::String(s) => {
                    out.push((k.clone(), s.clone()));
                }
                other => {
                    let path = format!("{}.{k}", self.path(name));
                    self.errors.add(path, format!("expected a string, found {}", kind(other)));
                }
            }
        }
        out
    }

    /// An optional object field read by `read`; its default when absent (or not an object,
    /// which is recorded).
    fn section<T: Default>(&mut self, name: &'static str, read: impl FnOnce(&mut Obj<'_, '_>) -> T) -> T {
        match self.field(name) {
            None => T::default(),
            Some(v) => {
                let path = self.path(name);
                Obj::read(path, v, self.errors, read).unwrap_or_default()
            }
        }
    }

    /// An optional list of objects, each read by `item`.
    fn list<T>(&mut self, name: &'static str, item: impl Fn(&mut Obj<'_, '_>) -> T) -> Vec<T> {
        match self.field(name) {
            None => Vec::new(),
            Some(v) => {
                let path = self.path(name);
                list_of(path, v, self.errors, item).unwrap_or_default()
            }
        }
    }

    /// Records every field that was not asked for (the fields asked for, in the order they were,
    /// are the object's known fields).
    #[inline(never)] // config code runs once: one copy, not one per field
    fn finish(self) {
        for key in self.map.keys() {
            if !self.asked.contains(&key.as_str()) {
                let path = self.path(key);
                self.errors.add(path, format!("unknown field; expected one of {}", self.asked.join(", ")));
            }
        }
    }
}
