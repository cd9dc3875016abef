//! OpenAI-side parsing and translation: a `ChatRequest` to Anthropic and
//! back, a `ChatResponse` to Anthropic and back, and a stream of
//! `ChatChunk`s (one JSON per line) through `OpenAiToAnthropicStream`.
//!
//! Checks: nothing panics; whatever parses re-serialises to an equal value;
//! a translated request has alternating roles, the model, the token limit,
//! a 0–1 temperature and every tool call id; the OpenAI → Anthropic →
//! OpenAI round trip (when the way back succeeds) keeps the model, the
//! system text, the user/assistant text, tool call ids, names and
//! arguments, tool results and stop sequences; response translation keeps
//! text and tool calls both ways; the stream is well formed (one
//! `message_start` first, blocks numbered 0, 1, 2 ..., deltas only to
//! started blocks, `message_delta` then `message_stop` last) and carries
//! exactly the text and arguments of the chunks.
#![no_main]

use std::collections::HashMap;

use keel_wire::anthropic::{
    AContent, ARole, BlockDelta, ContentBlock, MessagesRequest, StreamEvent,
};
use keel_wire::openai::{ChatChunk, ChatRequest, ChatResponse, Role};
use keel_wire::translate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "common.rs"]
mod common;

const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Text of user and assistant messages (content, then refusal), in order.
fn dialogue_text(req: &ChatRequest) -> String {
    let mut out = String::new();
    for m in &req.messages {
        match m.role {
            Role::User => out.push_str(&m.text().unwrap_or_default()),
            Role::Assistant => {
                out.push_str(&m.text().unwrap_or_default());
                out.push_str(m.refusal.as_deref().unwrap_or(""));
            }
            _ => {}
        }
    }
    out
}

/// (id, name, arguments as JSON) of every assistant tool call, in order.
fn tool_calls(req: &ChatRequest) -> Vec<(String, String, Option<Value>)> {
    req.messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| m.tool_calls.iter().flatten())
        .map(|c| {
            let args = &c.function.arguments;
            let value = if args.trim().is_empty() {
                Some(Value::Object(Default::default()))
            } else {
                serde_json::from_str(args).ok()
            };
            (c.id.clone(), c.function.name.clone(), value)
        })
        .collect()
}

/// (tool_call_id, text) of every tool message, in order.
fn tool_results(req: &ChatRequest) -> Vec<(Option<String>, String)> {
    req.messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.clone(), m.text().unwrap_or_default()))
        .collect()
}

