//! The whole per-request decision on hostile headers: cookie parsing and session opening, bearer
//! tokens, the login callback (state cookie, query), sign-out, paths and rules. The input is split
//! into header lines `name: value` (the first line is the path).
#![no_main]
use gatehouse::flow::{Engine, Request};
use gatehouse::testutil::fixtures;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static ENGINE: RefCell<Engine> = RefCell::new({
        let signers = fixtures::Signers::new();
        let mut engine = fixtures::engine(fixtures::config(&signers, 64));
        let _ = fixtures::sign_in(&mut engine, &signers);
        engine
    });
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("/");
    let mut headers = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), fixtures::HOST.to_string()),
    ];
    for line in lines.take(64) {
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    ENGINE.with(|e| {
        let mut engine = e.borrow_mut();
        let mut random = fixtures::counter_random();
        let _ = engine.on_request(&Request { headers: &headers }, &mut || fixtures::NOW + 60, &mut random);
        let _ = engine.take_counts();
    });
});
