//! A native Responses deployment's answers as the canonical chat answer.
//!
//! A deployment that speaks the Responses API itself (`responses = true`)
//! gets the client's request and answers with a Response object or a
//! Responses event stream. Keel judges every answer on the canonical chat
//! answer (truncation, refusal, empty, JSON), so these are read into one
//! here: [`response_to_chat`] for a whole Response, [`ResponsesToChatStream`]
//! for a stream. Items a chat answer has no place for (reasoning, built-in
//! tool calls) are left out of the canonical answer; the Response itself
//! reaches the client whole when nothing edited the answer.

use serde_json::{json, Value};

use crate::openai::{ChatChunk, ChatResponse, Usage};
use crate::responses::Response;

/// The chat finish reason of a Response's status: `length` for an
/// `incomplete` one cut by `max_output_tokens`, `content_filter` for one
/// the filter stopped, `tool_calls` when it called a function.
fn finish_reason(status: &str, details: Option<&Value>, calls: bool) -> &'static str {
    let reason = details
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    match (status, reason) {
        ("incomplete", Some("content_filter")) => "content_filter",
        ("incomplete", _) => "length",
        _ if calls => "tool_calls",
        _ => "stop",
    }
}

/// Responses usage as chat usage, cached and reasoning tokens kept.
fn chat_usage(u: &Value) -> Option<Usage> {
    let n = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let input = n(u.get("input_tokens")?);
    let output = n(u.get("output_tokens")?);
    let mut usage = Usage::new(input, output);
    if let Some(t) = u.get("total_tokens") {
        usage.total_tokens = n(t);
    }
    let detail = |outer: &str, inner: &str| u.get(outer).and_then(|d| d.get(inner)).map(n);
    if let Some(c) = detail("input_tokens_details", "cached_tokens") {
        usage
            .extra
            .insert("prompt_tokens_details".into(), json!({"cached_tokens": c}));
    }
    if let Some(r) = detail("output_tokens_details", "reasoning_tokens") {
        usage.extra.insert(
            "completion_tokens_details".into(),
            json!({"reasoning_tokens": r}),
        );
    }
    Some(usage)
}

/// The canonical chat answer of a Response: its message text and refusal,
/// its function calls (their `call_id`s as the call ids), its finish and
/// usage.
pub fn response_to_chat(r: &Response) -> Result<ChatResponse, serde_json::Error> {
    let mut text = String::new();
    let mut refusal = String::new();
    let mut calls = Vec::new();
    for item in &r.output {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let s = |k: &str| part.get(k).and_then(Value::as_str).unwrap_or("");
                    match s("type") {
                        "output_text" => text.push_str(s("text")),
                        "refusal" => refusal.push_str(s("refusal")),
                        _ => {}
                    }
                }
            }
            Some("function_call") => {
                let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
                calls.push(json!({
                    "id": s("call_id"), "type": "function",
                    "function": {"name": s("name"), "arguments": s("arguments")},
                }));
            }
            _ => {}
        }
    }
    let finish = finish_reason(&r.status, r.incomplete_details.as_ref(), !calls.is_empty());
    let mut message = json!({"role": "assistant", "content": text});
    if !refusal.is_empty() {
        message["refusal"] = refusal.into();
        if text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let mut chat: ChatResponse = serde_json::from_value(json!({
        "id": r.id, "object": "chat.completion", "created": r.created_at, "model": r.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }))?;
    chat.usage = r
        .usage
        .as_ref()
        .and_then(|u| serde_json::to_value(u).ok())
        .and_then(|u| chat_usage(&u));
    Ok(chat)
}

/// A native deployment's Response as the client gets it: the provider's
/// output, usage and the fields Keel does not model, under `shell`'s id,
/// model (the route), `previous_response_id`, `store`, metadata and
/// instructions (the client's: the provider's echo may lack them). `None`
/// when `body` is not a Response.
pub fn native_response(body: &[u8], shell: &Response) -> Option<Response> {
    let mut r = serde_json::from_slice::<Response>(body).ok()?;
    r.id.clone_from(&shell.id);
    r.model.clone_from(&shell.model);
    r.previous_response_id
        .clone_from(&shell.previous_response_id);
    r.store = shell.store;
    r.metadata.clone_from(&shell.metadata);
    r.instructions.clone_from(&shell.instructions);
    Some(r)
}

