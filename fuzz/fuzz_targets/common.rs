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

/// What Keel parses it can write back: the JSON it writes re-parses to a
/// value that writes the same JSON (so a translated request or a
/// passed-through event survives the wire). Compared as JSON, from the
/// second write on: input with duplicate keys fails the typed variant and
/// is kept as `Other` (duplicates collapsed) the first time, then parses as
/// the typed variant, which may drop fields it does not model. After that
/// one normalisation the JSON must be a fixed point.
pub fn assert_serde_roundtrip<T>(value: &T, what: &str)
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let once = reparse(value, what);
    let twice = reparse(&once, what);
    let (a, b) = (serde_json::to_value(&once), serde_json::to_value(&twice));
    let (Ok(a), Ok(b)) = (a, b) else {
        panic!("{what}: to_value failed");
    };
    assert_eq!(
        a, b,
        "{what}: JSON changed by a round trip: {twice:?} vs {once:?}"
    );
}

fn reparse<T>(value: &T, what: &str) -> T
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let text = serde_json::to_vec(value).unwrap_or_else(|e| panic!("{what}: serialise: {e}"));
    serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "{what}: re-parse of {} failed: {e}",
            String::from_utf8_lossy(&text)
        )
    })
}
