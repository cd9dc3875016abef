//! Every fixture parses, re-serialises to the same JSON (bar `null`
//! members, which are omitted), and re-parses to an equal value; unknown
//! fields survive as equal JSON values.

// Test helpers outside `#[test]` functions unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, fixture_json, parse_stream, strip_nulls};
use keel_wire::anthropic::{
    AErrorBody, BlockDelta, ContentBlock, ImageSource, MessagesRequest, MessagesResponse,
    StreamEvent, System,
};
use keel_wire::openai::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, ErrorBody, ResponseFormat, Role,
    Stop,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use std::fmt::Debug;

/// parse -> serialise -> parse, checking both the value and the JSON.
fn roundtrip_value<T>(original: &Value) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let parsed: T = serde_json::from_value(original.clone()).unwrap();
    let reserialised = serde_json::to_value(&parsed).unwrap();
    assert_eq!(strip_nulls(&reserialised), strip_nulls(original));
    let text = serde_json::to_string(&parsed).unwrap();
    let reparsed: T = serde_json::from_str(&text).unwrap();
    assert_eq!(reparsed, parsed);
    parsed
}

fn roundtrip<T>(name: &str) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    // Parse from the text too, not only from a `Value`.
    let from_text: T = serde_json::from_str(&fixture(name)).unwrap();
    let parsed = roundtrip_value::<T>(&fixture_json(name));
    assert_eq!(from_text, parsed);
    parsed
}

#[test]
fn openai_request_roundtrips_with_unknown_fields() {
    let req: ChatRequest = roundtrip("openai/chat_request.json");
    assert_eq!(req.model, "gpt-4o-2024-08-06");
    assert_eq!(req.messages.len(), 2);
    assert_eq!(req.messages[0].role, Role::System);
    assert_eq!(req.seed, Some(42));
    assert_eq!(req.max_completion_tokens, Some(800));
    assert_eq!(req.effective_max_tokens(), Some(800));
    assert!(req.is_stream());
    assert!(req.wants_stream_usage());
    assert!(req.has_images());
    assert!(req.has_tools());
    assert!(req.wants_json_schema());
    assert_eq!(req.stop, Some(Stop::Many(vec!["\nEND".into()])));
    assert_eq!(
        req.tool_choice,
        Some(json!({"type": "function", "function": {"name": "get_weather"}}))
    );
    let Some(ResponseFormat::JsonSchema { json_schema }) = &req.response_format else {
        panic!("expected a json_schema response format");
    };
    assert_eq!(json_schema.name, "landmark_report");
    assert_eq!(json_schema.strict, Some(true));
    let Some(Content::Parts(parts)) = &req.messages[1].content else {
        panic!("expected parts");
    };
    assert!(
        matches!(&parts[1], ContentPart::ImageUrl { image_url, .. } if image_url.detail.as_deref() == Some("high"))
    );

    // Unknown fields are kept, as equal JSON values, and re-emitted.
    let original = fixture_json("openai/chat_request.json");
    for key in ["parallel_tool_calls", "store", "logit_bias", "future_knob"] {
        assert_eq!(req.extra.get(key), original.get(key), "extra field {key}");
    }
    assert_eq!(req.extra.len(), 4);
    let out = serde_json::to_value(&req).unwrap();
    assert_eq!(
        out["future_knob"],
        json!({ "level": 3, "modes": ["fast", null], "nested": { "ok": true } })
    );
}

#[test]
fn openai_request_with_tool_history_roundtrips() {
    let req: ChatRequest = roundtrip("openai/chat_request_tool_history.json");
    assert_eq!(req.messages[1].role, Role::Developer);
    assert_eq!(req.messages[3].content, None);
    assert_eq!(req.messages[3].tool_calls.as_ref().map(Vec::len), Some(2));
    assert_eq!(req.messages[4].role, Role::Tool);
    assert_eq!(req.stop, Some(Stop::One("\n\n".into())));
    assert_eq!(req.effective_max_tokens(), Some(300));
    assert!(!req.is_stream());
    assert!(!req.has_images());
}

