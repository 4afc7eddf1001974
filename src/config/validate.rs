//! The checks every section shares, each written once: URLs, paths, hosts and domains, header and
//! cookie names, claim paths, numbers in a range, and values given inline or by environment
//! variable. Each records its problem under the field it is given and returns what the section
//! keeps. Checks that only one field needs (a rule's name, a method) stay with their section.

use super::{Env, Errors};
use crate::claims::ClaimPath;
use crate::policy::HostPattern;
use std::fmt::Display;
use std::ops::RangeInclusive;
use url::Url;

// URLs

/// What an absolute URL may not carry besides scheme, host, port and path.
#[derive(Clone, Copy)]
pub(super) enum Without {
    Nothing,
    Fragment,
    QueryOrFragment,
}

/// An absolute `http` or `https` URL (both schemes require a host).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn http_url(text: &str, without: Without, field: &str, errors: &mut Errors) -> Option<Url> {
    let (query_ok, fragment_ok, what) = match without {
        Without::Nothing => (true, true, ""),
        Without::Fragment => (true, false, " without fragment"),
        Without::QueryOrFragment => (false, false, " without query or fragment"),
    };
    let expected = format!("expected an absolute http(s) URL{what}, found {text:?}");
    match Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && (query_ok || u.query().is_none())
                && (fragment_ok || u.fragment().is_none()) =>
        {
            Some(u)
        }
        Ok(_) => {
            errors.add(field, expected);
            None
        }
        Err(e) => {
            errors.add(field, format!("{expected} ({e})"));
            None
        }
    }
}

// Paths

/// Starts with `/` and is printable ASCII throughout (no spaces, controls or non-ASCII).
#[inline(never)] // configuration code: one copy, not one per caller
fn is_rooted(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic())
}

/// A path requests are matched against as it is: rooted, without query or fragment, and in the
/// form every normalization leaves alone (no escapes, `\`, `//`, `.` or `..` segments).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn request_path(p: &str, field: &str, errors: &mut Errors) -> bool {
    if !is_rooted(p) || p.contains(['?', '#']) {
        errors.add(field, format!("expected a path starting with `/` (no query), found {p:?}"));
        false
    } else if p.contains(['%', '\\']) || p.contains("//") || crate::policy::path::remove_dot_segments(p) != p {
        errors.add(
            field,
            format!("{p:?} is not in normal form (no `//`, `.` or `..` segments, no `\\` or percent-escapes)"),
        );
        false
    } else {
        true
    }
}

/// A cookie's `Path` attribute: rooted, printable, without the `;` that would end the attribute.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn cookie_path(p: &str, field: &str, errors: &mut Errors) {
    if !is_rooted(p) || p.contains(';') {
        errors.add(field, format!("expected a path starting with `/`, found {p:?}"));
    }
}

// Hosts and domains

/// `host[:port]` as an `:authority` carries it: printable ASCII, no spaces.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn authority(a: &str, field: &str, errors: &mut Errors) -> bool {
    let valid = !a.is_empty() && a.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        errors.add(field, format!("expected a host[:port], found {a:?}"));
    }
    valid
}

/// Host patterns: names or `*.domain`, in canonical form (lower case, no trailing dot, no port).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn host_patterns(hosts: &[String], field: &str, errors: &mut Errors) -> Vec<HostPattern> {
    hosts
        .iter()
        .enumerate()
        .filter_map(|(j, h)| {
            let pattern = HostPattern::parse(h);
            if pattern.is_none() {
                errors.add(
                    format!("{field}[{j}]"),
                    format!("expected a host name, an address or *.domain, without port, found {h:?}"),
                );
            }
            pattern
        })
        .collect()
}

/// Letters, digits, `-` and `.`: a domain in ASCII (an IDN in punycode).
#[inline(never)] // configuration code: one copy, not one per caller
fn is_domain(d: &str) -> bool {
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// A cookie's `Domain` attribute.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn cookie_domain(d: &str, field: &str, errors: &mut Errors) {
    if !is_domain(d) {
        errors.add(field, format!("expected a domain such as example.com, found {d:?}"));
    }
}

