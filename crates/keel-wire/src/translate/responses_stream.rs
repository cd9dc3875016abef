//! Canonical chat chunks -> Responses API stream events.
//!
//! The events come in the documented order (`response.created`,
//! `response.in_progress`, then per output item `output_item.added`,
//! its content or argument deltas and their `done` events, `output_item.done`,
//! and last `response.completed` or `response.incomplete`), each numbered by
//! `sequence_number`. The state machine also builds the final [`Response`],
//! which is what the last event carries, so a client accumulating the deltas
//! and one reading the final event see the same response.
//!
//! A native Responses deployment's own events pass through
//! [`ChatToResponsesStream::native`] as the provider sent them, renumbered
//! in the stream's sequence and under Keel's response id: the ones Keel has
//! no chat reading for (reasoning summaries, built-in tool calls) included.
//! The state machine follows them, so a stream that goes on in chat chunks
//! (a resume on another deployment) continues the same response.

use std::borrow::Cow;

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

/// The open text item: its id, output index, content index and text so far.
#[derive(Debug)]
struct OpenText {
    id: String,
    output_index: usize,
    content_index: usize,
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
    /// Function calls a native stream announced (their chat indexes).
    native_calls: u32,
    /// A native stream's terminal event has passed: the response is final.
    ended: bool,
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
            native_calls: 0,
            ended: false,
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
        if self.text.is_none() {
            let id = format!("msg_{}", self.suffix());
            let output_index = self.response.output.len();
            let mut item = message_item(&id, "", "in_progress");
            item["content"] = json!([]);
            self.response.output.push(item.clone());
            self.text = Some(OpenText {
                id: id.clone(),
                output_index,
                content_index: 0,
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
        let (id, output_index, content_index) = (t.id.clone(), t.output_index, t.content_index);
        out.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": output_index, "content_index": content_index,
                "delta": delta, "logprobs": []}),
        ));
    }

    fn close_text(&mut self, out: &mut Vec<ResponsesEvent>) {
        let Some(t) = self.text.take() else {
            return;
        };
        let (id, ci) = (t.id, t.content_index);
        let (status, _) = finish_status(self.finish_reason.as_deref());
        let item = message_item(&id, &t.text, status);
        let part = item["content"][0].clone();
        let at = t.output_index;
        match self.response.output.get_mut(at) {
            // A native message: its other parts kept, this one written.
            Some(open) if ci > 0 => {
                if let Some(parts) = open.get_mut("content").and_then(Value::as_array_mut) {
                    parts.truncate(ci);
                    parts.push(part.clone());
                }
                open["status"] = status.into();
            }
            Some(open) => *open = item.clone(),
            None => {}
        }
        let item = self.response.output.get(at).cloned().unwrap_or(item);
        out.push(self.event(
            "response.output_text.done",
            json!({"item_id": id, "output_index": at, "content_index": ci, "text": t.text, "logprobs": []}),
        ));
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": at, "content_index": ci, "part": part}),
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

    /// A native deployment's event `data` as the client gets it: its name
    /// and JSON, renumbered in this stream's sequence, a `response` it
    /// carries under this stream's id, model (the route) and the client's
    /// `previous_response_id`, `store`, metadata and instructions. Anything
    /// else is the provider's, byte for byte. `None` when `data` is not an
    /// event (it has no `type`).
    pub fn native<'d>(&mut self, data: &'d [u8]) -> Option<(String, Cow<'d, [u8]>)> {
        let mut ev: Value = serde_json::from_slice(data).ok()?;
        let name = ev.get("type")?.as_str()?.to_string();
        let seq = self.seq;
        self.seq += 1;
        let mut changed = ev.get("sequence_number").and_then(Value::as_u64) != Some(seq);
        if changed {
            ev["sequence_number"] = seq.into();
        }
        if let Some(r) = ev.get_mut("response").filter(|r| r.is_object()) {
            self.dress(r);
            changed = true;
        }
        self.follow(&name, &ev);
        let bytes = match changed {
            true => Cow::Owned(serde_json::to_vec(&ev).ok()?),
            false => Cow::Borrowed(data),
        };
        Some((name, bytes))
    }

    /// Puts this stream's id, model and the client's fields on a native
    /// event's `response` (as [`crate::translate::native_response`] does).
    fn dress(&self, r: &mut Value) {
        let shell = &self.response;
        r["id"] = shell.id.clone().into();
        r["model"] = shell.model.clone().into();
        r["previous_response_id"] = shell.previous_response_id.clone().into();
        r["store"] = shell.store.into();
        r["metadata"] = shell.metadata.clone();
        r["instructions"] = shell.instructions.clone().into();
    }

    /// Follows a native event: the response's items, the open text and
    /// function call (for chat chunks that may continue them), the end.
    fn follow(&mut self, name: &str, ev: &Value) {
        let at = ev
            .get("output_index")
            .and_then(Value::as_u64)
            .map(|i| i as usize);
        let item = ev.get("item");
        match name {
            "response.created" | "response.in_progress" => self.started = true,
            "response.completed" | "response.incomplete" => {
                // The provider's response over the shell: a field it left
                // out keeps the shell's value.
                if let (Ok(Value::Object(mut whole)), Some(Value::Object(r))) =
                    (serde_json::to_value(&self.response), ev.get("response"))
                {
                    whole.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
                    if let Ok(r) = serde_json::from_value::<Response>(Value::Object(whole)) {
                        self.response = r;
                    }
                }
                self.text = None;
                self.call = None;
                self.ended = true;
            }
            "response.output_item.added" => {
                let (Some(at), Some(item)) = (at, item) else {
                    return;
                };
                let out = &mut self.response.output;
                if at < out.len() {
                    out[at] = item.clone();
                } else {
                    out.push(item.clone());
                }
                let at = out.len().min(at.saturating_add(1)) - 1;
                let id = item.get("id").and_then(Value::as_str).unwrap_or("");
                match item.get("type").and_then(Value::as_str) {
                    Some("message") => {
                        self.text = Some(OpenText {
                            id: id.to_string(),
                            output_index: at,
                            content_index: 0,
                            text: String::new(),
                        })
                    }
                    Some("function_call") => {
                        self.call = Some(OpenCall {
                            chat_index: self.native_calls,
                            output_index: at,
                        });
                        self.native_calls += 1;
                        self.calls += 1;
                    }
                    _ => {}
                }
            }
            "response.content_part.added" => {
                let ci = ev.get("content_index").and_then(Value::as_u64);
                let part = ev.get("part").cloned().unwrap_or(Value::Null);
                if let (Some(t), Some(ci)) = (self.text.as_mut(), ci) {
                    if Some(t.output_index) == at {
                        t.content_index = ci as usize;
                        t.text.clear();
                    }
                }
                let open = at.and_then(|i| self.response.output.get_mut(i));
                if let Some(parts) = open.and_then(|o| o.get_mut("content")?.as_array_mut()) {
                    parts.push(part);
                }
            }
            "response.output_text.delta" => {
                let delta = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                if let Some(t) = self.text.as_mut().filter(|t| Some(t.output_index) == at) {
                    t.text.push_str(delta);
                }
            }
            "response.function_call_arguments.delta" => {
                let delta = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                if let Some(open) = at.and_then(|i| self.response.output.get_mut(i)) {
                    let args = open["arguments"].as_str().unwrap_or("").to_string() + delta;
                    open["arguments"] = args.into();
                }
            }
            "response.output_item.done" => {
                let (Some(at), Some(item)) = (at, item) else {
                    return;
                };
                if let Some(open) = self.response.output.get_mut(at) {
                    *open = item.clone();
                }
                if self.text.as_ref().is_some_and(|t| t.output_index == at) {
                    self.text = None;
                }
                if self.call.as_ref().is_some_and(|c| c.output_index == at) {
                    self.call = None;
                }
            }
            _ => {}
        }
    }

    /// The clean end: open items closed, then `response.completed` (or
    /// `response.incomplete` for a cut answer) with the final response.
    pub fn finish(&mut self) -> Vec<ResponsesEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
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

    fn native_events(upstream: &[Value]) -> (ChatToResponsesStream, Vec<(String, Vec<u8>)>) {
        let mut s = stream();
        let mut out = Vec::new();
        for e in upstream {
            let bytes = serde_json::to_vec(e).unwrap();
            let (name, data) = s.native(&bytes).unwrap();
            out.push((name, data.into_owned()));
        }
        (s, out)
    }

    fn upstream_events() -> Vec<Value> {
        let shell = json!({"id": "resp_up", "object": "response", "created_at": 1,
            "status": "in_progress", "model": "gpt-up", "output": [], "metadata": {},
            "store": true, "previous_response_id": null, "instructions": null});
        let reasoning = json!({"id": "rs_1", "type": "reasoning", "summary": []});
        let part = json!({"type": "summary_text", "text": ""});
        let msg = json!({"id": "msg_up", "type": "message", "role": "assistant",
            "status": "in_progress", "content": []});
        let text = json!({"type": "output_text", "text": "", "annotations": []});
        vec![
            json!({"type": "response.created", "sequence_number": 0, "response": shell}),
            json!({"type": "response.in_progress", "sequence_number": 1, "response": shell}),
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": reasoning}),
            json!({"type": "response.reasoning_summary_part.added", "sequence_number": 3,
                   "item_id": "rs_1", "output_index": 0, "summary_index": 0, "part": part}),
            json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 4,
                   "item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "Think"}),
            json!({"type": "response.output_item.done", "sequence_number": 5, "output_index": 0,
                   "item": {"id": "rs_1", "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": "Think"}]}}),
            json!({"type": "response.output_item.added", "sequence_number": 6, "output_index": 1, "item": msg}),
            json!({"type": "response.content_part.added", "sequence_number": 7, "item_id": "msg_up",
                   "output_index": 1, "content_index": 0, "part": text}),
            json!({"type": "response.output_text.delta", "sequence_number": 8, "item_id": "msg_up",
                   "output_index": 1, "content_index": 0, "delta": "Hel"}),
        ]
    }

    #[test]
    fn native_events_pass_as_the_provider_sent_them_under_keels_id() {
        let mut upstream = upstream_events();
        let done_msg = json!({"id": "msg_up", "type": "message", "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello", "annotations": []}]});
        upstream.extend([
            json!({"type": "response.output_text.delta", "sequence_number": 9, "item_id": "msg_up",
                   "output_index": 1, "content_index": 0, "delta": "lo"}),
            json!({"type": "response.output_item.done", "sequence_number": 10, "output_index": 1, "item": done_msg}),
            json!({"type": "response.completed", "sequence_number": 11, "response": {
                "id": "resp_up", "object": "response", "created_at": 1, "status": "completed",
                "model": "gpt-up", "metadata": {}, "store": true,
                "output": [{"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Think"}]}, done_msg],
                "usage": {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}}}),
        ]);
        let (mut s, out) = native_events(&upstream);
        for (i, ((name, data), sent)) in out.iter().zip(&upstream).enumerate() {
            let got: Value = serde_json::from_slice(data).unwrap();
            assert_eq!(name, sent["type"].as_str().unwrap());
            assert_eq!(got["sequence_number"], i as u64);
            match got.get("response") {
                // Keel's id and the route, the provider's everything else.
                Some(r) => {
                    assert_eq!(
                        (r["id"].as_str(), r["model"].as_str()),
                        (Some("resp_x"), Some("gpt"))
                    );
                    assert_eq!(r["output"], sent["response"]["output"]);
                }
                // The provider's bytes, untouched.
                None => assert_eq!(data, &serde_json::to_vec(sent).unwrap()),
            }
        }
        // The terminal event passed: nothing more, and it is the response.
        assert!(s.finish().is_empty());
        let r = s.response();
        assert_eq!((r.id.as_str(), r.status.as_str()), ("resp_x", "completed"));
        assert_eq!(r.output.len(), 2);
        assert_eq!(r.output[0]["summary"][0]["text"], "Think");
        assert_eq!(r.usage.as_ref().map(|u| u.total_tokens), Some(5));
    }

    #[test]
    fn a_native_stream_goes_on_in_chat_chunks_in_the_same_message() {
        // Numbering from the provider's own that skips: Keel's sequence.
        let mut upstream = upstream_events();
        upstream[4]["sequence_number"] = 40.into();
        let (mut s, out) = native_events(&upstream);
        let seq: Vec<u64> = out
            .iter()
            .map(|(_, d)| {
                serde_json::from_slice::<Value>(d).unwrap()["sequence_number"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seq, (0..9).collect::<Vec<u64>>());
        // The rest of the answer comes as chat chunks (a resume).
        let mut events = s.push(&chunk(json!({"choices": [{"index": 0,
            "delta": {"content": "lo"}, "finish_reason": "stop"}]})));
        events.extend(s.finish());
        let names: Vec<_> = events.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[0].data["item_id"], "msg_up");
        assert_eq!(events[0].data["output_index"], 1);
        assert_eq!(events[0].data["sequence_number"], 9);
        assert_eq!(events[1].data["text"], "Hello");
        let r = &events[4].data["response"];
        assert_eq!(r["id"], "resp_x");
        assert_eq!(r["output"][0]["type"], "reasoning");
        assert_eq!(r["output"][1]["content"][0]["text"], "Hello");
    }
}
