//! `pathNormalization`: how request paths are read; `publicPaths`: what passes without a token;
//! `rules` and `defaultAction`: who may reach what.

use super::raw::{RawClaimCondition, RawEmail, RawPathMatch, RawPathNormalization, RawPublicPath, RawRule};
use super::validate;
use super::Errors;
use crate::policy::{
    ClaimCondition, ClaimOp, EmailDomain, EmailRule, EscapedSlashes, Normalization, PathMatch, PathSettings,
    PublicPath, Rule,
};
use serde_json::Value;

/// How request paths are read and configured paths matched.
pub(super) struct Paths {
    pub settings: PathSettings,
    /// Whether configured paths match case-sensitively, unless one says otherwise.
    pub case_sensitive: bool,
    pub method_overrides: bool,
}

/// The `pathNormalization` section.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn path_normalization(pn: RawPathNormalization, errors: &mut Errors) -> Paths {
    let default = PathSettings::default();
    let normalization = match pn.normalization.as_deref() {
        None => default.normalization,
        Some(name) => {
            let field = "pathNormalization.normalization";
            validate::named(name, &Normalization::NAMES, Normalization::from_name, field, errors)
                .unwrap_or(default.normalization)
        }
    };
    let escaped_slashes = match pn.escaped_slashes.as_deref() {
        None if normalization == Normalization::DecodeAndMergeSlashes => EscapedSlashes::UnescapeAndForward,
        None => default.escaped_slashes,
        Some(name) => {
            let field = "pathNormalization.escapedSlashes";
            validate::named(name, &EscapedSlashes::NAMES, EscapedSlashes::from_name, field, errors)
                .unwrap_or(default.escaped_slashes)
        }
    };
    if normalization == Normalization::DecodeAndMergeSlashes && escaped_slashes != EscapedSlashes::UnescapeAndForward {
        errors.add(
            "pathNormalization.escapedSlashes",
            "DECODE_AND_MERGE_SLASHES unescapes slashes: leave this unset or UNESCAPE_AND_FORWARD",
        );
    }
    Paths {
        settings: PathSettings { normalization, escaped_slashes },
        case_sensitive: pn.case_sensitive.unwrap_or(true),
        method_overrides: pn.method_overrides.unwrap_or(true),
    }
}

/// The `email` section: `domains` (required, each `example.com` or `*.example.com`) and
/// `requireVerified` (default true).
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn email(raw: Option<RawEmail>, errors: &mut Errors) -> Option<EmailRule> {
    let raw = raw?;
    let Some(list) = raw.domains else {
        errors.add("email.domains", "required: the email domains allowed, e.g. [\"example.com\"]");
        return None;
    };
    if list.is_empty() {
        errors.add("email.domains", "expected at least one domain (leave out `email` to allow any)");
    }
    let domains = list
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let (domain, subdomains) = match d.strip_prefix("*.") {
                Some(rest) => (rest, true),
                None => (d.as_str(), false),
            };
            let ok = !domain.is_empty()
                && domain.len() <= 253
                && domain
                    .split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !ok {
                errors.add(
                    format!("email.domains[{i}]"),
                    format!("expected a domain (example.com) or its subdomains (*.example.com), found {d:?}"),
                );
                return None;
            }
            Some(EmailDomain { domain: domain.to_ascii_lowercase(), subdomains })
        })
        .collect();
    Some(EmailRule { domains, require_verified: raw.require_verified.unwrap_or(true) })
}

/// The `publicPaths` section, or `preflightPaths` (the same shape), named by `section`.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn public_paths(
    section: &str,
    list: &[RawPublicPath],
    case_sensitive: bool,
    errors: &mut Errors,
) -> Vec<PublicPath> {
    list.iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let field = format!("{section}[{i}]");
            let raw_match =
                RawPathMatch { exact: m.exact.clone(), prefix: m.prefix.clone(), case_sensitive: m.case_sensitive };
            let path = path_match(&raw_match, &field, case_sensitive, errors)?;
            let hosts = validate::host_patterns(&m.hosts, &format!("{field}.hosts"), errors);
            Some(PublicPath { path, hosts })
        })
        .collect()
}