/// Why a Responses stream could not be read as chat chunks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamReadError {
    /// The provider reported a failure (`response.failed` or `error`):
    /// the event's JSON.
    #[error("the upstream stream failed: {0}")]
    Failed(String),
    /// An event that is not a Responses event.
    #[error("unreadable stream event: {0}")]
    Unreadable(String),
}

/// Reads a Responses event stream as chat chunks: text and refusal deltas,
/// function calls (announced by `response.output_item.added`, their
/// arguments by `response.function_call_arguments.delta`), and at
/// `response.completed` / `response.incomplete` the finish and usage.
#[derive(Debug, Default)]
pub struct ResponsesToChatStream {
    id: String,
    model: String,
    created: u64,
    /// The output index of each function call, in call order.
    calls: Vec<u64>,
    /// The terminal event has been read.
    done: bool,
}

impl ResponsesToChatStream {
    /// A reader for a stream from a deployment whose model is `model`.
    pub fn new(model: &str) -> Self {
        ResponsesToChatStream {
            model: model.to_string(),
            ..Self::default()
        }
    }

    /// Whether the stream's terminal event has been read.
    pub fn done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Result<ChatChunk, StreamReadError> {
        let v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        serde_json::from_value(v).map_err(|e| StreamReadError::Unreadable(e.to_string()))
    }

