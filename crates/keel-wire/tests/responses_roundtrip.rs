//! Responses <-> Chat Completions <-> Messages round trips, as properties:
//! a Responses conversation keeps its texts, tool calls (ids, names,
//! arguments) and tool results through the chat request and the Anthropic
//! request and back; a chat answer keeps its text, tool calls, finish and
//! usage through a Response and back; a streamed chat answer keeps them
//! through Responses events and back; a native deployment's event stream
//! passes to the client whole, events Keel has no chat reading for
//! included, under Keel's response id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_wire::openai::{ChatChunk, ChatRequest, ChatResponse, Role};
use keel_wire::responses::ResponsesRequest;
use keel_wire::translate::{
    anthropic_to_openai_request, chat_to_response, openai_to_anthropic_request, response_shell,
    response_to_chat, responses_to_chat, ChatToResponsesStream, ResponsesToChatStream,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// One turn of a generated conversation.
#[derive(Clone, Debug)]
enum Turn {
    User(String),
    Assistant(String),
    /// A function call and its output.
    Call {
        id: String,
        name: String,
        args: Value,
        output: String,
    },
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 ,.!?éß\"\\\\]{0,23}"
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        text().prop_map(Turn::User),
        text().prop_map(Turn::Assistant),
        (
            "call_[a-z0-9]{4,10}",
            "[a-z_]{1,12}",
            prop::collection::btree_map("[a-z]{1,6}", text(), 0..3),
            text()
        )
            .prop_map(|(id, name, args, output)| Turn::Call {
                id,
                name,
                args: json!(args),
                output
            }),
    ]
}

fn items(turns: &[Turn]) -> Vec<Value> {
    let mut out = Vec::new();
    for t in turns {
        match t {
            Turn::User(s) => {
                out.push(json!({"role": "user", "content": [{"type": "input_text", "text": s}]}))
            }
            Turn::Assistant(s) => out.push(json!({"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": s}]})),
            Turn::Call {
                id,
                name,
                args,
                output,
            } => {
                out.push(json!({"type": "function_call", "call_id": id, "name": name,
                    "arguments": args.to_string()}));
                out.push(json!({"type": "function_call_output", "call_id": id, "output": output}));
            }
        }
    }
    out
}

/// Texts of user messages, tool calls (id, name, arguments as JSON) and
/// tool results (id, text), in order.
type Facts = (
    Vec<String>,
    Vec<(String, String, Value)>,
    Vec<(String, String)>,
);

fn facts(chat: &ChatRequest) -> Facts {
    let mut users = Vec::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for m in &chat.messages {
        match m.role {
            Role::User => users.push(m.text().unwrap_or_default()),
            Role::Assistant => {
                for c in m.tool_calls.iter().flatten() {
                    let args = serde_json::from_str(&c.function.arguments).unwrap();
                    calls.push((c.id.clone(), c.function.name.clone(), args));
                }
            }
            Role::Tool => results.push((
                m.tool_call_id.clone().unwrap_or_default(),
                m.text().unwrap_or_default(),
            )),
            _ => {}
        }
    }
    (users, calls, results)
}

fn want(turns: &[Turn]) -> Facts {
    let mut f: Facts = Default::default();
    for t in turns {
        match t {
            Turn::User(s) => f.0.push(s.clone()),
            Turn::Assistant(_) => {}
            Turn::Call {
                id,
                name,
                args,
                output,
            } => {
                f.1.push((id.clone(), name.clone(), args.clone()));
                f.2.push((id.clone(), output.clone()));
            }
        }
    }
    f
}

