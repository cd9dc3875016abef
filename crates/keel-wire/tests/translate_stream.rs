//! Stream translation, both ways, against exact expected values.

// Test helpers outside `#[test]` functions unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::parse_stream;
use keel_wire::anthropic::{BlockDelta, ContentBlock, StreamEvent};
use keel_wire::openai::{ChatChunk, Usage};
use keel_wire::sse::{encode_data, encode_named, SseDecoder};
use keel_wire::translate::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};
use serde_json::{json, Value};

/// What an OpenAI client assembles from chunks.
#[derive(Debug, Default, PartialEq)]
struct Assembled {
    ids: Vec<String>,
    text: String,
    /// (id, name, arguments) per tool-call index.
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Usage>,
}

fn assemble(chunks: &[ChatChunk]) -> Assembled {
    let mut out = Assembled::default();
    for chunk in chunks {
        if !out.ids.contains(&chunk.id) {
            out.ids.push(chunk.id.clone());
        }
        for choice in &chunk.choices {
            if let Some(t) = &choice.delta.content {
                out.text.push_str(t);
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                let i = call.index as usize;
                if out.calls.len() <= i {
                    out.calls.resize(i + 1, Default::default());
                }
                if let Some(id) = &call.id {
                    out.calls[i].0 = id.clone();
                }
                if let Some(f) = &call.function {
                    if let Some(n) = &f.name {
                        out.calls[i].1.push_str(n);
                    }
                    if let Some(a) = &f.arguments {
                        out.calls[i].2.push_str(a);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                out.finish.clone_from(&choice.finish_reason);
            }
        }
        if chunk.usage.is_some() {
            out.usage.clone_from(&chunk.usage);
        }
    }
    out
}

fn anthropic_to_openai(name: &str, model: &str) -> Vec<ChatChunk> {
    let mut tr = AnthropicToOpenAiStream::new(model).with_created(1_700_000_000);
    parse_stream::<StreamEvent>(name)
        .iter()
        .flat_map(|ev| tr.push(ev))
        .collect()
}

fn openai_to_anthropic(name: &str, model: &str) -> Vec<StreamEvent> {
    let mut tr = OpenAiToAnthropicStream::new(model);
    let mut events: Vec<StreamEvent> = parse_stream::<ChatChunk>(name)
        .iter()
        .flat_map(|c| tr.push(c))
        .collect();
    events.extend(tr.finish());
    assert!(tr.finish().is_empty(), "finish is idempotent");
    events
}

#[test]
fn anthropic_stream_to_openai_chunks() {
    let chunks = anthropic_to_openai("anthropic/messages_stream.sse", "claude-via-openai");
    assert_eq!(chunks.len(), 13);
    let values: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    let head = |choices: Value| {
        json!({
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "claude-via-openai",
            "choices": choices
        })
    };
    assert_eq!(
        values[0],
        head(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
    );
    assert_eq!(
        values[1],
        head(json!([{"index": 0, "delta": {"content": "Okay"}}]))
    );
    assert_eq!(
        values[5],
        head(json!([{"index": 0, "delta": {"tool_calls": [{
            "index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}
        }]}}]))
    );
    assert_eq!(
        values[6],
        head(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}}])
        )
    );
    assert_eq!(
        values[11],
        head(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    );
    let mut usage_chunk = head(json!([]));
    usage_chunk["usage"] = json!({
        "prompt_tokens": 728, "completion_tokens": 89, "total_tokens": 817,
        "prompt_tokens_details": {"cached_tokens": 256}
    });
    assert_eq!(values[12], usage_chunk);

    let assembled = assemble(&chunks);
    assert_eq!(assembled.ids, ["msg_014p7gG3wDgGV9EUtLvnow3U"]);
    assert_eq!(
        assembled.text,
        "Okay, let's check the weather for San Francisco—it's often foggy 🌁."
    );
    assert_eq!(
        assembled.calls,
        [(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6".to_owned(),
            "get_weather".to_owned(),
            "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}".to_owned()
        )]
    );
    assert_eq!(assembled.finish.as_deref(), Some("tool_calls"));
}

#[test]
fn anthropic_error_and_ping_events_give_no_chunks() {
    let chunks = anthropic_to_openai("anthropic/messages_stream_error.sse", "m");
    // message_start and one text delta; ping and the error are the engine's business.
    assert_eq!(chunks.len(), 2);
    assert_eq!(assemble(&chunks).text, "Hello");
    assert_eq!(assemble(&chunks).finish, None);
}

