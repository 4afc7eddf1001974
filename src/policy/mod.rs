//! Authorization at the edge: public paths, and ordered rules on host, path and method that
//! require groups, roles or claim values. First matching rule wins; a configurable default
//! applies to authenticated requests that match none. A request is routed once, before any
//! credential is looked at, over every reading of it an upstream could make ([`Policy::route`]),
//! and must pass the rules of every one of them.

use crate::claims::{values_of, ClaimPath};
use serde_json::Value;

pub mod host;
pub mod path;

pub use host::{canonical_host, host_of, HostError, HostPattern};
pub use path::{EscapedSlashes, Normalization, PathError, PathSettings, RequestPath};

/// A path pattern: exact, or a prefix. A prefix ending in `/` also matches the path without that
/// slash (`/admin/` matches `/admin`), so a rule on a directory cannot be sidestepped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    pub kind: PathKind,
    /// In normal form (checked by the config); lower case when not `case_sensitive`.
    pub value: String,
    /// `false`: ASCII letters match in either case (upstreams that route case-insensitively).
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Exact,
    Prefix,
}

impl PathMatch {
    pub fn exact(value: &str) -> PathMatch {
        PathMatch { kind: PathKind::Exact, value: value.to_string(), case_sensitive: true }
    }

    pub fn prefix(value: &str) -> PathMatch {
        PathMatch { kind: PathKind::Prefix, value: value.to_string(), case_sensitive: true }
    }

    /// The same pattern, matching ASCII letters in either case.
    pub fn ignoring_case(self) -> PathMatch {
        PathMatch { value: self.value.to_ascii_lowercase(), case_sensitive: false, ..self }
    }

    pub fn matches(&self, path: &str) -> bool {
        // Bytes, not characters: a reading may hold non-ASCII text, patterns never do.
        let (p, path) = (self.value.as_bytes(), path.as_bytes());
        let eq = |a: &[u8], b: &[u8]| if self.case_sensitive { a == b } else { a.eq_ignore_ascii_case(b) };
        match self.kind {
            PathKind::Exact => eq(path, p),
            PathKind::Prefix => {
                path.get(..p.len()).is_some_and(|head| eq(head, p))
                    || (p.len() > 1 && p.ends_with(b"/") && eq(path, p.get(..p.len() - 1).unwrap_or_default()))
            }
        }
    }
}

/// A path that skips authentication, on any host or on these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicPath {
    pub path: PathMatch,
    /// Any of these hosts (empty: any host).
    pub hosts: Vec<HostPattern>,
}

/// The `email` section: only identities whose email is in one of `domains` pass (as
/// oauth2-proxy's `--email-domain`), and only with `email_verified: true` if `require_verified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRule {
    pub domains: Vec<EmailDomain>,
    pub require_verified: bool,
}

/// An email domain: exactly this one (`example.com`), or only its subdomains (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailDomain {
    /// Lower case, without the `*.`.
    pub domain: String,
    pub subdomains: bool,
}

impl EmailRule {
    /// The refusal for these claims, if any.
    pub fn refusal(&self, claims: &Value) -> Option<Denial> {
        if self.require_verified && claims.get("email_verified") != Some(&Value::Bool(true)) {
            return Some(Denial::EmailUnverified);
        }
        let Some(email) = claims.get("email").and_then(Value::as_str) else {
            return Some(Denial::EmailDomain);
        };
        // The domain is what follows the last `@` (a quoted local part may hold `@`).
        let domain = match email.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => domain,
            _ => return Some(Denial::EmailDomain),
        };
        // Compared ignoring ASCII case, without a lower-cased copy per request.
        let allowed = self.domains.iter().any(|d| {
            let Some(split) = domain.len().checked_sub(d.domain.len()) else {
                return false;
            };
            let (head, tail) = (domain.get(..split), domain.get(split..));
            let (Some(head), Some(tail)) = (head, tail) else {
                return false;
            };
            if !tail.eq_ignore_ascii_case(&d.domain) {
                return false;
            }
            if d.subdomains {
                // `x.example.com` for `*.example.com`: a non-empty label, a dot, the domain.
                head.strip_suffix('.').is_some_and(|label| !label.is_empty())
            } else {
                head.is_empty()
            }
        });
        (!allowed).then_some(Denial::EmailDomain)
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

/// One reading of a request: what one rule match looks at.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Canonical host (see [`canonical_host`]).
    pub host: &'a str,
    /// A reading of the path (see [`path::prepare`]).
    pub path: &'a str,
    pub method: &'a str,
}

