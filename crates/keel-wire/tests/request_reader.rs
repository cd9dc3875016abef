//! `ChatRequest::from_json` (the one-pass reader, serde behind it) reads
//! exactly what serde's typed parse reads: the same request from every
//! body serde accepts, an error for every body serde refuses, whatever the
//! strings, spacing, member order, options and unknown fields; and the
//! layout it gives splices the body as a scan of its own would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::mutate;
use keel_wire::openai::ChatRequest;
use keel_wire::splice::Object;
use proptest::prelude::*;
use serde_json::Value;

/// A request as a client might write it: `members` in the given order,
/// with `ws` around every separator.
fn request_json(messages: &[(String, Option<String>)], options: &[String], ws: &str) -> String {
    let msgs: Vec<String> = messages
        .iter()
        .map(|(role, content)| {
            let content = content
                .as_deref()
                .map_or("null".to_string(), |c| Value::from(c).to_string());
            format!(
                "{{{ws}\"role\"{ws}:{ws}{}{ws},{ws}\"content\"{ws}:{ws}{content}{ws}}}",
                Value::from(role.as_str())
            )
        })
        .collect();
    let mut members = vec![
        format!("\"model\"{ws}:{ws}\"gpt-4o-mini\""),
        format!(
            "\"messages\"{ws}:{ws}[{}]",
            msgs.join(&format!("{ws},{ws}"))
        ),
    ];
    members.extend(options.iter().cloned());
    format!("{{{ws}{}{ws}}}", members.join(&format!("{ws},{ws}")))
}

fn option() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""stream":true"#.to_string()),
        Just(r#""stream":null"#.to_string()),
        Just(r#""stream_options":{"include_usage":true}"#.to_string()),
        Just(r#""max_tokens":32"#.to_string()),
        Just(r#""max_completion_tokens":4096"#.to_string()),
        Just(r#""temperature":0.2"#.to_string()),
        Just(r#""temperature":0.30000000000000004"#.to_string()),
        Just(r#""top_p":1"#.to_string()),
        Just(r#""n":2"#.to_string()),
        Just(r#""stop":["\n","END"]"#.to_string()),
        Just(r#""stop":"x""#.to_string()),
        Just(r#""seed":-42"#.to_string()),
        Just(r#""tool_choice":"auto""#.to_string()),
        Just(r#""response_format":{"type":"json_object"}"#.to_string()),
        Just(r#""user":"u-1""#.to_string()),
        Just(r#""metadata":{"k":["v",1,2.5,null,false]}"#.to_string()),
        Just(r#""logit_bias":{"50256":-100}"#.to_string()),
        Just(r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#.to_string()),
    ]
}

fn message() -> impl Strategy<Value = (String, Option<String>)> {
    (
        prop_oneof![
            Just("system"),
            Just("user"),
            Just("assistant"),
            Just("critic")
        ]
        .prop_map(str::to_string),
        proptest::option::weighted(0.9, "[a-zA-Z \"\\\\\n\t\u{e9}\u{1F600}]{0,24}"),
    )
}

/// `from_json` and serde both read `json` the same, or both refuse it.
fn agree(json: &str) -> Result<(), TestCaseError> {
    let serde = serde_json::from_str::<ChatRequest>(json);
    match (ChatRequest::from_json(json.as_bytes()), serde) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("from_json {a:?} but serde {b:?} for {json}"),
    }
    Ok(())
}

/// The layout the reader gives (if any) splices `json` exactly as a scan
/// of its own does.
fn layout_splices_as_a_scan(json: &str) -> Result<(), TestCaseError> {
    let Ok((_, Some(layout))) = ChatRequest::from_json_with_layout(json.as_bytes()) else {
        return Ok(());
    };
    let body = json.as_bytes();
    let (ours, scan) = (layout.object(body).unwrap(), Object::parse(body).unwrap());
    for key in ["model", "stream", "stream_options", "messages", "metadata"] {
        prop_assert_eq!(ours.raw(key), scan.raw(key));
        prop_assert_eq!(ours.has(key), scan.has(key));
    }
    let append = Some(("stream_options", r#"{"include_usage":true}"#));
    prop_assert_eq!(
        ours.rewrite("model", "dep \"1\"", append),
        scan.rewrite("model", "dep \"1\"", append)
    );
    // Other bytes are not taken for the ones it was read from.
    prop_assert!(layout.object(&body[1..]).is_none());
    Ok(())
}

proptest! {
    #[test]
    fn reads_what_serde_reads(
        messages in proptest::collection::vec(message(), 1..4),
        options in proptest::collection::vec(option(), 0..5),
        ws in "[ \n]{0,2}",
    ) {
        let json = request_json(&messages, &options, &ws);
        layout_splices_as_a_scan(&json)?;
        agree(&json)?;
    }

    /// One-character edits: both accept (and read the same) or both refuse.
    #[test]
    fn accepts_and_refuses_what_serde_does(
        messages in proptest::collection::vec(message(), 1..3),
        options in proptest::collection::vec(option(), 0..3),
        at in 0usize..300,
        kind in 0u8..3,
        byte in proptest::sample::select(vec!['a', '"', '\\', ',', ':', '}', ']', '{', '[', ' ', '1', '-', 'e', '.', 'n', '\u{1}', '\u{e9}']),
    ) {
        let json = mutate(&request_json(&messages, &options, ""), at, kind, byte);
        layout_splices_as_a_scan(&json)?;
        agree(&json)?;
    }
}

#[test]
fn the_bench_request_and_a_long_one_read_the_same() {
    let bench = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"temperature":0.2,"stream":false}"#;
    assert_eq!(
        ChatRequest::from_json(bench).unwrap(),
        serde_json::from_slice::<ChatRequest>(bench).unwrap()
    );
    // Content parts, a tool call, a \u escape: serde's to read, same result.
    let other = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"caf\u00e9"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"1"}]}"#;
    assert_eq!(
        ChatRequest::from_json(other).unwrap(),
        serde_json::from_slice::<ChatRequest>(other).unwrap()
    );
    // Errors are serde's own.
    let bad = br#"{"model":"m","messages":[{"content":"x"}]}"#;
    assert_eq!(
        ChatRequest::from_json(bad).unwrap_err().to_string(),
        serde_json::from_slice::<ChatRequest>(bad)
            .unwrap_err()
            .to_string()
    );
}
