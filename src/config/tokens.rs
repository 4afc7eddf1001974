//! `tokens`: how bearer tokens are checked (algorithms, leeway) and passed on (the
//! `Authorization` header, a payload header, the realm of a refusal); `cache`: how many verified
//! tokens are remembered.

use super::raw::{RawCache, RawTokens};
use super::validate;
use super::Errors;
use crate::jwt::alg::Alg;

/// How bearer tokens are checked and passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub algorithms: Vec<Alg>,
    pub leeway_secs: u64,
    pub forward_authorization: bool,
    pub payload_header: Option<String>,
    pub realm: String,
}

/// The `tokens` section.
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn read(t: RawTokens, errors: &mut Errors) -> Tokens {
    let algorithms = match t.allowed_algorithms {
        None => Alg::ALL.to_vec(),
        Some(names) => algorithms(&names, errors),
    };
    let leeway_secs = validate::in_range(t.leeway_seconds.unwrap_or(30), 0..=300, "tokens.leewaySeconds", errors);
    let realm = t.realm.unwrap_or_else(|| "gatehouse".into());
    if !validate::is_quotable(&realm) {
        errors.add("tokens.realm", "must be printable ASCII without quotes or backslashes");
    }
    Tokens {
        algorithms,
        leeway_secs,
        forward_authorization: t.forward_authorization.unwrap_or(false),
        payload_header: t.payload_header.map(|h| validate::header_name(&h, "tokens.payloadHeader", errors)),
        realm,
    }
}

/// `allowedAlgorithms`: asymmetric ones only, each once.
#[inline(never)] // configuration code: one copy, not one per caller
fn algorithms(names: &[String], errors: &mut Errors) -> Vec<Alg> {
    let mut algs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Alg::from_name(name) {
            Some(a) if !algs.contains(&a) => algs.push(a),
            Some(_) => errors.add(format!("tokens.allowedAlgorithms[{i}]"), format!("{name} is listed twice")),
            None => errors.add(
                format!("tokens.allowedAlgorithms[{i}]"),
                format!(
                    "expected one of {}, found {name:?} (symmetric and `none` algorithms are never accepted)",
                    Alg::ALL.map(Alg::name).join(", ")
                ),
            ),
        }
    }
    if names.is_empty() {
        errors.add("tokens.allowedAlgorithms", "must list at least one algorithm");
    }
    algs
}

/// `cache.tokens`: how many verified tokens are kept (0: none).
#[inline(never)] // see `build` in config/mod.rs
pub(super) fn cache_size(c: RawCache, errors: &mut Errors) -> usize {
    validate::in_range(c.tokens.unwrap_or(1024), 0..=100_000, "cache.tokens", errors)
}
