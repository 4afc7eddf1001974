//! What the provider sends: key sets, discovery documents, token-endpoint answers and errors.
#![no_main]
use gatehouse::jwt::jwks::KeySet;
use gatehouse::oidc::discovery::Discovery;
use gatehouse::oidc::login::{token_error, TokenResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = KeySet::parse(data);
    let _ = Discovery::parse(data, "https://sso.example.com/realms/acme");
    let _ = TokenResponse::parse(data);
    let _ = token_error(data);
});
