//! The Responses reader: a `ResponsesRequest` (what clients send) through
//! its chat translation, a `Response` (what a native Responses deployment
//! answers) through `response_to_chat`, and a Responses event stream (one
//! JSON per line) through `ResponsesToChatStream`.
//!
//! Checks: nothing panics; whatever parses re-serialises to an equal value;
//! a translated request keeps the model and output limit, puts the
//! instructions first, keeps every function call's id in order, and
//! answers only calls made before; a Response's chat reading holds exactly
//! its `output_text` and its function calls (id, name, arguments) in
//! order; a stream's chunks carry exactly the text of its
//! `response.output_text.delta` events and the arguments of its function
//! calls, and it is done only after a terminal event. The same lines as a
//! native deployment's events passed to a Responses client
//! (`ChatToResponsesStream::native`): every event (an object with a string
//! `type`) passes under its own name, numbered 0, 1, 2, ... in order, and
//! one without a `response` whose number was already right passes as its
//! own bytes.
#![no_main]

use keel_wire::openai::Role;
use keel_wire::responses::{Response, ResponsesRequest};
use keel_wire::translate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "common.rs"]
mod common;

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn check_request(req: &ResponsesRequest) {
    common::assert_serde_roundtrip(req, "ResponsesRequest");
    let _ = (req.builtin_tools(), req.native_fields());
    let Ok(chat) = translate::responses_to_chat(req, &[]) else {
        return;
    };
    common::assert_serde_roundtrip(&chat, "translated ChatRequest");
    assert_eq!(chat.model, req.model);
    assert_eq!(chat.max_completion_tokens, req.max_output_tokens);
    if let Some(i) = &req.instructions {
        let first = &chat.messages[0];
        assert_eq!(first.role, Role::System);
        assert_eq!(first.text().as_deref(), Some(i.as_str()));
    }
    let items = req.input_items();
    let want: Vec<&str> = items
        .iter()
        .filter(|i| str_of(i, "type") == "function_call")
        .map(|i| str_of(i, "call_id"))
        .collect();
    let mut made: Vec<&str> = Vec::new();
    for m in &chat.messages {
        for c in m.tool_calls.iter().flatten() {
            made.push(&c.id);
        }
        if let Some(id) = &m.tool_call_id {
            assert!(made.contains(&id.as_str()), "a result for a call not made: {id}");
        }
    }
    assert_eq!(made, want, "function call ids");
}

fn check_response(resp: &Response) {
    common::assert_serde_roundtrip(resp, "Response");
    let Ok(chat) = translate::response_to_chat(resp) else {
        return;
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in &resp.output {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if str_of(part, "type") == "output_text" {
                        text.push_str(str_of(part, "text"));
                    }
                }
            }
            Some("function_call") => calls.push((
                str_of(item, "call_id").to_owned(),
                str_of(item, "name").to_owned(),
                str_of(item, "arguments").to_owned(),
            )),
            _ => {}
        }
    }
    let choice = &chat.choices[0];
    assert_eq!(choice.message.text().unwrap_or_default(), text, "text");
    let got: Vec<(String, String, String)> = choice
        .message
        .tool_calls
        .iter()
        .flatten()
        .map(|c| (c.id.clone(), c.function.name.clone(), c.function.arguments.clone()))
        .collect();
    assert_eq!(got, calls, "function calls");
    let finish = choice.finish_reason.as_deref().unwrap_or("");
    assert!(matches!(finish, "stop" | "length" | "tool_calls" | "content_filter"), "{finish}");
}

fn check_stream(data: &[u8]) {
    let mut s = translate::ResponsesToChatStream::new("m");
    let (mut want_text, mut want_args) = (String::new(), String::new());
    let (mut text, mut args) = (String::new(), String::new());
    let mut terminal = false;
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Ok(chunks) = s.push(line) else {
            continue;
        };
        let ev: Value = serde_json::from_str(line).expect("a pushed event is JSON");
        match str_of(&ev, "type") {
            "response.output_text.delta" => want_text.push_str(str_of(&ev, "delta")),
            "response.function_call_arguments.delta" => want_args.push_str(str_of(&ev, "delta")),
            "response.output_item.added" => {
                let item = ev.get("item").unwrap_or(&Value::Null);
                if str_of(item, "type") == "function_call" {
                    want_args.push_str(str_of(item, "arguments"));
                }
            }
            "response.completed" | "response.incomplete" => terminal = true,
            _ => {}
        }
        for c in chunks {
            common::assert_serde_roundtrip(&c, "ChatChunk");
            for choice in &c.choices {
                text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                for t in choice.delta.tool_calls.iter().flatten() {
                    let f = t.function.as_ref();
                    args.push_str(f.and_then(|f| f.arguments.as_deref()).unwrap_or(""));
                }
            }
        }
        assert_eq!(s.done(), terminal, "done only after a terminal event");
    }
    assert_eq!(text, want_text, "streamed text");
    assert_eq!(args, want_args, "streamed arguments");
}

fn check_native(data: &[u8]) {
    let req: ResponsesRequest =
        serde_json::from_str(r#"{"model":"r","input":"x"}"#).expect("a request");
    let mut s = translate::ChatToResponsesStream::new(translate::response_shell(&req, "resp_k", 1));
    let mut seq = 0u64;
    for line in data.split(|&b| b == b'\n') {
        let Ok(ev) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let Some(kind) = ev.get("type").and_then(Value::as_str) else {
            assert!(s.native(line).is_none(), "not an event, passed");
            continue;
        };
        let (name, out) = s.native(line).expect("an event passes");
        assert_eq!(name, kind);
        let out: Value = serde_json::from_slice(&out).expect("JSON out");
        assert_eq!(out["sequence_number"], seq, "numbered in order");
        if ev.get("response").is_none_or(|r| !r.is_object()) {
            let mut want = ev.clone();
            want["sequence_number"] = seq.into();
            assert_eq!(out, want, "the provider's event");
        } else {
            assert_eq!(out["response"]["id"], "resp_k");
        }
        seq += 1;
    }
    let _ = s.finish();
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ResponsesRequest>(data) {
        check_request(&req);
    }
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        check_response(&resp);
    }
    check_stream(data);
    check_native(data);
});
