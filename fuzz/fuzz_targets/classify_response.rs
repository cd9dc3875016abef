//! The error-body classifier on an arbitrary status, headers and body, and
//! the completion and invalid-output classifiers on arbitrary text.
//!
//! Input: two bytes of status (any `u16`), then headers (`name: value`
//! lines) up to the first NUL, then the body. Checks: no panic; `None`
//! exactly for 2xx; the status is kept; the message is cut to 1,024
//! characters (plus the ellipsis); the hint is the one the headers give
//! (`retry_hint` for rate limits and quota, `explicit_retry_hint` otherwise);
//! statuses whose class the body cannot change are classified by status;
//! classification is deterministic.
#![no_main]

use std::time::{Duration, SystemTime};

use keel_policy::FailureClass;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let raw = u16::from_le_bytes([data[0], data[1]]);
    // Mostly real statuses, sometimes anything.
    let status = if raw & 0x8000 == 0 {
        100 + raw % 500
    } else {
        raw
    };
    let rest = &data[2..];
    let (head, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let headers = common::headers(head);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let c = keel_policy::classify_response(status, &headers, body, now);
    assert_eq!(
        c.is_none(),
        (200..300).contains(&status),
        "None exactly for 2xx"
    );
    let Some(c) = c else {
        return;
    };
    assert_eq!(c.status, Some(status));
    if let Some(m) = &c.message {
        assert!(
            m.chars().count() <= 1025,
            "message of {} chars",
            m.chars().count()
        );
    }
    let want_hint = match c.class {
        FailureClass::RateLimited | FailureClass::QuotaExhausted => {
            keel_policy::retry_hint(&headers, now)
        }
        _ => keel_policy::explicit_retry_hint(&headers, now),
    };
    assert_eq!(c.hint, want_hint);
    match status {
        402 => assert_eq!(c.class, FailureClass::QuotaExhausted),
        503 | 529 => assert_eq!(c.class, FailureClass::Overloaded),
        413 => assert!(matches!(
            c.class,
            FailureClass::QuotaExhausted | FailureClass::ContextOverflow
        )),
        _ => {}
    }
    if (500..600).contains(&status) {
        // A server error is never the client's fault, whatever the body says.
        assert!(!matches!(
            c.class,
            FailureClass::InvalidRequest
                | FailureClass::Auth
                | FailureClass::ContextOverflow
                | FailureClass::ContentFiltered
        ));
    }
    let again = keel_policy::classify_response(status, &headers, body, now);
    assert_eq!(again.as_ref(), Some(&c), "not deterministic");

    // The other classifiers take text.
    let text = String::from_utf8_lossy(body);
    let inv = keel_policy::classify_invalid_output(&text);
    assert_eq!(inv.class, FailureClass::InvalidOutput);
    assert!(inv.message.is_some_and(|m| m.chars().count() <= 1025));
    let flags = data[0];
    let _ = keel_policy::classify_completion(
        Some(&text).filter(|_| flags & 1 == 1).map(|t| &**t),
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
    );
});