#[test]
fn usage_chunk_can_be_left_out_and_stop_reasons_map() {
    let mut tr = AnthropicToOpenAiStream::new("m").with_usage_chunk(false);
    let ev: StreamEvent = serde_json::from_value(json!({
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
        "usage": {"output_tokens": 5, "input_tokens": 7}
    }))
    .unwrap();
    let chunks = tr.push(&ev);
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].choices[0].finish_reason.as_deref(),
        Some("length")
    );
    // With the usage chunk, `input_tokens` repeated in message_delta wins.
    let mut tr = AnthropicToOpenAiStream::new("m");
    let chunks = tr.push(&ev);
    assert_eq!(chunks[1].usage, Some(Usage::new(7, 5)));
}

#[test]
fn json_schema_tool_streams_as_text() {
    let events: Vec<StreamEvent> = [
        json!({"type": "message_start", "message": {"id": "msg_j", "type": "message", "role": "assistant",
            "model": "claude", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_j", "name": "landmark_report", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"city\""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ": \"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let mut tr = AnthropicToOpenAiStream::new("m").with_json_schema_tool("landmark_report");
    let chunks: Vec<ChatChunk> = events.iter().flat_map(|e| tr.push(e)).collect();
    let assembled = assemble(&chunks);
    assert_eq!(assembled.text, "{\"city\": \"Paris\"}");
    assert!(assembled.calls.is_empty());
    assert_eq!(assembled.finish.as_deref(), Some("stop"));
    assert_eq!(assembled.usage, Some(Usage::new(10, 12)));
}

fn names(events: &[StreamEvent]) -> Vec<&str> {
    events.iter().map(StreamEvent::event_name).collect()
}

#[test]
fn openai_text_stream_to_anthropic_events() {
    let events = openai_to_anthropic("openai/chat_stream.sse", "gpt-via-anthropic");
    let mut expected_names = vec!["message_start", "content_block_start"];
    expected_names.extend(["content_block_delta"; 8]);
    expected_names.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected_names);
    assert_eq!(
        serde_json::to_value(&events[0]).unwrap(),
        json!({"type": "message_start", "message": {
            "id": "chatcmpl-AaBbCcDdEeFfGgHhIiJjKkLlMm", "type": "message", "role": "assistant",
            "model": "gpt-via-anthropic", "content": [],
            "usage": {"input_tokens": 0, "output_tokens": 0}
        }})
    );
    assert_eq!(
        serde_json::to_value(&events[1]).unwrap(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        serde_json::to_value(&events[2]).unwrap(),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Yes"}})
    );
    assert_eq!(
        serde_json::to_value(&events[10]).unwrap(),
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        serde_json::to_value(&events[11]).unwrap(),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"output_tokens": 24, "input_tokens": 52, "cache_read_input_tokens": 1152}})
    );
    assert_eq!(
        serde_json::to_value(&events[12]).unwrap(),
        json!({"type": "message_stop"})
    );
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        "Yes — pack an umbrella: Paris has light rain at 15°C.\n\nBoston is sunny 🌞."
    );
}

