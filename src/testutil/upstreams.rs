//! How real upstream servers read a request path before routing it, modelled one server at a
//! time and written independently of `policy::path` (byte loops, each model in the order its
//! server works), so that the property test and the fuzz target compare gatehouse's verdict
//! with what the upstream would make of the same path. `None`: that server refuses the request.
//!
//! The models are deliberately permissive versions of their servers (older defaults, firewalls
//! off): an attacker picks the upstream that reads a path in the most useful way.

use crate::claims::ClaimPath;
use crate::policy::{PathMatch, Policy, PublicPath, Route, Rule, Verdict};
use serde_json::{json, Value};
use unicode_normalization::UnicodeNormalization;

/// A server's reading of a path (without query).
pub type Model = fn(&str) -> Option<String>;

/// Every model, by name.
pub const MODELS: &[(&str, Model)] = &[
    ("rfc3986", rfc3986),
    ("nginx", nginx),
    ("tomcat", tomcat),
    ("spring", spring),
    ("iis", iis),
    ("double-decoding proxy", double_decoder),
    ("node decodeURIComponent + path.normalize", node_naive),
    ("decode, then parse again", decode_then_parse),
    ("NFKC-normalizing app", nfkc_app),
    ("case-insensitive router", case_insensitive),
];

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes once; a malformed escape stays as it is. Bytes that are not UTF-8 become
/// U+FFFD, as Java and Node do.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Only the escapes of unreserved characters (RFC 3986 §6.2.2.2).
fn decode_unreserved(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h * 16 + l;
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    out.push(v as char);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Resolves `.` and `..` like a file system path: a stack of segments.
fn resolve_dots(s: &str, merge: bool) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    for (i, part) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        match *part {
            "." => {
                if last {
                    stack.push("");
                }
            }
            ".." => {
                stack.pop();
                if last {
                    stack.push("");
                }
            }
            "" if merge && !last => {}
            p => stack.push(p),
        }
    }
    format!("/{}", stack.join("/"))
}

fn merge(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c != '/' || !out.ends_with('/') {
            out.push(c);
        }
    }
    out
}

fn strip_params(s: &str) -> String {
    s.split('/').map(|seg| seg.split(';').next().unwrap_or("")).collect::<Vec<_>>().join("/")
}

/// A strict RFC 3986 server: unreserved escapes decoded, dot segments removed.
pub fn rfc3986(s: &str) -> Option<String> {
    Some(resolve_dots(&decode_unreserved(s), false))
}

/// nginx: decodes the URI once, merges slashes and resolves dots before matching locations.
pub fn nginx(s: &str) -> Option<String> {
    let d = percent_decode(s);
    if d.contains('\0') {
        return None;
    }
    Some(resolve_dots(&merge(&d), true))
}

/// Tomcat: path parameters dropped before decoding, encoded `/` refused, then decoded,
/// normalized (dots, double slashes); `\` is a separator when allowed.
pub fn tomcat(s: &str) -> Option<String> {
    let p = strip_params(s);
    let lower = p.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return None;
    }
    let d = percent_decode(&p).replace('\\', "/");
    Some(resolve_dots(&merge(&d), true))
}

/// Spring MVC's `UrlPathHelper` (old defaults): decoded, `;` content removed after decoding,
/// slashes merged, dots resolved.
pub fn spring(s: &str) -> Option<String> {
    let d = percent_decode(s);
    Some(resolve_dots(&merge(&strip_params(&d)), true))
}

/// IIS: `%uHHHH` and `%HH` decoded, `\` as `/`, trailing dots and spaces of segments ignored,
/// case ignored.
pub fn iis(s: &str) -> Option<String> {
    let mut u = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 5 < b.len() && (b[i + 1] == b'u' || b[i + 1] == b'U') {
            let digits: Option<Vec<u8>> = b[i + 2..i + 6].iter().map(|&c| hex(c)).collect();
            if let Some(d) = digits {
                let cp = d.iter().fold(0u32, |acc, &x| acc * 16 + u32::from(x));
                if let Some(c) = char::from_u32(cp) {
                    u.push(c);
                    i += 6;
                    continue;
                }
            }
        }
        u.push(b[i] as char);
        i += 1;
    }
    let d = percent_decode(&u).replace('\\', "/");
    let trimmed: Vec<String> = d
        .split('/')
        .map(
            |seg| {
                if seg == "." || seg == ".." {
                    seg.to_string()
                } else {
                    seg.trim_end_matches(['.', ' ']).to_string()
                }
            },
        )
        .collect();
    Some(resolve_dots(&merge(&trimmed.join("/")), true).to_lowercase())
}

