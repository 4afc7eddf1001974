//! OpenID Connect pieces that are pure: the discovery document.

pub mod discovery;
pub mod login;
