//! The whole-answer reader (`keel_wire::answer_view::AnswerFacts`) on
//! arbitrary bytes.
//!
//! Checks: no panic; whatever the reader accepts, the typed parse of
//! `ChatResponse` accepts too (the engine builds the typed response from
//! the same bytes later, when something has to change or translate the
//! answer) and reads the same first-choice text, refusal, finish reason,
//! choice count and usage; the in-place model replacement yields JSON that
//! differs from the input in `model` alone.
#![no_main]

use keel_wire::answer_view::AnswerFacts;
use keel_wire::openai::ChatResponse;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(facts) = AnswerFacts::read(data) else {
        return;
    };
    let full: ChatResponse = match serde_json::from_slice(data) {
        Ok(r) => r,
        Err(e) => panic!("the reader accepted what the typed parse refuses: {e}"),
    };
    let first = full.choices.first();
    assert_eq!(facts.id, full.id);
    assert_eq!(facts.choices, full.choices.len());
    assert_eq!(facts.text.as_deref(), full.text());
    assert_eq!(
        facts.refusal.as_deref(),
        first.and_then(|c| c.message.refusal.as_deref())
    );
    assert_eq!(
        facts.finish_reason.as_deref(),
        first.and_then(|c| c.finish_reason.as_deref())
    );
    assert_eq!(facts.usage, full.usage);
    if let Some(out) = facts.with_model(data, "route") {
        let mut expected: Value = serde_json::from_slice(data).expect("typed parse accepted it");
        let got: Value = serde_json::from_slice(&out).expect("the replacement broke the JSON");
        expected["model"] = Value::from("route");
        assert_eq!(got, expected);
    }
});