/// A proxy that decodes, hands on, and a server behind it that decodes again.
pub fn double_decoder(s: &str) -> Option<String> {
    let d = percent_decode(&percent_decode(s));
    Some(resolve_dots(&merge(&d), true))
}

/// `path.normalize(decodeURIComponent(url))` in Node: `decodeURIComponent` throws on a bad
/// escape or non-UTF-8 (the server answers 400).
pub fn node_naive(s: &str) -> Option<String> {
    let d = percent_decode(s);
    if d.contains('\u{FFFD}') && !s.contains('\u{FFFD}') {
        return None;
    }
    Some(resolve_dots(&merge(&d), true))
}

/// A server that decodes the whole target, then splits off `?query` and `#fragment`.
pub fn decode_then_parse(s: &str) -> Option<String> {
    let d = percent_decode(s);
    let cut = d.split(['?', '#']).next().unwrap_or("").to_string();
    Some(resolve_dots(&merge(&cut), true))
}

/// An application that NFKC-normalizes the decoded path (Python's `unicodedata.normalize`,
/// Java's `Normalizer`) before routing.
pub fn nfkc_app(s: &str) -> Option<String> {
    let d: String = percent_decode(s).nfkc().collect();
    Some(resolve_dots(&merge(&d.replace('\\', "/")), true))
}

/// A router that compares paths ignoring case (Java's `equalsIgnoreCase`: each character
/// by its upper and lower case).
pub fn case_insensitive(s: &str) -> Option<String> {
    let d = percent_decode(s);
    let folded: String = d
        .chars()
        .map(|c| {
            let lower = c.to_lowercase().next().unwrap_or(c);
            if lower.is_ascii() {
                return lower;
            }
            let upper = c.to_uppercase().next().unwrap_or(c);
            if upper.is_ascii() {
                upper.to_ascii_lowercase()
            } else {
                lower
            }
        })
        .collect();
    Some(resolve_dots(&merge(&folded), true))
}

/// A few policies over two prefixes, `public` (say `/a/`) and `protected` (say `/d/`), each
/// with a different shape: the demo's, first match wins, exact paths with default deny, and a
/// case-insensitive rule.
pub fn policies(public: &str, protected: &str) -> Vec<(&'static str, Policy)> {
    let bare = |p: &str| p.trim_end_matches('/').to_string();
    let rule = |name: &str, paths: Vec<PathMatch>, groups: &[&str]| Rule {
        name: name.into(),
        hosts: vec![],
        paths,
        methods: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
        roles: vec![],
        claims: vec![],
    };
    let policy = |public: Vec<PathMatch>, rules: Vec<Rule>, default_allow: bool| Policy {
        public_paths: public.into_iter().map(|path| PublicPath { path, hosts: vec![] }).collect(),
        preflight_paths: vec![],
        email: None,
        rules,
        default_allow,
        groups_claim: ClaimPath::parse("groups").unwrap(),
        roles_claims: vec![],
    };
    vec![
        // The demo: `public` public, `protected` for admins, everything else for anyone signed in.
        (
            "demo",
            policy(
                vec![PathMatch::prefix(public)],
                vec![rule("d", vec![PathMatch::prefix(protected)], &["admins"])],
                true,
            ),
        ),
        // First match wins: `public` open to anyone signed in, the rest for admins.
        (
            "first-match",
            policy(
                vec![],
                vec![rule("a", vec![PathMatch::prefix(public)], &[]), rule("rest", vec![], &["admins"])],
                true,
            ),
        ),
        // Exact public path, default deny.
        (
            "exact",
            policy(
                vec![PathMatch::exact(&bare(public))],
                vec![rule("d", vec![PathMatch::prefix(&bare(protected))], &[])],
                false,
            ),
        ),
        // A case-insensitive rule.
        (
            "case",
            policy(
                vec![PathMatch::prefix(public)],
                vec![rule("d", vec![PathMatch::prefix(protected).ignoring_case()], &["admins"])],
                true,
            ),
        ),
    ]
}

/// Who asks.
pub fn identities() -> [(&'static str, Option<Value>); 3] {
    [("anonymous", None), ("bob", Some(json!({"groups": []}))), ("alice", Some(json!({"groups": ["/admins"]})))]
}

/// May this identity reach the upstream, for a route? Public: anyone; otherwise the policy,
/// and never without an identity.
pub fn allowed(policy: &Policy, route: Route, who: &Option<Value>) -> bool {
    match (route, who) {
        (Route::Public, _) => true,
        (_, None) => false,
        (route, Some(claims)) => policy.verdict(route, claims) == Verdict::Allow,
    }
}
