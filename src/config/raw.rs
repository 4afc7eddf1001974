//! The configuration as JSON has it: serde types with `camelCase` names and no unknown fields.
//! Each top-level section is read on its own, so that one bad section does not hide the errors
//! of the others.

use super::Errors;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawProvider {
    pub issuer: String,
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    #[serde(default)]
    pub extra_issuers: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTokens {
    pub allowed_algorithms: Option<Vec<String>>,
    pub leeway_seconds: Option<u64>,
    pub forward_authorization: Option<bool>,
    pub payload_header: Option<String>,
    pub realm: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPathMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub case_sensitive: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPublicPath {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub case_sensitive: Option<bool>,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPathNormalization {
    pub normalization: Option<String>,
    pub escaped_slashes: Option<String>,
    pub case_sensitive: Option<bool>,
    pub method_overrides: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawClaimHeader {
    pub header: String,
    pub claim: OneOrMany,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawIdentity {
    pub groups_claim: Option<String>,
    pub roles_claims: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<RawPathMatch>,
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawClaimCondition {
    pub claim: String,
    pub equals: Option<Value>,
    pub contains: Option<Value>,
    pub one_of: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRequire {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub claims: Vec<RawClaimCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub match_: RawMatch,
    #[serde(default)]
    pub require: RawRequire,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTimeouts {
    pub callout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawKeys {
    pub refresh_interval_seconds: Option<u64>,
    pub unknown_kid_min_interval_seconds: Option<u64>,
    pub retry_max_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCache {
    pub tokens: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLogin {
    pub callback_path: Option<String>,
    pub sign_out_path: Option<String>,
    pub redirect_uri: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub extra_params: std::collections::BTreeMap<String, String>,
    pub token_endpoint_auth: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub redirect_browsers: Option<bool>,
    #[serde(default)]
    pub allowed_redirect_domains: Vec<String>,
}

/// The whole configuration.
#[derive(Debug)]
pub struct RawConfig {
    pub provider: RawProvider,
    pub tokens: RawTokens,
    pub public_paths: Vec<RawPublicPath>,
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
}

const SECTIONS: &[&str] = &[
    "provider",
    "tokens",
    "publicPaths",
    "pathNormalization",
    "claimHeaders",
    "identity",
    "rules",
    "defaultAction",
    "timeouts",
    "keys",
    "cache",
    "session",
    "login",
];

impl RawConfig {
    /// Reads every section, recording each section's first structural error with its path.
    pub fn read(doc: &Value, errors: &mut Errors) -> Option<RawConfig> {
        let Some(obj) = doc.as_object() else {
            errors.add("(root)", "expected a JSON object");
            return None;
        };
        for key in obj.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                errors.add(key.clone(), format!("unknown field; expected one of {}", SECTIONS.join(", ")));
            }
        }
        let provider = match obj.get("provider") {
            None => {
                errors.add("provider", "required (issuer and cluster at least)");
                None
            }
            Some(v) => section::<RawProvider>("provider", v, errors),
        };
        let tokens = optional::<RawTokens>(obj, "tokens", errors);
        let public_paths = optional::<Vec<RawPublicPath>>(obj, "publicPaths", errors);
        let path_normalization = optional::<RawPathNormalization>(obj, "pathNormalization", errors);
        let claim_headers = optional::<Option<Vec<RawClaimHeader>>>(obj, "claimHeaders", errors);
        let identity = optional::<RawIdentity>(obj, "identity", errors);
        let rules = optional::<Vec<RawRule>>(obj, "rules", errors);
        let default_action = optional::<Option<String>>(obj, "defaultAction", errors);
        let timeouts = optional::<RawTimeouts>(obj, "timeouts", errors);
        let keys = optional::<RawKeys>(obj, "keys", errors);
        let cache = optional::<RawCache>(obj, "cache", errors);
        let session = optional::<Option<RawSession>>(obj, "session", errors);
        let login = optional::<RawLogin>(obj, "login", errors);
        Some(RawConfig {
            provider: provider?,
            tokens: tokens?,
            public_paths: public_paths?,
            path_normalization: path_normalization?,
            claim_headers: claim_headers?,
            identity: identity?,
            rules: rules?,
            default_action: default_action?,
            timeouts: timeouts?,
            keys: keys?,
            cache: cache?,
            session: session?,
            login: login?,
        })
    }
}

fn optional<T: DeserializeOwned + Default>(
    obj: &serde_json::Map<String, Value>,
    name: &str,
    errors: &mut Errors,
) -> Option<T> {
    match obj.get(name) {
        None => Some(T::default()),
        Some(v) => section(name, v, errors),
    }
}

// One function per section type: inlined into `read`, the thirteen made one 70 KB function
// that took V8's optimizing compiler a tenth of a second at every Envoy start.
#[inline(never)]
fn section<T: DeserializeOwned>(name: &str, value: &Value, errors: &mut Errors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." {
                name.to_string()
            } else {
                format!("{name}{}{inner}", if inner.starts_with('[') { "" } else { "." })
            };
            errors.add(field, e.into_inner().to_string());
            None
        }
    }
}
