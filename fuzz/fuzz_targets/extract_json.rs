//! The JSON extractor (fences, prose around an object) on arbitrary text.
//!
//! Checks: no panic; what it returns is a non-empty slice of the input
//! that parses as JSON; text that is JSON (trimmed) is returned whole;
//! extracting again from the result gives the result (idempotent).
#![no_main]

use keel_wire::content::extract_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole_is_json = serde_json::from_str::<serde::de::IgnoredAny>(text.trim()).is_ok();
    match extract_json(text) {
        Some(found) => {
            let (start, end) = (text.as_ptr() as usize, text.as_ptr() as usize + text.len());
            let p = found.as_ptr() as usize;
            assert!(
                p >= start && p + found.len() <= end,
                "not a slice of the input"
            );
            assert!(!found.is_empty());
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(found).is_ok(),
                "{found:?} is not JSON"
            );
            if whole_is_json {
                assert_eq!(found, text.trim());
            }
            assert_eq!(extract_json(found), Some(found), "not idempotent");
        }
        None => assert!(!whole_is_json, "missed JSON that is the whole text"),
    }
});