#[test]
fn openai_responses_roundtrip() {
    let text: ChatResponse = roundtrip("openai/chat_response_text.json");
    assert_eq!(
        text.text(),
        Some("{\"landmark\":\"Eiffel Tower\",\"city\":\"Paris\",\"temperature_c\":15}")
    );
    assert_eq!(text.finish_reason(), Some("stop"));
    assert_eq!(text.extra.get("service_tier"), Some(&json!("default")));
    assert_eq!(
        text.choices[0].message.extra.get("annotations"),
        Some(&json!([]))
    );
    let usage = text.usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (1117, 46, 1163)
    );
    assert_eq!(
        usage.extra["prompt_tokens_details"]["cached_tokens"],
        json!(1024)
    );

    let tools: ChatResponse = roundtrip("openai/chat_response_tool_calls.json");
    assert_eq!(tools.text(), None);
    assert_eq!(tools.finish_reason(), Some("tool_calls"));
    assert_eq!(tools.tool_calls().len(), 2);
    assert_eq!(
        tools.tool_calls()[1].function.arguments,
        "{\"city\":\"Boston, MA\"}"
    );
}

#[test]
fn openai_stream_chunks_roundtrip() {
    for name in [
        "openai/chat_stream.sse",
        "openai/chat_stream_tool_calls.sse",
    ] {
        let values: Vec<Value> = parse_stream(name);
        assert!(values.len() > 5);
        let chunks: Vec<ChatChunk> = values.iter().map(roundtrip_value).collect();
        assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert!(last.usage.is_some());
    }
    let chunks: Vec<ChatChunk> = parse_stream("openai/chat_stream.sse");
    assert_eq!(chunks[1].extra.get("obfuscation"), Some(&json!("x0Q")));
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.as_deref())
        .collect();
    assert_eq!(
        text,
        "Yes — pack an umbrella: Paris has light rain at 15°C.\n\nBoston is sunny 🌞."
    );
}

#[test]
fn openai_error_bodies_roundtrip() {
    let cases = [
        (
            "openai/error_rate_limit.json",
            "tokens",
            "rate_limit_exceeded",
        ),
        (
            "openai/error_insufficient_quota.json",
            "insufficient_quota",
            "insufficient_quota",
        ),
        (
            "openai/error_context_length.json",
            "invalid_request_error",
            "context_length_exceeded",
        ),
    ];
    for (name, kind, code) in cases {
        let body: ErrorBody = roundtrip(name);
        assert_eq!(body.error.r#type, kind, "{name}");
        assert_eq!(body.code_str(), Some(code), "{name}");
        assert!(!body.error.message.is_empty());
    }
    let ctx: ErrorBody = roundtrip("openai/error_context_length.json");
    assert_eq!(ctx.error.param, Some(json!("messages")));
}

#[test]
fn error_body_new_serialises_like_openai() {
    let body = ErrorBody::new("upstream timed out", "server_error", Some("timeout"));
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        json!({"error": {"message": "upstream timed out", "type": "server_error", "code": "timeout"}})
    );
    let body = ErrorBody::new("bad", "invalid_request_error", None);
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        json!({"error": {"message": "bad", "type": "invalid_request_error"}})
    );
}

#[test]
fn anthropic_request_roundtrips_with_unknown_fields() {
    let req: MessagesRequest = roundtrip("anthropic/messages_request.json");
    assert_eq!(req.max_tokens, 1024);
    assert_eq!(req.top_k, Some(40));
    assert!(req.is_stream());
    assert!(req.has_images());
    assert!(req.has_tools());
    let Some(System::Blocks(system)) = &req.system else {
        panic!("expected system blocks");
    };
    assert!(
        matches!(&system[1], ContentBlock::Text { extra, .. } if extra.contains_key("cache_control"))
    );
    assert_eq!(req.extra.get("service_tier"), Some(&json!("auto")));
    assert_eq!(
        req.extra.get("future_knob"),
        Some(&json!({"level": 3, "modes": ["fast", null]}))
    );
    let tools = req.tools.as_ref().unwrap();
    assert_eq!(
        tools[0].extra.get("cache_control"),
        Some(&json!({"type": "ephemeral"}))
    );
    let keel_wire::anthropic::AContent::Blocks(first) = &req.messages[0].content else {
        panic!("expected blocks");
    };
    assert!(
        matches!(&first[0], ContentBlock::Image { source: ImageSource::Base64 { media_type, .. }, .. } if media_type == "image/png")
    );
    assert!(matches!(
        &first[1],
        ContentBlock::Image {
            source: ImageSource::Url { .. },
            ..
        }
    ));
}

