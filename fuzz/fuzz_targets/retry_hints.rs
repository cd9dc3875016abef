//! Every retry-hint parser on arbitrary headers: `Retry-After` (seconds and
//! HTTP dates), `retry-after-ms`, the rate-limit reset headers and Go-style
//! durations. No panic, no overflow.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let h = common::headers(data);
    let _ = keel_policy::retry_hint(&h, now);
    let _ = keel_policy::explicit_retry_hint(&h, now);
    let _ = keel_policy::rate_limit_headers(&h, now);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keel_policy::parse_go_duration(s);
    }
});
