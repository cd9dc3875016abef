//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use keel_wire::sse::{SseDecoder, SseEvent};
use serde_json::Value;

/// Path of a fixture, relative to `tests/fixtures`.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The bytes of a fixture.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// The text of a fixture.
pub fn fixture(name: &str) -> String {
    String::from_utf8(fixture_bytes(name)).unwrap()
}

/// A fixture parsed as a JSON value.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Every SSE fixture.
pub const STREAMS: &[&str] = &[
    "openai/chat_stream.sse",
    "openai/chat_stream_tool_calls.sse",
    "anthropic/messages_stream.sse",
    "anthropic/messages_stream_error.sse",
];

/// Decodes a whole stream in one push.
pub fn decode_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new();
    let mut events = dec.push(bytes).unwrap();
    events.extend(dec.finish().unwrap());
    events
}

/// The `data` of each event parsed as `T`, skipping OpenAI's `[DONE]`.
pub fn parse_stream<T: serde::de::DeserializeOwned>(name: &str) -> Vec<T> {
    decode_all(&fixture_bytes(name))
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{}: {err}", e.data)))
        .collect()
}

/// The value with every `null`-valued object member removed, recursively:
/// this crate omits `None` fields instead of writing `null`.
pub fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// One character changed, added or removed somewhere in `json`.
pub fn mutate(json: &str, at: usize, kind: u8, byte: char) -> String {
    let mut chars: Vec<char> = json.chars().collect();
    let at = at % (chars.len() + 1);
    match kind % 3 {
        0 if at < chars.len() => chars[at] = byte,
        1 if at < chars.len() => {
            chars.remove(at);
        }
        _ => chars.insert(at, byte),
    }
    chars.into_iter().collect()
}
