//! Anthropic-side parsing and translation: a `MessagesRequest` to OpenAI and
//! back, a `MessagesResponse` to OpenAI and back (and through the
//! JSON-schema tool unwrapping), and a stream of `StreamEvent`s (one JSON
//! per line) through `AnthropicToOpenAiStream`, with and without a
//! JSON-schema tool.
//!
//! Checks: nothing panics; whatever parses re-serialises to an equal value;
//! a translated request keeps the model, `max_tokens`, stop sequences, the
//! user, tool_use ids and tool_result ids; the Anthropic → OpenAI →
//! Anthropic round trip (when the way back succeeds) has alternating roles
//! and keeps the system text, the dialogue text, tool uses (id, name,
//! input), tool results and the tool choice; response translation keeps
//! text, tool uses, known stop reasons and output usage; the stream carries
//! exactly the text and tool arguments of the events, gives each new tool
//! call a fresh index, and one finish chunk per `message_delta`.
#![no_main]

use std::collections::{HashMap, HashSet};

use keel_wire::anthropic::{
    AContent, ARole, BlockDelta, ContentBlock, MessagesRequest, MessagesResponse, StreamEvent,
};
use keel_wire::openai::{ChatRequest, Role, Stop};
use keel_wire::translate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "common.rs"]
mod common;

fn blocks(content: &AContent) -> &[ContentBlock] {
    match content {
        AContent::Text(_) => &[],
        AContent::Blocks(b) => b,
    }
}

/// Text blocks of every message (tool_result contents excluded), in order.
fn dialogue_text(req: &MessagesRequest) -> String {
    req.messages
        .iter()
        .map(|m| m.content.joined_text())
        .collect()
}

/// (id, name, input) of every tool_use block, in order.
fn tool_uses(content: &[ContentBlock]) -> Vec<(String, String, Value)> {
    content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolUse {
                id, name, input, ..
            } => Some((id.clone(), name.clone(), input.clone())),
            _ => None,
        })
        .collect()
}

fn request_tool_uses(req: &MessagesRequest) -> Vec<(String, String, Value)> {
    req.messages
        .iter()
        .filter(|m| m.role == ARole::Assistant)
        .flat_map(|m| tool_uses(blocks(&m.content)))
        .collect()
}

/// (tool_use_id, text) of every tool_result block of user messages, in order;
/// an empty error result reads "error", as it is translated.
fn tool_results(req: &MessagesRequest) -> Vec<(String, String)> {
    req.messages
        .iter()
        .filter(|m| m.role == ARole::User)
        .flat_map(|m| blocks(&m.content))
        .filter_map(|b| match b {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                ..
            } => {
                let mut text = content
                    .as_ref()
                    .map(AContent::joined_text)
                    .unwrap_or_default();
                if *is_error == Some(true) && text.is_empty() {
                    text.push_str("error");
                }
                Some((tool_use_id.clone(), text))
            }
            _ => None,
        })
        .collect()
}

fn choice_kind(choice: Option<&Value>) -> (Option<&str>, Option<&str>) {
    (
        choice.and_then(|c| c.get("type")).and_then(Value::as_str),
        choice.and_then(|c| c.get("name")).and_then(Value::as_str),
    )
}

fn check_request(req: &MessagesRequest) {
    common::assert_serde_roundtrip(req, "MessagesRequest");
    let Ok(o) = translate::anthropic_to_openai_request(req) else {
        return;
    };
    common::assert_serde_roundtrip(&o, "translated ChatRequest");
    assert_eq!(o.model, req.model);
    assert_eq!(o.max_completion_tokens, Some(req.max_tokens));
    assert_eq!(o.stop, req.stop_sequences.clone().map(Stop::Many));
    assert_eq!(
        o.user.as_deref(),
        req.metadata
            .as_ref()
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
    );
    let call_ids: Vec<String> = o
        .messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().flatten())
        .map(|c| c.id.clone())
        .collect();
    let use_ids: Vec<String> = request_tool_uses(req).into_iter().map(|t| t.0).collect();
    assert_eq!(call_ids, use_ids, "tool_use ids");
    let result_ids: Vec<Option<String>> = o
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.tool_call_id.clone())
        .collect();
    let want: Vec<Option<String>> = tool_results(req).into_iter().map(|t| Some(t.0)).collect();
    assert_eq!(result_ids, want, "tool_result ids");
    check_back(req, &o);
}

fn check_back(req: &MessagesRequest, o: &ChatRequest) {
    let Ok(back) = translate::openai_to_anthropic_request(o, 1) else {
        return;
    };
    common::assert_serde_roundtrip(&back, "MessagesRequest after a round trip");
    assert_eq!(back.model, req.model);
    assert_eq!(back.max_tokens, req.max_tokens);
    assert_eq!(back.stop_sequences, req.stop_sequences);
    for pair in back.messages.windows(2) {
        assert_ne!(pair[0].role, pair[1].role, "roles must alternate");
    }
    assert_eq!(
        back.system.as_ref().map(|s| s.joined_text()),
        req.system.as_ref().map(|s| s.joined_text()),
        "system text"
    );
    assert_eq!(dialogue_text(&back), dialogue_text(req), "dialogue text");
    assert_eq!(
        request_tool_uses(&back),
        request_tool_uses(req),
        "tool uses"
    );
    assert_eq!(tool_results(&back), tool_results(req), "tool results");
    assert_eq!(
        choice_kind(back.tool_choice.as_ref()),
        choice_kind(req.tool_choice.as_ref()),
        "tool choice"
    );
}