#[test]
fn openai_tool_stream_to_anthropic_events() {
    let events = openai_to_anthropic("openai/chat_stream_tool_calls.sse", "m");
    let mut expected_names = vec!["message_start", "content_block_start"];
    expected_names.extend(["content_block_delta"; 6]);
    expected_names.extend(["content_block_stop", "content_block_start"]);
    expected_names.extend(["content_block_delta"; 2]);
    expected_names.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected_names);
    assert_eq!(
        serde_json::to_value(&events[1]).unwrap(),
        json!({"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "call_8GnHbKXMa2SmbV0Eyx4qK1Ry", "name": "get_weather", "input": {}}})
    );
    assert_eq!(
        serde_json::to_value(&events[9]).unwrap(),
        json!({"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "call_0qbKPy2ZMKjzqXh6ykmTdE3m", "name": "get_weather", "input": {}}})
    );
    let json_of = |index: u32| -> String {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ContentBlockDelta {
                    index: i,
                    delta: BlockDelta::InputJsonDelta { partial_json },
                } if *i == index => Some(partial_json.as_str()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(json_of(0), "{\"city\":\"Paris, France\"}");
    assert_eq!(json_of(1), "{\"city\":\"Boston, MA\"}");
    assert_eq!(
        serde_json::to_value(&events[13]).unwrap(),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
               "usage": {"output_tokens": 47, "input_tokens": 82}})
    );
}

#[test]
fn openai_stream_edge_cases() {
    // finish with nothing pushed still gives a well-formed message.
    let mut tr = OpenAiToAnthropicStream::new("m");
    assert_eq!(
        names(&tr.finish()),
        ["message_start", "message_delta", "message_stop"]
    );
    assert!(tr.finish().is_empty());

    // Text after a tool call opens a new block; chunks after finish are ignored.
    let chunk = |delta: Value, finish: Value| -> ChatChunk {
        serde_json::from_value(json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        }))
        .unwrap()
    };
    let mut tr = OpenAiToAnthropicStream::new("m");
    let mut events = Vec::new();
    events.extend(tr.push(&chunk(
        json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
        Value::Null,
    )));
    events.extend(tr.push(&chunk(json!({"content": "after"}), json!("length"))));
    events.extend(tr.finish());
    assert!(tr
        .push(&chunk(json!({"content": "late"}), Value::Null))
        .is_empty());
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    // A tool call without an id gets a generated one.
    assert!(
        matches!(&events[1], StreamEvent::ContentBlockStart { content_block: ContentBlock::ToolUse { id, .. }, .. } if id == "toolu_keel_0")
    );
    assert!(
        matches!(&events[7], StreamEvent::MessageDelta { delta, .. } if delta.stop_reason.as_deref() == Some("max_tokens"))
    );
}

#[test]
fn streams_survive_a_round_trip_through_the_other_dialect() {
    // OpenAI chunks -> Anthropic events -> OpenAI chunks assemble to the same answer.
    for name in [
        "openai/chat_stream.sse",
        "openai/chat_stream_tool_calls.sse",
    ] {
        let original: Vec<ChatChunk> = parse_stream(name);
        let events = openai_to_anthropic(name, "m");
        let mut back = AnthropicToOpenAiStream::new("m");
        let chunks: Vec<ChatChunk> = events.iter().flat_map(|e| back.push(e)).collect();
        let (a, b) = (assemble(&original), assemble(&chunks));
        assert_eq!(a.text, b.text, "{name}");
        assert_eq!(a.calls, b.calls, "{name}");
        assert_eq!(a.finish, b.finish, "{name}");
        let (ua, ub) = (a.usage.unwrap(), b.usage.unwrap());
        assert_eq!(
            (ua.prompt_tokens, ua.completion_tokens, ua.total_tokens),
            (ub.prompt_tokens, ub.completion_tokens, ub.total_tokens)
        );
    }
}

#[test]
fn translated_events_encode_as_sse_the_other_side_can_decode() {
    let events = openai_to_anthropic("openai/chat_stream.sse", "m");
    let mut wire = Vec::new();
    for ev in &events {
        wire.extend_from_slice(&encode_named(
            ev.event_name(),
            &serde_json::to_string(ev).unwrap(),
        ));
    }
    let mut dec = SseDecoder::new();
    let decoded = dec.push(&wire).unwrap();
    let reparsed: Vec<StreamEvent> = decoded
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(reparsed, events);
    assert!(decoded
        .iter()
        .zip(&events)
        .all(|(d, e)| d.event.as_deref() == Some(e.event_name())));

    let chunks = anthropic_to_openai("anthropic/messages_stream.sse", "m");
    let mut wire = Vec::new();
    for c in &chunks {
        wire.extend_from_slice(&encode_data(&serde_json::to_string(c).unwrap()));
    }
    wire.extend_from_slice(&encode_data("[DONE]"));
    let decoded = SseDecoder::new().push(&wire).unwrap();
    assert_eq!(decoded.len(), chunks.len() + 1);
    assert!(decoded.last().unwrap().is_done());
}

/// Fuzz regression (translate_anthropic): a block index started twice made
/// the next tool call reuse an OpenAI tool-call index, so a client merged two
/// calls into one. Every `tool_use` start now gets a fresh index.
#[test]
fn every_tool_use_start_gets_a_fresh_index() {
    let start = |index: u32, id: &str| StreamEvent::ContentBlockStart {
        index,
        content_block: ContentBlock::tool_use(id, "f", json!({})),
    };
    let mut t = AnthropicToOpenAiStream::new("m");
    let mut indices = Vec::new();
    for ev in [start(1, "a"), start(1, "b"), start(2, "c")] {
        for chunk in t.push(&ev) {
            for call in chunk.choices[0].delta.tool_calls.iter().flatten() {
                indices.push((call.id.clone().unwrap(), call.index));
            }
        }
    }
    assert_eq!(indices, [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]);
}
