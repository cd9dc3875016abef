//! The error-body classifier on an arbitrary status, headers and body.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let rest = &data[2..];
    // Headers up to the first NUL, the body after it.
    let (head, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let _ = keel_policy::classify_response(status, &common::headers(head), body, now);
});
