//! gatehouse: OIDC single sign-on and bearer-JWT verification inside Envoy, as a Proxy-Wasm filter.
//!
//! Everything but `filter` is pure and tested on the host; `filter` is the thin proxy-wasm glue,
//! host-tested too but for its `abi` module.

pub mod cache;
pub mod callout;
pub mod claims;
pub mod config;
pub mod cookie;
pub mod filter;
pub mod flow;
pub mod jwt;
pub mod keys;
pub mod nonempty;
pub mod oidc;
pub mod policy;
pub mod revoked;
pub mod secret;
pub mod session;
pub mod shared;
pub mod stats;

/// Keys, tokens and realistic inputs for the tests and, with the `bench-support` feature, for
/// `benches/` and `examples/paths.rs`. Not an API.
#[cfg(any(test, feature = "bench-support"))]
#[doc(hidden)]
pub mod testutil;
