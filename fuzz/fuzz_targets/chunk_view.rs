//! The streamed-chunk view (`keel_wire::chunk_view::ChunkView`) on
//! arbitrary bytes.
//!
//! Checks: no panic; what the view accepts is valid JSON (its one-pass
//! scanner never lets bad bytes through to a client); its reading equals
//! serde's reading of the same bytes, and it accepts exactly what serde's
//! reading accepts; the in-place model replacement yields valid JSON that
//! differs from the input in `model` alone.
#![no_main]

use keel_wire::chunk_view::ChunkView;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

/// What a gateway reads of a view, as text to compare.
fn reading(v: &ChunkView<'_>) -> String {
    let choices: Vec<String> = v
        .choices
        .iter()
        .map(|c| {
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}",
                c.delta.role, c.delta.content, c.delta.tool_calls, c.delta.refusal, c.finish_reason
            )
        })
        .collect();
    format!("{}|{}|{:?}|{choices:?}", v.id, v.model, v.usage)
}

fuzz_target!(|data: &[u8]| {
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
