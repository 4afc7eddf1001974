//! `identity`: which claims name the user's groups and roles; `claimHeaders`: the headers set
//! from claims for the upstream. Also every header gatehouse manages (set, or removed from each
//! request) and those it never sets.

use super::raw::{OneOrMany, RawClaimHeader, RawIdentity};
use super::validate;
use super::Errors;
use crate::claims::ClaimPath;
use crate::policy::Policy;
use std::rc::Rc;

/// A header set from claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// Lower-case header name (shared by every identity that sets it).
    pub name: Rc<str>,
    /// Claims whose values are concatenated, in order.
    pub claims: Vec<ClaimPath>,
}

/// Headers that make some upstreams read another path than `:path` (IIS's URL Rewrite and
/// Symfony read `X-Original-URL`/`X-Rewrite-URL`, Spring's `ForwardedHeaderFilter` prepends
/// `X-Forwarded-Prefix`, Traefik-style setups pass `X-Forwarded-Uri`): removed from every request,
/// so that the path gatehouse matched is the only one the upstream sees.
pub const ROUTING_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
];

/// Who the user is, as the upstream and the rules read it.
pub(super) struct Identity {
    pub groups_claim: ClaimPath,
    pub roles_claims: Vec<ClaimPath>,
    pub claim_headers: Vec<ClaimHeader>,
    /// The claim headers, the payload header and the [`ROUTING_HEADERS`].
    pub managed_headers: Vec<String>,
}

/// The `identity` and `claimHeaders` sections. `client_ids` (each provider's) name the client
/// roles read by default; `payload_header` (from `tokens`) is managed with the claim headers.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn read(
    id: RawIdentity,
    headers: Option<Vec<RawClaimHeader>>,
    client_ids: &[&str],
    payload_header: Option<&str>,
    errors: &mut Errors,
) -> Identity {
    let groups_claim =
        validate::claim_path(id.groups_claim.as_deref().unwrap_or("groups"), "identity.groupsClaim", errors);
    let roles_claims: Vec<ClaimPath> = match id.roles_claims {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, c)| validate::claim_path(c, &format!("identity.rolesClaims[{i}]"), errors))
            .collect(),
        None => {
            let mut v = vec![ClaimPath::from_segments(["realm_access", "roles"])];
            for client in client_ids {
                let path = ClaimPath::from_segments(["resource_access", client, "roles"]);
                if !v.contains(&path) {
                    v.push(path);
                }
            }
            v
        }
    };
    let claim_headers = match headers {
        Some(list) => {
            list.iter().enumerate().map(|(i, h)| claim_header(h, &format!("claimHeaders[{i}]"), errors)).collect()
        }
        None => default_claim_headers(&groups_claim, &roles_claims),
    };
    let managed_headers = managed_headers(&claim_headers, payload_header, errors);
    Identity { groups_claim, roles_claims, claim_headers, managed_headers }
}

#[inline(never)] // configuration code: one copy, not one per caller
fn claim_header(h: &RawClaimHeader, field: &str, errors: &mut Errors) -> ClaimHeader {
    let name = validate::header_name(&h.header, &format!("{field}.header"), errors);
    let texts: Vec<&str> = match &h.claim {
        OneOrMany::One(c) => vec![c.as_str()],
        OneOrMany::Many(cs) => cs.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() {
        errors.add(format!("{field}.claim"), "must name at least one claim");
    }
    let claims = texts.iter().map(|c| validate::claim_path(c, &format!("{field}.claim"), errors)).collect();
    ClaimHeader { name: Rc::from(name), claims }
}

/// oauth2-proxy's `X-Auth-Request-*` headers.
#[inline(never)] // configuration code: one copy, not one per caller
fn default_claim_headers(groups_claim: &ClaimPath, roles_claims: &[ClaimPath]) -> Vec<ClaimHeader> {
    let header = |name: &str, claims: Vec<ClaimPath>| ClaimHeader { name: name.into(), claims };
    let path = |s: &str| vec![ClaimPath::from_segments([s])];
    vec![
        header("x-auth-request-user", path("sub")),
        header("x-auth-request-email", path("email")),
        header("x-auth-request-preferred-username", path("preferred_username")),
        header("x-auth-request-groups", vec![groups_claim.clone()]),
        header("x-auth-request-roles", roles_claims.to_vec()),
    ]
}

/// Each header set once: the claim headers, the payload header, then the routing headers.
#[inline(never)] // configuration code: one copy, not one per caller
fn managed_headers(claim_headers: &[ClaimHeader], payload_header: Option<&str>, errors: &mut Errors) -> Vec<String> {
    let mut managed: Vec<String> = Vec::new();
    for (i, h) in claim_headers.iter().enumerate() {
        if managed.iter().any(|m| **m == *h.name) {
            errors.add(format!("claimHeaders[{i}].header"), format!("{} is set twice", h.name));
        } else {
            managed.push(h.name.to_string());
        }
    }
    if let Some(h) = payload_header {
        if managed.iter().any(|m| m == h) {
            errors.add("tokens.payloadHeader", format!("{h} is also a claim header"));
        } else {
            managed.push(h.to_string());
        }
    }
    for h in ROUTING_HEADERS {
        if !managed.iter().any(|m| m == h) {
            managed.push(h.to_string());
        }
    }
    managed
}

/// The first bytes of the managed headers, sorted, with both `-` and `_` if one starts with
/// either (a client may send one for the other).
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn first_bytes(managed: &[String]) -> Vec<u8> {
    // A set of bytes, not a sort: the module has no sort code for `u8` otherwise.
    let mut seen = [false; 256];
    let mut mark = |b: u8| {
        if let Some(s) = seen.get_mut(usize::from(b)) {
            *s = true;
        }
    };
    let mut dash = false;
    for b in managed.iter().filter_map(|h| h.as_bytes().first().copied()) {
        dash |= b == b'-' || b == b'_';
        mark(b);
    }
    if dash {
        mark(b'-');
        mark(b'_');
    }
    (0..=u8::MAX).filter(|b| seen.get(usize::from(*b)).copied().unwrap_or(false)).collect()
}

/// The top-level claims an identity keeps, from a bearer token (in the token cache) or a login
/// (in the session cookie): `sub` and those that headers and rules read.
#[inline(never)] // configuration code: one copy, not one per caller
pub(super) fn kept_claims(claim_headers: &[ClaimHeader], policy: &Policy) -> Vec<String> {
    let mut kept: Vec<String> = vec!["sub".into()];
    let paths = claim_headers
        .iter()
        .flat_map(|h| h.claims.iter())
        .chain(std::iter::once(&policy.groups_claim))
        .chain(policy.roles_claims.iter())
        .chain(policy.rules.iter().flat_map(|r| r.claims.iter().map(|c| &c.claim)));
    let email = policy.email.as_ref().map(|_| ["email", "email_verified"]).into_iter().flatten();
    for root in paths.filter_map(|p| p.root()).chain(email) {
        if !kept.iter().any(|k| k == root) {
            kept.push(root.to_string());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::first_bytes;

    #[test]
    fn first_bytes_are_a_sorted_set_with_both_separators() {
        let managed = ["x-user", "b-mail", "x-groups", "_legacy"].map(String::from);
        assert_eq!(first_bytes(&managed), b"-_bx".to_vec());
        assert_eq!(first_bytes(&["x-a".to_string(), "a".to_string()]), b"ax".to_vec());
        assert!(first_bytes(&[]).is_empty());
    }
}
