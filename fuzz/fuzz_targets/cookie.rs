//! Cookie headers, chunk reassembly, and opening sealed values (session, login state, refresh
//! token) with a real key.
#![no_main]
use gatehouse::cookie;
use gatehouse::secret::Secret;
use gatehouse::session::{Purpose, Sealer};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SEALER: Sealer = Sealer::new(&[Secret::new("fuzz-cookie-key-0123456789abcdef0123456789".into())]);
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else { return };
    let pairs = cookie::parse(std::iter::once(header));
    let joined = cookie::get_chunked(&pairs, "_gatehouse");
    let _ = cookie::raw_pairs_except(std::iter::once(header), |n| n.starts_with("_gatehouse"));
    SEALER.with(|s| {
        for value in joined.iter().map(String::as_str).chain(pairs.iter().map(|(_, v)| *v)).chain([header]) {
            let _ = s.open(Purpose::Session, value);
            let _ = s.open(Purpose::LoginState, value);
            let _ = s.decrypt(value);
        }
    });
});
