//! OpenAI's Responses API (`POST /v1/responses`), as `api.openai.com`
//! speaks it, for `kind = "openai"` upstreams. A request is read as the
//! chat request it amounts to (instructions, messages, function calls and
//! their outputs, function tools, `text.format`, `max_output_tokens`), so
//! the answer, faults, limits and stats are those of the chat endpoint;
//! answers are Response objects and Responses event streams. Errors are
//! OpenAI's.
//!
//! Like a reasoning model with the built-in web search, an answer starts
//! with a reasoning item when the request asks for a summary
//! (`reasoning.summary`) or for its encrypted content (`include`), and with
//! a `web_search_call` when it offers the `web_search` tool; streams carry
//! their events (`response.reasoning_summary_*`, `response.web_search_call.*`).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::openai::OpenAi;
use super::{Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Content, Finish, ResponsesAsk};
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
            // What the model thought and the searches it made itself: in
            // the answer that follows them.
            "reasoning" => {}
            k if provider_call(k) => {}
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

/// Whether `kind` is an item of a tool call the provider makes itself.
fn provider_call(kind: &str) -> bool {
    matches!(
        kind,
        "web_search_call"
            | "file_search_call"
            | "code_interpreter_call"
            | "image_generation_call"
            | "mcp_call"
            | "mcp_list_tools"
    )
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

/// What a Responses request asks beyond its chat reading.
fn ask_of(obj: &Map<String, Value>) -> ResponsesAsk {
    let reasoning = obj.get("reasoning").filter(|r| r.is_object()).cloned();
    let summary = reasoning
        .as_ref()
        .and_then(|r| r.get("summary"))
        .is_some_and(|s| !s.is_null());
    let encrypted = obj
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content"));
    let web = obj.get("tools").and_then(Value::as_array).is_some_and(|t| {
        t.iter().any(|t| {
            matches!(
                t.get("type").and_then(Value::as_str),
                Some("web_search" | "web_search_preview")
            )
        })
    });
    ResponsesAsk {
        reasoning,
        summary,
        encrypted,
        web_search: web.then(|| query_of(obj)),
    }
}

/// The search a web search makes: the last user text (at most 100 characters).
fn query_of(obj: &Map<String, Value>) -> String {
    let text = match obj.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .rev()
            .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|i| content_text(i.get("content")).as_str().map(str::to_owned))
            .unwrap_or_default(),
        _ => String::new(),
    };
    text.chars().take(100).collect()
}

/// The reasoning summary of every answer that asks for one.
const SUMMARY: &str =
    "**Answering the question**\n\nThe question is clear; I answer it directly and briefly.";

/// Ids of one answer's response and items.
struct Ids {
    response: String,
    item: String,
    reasoning: String,
    web_search: String,
}

fn ids_of(ids: ResponseIds) -> Ids {
    let mut rng = generate::rng(ids.seed);
    let hex = generate::id(&mut rng, "", 48);
    Ids {
        response: format!("resp_{hex}"),
        item: format!("{}_{}", "item", &hex[..24]),
        reasoning: format!("rs_{}", &hex[..24]),
        web_search: format!("ws_{}", &hex[24..]),
    }
}

/// The reasoning item, complete (`done`) or as first announced.
fn reasoning_item(ask: &ResponsesAsk, ids: &Ids, done: bool) -> Value {
    let summary = match done && ask.summary {
        true => json!([{"type": "summary_text", "text": SUMMARY}]),
        false => json!([]),
    };
    let mut item = json!({"id": ids.reasoning, "type": "reasoning", "summary": summary});
    if ask.encrypted && done {
        item["encrypted_content"] = format!("gAAAAB{}", ids.response).into();
    }
    item
}

/// The web search call, complete (`done`) or as first announced.
fn web_search_item(query: &str, ids: &Ids, done: bool) -> Value {
    match done {
        true => json!({"id": ids.web_search, "type": "web_search_call", "status": "completed",
                       "action": {"type": "search", "query": query}}),
        false => json!({"id": ids.web_search, "type": "web_search_call", "status": "in_progress"}),
    }
}

