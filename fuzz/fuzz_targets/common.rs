//! Helpers shared by the fuzz targets (each includes this file with `#[path]`
//! and uses what it needs).
#![allow(dead_code)]

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{de::DeserializeOwned, Serialize};

/// Builds a `HeaderMap` from fuzz input: one `name: value` per line.
pub fn headers(text: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    h
}

/// What Keel parses it can write back: the JSON it writes for a value
/// re-parses to a value that writes the same JSON (so a translated request
/// or a passed-through event survives the wire). Compared as JSON, not as
/// values: input with duplicate keys can parse as an `Other` variant the
/// first time and as the typed variant once the duplicates are gone.
pub fn assert_serde_roundtrip<T>(value: &T, what: &str)
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let text = serde_json::to_vec(value).unwrap_or_else(|e| panic!("{what}: serialise: {e}"));
    let again: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "{what}: re-parse of {} failed: {e}",
            String::from_utf8_lossy(&text)
        )
    });
    let (a, b) = (serde_json::to_value(value), serde_json::to_value(&again));
    let (Ok(a), Ok(b)) = (a, b) else {
        panic!("{what}: to_value failed");
    };
    assert_eq!(
        a, b,
        "{what}: JSON changed by a round trip: {again:?} vs {value:?}"
    );
}
