//! Builds a `HeaderMap` from fuzz input: one `name: value` per line.

use http::{HeaderMap, HeaderName, HeaderValue};

pub fn headers(text: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    h
}
