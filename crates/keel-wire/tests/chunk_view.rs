//! The chunk view agrees with the full parse, and its in-place model
//! replacement changes the model and nothing else, whatever the strings,
//! spacing and field order of the chunk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_wire::chunk_view::ChunkView;
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
