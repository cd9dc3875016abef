//! The streamed-chunk view (`keel_wire::chunk_view::ChunkView`) on
//! arbitrary bytes.
//!
//! Checks: no panic; what the view accepts is valid JSON (its one-pass
//! scanner never lets bad bytes through to a client); its reading equals
//! serde's reading of the same bytes, and it accepts exactly what serde's
//! reading accepts; the in-place model replacement yields valid JSON that
//! differs from the input in `model` alone. Split at its first 0xFF byte
//! (never in UTF-8) into two chunks, the second is held to the first by
//! `same_but_text`: whatever the shortcut accepts as "the first but for
//! its text", the full reading accepts and reads the same but for it.
#![no_main]

use keel_wire::chunk_view::{same_but_text, ChunkView};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

/// What a gateway reads of a view, as text to compare.
fn reading(v: &ChunkView<'_>) -> String {
    reading_but_text(v, false)
}

/// The reading, with the first choice's text left out when `mask`.
fn reading_but_text(v: &ChunkView<'_>, mask: bool) -> String {
    let choices: Vec<String> = v
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let text = match mask && i == 0 {
                true => "TEXT".to_string(),
                false => format!("{:?}", c.delta.content),
            };
            format!(
                "{:?}|{text}|{:?}|{:?}|{:?}",
                c.delta.role, c.delta.tool_calls, c.delta.refusal, c.finish_reason
            )
        })
        .collect();
    format!("{}|{}|{:?}|{choices:?}", v.id, v.model, v.usage)
}

/// `prev` then `next`: when `next` is `prev` but for its first choice's
/// text by `same_but_text`, the full reading agrees.
fn shortcut(prev: &[u8], next: &[u8]) {
    let (Ok(view), Ok(next)) = (ChunkView::parse(prev), std::str::from_utf8(next)) else {
        return;
    };
    let Some(text) = view
        .choices
        .first()
        .and_then(|c| c.delta.content.as_deref())
    else {
        return;
    };
    let Some(span) = view.span(text) else {
        return;
    };
    let Some(at) = same_but_text(prev, span, next) else {
        return;
    };
    let full =
        ChunkView::parse(next.as_bytes()).expect("the shortcut accepted what the view rejects");
    let got = full.choices[0]
        .delta
        .content
        .as_deref()
        .expect("no text where the shortcut found it");
    assert_eq!(got, &next[at.clone()]);
    assert_eq!(full.span(got), Some(at));
    // Everything else reads the same.
    assert_eq!(reading_but_text(&full, true), reading_but_text(&view, true));
}

fuzz_target!(|data: &[u8]| {
    if let Some(cut) = data.iter().position(|&b| b == 0xff) {
        shortcut(&data[..cut], &data[cut + 1..]);
    }
    let view = ChunkView::parse(data);
    let by_serde = serde_json::from_slice::<ChunkView>(data);
    assert_eq!(
        view.is_ok(),
        by_serde.is_ok(),
        "view {:?} against serde {:?}",
        view.as_ref().err(),
        by_serde.as_ref().err()
    );
    let (Ok(view), Ok(by_serde)) = (view, by_serde) else {
        return;
    };
    assert_eq!(reading(&view), reading(&by_serde));
    // Well-formed JSON (as serde reads it: numbers out of f64's range and
    // strings it does not read are not checked further).
    serde_json::from_slice::<IgnoredAny>(data).expect("the view accepted bad JSON");
    if let Some(out) = view.with_model("\"route\"") {
        serde_json::from_slice::<IgnoredAny>(&out).expect("the replacement broke the JSON");
        if let Ok(mut expected) = serde_json::from_slice::<Value>(data) {
            let got: Value = serde_json::from_slice(&out).expect("the replacement broke the JSON");
            expected["model"] = Value::from("route");
            assert_eq!(got, expected);
        }
    }
});