/// A chat answer: text, tool calls, a finish consistent with them, usage.
fn answer() -> impl Strategy<Value = ChatResponse> {
    (
        prop::option::of(text()),
        prop::collection::vec(("call_[a-z0-9]{4,8}", "[a-z_]{1,8}", text()), 0..3),
        prop::sample::select(vec!["stop", "length", "content_filter"]),
        (0u32..5000, 0u32..5000),
    )
        .prop_map(|(text, calls, finish, (p, c))| {
            let calls: Vec<Value> = calls
                .iter()
                .map(|(id, name, a)| {
                    json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": json!({"a": a}).to_string()}})
                })
                .collect();
            let finish = if calls.is_empty() {
                finish
            } else {
                "tool_calls"
            };
            let mut message = json!({"role": "assistant", "content": text.unwrap_or_default()});
            if !calls.is_empty() {
                message["tool_calls"] = calls.into();
            }
            serde_json::from_value(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            }))
            .unwrap()
        })
}

/// (text, [(id, name, arguments)], finish, (prompt, completion, total)).
type Said = (
    String,
    Vec<(String, String, String)>,
    String,
    (u32, u32, u32),
);

fn said(r: &ChatResponse) -> Said {
    let c = &r.choices[0];
    let calls = c
        .message
        .tool_calls
        .iter()
        .flatten()
        .map(|t| {
            (
                t.id.clone(),
                t.function.name.clone(),
                t.function.arguments.clone(),
            )
        })
        .collect();
    let u = r.usage.as_ref().unwrap();
    (
        c.message.text().unwrap_or_default(),
        calls,
        c.finish_reason.clone().unwrap_or_default(),
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
    )
}

fn shell() -> keel_wire::responses::Response {
    let req: ResponsesRequest =
        serde_json::from_value(json!({"model": "route", "input": "x"})).unwrap();
    response_shell(&req, "resp_1", 1)
}

