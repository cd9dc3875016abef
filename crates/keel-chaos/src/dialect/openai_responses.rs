//! OpenAI's Responses API (`POST /v1/responses`), as `api.openai.com`
//! speaks it, for `kind = "openai"` upstreams. A request is read as the
//! chat request it amounts to (instructions, messages, function calls and
//! their outputs, function tools, `text.format`, `max_output_tokens`), so
//! the answer, faults, limits and stats are those of the chat endpoint;
//! answers are Response objects and Responses event streams. Errors are
//! OpenAI's.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::openai::OpenAi;
use super::{Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Content, Finish};
use crate::generate;
use crate::limits::LimitSnapshot;

/// The Responses dialect.
pub(crate) struct OpenAiResponses;

const PARSE_ERROR: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)";

fn invalid(message: String, param: &'static str, code: &'static str) -> Failure {
    Failure::InvalidBody {
        message,
        param: Some(param),
        code: Some(code),
    }
}

/// The text of a message item's content (a string or text parts).
fn content_text(content: Option<&Value>) -> Value {
    match content {
        Some(Value::Array(parts)) => {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            Value::String(text)
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// The chat messages of a Responses request.
fn messages(obj: &Map<String, Value>) -> Result<Vec<Value>, Failure> {
    let mut out = Vec::new();
    if let Some(Value::String(i)) = obj.get("instructions") {
        out.push(json!({"role": "system", "content": i}));
    }
    let items = match obj.get("input") {
        Some(Value::String(s)) => {
            return Ok([out, vec![json!({"role": "user", "content": s})]].concat())
        }
        Some(Value::Array(items)) => items,
        None => {
            return Err(invalid(
                "Missing required parameter: 'input'.".into(),
                "input",
                "missing_required_parameter",
            ))
        }
        Some(_) => {
            return Err(invalid(
                "Invalid type for 'input': expected a string or an array of input items.".into(),
                "input",
                "invalid_type",
            ))
        }
    };
    for item in items {
        let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => out.push(json!({
                "role": s("role"), "content": content_text(item.get("content")),
            })),
            "function_call" => out.push(json!({
                "role": "assistant", "content": null,
                "tool_calls": [{"id": s("call_id"), "type": "function",
                                "function": {"name": s("name"), "arguments": s("arguments")}}],
            })),
            "function_call_output" => out.push(json!({
                "role": "tool", "tool_call_id": s("call_id"),
                "content": content_text(item.get("output")),
            })),
            "reasoning" => {}
            other => {
                return Err(invalid(
                    format!("Invalid value: '{other}'. Supported values are: 'message', 'function_call', 'function_call_output' and 'reasoning'."),
                    "input",
                    "invalid_value",
                ))
            }
        }
    }
    Ok(out)
}

/// The chat request body a Responses request amounts to.
fn chat_body(obj: &Map<String, Value>) -> Result<Value, Failure> {
    let mut chat = Map::new();
    if let Some(m) = obj.get("model") {
        chat.insert("model".into(), m.clone());
    }
    chat.insert("messages".into(), Value::Array(messages(obj)?));
    let tools: Vec<Value> = obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.get("name"), "parameters": t.get("parameters"),
            }})
        })
        .collect();
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
    }
    match obj.get("tool_choice") {
        Some(Value::Object(c)) => {
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": c.get("name")}}),
            );
        }
        Some(c) => {
            chat.insert("tool_choice".into(), c.clone());
        }
        None => {}
    }
    if let Some(f) = obj.get("text").and_then(|t| t.get("format")) {
        let format = match f.get("type").and_then(Value::as_str) {
            Some("json_schema") => json!({"type": "json_schema", "json_schema": {
                "name": f.get("name"), "schema": f.get("schema"),
            }}),
            Some("json_object") => json!({"type": "json_object"}),
            _ => json!({"type": "text"}),
        };
        chat.insert("response_format".into(), format);
    }
    if let Some(m) = obj.get("max_output_tokens") {
        chat.insert("max_completion_tokens".into(), m.clone());
    }
    Ok(Value::Object(chat))
}