    /// The chunks of one event (`data` is its JSON).
    pub fn push(&mut self, data: &str) -> Result<Vec<ChatChunk>, StreamReadError> {
        let ev: Value = serde_json::from_str(data)
            .map_err(|e| StreamReadError::Unreadable(format!("{e}: {data}")))?;
        let Some(kind) = ev.get("type").and_then(Value::as_str) else {
            return Err(StreamReadError::Unreadable(data.to_string()));
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let out = match kind {
            "response.created" => {
                let r = ev.get("response").unwrap_or(&Value::Null);
                self.id = s(r, "id");
                self.created = r.get("created_at").and_then(Value::as_u64).unwrap_or(0);
                if let Some(m) = r.get("model").and_then(Value::as_str) {
                    self.model = m.to_string();
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)?]
            }
            "response.output_text.delta" => {
                vec![self.chunk(json!({"content": s(&ev, "delta")}), None)?]
            }
            "response.refusal.delta" => {
                vec![self.chunk(json!({"refusal": s(&ev, "delta")}), None)?]
            }
            "response.output_item.added" => {
                let item = ev.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) != Some("function_call") {
                    return Ok(Vec::new());
                }
                let index = self.calls.len();
                self.calls
                    .push(ev.get("output_index").and_then(Value::as_u64).unwrap_or(0));
                let call = json!({
                    "index": index, "id": s(item, "call_id"), "type": "function",
                    "function": {"name": s(item, "name"), "arguments": s(item, "arguments")},
                });
                vec![self.chunk(json!({"tool_calls": [call]}), None)?]
            }
            "response.function_call_arguments.delta" => {
                let at = ev.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                let index = self.calls.iter().position(|&o| o == at).unwrap_or(0);
                let call = json!({"index": index, "function": {"arguments": s(&ev, "delta")}});
                vec![self.chunk(json!({"tool_calls": [call]}), None)?]
            }
            "response.completed" | "response.incomplete" => {
                self.done = true;
                let r = ev.get("response").unwrap_or(&Value::Null);
                let status = r
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("completed");
                let details = r.get("incomplete_details").filter(|d| !d.is_null());
                let finish = finish_reason(status, details, !self.calls.is_empty());
                let mut last = self.chunk(json!({}), Some(finish))?;
                last.usage = r.get("usage").and_then(chat_usage);
                vec![last]
            }
            "response.failed" | "error" => {
                return Err(StreamReadError::Failed(data.to_string()));
            }
            _ => Vec::new(),
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn response(v: Value) -> Response {
        serde_json::from_value(v).unwrap()
    }

    fn base(output: Value, status: &str, details: Value) -> Value {
        json!({
            "id": "resp_1", "object": "response", "created_at": 7, "status": status,
            "error": null, "incomplete_details": details, "instructions": null,
            "max_output_tokens": null, "model": "gpt-4o", "output": output,
            "parallel_tool_calls": true, "previous_response_id": null, "store": true,
            "temperature": null, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": null, "metadata": {}, "reasoning": {"effort": "low"},
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 2},
                      "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1},
                      "total_tokens": 8},
        })
    }

    #[test]
    fn a_response_reads_as_its_chat_answer_with_token_details() {
        let r = response(base(
            json!([
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "m", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Hel", "annotations": []},
                             {"type": "output_text", "text": "lo", "annotations": []}]},
            ]),
            "completed",
            Value::Null,
        ));
        // Fields Keel does not model survive the typed Response.
        assert_eq!(r.extra["reasoning"]["effort"], "low");
        let chat = response_to_chat(&r).unwrap();
        let c = &chat.choices[0];
        assert_eq!(c.message.text().as_deref(), Some("Hello"));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        let u = chat.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 3, 8)
        );
        assert_eq!(u.extra["prompt_tokens_details"]["cached_tokens"], 2);
        assert_eq!(u.extra["completion_tokens_details"]["reasoning_tokens"], 1);
    }

    #[test]
    fn calls_refusals_and_incomplete_answers_keep_their_finish() {
        let calls = response(base(
            json!([{"type": "function_call", "id": "fc", "call_id": "call_9",
                    "name": "f", "arguments": "{\"a\":1}", "status": "completed"}]),
            "completed",
            Value::Null,
        ));
        let chat = response_to_chat(&calls).unwrap();
        let c = &chat.choices[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        let call = &c.message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_str(), call.function.arguments.as_str()),
            ("call_9", "{\"a\":1}")
        );
        let cut = response(base(
            json!([]),
            "incomplete",
            json!({"reason": "max_output_tokens"}),
        ));
        assert_eq!(
            response_to_chat(&cut).unwrap().choices[0]
                .finish_reason
                .as_deref(),
            Some("length")
        );
        let refused = response(base(
            json!([{"type": "message", "id": "m", "role": "assistant", "status": "completed",
                    "content": [{"type": "refusal", "refusal": "No."}]}]),
            "completed",
            Value::Null,
        ));
        let chat = response_to_chat(&refused).unwrap();
        assert_eq!(chat.choices[0].message.refusal.as_deref(), Some("No."));
        assert_eq!(chat.choices[0].message.content, None);
    }

    #[test]
    fn a_stream_reads_as_chat_chunks() {
        let mut s = ResponsesToChatStream::new("dep-model");
        let events = [
            json!({"type": "response.created", "sequence_number": 0,
                   "response": {"id": "resp_1", "created_at": 3, "model": "gpt-4o"}}),
            json!({"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hi"}),
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 1,
                   "item": {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.delta", "sequence_number": 3,
                   "output_index": 1, "delta": "{}"}),
            json!({"type": "response.completed", "sequence_number": 4,
                   "response": {"status": "completed",
                                "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}}}),
        ];
        let mut chunks = Vec::new();
        for e in &events {
            chunks.extend(s.push(&e.to_string()).unwrap());
        }
        assert!(s.done());
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[1].choices[0].delta.content.as_deref(), Some("Hi"));
        let call = &chunks[2].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id.as_deref(), Some("call_1"));
        let args = &chunks[3].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            args.function.as_ref().unwrap().arguments.as_deref(),
            Some("{}")
        );
        let last = &chunks[4];
        assert_eq!(last.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(last.usage.as_ref().unwrap().total_tokens, 3);
        assert_eq!(last.id, "resp_1");
        let failed = s.push(r#"{"type":"response.failed","response":{}}"#);
        assert!(matches!(failed, Err(StreamReadError::Failed(_))));
        assert!(matches!(s.push("{"), Err(StreamReadError::Unreadable(_))));
    }
}
