//! gatehouse: OIDC single sign-on and bearer-JWT verification inside Envoy, as a Proxy-Wasm filter.
//!
//! Everything but `filter` is pure and tested on the host; `filter` is the thin proxy-wasm glue.

pub mod claims;
pub mod jwt;

#[cfg(test)]
mod testutil;
