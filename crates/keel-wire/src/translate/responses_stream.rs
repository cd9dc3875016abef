//! Canonical chat chunks -> Responses API stream events.
//!
//! The events come in the documented order (`response.created`,
//! `response.in_progress`, then per output item `output_item.added`,
//! its content or argument deltas and their `done` events, `output_item.done`,
//! and last `response.completed` or `response.incomplete`), each numbered by
//! `sequence_number`. The state machine also builds the final [`Response`],
//! which is what the last event carries, so a client accumulating the deltas
//! and one reading the final event see the same response.

use serde_json::{json, Value};

use crate::openai::{ChatChunk, Usage};
use crate::responses::Response;
use crate::translate::responses::{finish_status, function_call_item, message_item, usage};

/// One stream event: its name (also its `type`) and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesEvent {
    /// The event name, e.g. `response.output_text.delta`.
    pub name: &'static str,
    /// The event's JSON (with `type` and `sequence_number`).
    pub data: Value,
}

/// The open text item: its output index and text so far.
#[derive(Debug)]
struct OpenText {
    output_index: usize,
    text: String,
}

/// The open function call: the chat tool-call index it comes from.
#[derive(Debug)]
struct OpenCall {
    chat_index: u32,
    output_index: usize,
}

/// Turns one streamed chat answer into Responses events.
#[derive(Debug)]
pub struct ChatToResponsesStream {
    response: Response,
    seq: u64,
    started: bool,
    text: Option<OpenText>,
    call: Option<OpenCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    calls: usize,
}

impl ChatToResponsesStream {
    /// A stream of the response `shell` (see
    /// [`crate::translate::response_shell`]).
    pub fn new(shell: Response) -> Self {
        ChatToResponsesStream {
            response: shell,
            seq: 0,
            started: false,
            text: None,
            call: None,
            finish_reason: None,
            usage: None,
            calls: 0,
        }
    }

    /// The response as built so far (complete after [`Self::finish`]).
    pub fn response(&self) -> &Response {
        &self.response
    }

    fn event(&mut self, name: &'static str, mut data: Value) -> ResponsesEvent {
        if let Value::Object(m) = &mut data {
            m.insert("type".into(), name.into());
            m.insert("sequence_number".into(), self.seq.into());
        }
        self.seq += 1;
        ResponsesEvent { name, data }
    }

    fn start(&mut self, out: &mut Vec<ResponsesEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let snapshot = serde_json::to_value(&self.response).unwrap_or(Value::Null);
        out.push(self.event("response.created", json!({"response": snapshot})));
        out.push(self.event("response.in_progress", json!({"response": snapshot})));
    }

    fn suffix(&self) -> String {
        self.response.id.trim_start_matches("resp_").to_string()
    }