/// The status and `incomplete_details` of a finish.
fn status(finish: Finish) -> (&'static str, Value) {
    match finish {
        Finish::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        Finish::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Ids of one answer's response and items.
struct Ids {
    response: String,
    item: String,
}

fn ids_of(ids: ResponseIds) -> Ids {
    let mut rng = generate::rng(ids.seed);
    let hex = generate::id(&mut rng, "", 48);
    Ids {
        response: format!("resp_{hex}"),
        item: format!("{}_{}", "item", &hex[..24]),
    }
}

/// The Response object around `output`.
fn response(req: &ChatRequest, ids: ResponseIds, answer: Option<&Answer>, output: Value) -> Value {
    let (status, details) = answer.map_or(("in_progress", Value::Null), |a| status(a.finish));
    let usage = answer.map_or(Value::Null, |a| {
        json!({
            "input_tokens": req.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": a.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": req.prompt_tokens + a.completion_tokens,
        })
    });
    json!({
        "id": ids_of(ids).response, "object": "response", "created_at": ids.created,
        "status": status, "background": false, "error": null, "incomplete_details": details,
        "instructions": null, "max_output_tokens": req.max_tokens, "model": req.model,
        "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "service_tier": "default",
        "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null, "metadata": {},
    })
}

/// The output item of an answer, complete (`done`) or as first announced.
fn item(answer: &Answer, id: &str, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    match &answer.content {
        Content::ToolCall {
            id: call,
            name,
            arguments,
        } => json!({
            "id": id, "type": "function_call", "status": status, "call_id": format!("call_{call}"),
            "name": name, "arguments": if done { arguments.concat() } else { String::new() },
        }),
        content => {
            let parts = if done {
                vec![part(content, true)]
            } else {
                Vec::new()
            };
            json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": parts})
        }
    }
}

/// The content part of a message answer.
fn part(content: &Content, done: bool) -> Value {
    match content {
        Content::Refusal(text) => {
            json!({"type": "refusal", "refusal": if done { text.as_str() } else { "" }})
        }
        Content::Text(pieces) => {
            json!({"type": "output_text", "text": if done { pieces.concat() } else { String::new() }, "annotations": [], "logprobs": []})
        }
        _ => json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}),
    }
}

/// Numbered SSE events.
struct Events {
    out: Vec<Bytes>,
}

impl Events {
    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = kind.into();
        data["sequence_number"] = self.out.len().into();
        self.out
            .push(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")));
    }
}

impl Dialect for OpenAiResponses {
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>> {
        OpenAi.check_key(headers, key)
    }

    fn parse(&self, headers: &HeaderMap, body: &[u8], seed: u64) -> Result<ChatRequest, Failure> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| Failure::invalid(PARSE_ERROR))?;
        let Value::Object(obj) = &value else {
            return Err(Failure::invalid(PARSE_ERROR));
        };
        let chat = chat_body(obj)?;
        let mut req = OpenAi.parse(headers, chat.to_string().as_bytes(), seed)?;
        req.stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        req.include_usage = true;
        Ok(req)
    }

    fn error(&self, failure: &Failure, model: &str) -> Reply {
        OpenAi.error(failure, model)
    }

    fn complete(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Bytes {
        let out = item(answer, &ids_of(ids).item, true);
        Bytes::from(response(req, ids, Some(answer), json!([out])).to_string())
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        let item_id = ids_of(ids).item;
        let mut ev = Events {
            out: Vec::with_capacity(12 + answer.completion_tokens as usize),
        };
        let shell = response(req, ids, None, json!([]));
        ev.push("response.created", json!({"response": shell}));
        ev.push("response.in_progress", json!({"response": shell}));
        let at = json!({"item_id": item_id, "output_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            v
        };
        ev.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": item(answer, &item_id, false)}),
        );
        match &answer.content {
            Content::ToolCall { arguments, .. } => {
                for p in arguments {
                    ev.push(
                        "response.function_call_arguments.delta",
                        with(json!({"delta": p})),
                    );
                }
                ev.push(
                    "response.function_call_arguments.done",
                    with(json!({"arguments": arguments.concat()})),
                );
            }
            content => {
                ev.push(
                    "response.content_part.added",
                    with(json!({"content_index": 0, "part": part(content, false)})),
                );
                match content {
                    Content::Refusal(text) => {
                        for p in generate::split_pieces(text, 8) {
                            ev.push(
                                "response.refusal.delta",
                                with(json!({"content_index": 0, "delta": p})),
                            );
                        }
                        ev.push(
                            "response.refusal.done",
                            with(json!({"content_index": 0, "refusal": text})),
                        );
                    }
                    _ => {
                        let pieces = match content {
                            Content::Text(p) => p.clone(),
                            _ => Vec::new(),
                        };
                        for p in &pieces {
                            ev.push(
                                "response.output_text.delta",
                                with(json!({"content_index": 0, "delta": p, "logprobs": []})),
                            );
                        }
                        ev.push(
                            "response.output_text.done",
                            with(json!({"content_index": 0, "text": pieces.concat(), "logprobs": []})),
                        );
                    }
                }
                ev.push(
                    "response.content_part.done",
                    with(json!({"content_index": 0, "part": part(content, true)})),
                );
            }
        }
        let done = item(answer, &item_id, true);
        ev.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": done}),
        );
        let full = response(req, ids, Some(answer), json!([done]));
        let last = match status(answer.finish).0 {
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        ev.push(last, json!({"response": full}));
        ev.out
    }

    fn stream_error(&self) -> Bytes {
        let data = json!({
            "type": "error", "code": "server_error",
            "message": "The engine is currently overloaded, please try again later.",
            "param": null, "sequence_number": 0,
        });
        Bytes::from(format!("event: error\ndata: {data}\n\n"))
    }

    fn models(&self, models: &[String], created: u64) -> Bytes {
        OpenAi.models(models, created)
    }

    fn limit_headers(&self, snapshot: &LimitSnapshot, headers: &mut HeaderMap) {
        OpenAi.limit_headers(snapshot, headers);
    }

    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue) {
        OpenAi.request_id(seed)
    }

    fn common_headers(&self, headers: &mut HeaderMap) {
        OpenAi.common_headers(headers);
    }
}