/// What applies to a request: a public path, a rule (by index), or the default action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Public,
    Rule(usize),
    Default,
}

/// Every route a request falls under, in the order first seen; usually one (kept inline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    first: Option<Route>,
    more: Vec<Route>,
}

impl Routes {
    /// A single route.
    pub fn one(route: Route) -> Routes {
        Routes { first: Some(route), more: Vec::new() }
    }

    fn add(&mut self, route: Route) {
        match self.first {
            None => self.first = Some(route),
            Some(f) if f == route => {}
            Some(_) if self.more.contains(&route) => {}
            Some(_) => self.more.push(route),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.first.iter().chain(self.more.iter())
    }

    /// Every reading is public: no authentication.
    pub fn is_public(&self) -> bool {
        self.iter().all(|r| *r == Route::Public)
    }

    /// More than one route: the readings disagree.
    pub fn is_ambiguous(&self) -> bool {
        !self.more.is_empty()
    }
}

/// The outcome for an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny { rule: Option<String>, reason: Denial },
}

/// Why an authenticated request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Denial {
    /// The rule requires a group the identity is not in.
    GroupRequired,
    /// The rule requires a role the identity does not have.
    RoleRequired,
    /// A claim condition of the rule does not hold.
    ClaimMismatch,
    /// No rule matches and `defaultAction` is `deny`.
    NoRuleMatched,
    /// `email.domains` is set and the identity's email is not in one of them (or absent).
    EmailDomain,
    /// `email.requireVerified` and the identity's `email_verified` is not `true`.
    EmailUnverified,
}

impl Denial {
    /// Its code, as the 403 page, the JSON answer and the metric name show it.
    pub fn code(self) -> &'static str {
        match self {
            Denial::GroupRequired => "group_required",
            Denial::RoleRequired => "role_required",
            Denial::ClaimMismatch => "claim_mismatch",
            Denial::NoRuleMatched => "no_rule_matched",
            Denial::EmailDomain => "email_domain",
            Denial::EmailUnverified => "email_unverified",
        }
    }
}

/// Public paths, the ordered rules and where groups and roles are found in the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub public_paths: Vec<PublicPath>,
    /// Where CORS preflights pass without authentication (see [`Policy::preflight_passes`]).
    pub preflight_paths: Vec<PublicPath>,
    /// Who may pass at all, by email domain (`email`), before any rule.
    pub email: Option<EmailRule>,
    pub rules: Vec<Rule>,
    pub default_allow: bool,
    pub groups_claim: ClaimPath,
    pub roles_claims: Vec<ClaimPath>,
}

impl Policy {
    /// What applies to one reading of a request.
    pub fn route_of(&self, t: &Target<'_>) -> Route {
        let public = |p: &PublicPath| {
            p.path.matches(t.path) && (p.hosts.is_empty() || p.hosts.iter().any(|h| h.matches(t.host)))
        };
        if self.public_paths.iter().any(public) {
            return Route::Public;
        }
        match self.rules.iter().position(|r| rule_matches(r, t)) {
            Some(i) => Route::Rule(i),
            None => Route::Default,
        }
    }