/// An `exact` or `prefix` path, matched ignoring case unless `case_sensitive` (the section's
/// default, or its own `caseSensitive`).
#[inline(never)] // configuration code: one copy, not one per caller
fn path_match(m: &RawPathMatch, field: &str, case_sensitive: bool, errors: &mut Errors) -> Option<PathMatch> {
    let pattern = match (&m.exact, &m.prefix) {
        (Some(p), None) => validate::request_path(p, field, errors).then(|| PathMatch::exact(p)),
        (None, Some(p)) => validate::request_path(p, field, errors).then(|| PathMatch::prefix(p)),
        _ => {
            errors.add(field, "expected exactly one of exact, prefix");
            None
        }
    }?;
    Some(if m.case_sensitive.unwrap_or(case_sensitive) { pattern } else { pattern.ignoring_case() })
}

/// The `rules` section: each named once (`rule-<index>` by default).
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn rules(list: &[RawRule], case_sensitive: bool, errors: &mut Errors) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let field = format!("rules[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("rule-{i}"));
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            errors.add(format!("{field}.name"), format!("expected letters, digits, `-_.:`, found {name:?}"));
        }
        if rules.iter().any(|other| other.name == name) {
            errors.add(format!("{field}.name"), format!("{name:?} is used by another rule"));
        }
        rules.push(rule(r, name, &field, case_sensitive, errors));
    }
    rules
}

#[inline(never)] // configuration code: one copy, not one per caller
fn rule(r: &RawRule, name: String, field: &str, case_sensitive: bool, errors: &mut Errors) -> Rule {
    let m = &r.match_;
    let hosts = validate::host_patterns(&m.hosts, &format!("{field}.match.hosts"), errors);
    let paths = m
        .paths
        .iter()
        .enumerate()
        .filter_map(|(j, pm)| path_match(pm, &format!("{field}.match.paths[{j}]"), case_sensitive, errors))
        .collect();
    let methods = m
        .methods
        .iter()
        .enumerate()
        .filter_map(|(j, meth)| {
            if !meth.is_empty() && meth.bytes().all(|b| b.is_ascii_alphabetic()) {
                Some(meth.to_ascii_uppercase())
            } else {
                errors.add(
                    format!("{field}.match.methods[{j}]"),
                    format!("expected an HTTP method such as GET, found {meth:?}"),
                );
                None
            }
        })
        .collect();
    let q = &r.require;
    validate::non_empty_items(&q.groups, &format!("{field}.require.groups"), errors);
    validate::non_empty_items(&q.roles, &format!("{field}.require.roles"), errors);
    let claims = q
        .claims
        .iter()
        .enumerate()
        .filter_map(|(j, c)| claim_condition(c, &format!("{field}.require.claims[{j}]"), errors))
        .collect();
    Rule { name, hosts, paths, methods, groups: q.groups.clone(), roles: q.roles.clone(), claims }
}

/// A claim that `equals`, `contains` or is `oneOf` scalar values (compared as text).
#[inline(never)] // configuration code: one copy, not one per caller
fn claim_condition(c: &RawClaimCondition, field: &str, errors: &mut Errors) -> Option<ClaimCondition> {
    let claim = validate::claim_path(&c.claim, &format!("{field}.claim"), errors);
    let scalar = |v: &Value, op: &str, errors: &mut Errors| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => {
            errors.add(format!("{field}.{op}"), format!("expected a string, number or boolean, found {v}"));
            None
        }
    };
    let op = match (&c.equals, &c.contains, &c.one_of) {
        (Some(v), None, None) => scalar(v, "equals", errors).map(ClaimOp::Equals),
        (None, Some(v), None) => scalar(v, "contains", errors).map(ClaimOp::Contains),
        (None, None, Some(list)) => {
            if list.is_empty() {
                errors.add(format!("{field}.oneOf"), "must list at least one value");
            }
            Some(ClaimOp::OneOf(list.iter().filter_map(|v| scalar(v, "oneOf", errors)).collect()))
        }
        _ => {
            errors.add(field, "expected exactly one of equals, contains, oneOf");
            None
        }
    };
    op.map(|op| ClaimCondition { claim, op })
}

/// `defaultAction`: whether what no rule matches is allowed.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn default_allow(action: Option<&str>, errors: &mut Errors) -> bool {
    match action {
        None | Some("allow") => true,
        Some("deny") => false,
        Some(other) => {
            errors.add("defaultAction", format!("expected \"allow\" or \"deny\", found {other:?}"));
            true
        }
    }
}