/// A domain a login may return to: `app.example.com`, `.example.com` for it and its subdomains,
/// or `localhost`; lower-cased.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn redirect_domain(d: &str, field: &str, errors: &mut Errors) -> Option<String> {
    let bare = d.strip_prefix('.').unwrap_or(d);
    if is_domain(bare) && !bare.starts_with('.') && (bare.contains('.') || bare == "localhost") {
        return Some(d.to_ascii_lowercase());
    }
    errors.add(
        field,
        format!("expected a domain such as app.example.com or .example.com (ASCII, punycode for IDN), found {d:?}"),
    );
    None
}

// Names and texts

/// An RFC 9110 `token`: the syntax of header names, cookie names and methods.
#[inline(never)] // configuration code: one copy, not one per caller
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Header names gatehouse refuses to set from claims: they carry routing, framing or credentials.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "set-cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-envoy-original-path",
];

/// A header gatehouse may set, lower-cased: a token, and none that carries routing, framing or
/// credentials ([`RESERVED_HEADERS`], `x-envoy-*`).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn header_name(name: &str, field: &str, errors: &mut Errors) -> String {
    let lower = name.to_ascii_lowercase();
    if !is_token(&lower) {
        errors.add(field, format!("expected a header name, found {name:?}"));
    } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-envoy-") {
        errors.add(field, format!("{lower} is reserved and cannot be set from claims"));
    }
    lower
}

/// A cookie name: a token without dots (some frameworks turn them into `_`).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn cookie_name(name: &str, field: &str, errors: &mut Errors) {
    if !is_token(name) || name.contains('.') {
        errors.add(field, format!("expected letters, digits and !#$%&'*+-^_`|~ (no dots), found {name:?}"));
    }
}

/// Printable ASCII (space included) without `"` or `\`: text that goes into a quoted string as
/// it is (RFC 6749's `NQSCHAR`).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn is_quotable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// One of a setting's `names`, as `parse` reads it.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn named<T>(
    name: &str,
    names: &[&str],
    parse: impl Fn(&str) -> Option<T>,
    field: &str,
    errors: &mut Errors,
) -> Option<T> {
    let value = parse(name);
    if value.is_none() {
        errors.add(field, format!("expected one of {}, found {name:?}", names.join(", ")));
    }
    value
}

/// A claim path (`realm_access.roles`, `a\.b` for a dot in a name).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn claim_path(text: &str, field: &str, errors: &mut Errors) -> ClaimPath {
    ClaimPath::parse(text).unwrap_or_else(|e| {
        errors.add(field, e);
        ClaimPath::from_segments(["-"])
    })
}

/// Each item of a list is non-empty.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn non_empty_items(list: &[String], field: &str, errors: &mut Errors) {
    for (i, item) in list.iter().enumerate() {
        if item.is_empty() {
            errors.add(format!("{field}[{i}]"), "must not be empty");
        }
    }
}

// Numbers

/// A number within bounds (returned either way).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn in_range<T>(value: T, range: RangeInclusive<T>, field: &str, errors: &mut Errors) -> T
where
    T: PartialOrd + Display + Default,
{
    if !range.contains(&value) {
        let (lo, hi) = (range.start(), range.end());
        let expected = if *lo == T::default() { format!("at most {hi}") } else { format!("{lo} to {hi}") };
        errors.add(field, format!("expected {expected}, found {value}"));
    }
    value
}

// Values given inline or by environment variable

/// Where a setting that may be given either way came from.
pub(super) enum Given<T> {
    Inline(T),
    /// The (non-blank) value of the environment variable.
    Env(String),
    Neither,
}

/// A setting given inline (`field`) or as the name of an environment variable of the Wasm VM
/// (`{field}Env`), not both. `None` when that is wrong (recorded).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn inline_or_env<T>(
    inline: Option<T>,
    var: Option<String>,
    field: &str,
    env: &Env<'_>,
    errors: &mut Errors,
) -> Option<Given<T>> {
    match (inline, var) {
        (Some(_), Some(_)) => {
            let name = field.rsplit('.').next().unwrap_or(field);
            errors.add(field, format!("set either {name} or {name}Env, not both"));
            None
        }
        (Some(v), None) => Some(Given::Inline(v)),
        (None, Some(var)) => match env(&var) {
            Some(v) if !v.trim().is_empty() => Some(Given::Env(v)),
            _ => {
                errors.add(
                    format!("{field}Env"),
                    format!("environment variable {var:?} is not set (or empty) in the Wasm VM; pass it with vmConfig.env / environment_variables"),
                );
                None
            }
        },
        (None, None) => Some(Given::Neither),
    }
}
