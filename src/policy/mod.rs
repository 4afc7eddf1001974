//! Authorization at the edge: public paths, and ordered rules on host, path and method that
//! require groups, roles or claim values. First matching rule wins; a configurable default
//! applies to authenticated requests that match none.

use crate::claims::{values_of, ClaimPath};
use serde_json::Value;

/// A path pattern: exact, or a prefix. A prefix ending in `/` also matches the path without that
/// slash (`/admin/` matches `/admin`), so a rule on a directory cannot be sidestepped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    || (p.len() > 1 && p.ends_with('/') && path == &p[..p.len() - 1])
            }
        }
    }
}

/// A host pattern: an exact name or `*.suffix`, compared case-insensitively without the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(pub String);

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => host == self.0,
        }
    }
}

/// A condition on one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOp {
    /// The claim is a single value whose text is exactly this.
    Equals(String),
    /// The claim is an array with an element equal to this, or a string with this as one of its
    /// space-separated words (OAuth `scope`). Never a substring match.
    Contains(String),
    /// The claim is a single value equal to one of these.
    OneOf(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCondition {
    pub claim: ClaimPath,
    pub op: ClaimOp,
}

impl ClaimCondition {
    fn holds(&self, claims: &Value) -> bool {
        let Some(value) = self.claim.lookup(claims) else {
            return false;
        };
        let single = match value {
            Value::Array(_) | Value::Object(_) | Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        match &self.op {
            ClaimOp::Equals(want) => single.as_deref() == Some(want.as_str()),
            ClaimOp::OneOf(list) => single.is_some_and(|s| list.contains(&s)),
            ClaimOp::Contains(want) => match value {
                Value::Array(_) => values_of(value).iter().any(|v| v == want),
                Value::String(s) => s.split(' ').any(|word| word == want),
                _ => false,
            },
        }
    }
}

/// One authorization rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Any of these hosts (empty: any host).
    pub hosts: Vec<HostPattern>,
    /// Any of these paths (empty: any path).
    pub paths: Vec<PathMatch>,
    /// Any of these methods, upper case (empty: any method).
    pub methods: Vec<String>,
    /// The user must be in one of these groups (empty: no group needed).
    pub groups: Vec<String>,
    /// The user must hold one of these roles (empty: no role needed).
    pub roles: Vec<String>,
    /// Every condition must hold.
    pub claims: Vec<ClaimCondition>,
}

/// The request facts rules match on.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Lower-case host without port.
    pub host: &'a str,
    /// The normalized path (see [`normalize_path`]).
    pub path: &'a str,
    pub method: &'a str,
}

/// The outcome for an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny {
        rule: Option<String>,
        reason: &'static str,
    },
}

/// The ordered rules and where groups and roles are found in the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default_allow: bool,
    pub groups_claim: ClaimPath,
    pub roles_claims: Vec<ClaimPath>,
}

impl Policy {
    /// Evaluates the first rule matching `target` against the claims.
    pub fn evaluate(&self, target: &Target<'_>, claims: &Value) -> Verdict {
        let Some(rule) = self.rules.iter().find(|r| rule_matches(r, target)) else {
            return if self.default_allow {
                Verdict::Allow
            } else {
                Verdict::Deny { rule: None, reason: "no_rule_matched" }
            };
        };
        let deny = |reason| Verdict::Deny { rule: Some(rule.name.clone()), reason };
        if !rule.groups.is_empty() {
            let groups = self.groups_claim.lookup(claims).map(values_of).unwrap_or_default();
            if !rule.groups.iter().any(|want| groups.iter().any(|g| group_matches(want, g))) {
                return deny("group_required");
            }
        }
        if !rule.roles.is_empty() {
            let roles: Vec<String> = self
                .roles_claims
                .iter()
                .filter_map(|p| p.lookup(claims))
                .flat_map(values_of)
                .collect();
            if !rule.roles.iter().any(|want| roles.contains(want)) {
                return deny("role_required");
            }
        }
        if !rule.claims.iter().all(|c| c.holds(claims)) {
            return deny("claim_mismatch");
        }
        Verdict::Allow
    }
}

fn rule_matches(rule: &Rule, t: &Target<'_>) -> bool {
    (rule.hosts.is_empty() || rule.hosts.iter().any(|h| h.matches(t.host)))
        && (rule.paths.is_empty() || rule.paths.iter().any(|p| p.matches(t.path)))
        && (rule.methods.is_empty() || rule.methods.iter().any(|m| m == t.method))
}

/// A configured group matches a token group exactly, or — for a top-level name written without
/// the leading slash — Keycloak's full-path form (`admins` matches `/admins`, not `/x/admins`).
fn group_matches(want: &str, got: &str) -> bool {
    got == want || (!want.starts_with('/') && got.strip_prefix('/') == Some(want))
}

/// A request path made fit for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path: String,
    /// The raw path holds forms that upstreams disagree on (`\`, encoded `/` or `\`, bad
    /// escapes). Such a path never matches a public path.
    pub ambiguous: bool,
}

/// Normalizes a request path: drops the query and fragment, decodes percent-encoded unreserved
/// characters, merges repeated slashes and removes `.`/`..` segments (RFC 3986 §5.2.4, §6.2.2),
/// so that `/public/../admin/` is matched as `/admin/`.
pub fn normalize_path(raw: &str) -> NormalizedPath {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let raw = &raw[..end];
    // Most paths are normal already: nothing to decode, no empty, `.` or `..` segment.
    let plain = raw.starts_with('/')
        && raw.bytes().all(|b| b.is_ascii() && b != b'%' && b != b'\\')
        && !raw.contains("//")
        && !raw.split('/').any(|s| s == "." || s == "..");
    if plain {
        return NormalizedPath { path: raw.to_string(), ambiguous: false };
    }
    normalize_slowly(raw)
}

/// [`normalize_path`] of a path without its query, in full.
fn normalize_slowly(raw: &str) -> NormalizedPath {
    let mut ambiguous = raw.contains('\\') || !raw.starts_with('/');
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => {
                    decoded.push(char::from(v));
                    i += 3;
                    continue;
                }
                Some(v) => {
                    if v == b'/' || v == b'\\' || v == 0 {
                        ambiguous = true;
                    }
                    decoded.push_str(&format!("%{v:02X}"));
                    i += 3;
                    continue;
                }
                None => {
                    ambiguous = true;
                }
            }
        }
        decoded.push(char::from(b));
        i += 1;
    }
    // Non-ASCII bytes were pushed one by one above only if the raw path held them; Envoy rejects
    // such paths, but stay exact: rebuild from the raw text in that case.
    if !raw.is_ascii() {
        ambiguous = true;
        decoded = raw.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if path.is_empty() || (trailing && !out.is_empty()) {
        path.push('/');
    }
    NormalizedPath { path, ambiguous }
}

/// The host of an `:authority`: lower case, without port or trailing dot.
pub fn host_of(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
