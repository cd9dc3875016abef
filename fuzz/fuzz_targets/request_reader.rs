//! `ChatRequest::from_json` (the one-pass request reader, serde behind it)
//! on arbitrary bytes.
//!
//! Checks: no panic; it accepts exactly what serde's typed parse accepts,
//! and reads the same request.
#![no_main]

use keel_wire::openai::ChatRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = ChatRequest::from_json(data);
    let serde = serde_json::from_slice::<ChatRequest>(data);
    match (ours, serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("from_json {a:?} but serde {b:?}"),
    }
});