#[test]
fn anthropic_responses_roundtrip() {
    let text: MessagesResponse = roundtrip("anthropic/messages_response_text.json");
    assert_eq!(
        text.text(),
        "Yes, pack an umbrella: Paris has light rain at 15°C."
    );
    assert_eq!(text.usage.cache_read_input_tokens, Some(1800));
    assert_eq!(text.usage.total_input_tokens(), 3895);
    assert_eq!(
        text.usage.extra.get("service_tier"),
        Some(&json!("standard"))
    );
    // A `null` unknown field is kept as `null`.
    assert_eq!(text.usage.extra.get("server_tool_use"), Some(&Value::Null));

    let tools: MessagesResponse = roundtrip("anthropic/messages_response_tool_use.json");
    assert_eq!(tools.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(tools.content.len(), 3);
    assert!(
        matches!(&tools.content[1], ContentBlock::ToolUse { name, .. } if name == "get_weather")
    );
}

#[test]
fn anthropic_stream_events_roundtrip_and_name_themselves() {
    for name in [
        "anthropic/messages_stream.sse",
        "anthropic/messages_stream_error.sse",
    ] {
        let raw = common::decode_all(&common::fixture_bytes(name));
        for sse in raw {
            let value: Value = serde_json::from_str(&sse.data).unwrap();
            let event: StreamEvent = roundtrip_value(&value);
            assert!(!matches!(event, StreamEvent::Other(_)), "{value}");
            assert_eq!(Some(event.event_name()), sse.event.as_deref());
        }
    }
    let events: Vec<StreamEvent> = parse_stream("anthropic/messages_stream.sse");
    assert!(
        matches!(&events[0], StreamEvent::MessageStart { message } if message.usage.input_tokens == 472)
    );
    assert!(events.iter().any(|e| matches!(
        e,
        StreamEvent::ContentBlockDelta {
            delta: BlockDelta::InputJsonDelta { .. },
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(e, StreamEvent::Ping)));
    assert!(matches!(events.last(), Some(StreamEvent::MessageStop)));
    let errors: Vec<StreamEvent> = parse_stream("anthropic/messages_stream_error.sse");
    assert!(
        matches!(errors.last(), Some(StreamEvent::Error { error }) if error.r#type == "overloaded_error")
    );
}

#[test]
fn anthropic_error_bodies_roundtrip() {
    let cases = [
        ("anthropic/error_rate_limit.json", "rate_limit_error"),
        ("anthropic/error_overloaded.json", "overloaded_error"),
        (
            "anthropic/error_prompt_too_long.json",
            "invalid_request_error",
        ),
    ];
    for (name, kind) in cases {
        let body: AErrorBody = roundtrip(name);
        assert_eq!(body.r#type, "error");
        assert_eq!(body.error.r#type, kind);
        assert!(body.extra.contains_key("request_id"));
    }
    let long: AErrorBody = roundtrip("anthropic/error_prompt_too_long.json");
    assert!(long.error.message.starts_with("prompt is too long"));
    assert_eq!(
        serde_json::to_value(AErrorBody::new("overloaded_error", "Overloaded")).unwrap(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[test]
fn unknown_types_pass_through_verbatim() {
    // Content part, block, image source, delta, event and role of types this crate does not know.
    let part = json!({"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}});
    assert!(matches!(
        roundtrip_value::<ContentPart>(&part),
        ContentPart::Other(_)
    ));
    let block = json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}, "citations": {"enabled": true}});
    let parsed: ContentBlock = roundtrip_value(&block);
    assert_eq!(parsed.type_name(), "document");
    let source = json!({"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"});
    assert!(matches!(
        roundtrip_value::<ImageSource>(&source),
        ImageSource::Other(_)
    ));
    let delta = json!({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}});
    assert!(matches!(
        roundtrip_value::<BlockDelta>(&delta),
        BlockDelta::Other(_)
    ));
    let event = json!({"type": "content_block_pause", "index": 2});
    let parsed: StreamEvent = roundtrip_value(&event);
    assert_eq!(parsed.event_name(), "content_block_pause");
    let role: Role = serde_json::from_value(json!("critic")).unwrap();
    assert_eq!(role, Role::Other("critic".into()));
    assert_eq!(serde_json::to_value(&role).unwrap(), json!("critic"));
    // Extra fields on a known content part and a thinking block.
    let text = json!({"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}});
    assert!(
        matches!(roundtrip_value::<ContentPart>(&text), ContentPart::Text { extra, .. } if extra.len() == 1)
    );
    let thinking =
        json!({"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"});
    assert!(matches!(
        roundtrip_value::<ContentBlock>(&thinking),
        ContentBlock::Thinking { .. }
    ));
}

#[test]
fn prompt_text_len_counts_characters_not_bytes() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "héllo"},
            {"role": "user", "content": [{"type": "text", "text": "🌞🌞"}, {"type": "image_url", "image_url": {"url": "https://x"}}]},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"a": 1}}}]
    }))
    .unwrap();
    // 5 + 2 + (1 + 2) + (1 + 1 + len("{\"a\":1}") = 7)
    assert_eq!(req.prompt_text_len(), 5 + 2 + 3 + 9);
    let areq: MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 10, "system": "abc",
        "messages": [{"role": "user", "content": "héllo"}]
    }))
    .unwrap();
    assert_eq!(areq.prompt_text_len(), 8);
}