fn check_response(resp: &MessagesResponse) {
    common::assert_serde_roundtrip(resp, "MessagesResponse");
    let o = translate::anthropic_to_openai_response(resp);
    common::assert_serde_roundtrip(&o, "translated ChatResponse");
    let text: String = resp
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let back = translate::openai_to_anthropic_response(&o);
    common::assert_serde_roundtrip(&back, "MessagesResponse after a round trip");
    assert_eq!(back.model, resp.model);
    assert_eq!(back.id, resp.id);
    let back_text: String = back
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(back_text, text, "response text");
    assert_eq!(
        tool_uses(&back.content),
        tool_uses(&resp.content),
        "tool uses"
    );
    if let Some(r) = resp.stop_reason.as_deref() {
        if matches!(r, "end_turn" | "max_tokens" | "tool_use" | "refusal") {
            assert_eq!(back.stop_reason.as_deref(), Some(r), "stop reason");
        }
    }
    let (u, bu) = (&resp.usage, &back.usage);
    assert_eq!(bu.output_tokens, u.output_tokens);
    assert_eq!(
        bu.cache_read_input_tokens,
        u.cache_read_input_tokens.filter(|n| *n > 0)
    );
    let prompt = u64::from(u.input_tokens)
        + u64::from(u.cache_creation_input_tokens.unwrap_or(0))
        + u64::from(u.cache_read_input_tokens.unwrap_or(0));
    if u.cache_creation_input_tokens.unwrap_or(0) == 0 && prompt <= u64::from(u32::MAX) {
        assert_eq!(bu.input_tokens, u.input_tokens, "input tokens");
    }

    // The JSON-schema tool's input becomes the text.
    let tool = tool_uses(&resp.content).into_iter().next();
    let name = tool.as_ref().map_or("out", |t| t.1.as_str());
    let unwrapped = translate::json_schema_tool_to_text(resp, name);
    match &tool {
        Some((_, _, input)) => {
            let [ContentBlock::Text { text, .. }] = unwrapped.content.as_slice() else {
                panic!("json tool answer is not one text block: {unwrapped:?}");
            };
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&v, input, "json tool answer");
            assert_ne!(unwrapped.stop_reason.as_deref(), Some("tool_use"));
        }
        None => assert_eq!(&unwrapped, resp),
    }
}

/// What the stream translator must produce, computed independently.
#[derive(Default)]
struct Expected {
    text: String,
    args: String,
    finishes: usize,
}

fn check_stream(events: &[StreamEvent], json_tool: Option<&str>) {
    let mut s = translate::AnthropicToOpenAiStream::new("m");
    if let Some(name) = json_tool {
        s = s.with_json_schema_tool(name);
    }
    let mut want = Expected::default();
    let mut tool_blocks: HashSet<u32> = HashSet::new();
    let mut json_block: Option<u32> = None;
    let mut chunks = Vec::new();
    for ev in events {
        common::assert_serde_roundtrip(ev, "StreamEvent");
        chunks.extend(s.push(ev));
        match ev {
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text, .. } => want.text.push_str(text),
                ContentBlock::ToolUse { name, input, .. } => {
                    if json_tool == Some(name.as_str()) {
                        json_block = Some(*index);
                    } else {
                        tool_blocks.insert(*index);
                        if !matches!(input, Value::Object(m) if m.is_empty()) {
                            want.args.push_str(&input.to_string());
                        }
                    }
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => want.text.push_str(text),
                BlockDelta::InputJsonDelta { partial_json } => {
                    if json_block == Some(*index) {
                        want.text.push_str(partial_json);
                    } else if tool_blocks.contains(index) {
                        want.args.push_str(partial_json);
                    }
                }
                _ => {}
            },
            StreamEvent::MessageDelta { .. } => want.finishes += 1,
            _ => {}
        }
    }
    let mut text = String::new();
    let mut args = String::new();
    let mut finishes = 0;
    let mut tool_ids: HashMap<u32, usize> = HashMap::new();
    for (k, c) in chunks.iter().enumerate() {
        common::assert_serde_roundtrip(c, "translated ChatChunk");
        if c.choices.is_empty() {
            // The usage chunk follows a finish chunk.
            assert!(c.usage.is_some());
            assert!(k > 0 && chunks[k - 1].choices[0].finish_reason.is_some());
            continue;
        }
        assert_eq!(c.choices.len(), 1);
        let choice = &c.choices[0];
        if choice.finish_reason.is_some() {
            finishes += 1;
        }
        text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        for call in choice.delta.tool_calls.iter().flatten() {
            if call.id.is_some() {
                // A new tool call: its index must be new too.
                let n = tool_ids.len();
                assert!(
                    tool_ids.insert(call.index, n).is_none(),
                    "tool call index {} reused for a new call",
                    call.index
                );
            } else {
                assert!(tool_ids.contains_key(&call.index), "arguments for no call");
            }
            let f = call.function.as_ref();
            args.push_str(f.and_then(|f| f.arguments.as_deref()).unwrap_or(""));
        }
    }
    assert_eq!(text, want.text, "streamed text");
    assert_eq!(args, want.args, "streamed tool arguments");
    assert_eq!(finishes, want.finishes, "finish chunks");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<MessagesRequest>(data) {
        check_request(&req);
    }
    if let Ok(resp) = serde_json::from_slice::<MessagesResponse>(data) {
        check_response(&resp);
    }
    // A stream: one event per line.
    let events: Vec<StreamEvent> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    check_stream(&events, None);
    check_stream(&events, Some("out"));
});
