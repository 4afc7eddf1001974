//! The plugin configuration: any JSON is accepted or refused with messages, never a panic.
#![no_main]
use gatehouse::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| (name == "GATEHOUSE_SECRET").then(|| "env-secret-0123456789abcdef0123456789".to_string());
    if let Err(errors) = Config::parse(data, &env) {
        assert!(!errors.0.is_empty());
    }
});