/// Fuzz regression (translate_anthropic): a float with more digits than an
/// `f64` holds was re-serialised one ulp off (serde_json's default float
/// parsing is not exact); the workspace enables `float_roundtrip`.
#[test]
fn long_floats_survive_reserialisation() {
    let input = format!("{}555.55555555", "5".repeat(130));
    let ev: StreamEvent = serde_json::from_str(&input).unwrap();
    let again: StreamEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
    assert_eq!(again, ev);
    let req: ChatRequest = serde_json::from_str(
        r#"{"model":"m","messages":[],"temperature":0.70000000000000006661338147750939242541790008544921875,"x":5.5554444444444454e+132}"#,
    )
    .unwrap();
    let again: ChatRequest = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
    assert_eq!(again, req);
}

#[test]
fn message_content_is_a_string_or_parts_and_anything_else_says_so() {
    use keel_wire::openai::{ChatRequest, Content, ContentPart};
    let text: ChatRequest = serde_json::from_str(
        r#"{"model":"m","messages":[{"role":"user","content":"say \"hi\""}]}"#,
    )
    .unwrap();
    assert_eq!(
        text.messages[0].content,
        Some(Content::Text("say \"hi\"".into()))
    );
    let parts: ChatRequest = serde_json::from_str(
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi","x":1}]}]}"#,
    )
    .unwrap();
    match &parts.messages[0].content {
        Some(Content::Parts(p)) => {
            assert!(
                matches!(&p[0], ContentPart::Text { text, extra } if text == "hi" && extra["x"] == 1)
            )
        }
        other => panic!("{other:?}"),
    }
    let err = serde_json::from_str::<ChatRequest>(
        r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("expected a string or an array of content parts"),
        "{err}"
    );
}

#[test]
fn anthropic_content_and_system_are_strings_or_blocks_and_anything_else_says_so() {
    use keel_wire::anthropic::{AContent, System};
    let req: MessagesRequest = serde_json::from_str(
        r#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":"say \"hi\""}]}"#,
    )
    .unwrap();
    assert_eq!(req.messages[0].content, AContent::Text("say \"hi\"".into()));
    assert!(matches!(&req.system, Some(System::Blocks(b)) if b.len() == 1));
    for (body, want) in [
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":5}]}"#,
            "expected a string or an array of content blocks",
        ),
        (
            r#"{"model":"m","max_tokens":5,"system":{"a":1},"messages":[{"role":"user","content":"hi"}]}"#,
            "expected a string or an array of text blocks",
        ),
    ] {
        let err = serde_json::from_str::<MessagesRequest>(body)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}