    /// Whether a CORS preflight (the caller has checked it is one) passes without
    /// authentication: every reading of it, each host and each path, is under `preflightPaths`.
    pub fn preflight_passes<'a>(&self, hosts: &[&str], mut paths: impl Iterator<Item = &'a str> + Clone) -> bool {
        let under = |host: &str, path: &str| {
            self.preflight_paths
                .iter()
                .any(|p| p.path.matches(path) && (p.hosts.is_empty() || p.hosts.iter().any(|h| h.matches(host))))
        };
        !self.preflight_paths.is_empty()
            && hosts.iter().all(|h| paths.clone().all(|p| under(h, p)))
            && paths.next().is_some()
    }

    /// What applies to a request, given every reading of it an upstream could make: each
    /// distinct public path or rule they fall under. The request is then treated as all of them
    /// at once ([`Policy::verdict_all`]) — the stricter outcome — so that a request some server
    /// reads as a protected resource never reaches it under a more permissive rule.
    pub fn route<'a>(&self, hosts: &[&str], paths: impl Iterator<Item = &'a str> + Clone, methods: &[&str]) -> Routes {
        let mut routes = Routes { first: None, more: Vec::new() };
        for &host in hosts {
            for path in paths.clone() {
                for &method in methods {
                    routes.add(self.route_of(&Target { host, path, method }));
                }
            }
        }
        routes
    }

    /// The outcome for an identity of a request under all of its routes: allowed only if every
    /// route allows it; the first refusal otherwise.
    pub fn verdict_all(&self, routes: &Routes, claims: &Value) -> Verdict {
        if let Some(reason) = self.email.as_ref().and_then(|e| e.refusal(claims)) {
            return Verdict::Deny { rule: None, reason };
        }
        for &route in routes.iter() {
            let v = self.verdict(route, claims);
            if v != Verdict::Allow {
                return v;
            }
        }
        Verdict::Allow
    }

    /// The outcome of a route for an authenticated identity's claims.
    pub fn verdict(&self, route: Route, claims: &Value) -> Verdict {
        let rule = match route {
            Route::Public => return Verdict::Allow,
            Route::Default if self.default_allow => return Verdict::Allow,
            Route::Default => return Verdict::Deny { rule: None, reason: Denial::NoRuleMatched },
            Route::Rule(i) => match self.rules.get(i) {
                Some(rule) => rule,
                None => return Verdict::Deny { rule: None, reason: Denial::NoRuleMatched },
            },
        };
        let deny = |reason| Verdict::Deny { rule: Some(rule.name.clone()), reason };
        if !rule.groups.is_empty() {
            let groups = self.groups_claim.lookup(claims).map(values_of).unwrap_or_default();
            if !rule.groups.iter().any(|want| groups.iter().any(|g| group_matches(want, g))) {
                return deny(Denial::GroupRequired);
            }
        }
        if !rule.roles.is_empty() {
            let roles: Vec<String> =
                self.roles_claims.iter().filter_map(|p| p.lookup(claims)).flat_map(values_of).collect();
            if !rule.roles.iter().any(|want| roles.contains(want)) {
                return deny(Denial::RoleRequired);
            }
        }
        if !rule.claims.iter().all(|c| c.holds(claims)) {
            return deny(Denial::ClaimMismatch);
        }
        Verdict::Allow
    }
}

/// A rule's match. Methods compare exactly (upper case), and `GET` covers `HEAD`: servers
/// answer `HEAD` with their `GET` handler.
fn rule_matches(rule: &Rule, t: &Target<'_>) -> bool {
    (rule.hosts.is_empty() || rule.hosts.iter().any(|h| h.matches(t.host)))
        && (rule.paths.is_empty() || rule.paths.iter().any(|p| p.matches(t.path)))
        && (rule.methods.is_empty() || rule.methods.iter().any(|m| m == t.method || (m == "GET" && t.method == "HEAD")))
}

/// A configured group matches a token group exactly, or — for a top-level name written without
/// the leading slash — Keycloak's full-path form (`admins` matches `/admins`, not `/x/admins`).
fn group_matches(want: &str, got: &str) -> bool {
    got == want || (!want.starts_with('/') && got.strip_prefix('/') == Some(want))
}

#[cfg(test)]
mod tests;