fn system_text(req: &ChatRequest) -> Option<String> {
    let parts: Vec<String> = req
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(|m| m.text().unwrap_or_default())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

fn check_request(req: &ChatRequest) {
    common::assert_serde_roundtrip(req, "ChatRequest");
    if let Some(f) = &req.response_format {
        if let Some(tool) = translate::json_schema_tool(f) {
            common::assert_serde_roundtrip(&tool, "json_schema_tool");
        }
    }
    let Ok(a) = translate::openai_to_anthropic_request(req, DEFAULT_MAX_TOKENS) else {
        return;
    };
    common::assert_serde_roundtrip(&a, "translated MessagesRequest");
    assert_eq!(a.model, req.model);
    assert_eq!(
        a.max_tokens,
        req.effective_max_tokens().unwrap_or(DEFAULT_MAX_TOKENS)
    );
    assert!(!a.messages.is_empty());
    for pair in a.messages.windows(2) {
        assert_ne!(pair[0].role, pair[1].role, "roles must alternate");
    }
    if let Some(t) = a.temperature {
        assert!((0.0..=1.0).contains(&t), "temperature {t}");
    }
    let a_ids: Vec<&str> = a_blocks(&a)
        .filter_map(|b| match b {
            ContentBlock::ToolUse { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let o_calls = tool_calls(req);
    let o_ids: Vec<&str> = o_calls.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(a_ids, o_ids, "tool call ids");

    // And back.
    let Ok(back) = translate::anthropic_to_openai_request(&a) else {
        return;
    };
    common::assert_serde_roundtrip(&back, "ChatRequest after a round trip");
    assert_eq!(back.model, req.model);
    assert_eq!(back.max_completion_tokens, Some(a.max_tokens));
    assert_eq!(dialogue_text(&back), dialogue_text(req), "dialogue text");
    assert_eq!(system_text(&back), system_text(req), "system text");
    assert_eq!(tool_calls(&back), o_calls, "tool calls");
    assert_eq!(tool_results(&back), tool_results(req), "tool results");
    assert_eq!(
        back.stop.as_ref().map(|s| s.to_vec()),
        req.stop.as_ref().map(|s| s.to_vec()),
        "stop sequences"
    );
}

fn a_blocks(a: &MessagesRequest) -> impl Iterator<Item = &ContentBlock> {
    a.messages.iter().flat_map(|m| match &m.content {
        AContent::Text(_) => [].iter(),
        AContent::Blocks(b) => b.iter(),
    })
}

fn check_response(resp: &ChatResponse) {
    common::assert_serde_roundtrip(resp, "ChatResponse");
    let a = translate::openai_to_anthropic_response(resp);
    common::assert_serde_roundtrip(&a, "translated MessagesResponse");
    assert_eq!(a.role, ARole::Assistant);
    let Some(choice) = resp.choices.first() else {
        assert!(a.content.is_empty());
        return;
    };
    let want_text = format!(
        "{}{}",
        choice.message.text().unwrap_or_default(),
        choice.message.refusal.as_deref().unwrap_or("")
    );
    let back = translate::anthropic_to_openai_response(&a);
    common::assert_serde_roundtrip(&back, "ChatResponse after a round trip");
    assert_eq!(back.model, resp.model);
    assert_eq!(back.text().unwrap_or_default(), want_text, "response text");
    let ids = |r: &ChatResponse| -> Vec<(String, String)> {
        r.tool_calls()
            .iter()
            .map(|c| (c.id.clone(), c.function.name.clone()))
            .collect()
    };
    assert_eq!(ids(&back), ids(resp), "response tool calls");
    // Arguments that are JSON come back as the same JSON.
    for (orig, new) in resp.tool_calls().iter().zip(back.tool_calls()) {
        if let Ok(v) = serde_json::from_str::<Value>(&orig.function.arguments) {
            let w: Value = serde_json::from_str(&new.function.arguments)
                .unwrap_or_else(|e| panic!("arguments became invalid JSON: {e}"));
            assert_eq!(v, w, "tool arguments");
        }
    }
    if let Some(f) = choice.finish_reason.as_deref() {
        // Known reasons survive the round trip.
        if matches!(f, "stop" | "length" | "tool_calls" | "content_filter") {
            assert_eq!(back.finish_reason(), Some(f), "finish reason");
        }
    }
}

fn check_stream(chunks: &[ChatChunk]) {
    let mut s = translate::OpenAiToAnthropicStream::new("m");
    let mut events = Vec::new();
    let mut want_text = String::new();
    // Arguments per OpenAI tool index, indices in order of first appearance.
    let mut want_args: Vec<(u32, String)> = Vec::new();
    for c in chunks {
        common::assert_serde_roundtrip(c, "ChatChunk");
        events.extend(s.push(c));
        if let Some(choice) = c.choices.iter().find(|ch| ch.index == 0) {
            want_text.push_str(choice.delta.content.as_deref().unwrap_or(""));
            want_text.push_str(choice.delta.refusal.as_deref().unwrap_or(""));
            for call in choice.delta.tool_calls.iter().flatten() {
                let args = call.function.as_ref().and_then(|f| f.arguments.as_deref());
                let k = match want_args.iter().position(|(i, _)| *i == call.index) {
                    Some(k) => k,
                    None => {
                        want_args.push((call.index, String::new()));
                        want_args.len() - 1
                    }
                };
                want_args[k].1.push_str(args.unwrap_or(""));
            }
        }
    }
    events.extend(s.finish());
    assert!(s.finish().is_empty(), "finish twice");
    if let Some(c) = chunks.first() {
        assert!(s.push(c).is_empty(), "push after finish");
    }

    let n = events.len();
    assert!(n >= 3);
    assert!(matches!(events[0], StreamEvent::MessageStart { .. }));
    assert!(matches!(events[n - 2], StreamEvent::MessageDelta { .. }));
    assert!(matches!(events[n - 1], StreamEvent::MessageStop));
    let mut started = 0usize;
    let mut open: Option<u32> = None;
    let mut text = String::new();
    // Arguments per tool block, blocks in order of start.
    let mut args: Vec<(u32, String)> = Vec::new();
    let mut is_tool: HashMap<u32, bool> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        common::assert_serde_roundtrip(ev, "translated StreamEvent");
        match ev {
            StreamEvent::MessageStart { .. } => assert_eq!(i, 0, "message_start not first"),
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                assert_eq!(open, None, "block {index} started while another is open");
                assert_eq!(*index as usize, started, "block numbering");
                started += 1;
                open = Some(*index);
                match content_block {
                    ContentBlock::Text { text: t, .. } => {
                        text.push_str(t);
                        is_tool.insert(*index, false);
                    }
                    ContentBlock::ToolUse { .. } => {
                        is_tool.insert(*index, true);
                        args.push((*index, String::new()));
                    }
                    other => panic!("unexpected block {other:?}"),
                }
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                assert!((*index as usize) < started, "delta to unstarted block");
                match delta {
                    BlockDelta::TextDelta { text: t } => {
                        assert_eq!(is_tool.get(index), Some(&false), "text delta to a tool");
                        text.push_str(t);
                    }
                    BlockDelta::InputJsonDelta { partial_json } => {
                        assert_eq!(is_tool.get(index), Some(&true), "json delta to text");
                        let k = args.iter().position(|(b, _)| b == index);
                        let k = k.unwrap_or_else(|| panic!("json delta to block {index}"));
                        args[k].1.push_str(partial_json);
                    }
                    other => panic!("unexpected delta {other:?}"),
                }
            }
            StreamEvent::ContentBlockStop { index } => {
                assert_eq!(open, Some(*index), "stop of a block that is not open");
                open = None;
            }
            StreamEvent::MessageDelta { .. } => {
                assert_eq!(i, n - 2);
                assert_eq!(open, None, "message_delta with a block open");
            }
            StreamEvent::MessageStop => assert_eq!(i, n - 1),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(text, want_text, "streamed text");
    // The k-th tool block holds the arguments of the k-th OpenAI tool index.
    let got: Vec<&str> = args.iter().map(|(_, a)| a.as_str()).collect();
    let want: Vec<&str> = want_args.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(got, want, "streamed tool arguments");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        check_request(&req);
    }
    if let Ok(resp) = serde_json::from_slice::<ChatResponse>(data) {
        check_response(&resp);
    }
    // A stream: one chunk per line.
    let chunks: Vec<ChatChunk> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    check_stream(&chunks);
});
