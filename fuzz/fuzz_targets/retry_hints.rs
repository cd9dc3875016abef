//! Every retry-hint parser: `Retry-After` (seconds and HTTP dates),
//! `retry-after-ms`, OpenAI's `x-ratelimit-reset-*` (Go durations),
//! Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339), the remaining and
//! limit counters, and `parse_go_duration` itself.
//!
//! Input: each line is `<selector byte><value>`; the selector picks one of
//! the known header names (or, for 0xFF, the line is a raw `name: value`),
//! so the fuzzer spends its time on values. Checks: no panic; every hint
//! is at most `MAX_HINT`; the hint precedence holds (`retry_hint` is the
//! explicit hint when there is one, else a reset); `parse_go_duration` of a
//! value equals a hand-made `{n}ns` spelling of its result.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use keel_policy::{HintSource, MAX_HINT};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const NAMES: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-output-tokens-limit",
];

fn headers(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&sel, value)) = line.split_first() else {
            continue;
        };
        if sel == 0xFF {
            h.extend(common::headers(value));
            continue;
        }
        let name = HeaderName::from_static(NAMES[sel as usize % NAMES.len()]);
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.append(name, v);
        }
    }
    h
}

fuzz_target!(|data: &[u8]| {
    // A fixed "now", and one late enough that any date may be in the past.
    for now in [
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        SystemTime::UNIX_EPOCH,
    ] {
        let h = headers(data);
        let explicit = keel_policy::explicit_retry_hint(&h, now);
        let hint = keel_policy::retry_hint(&h, now);
        for x in [explicit, hint].into_iter().flatten() {
            assert!(x.after <= MAX_HINT, "{x:?} over the cap");
        }
        if let Some(e) = explicit {
            assert!(matches!(
                e.source,
                HintSource::RetryAfterMs | HintSource::RetryAfter
            ));
            assert_eq!(hint, Some(e), "an explicit hint takes precedence");
        } else if let Some(h) = hint {
            assert!(matches!(
                h.source,
                HintSource::RateLimitReset | HintSource::AnthropicReset
            ));
        }
        let rl = keel_policy::rate_limit_headers(&h, now);
        for d in [rl.reset_requests, rl.reset_tokens].into_iter().flatten() {
            assert!(d <= MAX_HINT, "reset {d:?} over the cap");
        }
        // A reset hint is one of the resets the headers report.
        if let Some(h) = hint.filter(|h| h.source == HintSource::RateLimitReset) {
            assert!(
                Some(h.after) == rl.reset_requests || Some(h.after) == rl.reset_tokens,
                "{h:?} vs {rl:?}"
            );
        }
    }
    for line in data.split(|&b| b == b'\n') {
        let Ok(s) = std::str::from_utf8(line) else {
            continue;
        };
        if let Some(d) = keel_policy::parse_go_duration(s) {
            assert!(
                d.as_nanos() <= i64::MAX as u128,
                "{s:?} -> {d:?} over Go's range"
            );
            let spelled = format!("{}ns", d.as_nanos());
            assert_eq!(keel_policy::parse_go_duration(&spelled), Some(d), "{s:?}");
        }
    }
});
