//! Return targets: the result is always a path on this host, or an allowed host.
#![no_main]
use gatehouse::oidc::login::{allowed_return_url, safe_return_path};
use gatehouse::policy::{path, PathSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    let path = safe_return_path(target);
    assert!(path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\"), "{path:?}");
    assert!(path.bytes().all(|b| (0x21..0x7f).contains(&b)), "{path:?}");
    let allowed = vec![".example.com".to_string()];
    if let Some(url) = allowed_return_url(target, "auth.example.com", &allowed) {
        assert!(!url.contains(['\r', '\n']), "{url:?}");
        let host = url.split("://").nth(1).and_then(|r| r.split(['/', ':', '?', '#']).next()).unwrap_or("");
        assert!(host == "auth.example.com" || host.ends_with(".example.com"), "{url:?} -> {host:?}");
    }
    if let Ok(p) = path::prepare(target, &PathSettings::default()) {
        assert!(p.path.starts_with('/'), "{:?}", p.path);
    }
});