/// The complete items before the answer's.
fn preamble(ask: &ResponsesAsk, ids: &Ids) -> Vec<Value> {
    let mut out = Vec::new();
    if ask.summary || ask.encrypted {
        out.push(reasoning_item(ask, ids, true));
    }
    if let Some(q) = &ask.web_search {
        out.push(web_search_item(q, ids, true));
    }
    out
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
        "reasoning": req.responses.reasoning.clone().unwrap_or(json!({"effort": null, "summary": null})),
        "service_tier": "default",
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

impl Events {
    /// The events of the items before the answer's; how many there are.
    fn preamble(&mut self, ask: &ResponsesAsk, ids: &Ids) -> usize {
        let mut n = 0;
        if ask.summary || ask.encrypted {
            let at = json!({"item_id": ids.reasoning, "output_index": n, "summary_index": 0});
            let with = |extra: Value| merged(&at, extra);
            self.push(
                "response.output_item.added",
                json!({"output_index": n, "item": reasoning_item(ask, ids, false)}),
            );
            if ask.summary {
                let part = |text: &str| json!({"type": "summary_text", "text": text});
                self.push(
                    "response.reasoning_summary_part.added",
                    with(json!({"part": part("")})),
                );
                for p in generate::split_pieces(SUMMARY, 12) {
                    self.push(
                        "response.reasoning_summary_text.delta",
                        with(json!({"delta": p})),
                    );
                }
                self.push(
                    "response.reasoning_summary_text.done",
                    with(json!({"text": SUMMARY})),
                );
                self.push(
                    "response.reasoning_summary_part.done",
                    with(json!({"part": part(SUMMARY)})),
                );
            }
            self.push(
                "response.output_item.done",
                json!({"output_index": n, "item": reasoning_item(ask, ids, true)}),
            );
            n += 1;
        }
        if let Some(q) = &ask.web_search {
            self.push(
                "response.output_item.added",
                json!({"output_index": n, "item": web_search_item(q, ids, false)}),
            );
            for step in ["in_progress", "searching", "completed"] {
                self.push(
                    &format!("response.web_search_call.{step}"),
                    json!({"item_id": ids.web_search, "output_index": n}),
                );
            }
            self.push(
                "response.output_item.done",
                json!({"output_index": n, "item": web_search_item(q, ids, true)}),
            );
            n += 1;
        }
        n
    }
}

/// `base` with the members of `extra` added.
fn merged(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
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
        req.responses = ask_of(obj);
        req.include_usage = true;
        Ok(req)
    }

    fn error(&self, failure: &Failure, model: &str) -> Reply {
        OpenAi.error(failure, model)
    }

    fn complete(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Bytes {
        let names = ids_of(ids);
        let mut output = preamble(&req.responses, &names);
        output.push(item(answer, &names.item, true));
        Bytes::from(response(req, ids, Some(answer), Value::Array(output)).to_string())
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        let names = ids_of(ids);
        let item_id = names.item.clone();
        let mut ev = Events {
            out: Vec::with_capacity(12 + answer.completion_tokens as usize),
        };
        let shell = response(req, ids, None, json!([]));
        ev.push("response.created", json!({"response": shell}));
        ev.push("response.in_progress", json!({"response": shell}));
        let n = ev.preamble(&req.responses, &names);
        let at = json!({"item_id": item_id, "output_index": n});
        let with = |extra: Value| {
            let mut v = at.clone();
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            v
        };
        ev.push(
            "response.output_item.added",
            json!({"output_index": n, "item": item(answer, &item_id, false)}),
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
            json!({"output_index": n, "item": done}),
        );
        let mut output = preamble(&req.responses, &names);
        output.push(done);
        let full = response(req, ids, Some(answer), Value::Array(output));
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
