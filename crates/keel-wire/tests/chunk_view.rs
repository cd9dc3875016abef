//! The chunk view agrees with the full parse, and its in-place model
//! replacement changes the model and nothing else, whatever the strings,
//! spacing and field order of the chunk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::mutate;
use keel_wire::chunk_view::{same_but_text, ChunkView};
use keel_wire::openai::ChatChunk;
use proptest::prelude::*;
use serde_json::{json, Value};

/// A chunk as an upstream might write it: `members` in the given order,
/// with `ws` around every separator.
fn chunk_json(
    id: &str,
    model: &str,
    text: Option<&str>,
    finish: Option<&str>,
    order: &[usize],
    ws: &str,
) -> String {
    let choice =
        json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": finish});
    let members = [
        format!("\"id\"{ws}:{ws}{}", Value::from(id)),
        format!("\"object\"{ws}:{ws}\"chat.completion.chunk\""),
        format!("\"created\"{ws}:{ws}1700000000"),
        format!("\"model\"{ws}:{ws}{}", Value::from(model)),
        format!("\"choices\"{ws}:{ws}[{choice}]"),
    ];
    let parts: Vec<&str> = order.iter().map(|&i| members[i].as_str()).collect();
    format!("{{{ws}{}{ws}}}", parts.join(&format!("{ws},{ws}")))
}

proptest! {
    #[test]
    fn the_view_reads_what_the_full_parse_reads_and_replaces_only_the_model(
        id in "[a-z0-9-]{1,12}",
        model in "[a-z0-9.\"\\\\/ -]{0,16}",
        route in "[a-z0-9.\"\\\\ -]{0,16}",
        text in proptest::option::of("[a-zA-Z \"\\\\\n\u{e9}\u{1F600}]{0,20}"),
        finish in proptest::option::of("stop|length"),
        order in Just([0usize, 1, 2, 3, 4]).prop_shuffle(),
        ws in "[ \n]{0,2}",
    ) {
        let json = chunk_json(&id, &model, text.as_deref(), finish.as_deref(), &order, &ws);
        let view = ChunkView::parse(json.as_bytes()).unwrap();
        let full: ChatChunk = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&*view.id, full.id.as_str());
        prop_assert_eq!(&*view.model, full.model.as_str());
        prop_assert_eq!(view.choices[0].delta.content.as_deref(), full.choices[0].delta.content.as_deref());
        prop_assert_eq!(view.finishes_with("length"), finish.as_deref() == Some("length"));

        let route_json = Value::from(route.as_str()).to_string();
        match view.with_model(&route_json) {
            Some(out) => {
                // Everything but the model is the same value, and the bytes
                // around the model are the upstream's own.
                let mut expected: Value = serde_json::from_str(&json).unwrap();
                expected["model"] = Value::from(route.as_str());
                let got: Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(got, expected);
                let model_json = Value::from(model.as_str()).to_string();
                prop_assert_eq!(out.len() + model_json.len(), json.len() + route_json.len());
            }
            // Only a model with escapes is not read in place.
            None => prop_assert!(model.contains('"') || model.contains('\\')),
        }
    }
}

proptest! {
    /// A chunk that is the last one but for its text reads as that chunk
    /// with the new text; and whatever the shortcut accepts (here, any
    /// one-character edit of such a chunk), the full reading accepts too
    /// and reads the same.
    #[test]
    fn same_but_text_reads_what_the_full_reading_reads(
        id in "[a-z0-9-]{1,12}",
        model in "[a-z0-9.\"\\\\/ -]{0,16}",
        text in "[a-zA-Z \"\\\\\n\u{e9}]{0,12}",
        next_text in "[a-zA-Z \"\\\\\n\u{e9}]{0,12}",
        order in Just([0usize, 1, 2, 3, 4]).prop_shuffle(),
        ws in "[ \n]{0,2}",
        at in 0usize..400,
        kind in 0u8..3,
        byte in proptest::sample::select(vec!['a', '"', '\\', ',', '}', ' ', '1', '\u{1}', '\u{e9}']),
    ) {
        let prev = chunk_json(&id, &model, Some(&text), None, &order, &ws);
        let view = ChunkView::parse(prev.as_bytes()).unwrap();
        let content = view.choices[0].delta.content.as_deref().unwrap();
        let Some(span) = view.span(content) else {
            // Text with escapes is not read in place: no shortcut from it.
            prop_assert!(text.contains(['"', '\\', '\n']));
            return Ok(());
        };
        let next = chunk_json(&id, &model, Some(&next_text), None, &order, &ws);
        match same_but_text(prev.as_bytes(), span.clone(), &next) {
            Some(r) => prop_assert_eq!(&next[r], next_text.as_str()),
            None => prop_assert!(next_text.contains(['"', '\\', '\n'])),
        }
        let edited = mutate(&next, at, kind, byte);
        if let Some(r) = same_but_text(prev.as_bytes(), span, &edited) {
            let full = ChunkView::parse(edited.as_bytes()).unwrap();
            let text = full.choices[0].delta.content.as_deref().unwrap();
            prop_assert_eq!(text, &edited[r.clone()]);
            prop_assert_eq!(full.span(text), Some(r));
            prop_assert_eq!(&*full.id, &*view.id);
            prop_assert_eq!(&*full.model, &*view.model);
            prop_assert_eq!(full.choices.len(), 1);
        }
    }
}

/// One member of a `usage` object, valid or not, as an upstream might
/// send it.
fn usage_member() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("prompt_tokens"),
        Just("completion_tokens"),
        Just("total_tokens"),
        Just("prompt_tokens_details"),
    ];
    let value = prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => Just("4294967295".to_string()),
        1 => Just("4294967296".to_string()),
        1 => Just("007".to_string()),
        1 => Just("0".to_string()),
        1 => Just("1.0".to_string()),
        1 => Just("2e3".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("null".to_string()),
        1 => Just("{\"cached_tokens\": 3}".to_string()),
    ];
    (key, value, " {0,1}").prop_map(|(k, v, ws)| format!("\"{k}\"{ws}:{ws}{v}"))
}

proptest! {
    /// The usage chunk reads as the full parse reads it, counts, extra
    /// fields, duplicates and invalid numbers included: the view's own
    /// reading of the usual three counts agrees with serde's.
    #[test]
    fn usage_reads_as_the_full_parse_reads_it(
        members in proptest::collection::vec(usage_member(), 0..5),
        null in proptest::bool::weighted(0.1),
    ) {
        let usage = if null { "null".to_string() } else { format!("{{{}}}", members.join(",")) };
        let text = format!(
            "{{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{usage}}}"
        );
        let full = serde_json::from_str::<ChatChunk>(&text);
        let view = ChunkView::parse_str(&text);
        match (full, view) {
            (Ok(full), Ok(view)) => prop_assert_eq!(view.usage, full.usage, "{}", text),
            (Err(_), Err(_)) => {}
            (full, view) => prop_assert!(false, "{text}: full {:?}, view {:?}", full.is_ok(), view.is_ok()),
        }
    }
}
