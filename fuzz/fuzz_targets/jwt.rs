//! JWS parsing and verification with real keys of every algorithm (RSA, P-256, P-384, Ed25519).
#![no_main]
use gatehouse::jwt::{self, jwks::KeySet};
use gatehouse::testutil::fixtures;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SETUP: (KeySet, std::rc::Rc<gatehouse::config::Config>) = {
        let signers = fixtures::Signers::new();
        let keys = KeySet::from_value(&signers.jwks()).unwrap_or_default();
        (keys, fixtures::config(&signers, 0))
    };
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    SETUP.with(|(keys, cfg)| {
        let _ = jwt::verify(token, keys, &fixtures::expectations(cfg), fixtures::NOW);
    });
});
