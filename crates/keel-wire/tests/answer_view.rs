//! The whole-answer facts agree with the typed parse: whatever the reader
//! accepts, the typed parse accepts and reads the same, whatever the
//! strings, spacing, member order and extra fields; and an ordinary answer
//! is read by the fast reader, not left to serde.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::mutate;
use keel_wire::answer_view::AnswerFacts;
use keel_wire::openai::ChatResponse;
use proptest::prelude::*;
use serde_json::{json, Value};

/// An answer as an upstream might write it: `members` in the given order,
/// with `ws` around every separator.
#[allow(clippy::too_many_arguments)]
fn answer_json(
    id: &str,
    model: &str,
    text: Option<&str>,
    finish: Option<&str>,
    refusal: Option<&str>,
    extra: &str,
    order: &[usize],
    ws: &str,
) -> String {
    let choice = json!({
        "index": 0,
        "message": {"role": "assistant", "content": text, "refusal": refusal},
        "logprobs": null,
        "finish_reason": finish,
    });
    let members = [
        format!("\"id\"{ws}:{ws}{}", Value::from(id)),
        format!("\"object\"{ws}:{ws}\"chat.completion\""),
        format!("\"created\"{ws}:{ws}1700000000"),
        format!("\"model\"{ws}:{ws}{}", Value::from(model)),
        format!("\"choices\"{ws}:{ws}[{choice}]"),
        format!(
            "\"usage\"{ws}:{ws}{{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}"
        ),
        format!("\"x_extra\"{ws}:{ws}{extra}"),
    ];
    let parts: Vec<&str> = order.iter().map(|&i| members[i].as_str()).collect();
    format!("{{{ws}{}{ws}}}", parts.join(&format!("{ws},{ws}")))
}

/// The facts the typed parse gives, to compare with the reader's.
/// What is compared: id, choice count, and the first choice's text,
/// refusal and finish reason.
type Reading = (
    String,
    usize,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn typed_facts(r: &ChatResponse) -> Reading {
    let first = r.choices.first();
    (
        r.id.clone(),
        r.choices.len(),
        r.text().map(str::to_owned),
        first.and_then(|c| c.message.refusal.clone()),
        first.and_then(|c| c.finish_reason.clone()),
    )
}

fn facts_of(f: &AnswerFacts) -> Reading {
    (
        f.id.clone(),
        f.choices,
        f.text.clone(),
        f.refusal.clone(),
        f.finish_reason.clone(),
    )
}

fn extra_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("[1, -2.5, true, {\"a\": [\"b\"]}]".to_string()),
        Just("{\"cached_tokens\": 0}".to_string()),
        Just("\"t\\ne\\\"x\\/t\"".to_string()),
        Just("123456789012345678901234567890".to_string()),
    ]
}

proptest! {
    #[test]
    fn the_reader_reads_what_the_typed_parse_reads(
        id in "[a-z0-9-]{1,12}",
        model in "[a-z0-9.\"\\\\/ -]{0,16}",
        route in "[a-z0-9.\"\\\\ -]{0,16}",
        text in proptest::option::of("[a-zA-Z \"\\\\\n\u{e9}\u{1F600}]{0,20}"),
        finish in proptest::option::of("stop|length|content_filter"),
        refusal in proptest::option::of("[a-z ]{0,8}"),
        extra in extra_value(),
        order in Just([0usize, 1, 2, 3, 4, 5, 6]).prop_shuffle(),
        ws in "[ \n]{0,2}",
    ) {
        let json = answer_json(&id, &model, text.as_deref(), finish.as_deref(), refusal.as_deref(), &extra, &order, &ws);
        let facts = AnswerFacts::read(json.as_bytes()).expect("an ordinary answer is read in one pass");
        let full: ChatResponse = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(facts_of(&facts), typed_facts(&full));
        prop_assert_eq!(&facts.usage, &full.usage);

        match facts.with_model(json.as_bytes(), &route) {
            Some(out) => {
                let mut expected: Value = serde_json::from_str(&json).unwrap();
                expected["model"] = Value::from(route.as_str());
                let got: Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(got, expected);
            }
            // Only a model with escapes is not read in place.
            None => prop_assert!(model.contains('"') || model.contains('\\')),
        }
    }

    /// Whatever one-character edit of an answer the reader accepts, the
    /// typed parse accepts too and reads the same.
    #[test]
    fn what_the_reader_accepts_the_typed_parse_accepts(
        text in proptest::option::of("[a-zA-Z \"\\\\\n]{0,12}"),
        finish in proptest::option::of("stop|length"),
        extra in extra_value(),
        order in Just([0usize, 1, 2, 3, 4, 5, 6]).prop_shuffle(),
        at in 0usize..400,
        kind in 0u8..3,
        byte in proptest::sample::select(vec!['a', '"', '\\', ',', '}', ']', '{', ' ', '1', '-', 'e', '.', 'n', '\u{1}', '\u{e9}']),
    ) {
        let json = answer_json("c1", "up", text.as_deref(), finish.as_deref(), None, &extra, &order, "");
        let edited = mutate(&json, at, kind, byte);
        if let Some(facts) = AnswerFacts::read(edited.as_bytes()) {
            let full: ChatResponse = serde_json::from_str(&edited)
                .unwrap_or_else(|e| panic!("the reader accepted what the typed parse refuses ({e}): {edited}"));
            prop_assert_eq!(facts_of(&facts), typed_facts(&full));
            prop_assert_eq!(&facts.usage, &full.usage);
        }
    }
}
