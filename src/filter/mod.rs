//! The glue between Envoy and the engine. It translates — host events into engine calls, the
//! engine's decisions into host calls — and decides nothing itself: what to fetch and when, the
//! fetch lease, answer size limits and every response come from the core.
//!
//! - [`host`]: the [`host::Host`] trait, every host call the glue makes;
//! - [`root`]: the root context (configure, ticks, key fetches);
//! - [`http`]: a request's context;
//! - [`metrics`]: Envoy metrics for the engine's counts;
//! - `abi` (Wasm only): proxy-wasm's entry points and host calls behind [`host::Host`].
//!
//! Everything but `abi` compiles on the host, where `tests` drive it through a recording fake.

use crate::flow::Engine;
use std::cell::RefCell;
use std::rc::Rc;

#[cfg(target_arch = "wasm32")]
mod abi;
pub mod host;
pub mod http;
pub mod metrics;
pub mod root;

/// The VM's engine, shared by the root context and the request contexts.
type Shared = Rc<RefCell<Engine>>;

#[cfg(test)]
mod tests;