    /// The events of one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) -> Vec<ResponsesEvent> {
        let mut out = Vec::new();
        self.start(&mut out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return out;
        };
        if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.text_delta(text, &mut out);
        }
        for d in choice.delta.tool_calls.iter().flatten() {
            if self.call.as_ref().is_none_or(|c| c.chat_index != d.index) {
                self.close_text(&mut out);
                self.close_call(&mut out);
                let id = format!("fc_{}_{}", self.suffix(), self.calls);
                self.calls += 1;
                let function = d.function.as_ref();
                let call = crate::openai::ToolCall::function(
                    d.id.clone().unwrap_or_default(),
                    function.and_then(|f| f.name.clone()).unwrap_or_default(),
                    "",
                );
                let item = function_call_item(&id, &call, "in_progress");
                let output_index = self.response.output.len();
                self.response.output.push(item.clone());
                self.call = Some(OpenCall {
                    chat_index: d.index,
                    output_index,
                });
                out.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                ));
            }
            let delta = d.function.as_ref().and_then(|f| f.arguments.as_deref());
            if let (Some(delta), Some(c)) = (delta.filter(|a| !a.is_empty()), &self.call) {
                let output_index = c.output_index;
                let item = &mut self.response.output[output_index];
                let args = item["arguments"].as_str().unwrap_or("").to_string() + delta;
                item["arguments"] = args.into();
                let item_id = item["id"].clone();
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
                ));
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish_reason = Some(f.clone());
        }
        out
    }

    fn text_delta(&mut self, delta: &str, out: &mut Vec<ResponsesEvent>) {
        self.close_call(out);
        let id = format!("msg_{}", self.suffix());
        if self.text.is_none() {
            let output_index = self.response.output.len();
            let mut item = message_item(&id, "", "in_progress");
            item["content"] = json!([]);
            self.response.output.push(item.clone());
            self.text = Some(OpenText {
                output_index,
                text: String::new(),
            });
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            ));
            out.push(self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
        }
        let Some(t) = self.text.as_mut() else {
            return;
        };
        t.text.push_str(delta);
        let output_index = t.output_index;
        out.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": output_index, "content_index": 0,
                "delta": delta, "logprobs": []}),
        ));
    }

    fn close_text(&mut self, out: &mut Vec<ResponsesEvent>) {
        let Some(t) = self.text.take() else {
            return;
        };
        let id = format!("msg_{}", self.suffix());
        let (status, _) = finish_status(self.finish_reason.as_deref());
        let item = message_item(&id, &t.text, status);
        let part = item["content"][0].clone();
        self.response.output[t.output_index] = item.clone();
        let at = t.output_index;
        out.push(self.event(
            "response.output_text.done",
            json!({"item_id": id, "output_index": at, "content_index": 0, "text": t.text, "logprobs": []}),
        ));
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": at, "content_index": 0, "part": part}),
        ));
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": at, "item": item}),
        ));
    }

    fn close_call(&mut self, out: &mut Vec<ResponsesEvent>) {
        let Some(c) = self.call.take() else {
            return;
        };
        let at = c.output_index;
        self.response.output[at]["status"] = "completed".into();
        let item = self.response.output[at].clone();
        out.push(self.event(
            "response.function_call_arguments.done",
            json!({"item_id": item["id"], "output_index": at, "arguments": item["arguments"]}),
        ));
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": at, "item": item}),
        ));
    }

    /// The clean end: open items closed, then `response.completed` (or
    /// `response.incomplete` for a cut answer) with the final response.
    pub fn finish(&mut self) -> Vec<ResponsesEvent> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close_text(&mut out);
        self.close_call(&mut out);
        let (status, details) = finish_status(self.finish_reason.as_deref());
        self.response.status = status.to_string();
        self.response.incomplete_details = details;
        self.response.usage = self.usage.as_ref().map(usage);
        let name = match status {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        let snapshot = serde_json::to_value(&self.response).unwrap_or(Value::Null);
        out.push(self.event(name, json!({"response": snapshot})));
        out
    }

    /// The stream failed after its first byte: `response.failed` with the error.
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<ResponsesEvent> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.response.status = "failed".to_string();
        self.response.error = Some(json!({"code": code, "message": message}));
        let snapshot = serde_json::to_value(&self.response).unwrap_or(Value::Null);
        out.push(self.event("response.failed", json!({"response": snapshot})));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::responses::ResponsesRequest;
    use crate::translate::responses::response_shell;

    fn chunk(v: Value) -> ChatChunk {
        let mut base =
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"});
        for (k, x) in v.as_object().unwrap() {
            base[k] = x.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn stream() -> ChatToResponsesStream {
        let req: ResponsesRequest =
            serde_json::from_value(json!({"model": "gpt", "input": "hi"})).unwrap();
        ChatToResponsesStream::new(response_shell(&req, "resp_x", 1))
    }

    #[test]
    fn text_events_come_in_the_documented_order_and_build_the_response() {
        let mut s = stream();
        let mut events = Vec::new();
        events.extend(s.push(&chunk(
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
        )));
        events.extend(s.push(&chunk(
            json!({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
        )));
        events.extend(s.push(&chunk(json!({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}))));
        events.extend(s.finish());
        let names: Vec<_> = events.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.data["sequence_number"], i as u64);
            assert_eq!(e.data["type"], e.name);
        }
        assert_eq!(events[6].data["text"], "Hello");
        let last = &events[9].data["response"];
        assert_eq!(last["status"], "completed");
        assert_eq!(last["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(last["usage"]["total_tokens"], 5);
    }

    #[test]
    fn a_tool_call_streams_its_arguments_and_a_cut_answer_is_incomplete() {
        let mut s = stream();
        let mut events = Vec::new();
        events.extend(s.push(&chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}))));
        events.extend(s.push(&chunk(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}]}))));
        events.extend(s.finish());
        let names: Vec<_> = events.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[4].data["arguments"], "{\"a\":1}");
        assert_eq!(s.response().output[0]["call_id"], "call_1");

        let mut s = stream();
        s.push(&chunk(json!({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "length"}]})));
        let end = s.finish();
        assert_eq!(end.last().unwrap().name, "response.incomplete");
        assert_eq!(
            s.response().incomplete_details,
            Some(json!({"reason": "max_output_tokens"}))
        );

        let mut s = stream();
        s.push(&chunk(
            json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
        ));
        let failed = s.fail("network", "upstream reset");
        assert_eq!(failed[0].name, "response.failed");
        assert_eq!(failed[0].data["response"]["status"], "failed");
        assert_eq!(
            failed[0].data["response"]["error"]["message"],
            "upstream reset"
        );
    }
}