/// The answer as chat chunks: text in pieces, each call's arguments in
/// two, the finish, then usage.
fn chunks(r: &ChatResponse) -> Vec<ChatChunk> {
    let (text, calls, finish, (p, c, t)) = said(r);
    let chunk = |delta: Value, finish: Option<&str>| -> ChatChunk {
        serde_json::from_value(
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
        .unwrap()
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(3) {
        out.push(chunk(
            json!({"content": piece.iter().collect::<String>()}),
            None,
        ));
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let mid = (0..=args.len() / 2)
            .rev()
            .find(|&i| args.is_char_boundary(i))
            .unwrap_or(0);
        let (a, b) = args.split_at(mid);
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
            "function": {"name": name, "arguments": a}}]}),
            None,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]}),
            None,
        ));
    }
    out.push(chunk(json!({}), Some(&finish)));
    let mut usage = chunk(json!({}), None);
    usage.choices.clear();
    usage.usage = Some(keel_wire::openai::Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: t,
        extra: Default::default(),
    });
    out.push(usage);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_conversation_survives_chat_and_messages(
        turns in prop::collection::vec(turn(), 1..8),
        instructions in prop::option::of(text()),
    ) {
        let mut body = json!({"model": "route", "input": items(&turns), "max_output_tokens": 64});
        if let Some(i) = &instructions {
            body["instructions"] = json!(i);
        }
        let req: ResponsesRequest = serde_json::from_value(body).unwrap();
        let chat = responses_to_chat(&req, &[]).unwrap();
        prop_assert_eq!(&chat.model, "route");
        prop_assert_eq!(chat.max_completion_tokens, Some(64));
        let first_is_system = chat.messages.first().map(|m| m.role == Role::System);
        prop_assert_eq!(first_is_system, Some(instructions.is_some()));
        prop_assert_eq!(facts(&chat), want(&turns));
        // On to Anthropic's Messages and back: the same conversation.
        if let Ok(messages) = openai_to_anthropic_request(&chat, 4096) {
            let Ok(back) = anthropic_to_openai_request(&messages) else {
                return Err(TestCaseError::fail("the Messages request does not translate back"));
            };
            let (users, calls, results) = facts(&back);
            let (want_users, want_calls, want_results) = want(&turns);
            prop_assert_eq!(calls, want_calls);
            prop_assert_eq!(results, want_results);
            // Consecutive user turns merge into one Anthropic turn.
            prop_assert_eq!(users.concat(), want_users.concat());
        }
    }

    #[test]
    fn an_answer_survives_a_response(chat in answer()) {
        let response = chat_to_response(&chat, shell());
        prop_assert_eq!(&response.id, "resp_1");
        let back = response_to_chat(&response).unwrap();
        prop_assert_eq!(said(&back), said(&chat));
    }

    #[test]
    fn a_streamed_answer_survives_responses_events(chat in answer()) {
        let mut out = ChatToResponsesStream::new(shell());
        let mut events = Vec::new();
        for c in chunks(&chat) {
            events.extend(out.push(&c));
        }
        events.extend(out.finish());
        let numbers: Vec<u64> = events.iter().map(|e| e.data["sequence_number"].as_u64().unwrap()).collect();
        prop_assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
        let mut read = ResponsesToChatStream::new("m");
        let mut text = String::new();
        let mut args: Vec<(String, String, String)> = Vec::new();
        let mut last = None;
        for e in &events {
            for c in read.push(&e.data.to_string()).unwrap() {
                let choice = &c.choices[0];
                text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                for t in choice.delta.tool_calls.iter().flatten() {
                    let f = t.function.as_ref();
                    let piece = f.and_then(|f| f.arguments.clone()).unwrap_or_default();
                    match &t.id {
                        Some(id) => args.push((id.clone(), f.and_then(|f| f.name.clone()).unwrap_or_default(), piece)),
                        None => args[t.index as usize].2.push_str(&piece),
                    }
                }
                if c.usage.is_some() {
                    last = Some(c);
                }
            }
        }
        prop_assert!(read.done());
        let last = last.unwrap();
        let (want_text, want_calls, finish, usage) = said(&chat);
        prop_assert_eq!(text, want_text);
        prop_assert_eq!(args, want_calls);
        prop_assert_eq!(last.choices[0].finish_reason.as_deref(), Some(finish.as_str()));
        let u = last.usage.unwrap();
        prop_assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), usage);
    }

    #[test]
    fn a_native_stream_passes_through_whole(
        chat in answer(),
        summary in prop::collection::vec(text(), 0..4),
    ) {
        // The provider's stream: its answer's events, after reasoning
        // summary deltas (no chat reading), numbered in its own order.
        let mut up_shell = shell();
        up_shell.id = "resp_up".into();
        up_shell.model = "gpt-up".into();
        let mut up = ChatToResponsesStream::new(up_shell);
        let mut events: Vec<Value> = Vec::new();
        for c in chunks(&chat) {
            events.extend(up.push(&c).into_iter().map(|e| e.data));
        }
        events.extend(up.finish().into_iter().map(|e| e.data));
        let at = 2.min(events.len());
        for (k, d) in summary.iter().enumerate() {
            events.insert(at + k, json!({"type": "response.reasoning_summary_text.delta",
                "item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": d}));
        }
        for (i, e) in events.iter_mut().enumerate() {
            e["sequence_number"] = json!(i);
        }
        let mut keel = ChatToResponsesStream::new(shell());
        for (i, e) in events.iter().enumerate() {
            let bytes = serde_json::to_vec(e).unwrap();
            let (name, out) = keel.native(&bytes).unwrap();
            prop_assert_eq!(name.as_str(), e["type"].as_str().unwrap());
            let out: Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(&out["sequence_number"], &json!(i));
            let mut want = e.clone();
            if let Some(r) = want.get_mut("response") {
                r["id"] = json!("resp_1");
                r["model"] = json!("route");
            }
            prop_assert_eq!(out, want);
        }
        // The last event passed: the response is final, the provider's.
        prop_assert!(keel.finish().is_empty());
        let mut want = up.response().clone();
        want.id = "resp_1".into();
        want.model = "route".into();
        prop_assert_eq!(keel.response(), &want);
    }
}
