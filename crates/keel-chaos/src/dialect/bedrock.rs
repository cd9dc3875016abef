//! AWS Bedrock Runtime's Converse API, as `bedrock-runtime.{region}.amazonaws.com`
//! speaks it: `POST /model/{modelId}/converse` answers JSON,
//! `/converse-stream` answers `application/vnd.amazon.eventstream` frames,
//! and errors name their exception in `x-amzn-ErrorType` with a
//! `{"message": ...}` body. Requests must carry a SigV4 `Authorization`
//! header; its signature is not checked (the access key id in its
//! credential scope is, when the upstream has an `api_key`).

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::{header, positive_field, Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Content, Finish, OutputMode, ToolChoice};
use crate::generate::{self, estimate_tokens, Fnv};
use crate::limits::LimitSnapshot;

/// The Bedrock dialect.
pub(crate) struct Bedrock;

/// The content type of a ConverseStream answer.
pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// `rest` (an upstream's path after its name) when it is a Converse path,
/// with the model id decoded and whether it streams.
pub(crate) fn converse_path(rest: &str) -> Option<(String, bool)> {
    let rest = rest.strip_prefix("model/")?;
    let (model, op) = rest.rsplit_once('/')?;
    let stream = match op {
        "converse" => false,
        "converse-stream" => true,
        _ => return None,
    };
    (!model.is_empty() && !model.contains('/')).then(|| (percent_decode(model), stream))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error answer: the exception's name in `x-amzn-ErrorType` (with the
/// namespace suffix AWS adds) and its message in the body.
fn error_reply(status: u16, name: &str, message: &str) -> Reply {
    let mut headers = HeaderMap::new();
    header(
        &mut headers,
        "x-amzn-errortype",
        format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
    );
    header(&mut headers, "content-type", "application/json");
    Reply {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        headers,
        body: Bytes::from(json!({ "message": message }).to_string()),
    }
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::Refusal => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolUse => "tool_use",
        Finish::ContentFilter => "guardrail_intervened",
    }
}

/// One event-stream frame.
fn frame(message_type: &str, type_header: &str, name: &str, payload: Value) -> Bytes {
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            type_header.to_owned(),
            FrameValue::String(name.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            FrameValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            FrameValue::String(message_type.to_owned().into()),
        ));
    let mut out = Vec::new();
    match write_message_to(&message, &mut out) {
        Ok(()) => Bytes::from(out),
        Err(_) => Bytes::new(),
    }
}

/// An event frame of a ConverseStream.
fn event(name: &str, payload: Value) -> Bytes {
    frame("event", ":event-type", name, payload)
}

/// An exception frame of a ConverseStream (`throttlingException`, ...).
pub(crate) fn exception(name: &str, message: &str) -> Bytes {
    frame(
        "exception",
        ":exception-type",
        name,
        json!({ "message": message }),
    )
}

/// `frame` with its JSON payload cut short (still a well-formed frame:
/// the payload is what cannot be read).
pub(crate) fn break_frame(bytes: &Bytes) -> Bytes {
    let Ok(message) = read_message_from(bytes.clone()) else {
        return bytes.slice(..bytes.len() / 2);
    };
    let payload = message.payload().clone();
    let keep = payload.slice(..payload.len() * 2 / 3);
    let broken = Message::new_from_parts(message.headers().to_vec(), keep);
    let mut out = Vec::new();
    match write_message_to(&broken, &mut out) {
        Ok(()) => Bytes::from(out),
        Err(_) => bytes.slice(..bytes.len() / 2),
    }
}

/// A Converse message with its blocks in Anthropic's shape (`{"type":
/// "text", "text": ...}`), for the seeds and the continuation check that
/// every dialect shares.
fn as_anthropic(m: &Value) -> Value {
    let blocks = m
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .map(|b| match b.get("text") {
                    Some(t) => json!({"type": "text", "text": t}),
                    None => b.clone(),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    json!({"role": m.get("role").cloned().unwrap_or(Value::Null), "content": blocks})
}

/// The tool the answer calls: the one `toolChoice` names, any with `any`,
/// else (auto) one whose name the last user turn mentions.
fn chosen_tool(config: Option<&Value>, messages: &[Value]) -> Option<ToolChoice> {
    let config = config?;
    let tools = config.get("tools")?.as_array()?;
    let tool = |t: &Value| -> Option<ToolChoice> {
        let spec = t.get("toolSpec")?;
        Some(ToolChoice {
            name: spec.get("name")?.as_str()?.to_owned(),
            schema: spec.get("inputSchema")?.get("json")?.clone(),
        })
    };
    let choice = config.get("toolChoice");
    if choice.and_then(|c| c.get("any")).is_some() {
        return tools.iter().find_map(tool);
    }
    if let Some(name) = choice
        .and_then(|c| c.get("tool"))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
    {
        return tools.iter().filter_map(tool).find(|t| t.name == name);
    }
    let last = messages.last()?;
    if last.get("role")?.as_str()? != "user" {
        return None;
    }
    let text = last.get("content")?.to_string();
    tools
        .iter()
        .filter_map(tool)
        .find(|t| text.contains(&t.name))
}

/// `1 validation error detected: ...`, Bedrock's words for a bad field.
fn validation(message: impl Into<String>) -> Failure {
    Failure::invalid(message)
}

impl Bedrock {
    /// Parses a Converse request for `model` (from the path).
    pub(crate) fn parse_converse(
        &self,
        model: &str,
        stream: bool,
        body: &[u8],
        seed: u64,
    ) -> Result<ChatRequest, Failure> {
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            validation("Malformed input request, please reformat your input and try again.")
        })?;
        let Value::Object(obj) = &value else {
            return Err(validation(
                "Malformed input request, please reformat your input and try again.",
            ));
        };
        let messages = match obj.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => return Err(validation("1 validation error detected: Value '[]' at 'messages' failed to satisfy constraint: Member must have length greater than or equal to 1")),
            _ => return Err(validation("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null")),
        };
        for m in messages {
            match m.get("role").and_then(Value::as_str) {
                Some("user" | "assistant") => {}
                _ => return Err(validation("1 validation error detected: Value at 'messages.1.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]")),
            }
            if !m.get("content").is_some_and(Value::is_array) {
                return Err(validation("1 validation error detected: Value null at 'messages.1.member.content' failed to satisfy constraint: Member must not be null"));
            }
        }
        let empty = Map::new();
        let inference = obj
            .get("inferenceConfig")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let max_tokens = positive_field(inference, "maxTokens").map_err(|_| {
            validation("1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1")
        })?;
        let converted: Vec<Value> = messages.iter().map(as_anthropic).collect();
        let tool = chosen_tool(obj.get("toolConfig"), &converted);
        let seed_of = |messages: &[Value]| {
            let mut h = Fnv::new(seed);
            h.bytes(model.as_bytes());
            h.value(&Value::Array(Vec::new()));
            messages.iter().for_each(|m| h.value(m));
            for key in ["system", "toolConfig"] {
                if let Some(v) = obj.get(key) {
                    h.value(v);
                }
            }
            h.finish()
        };
        let (conversation, partial) = crate::answer::continued(&converted);
        let continues = partial.map(|p| (seed_of(conversation), p));
        let content_seed = seed_of(&converted);
        let prompt_tokens = messages.iter().map(estimate_tokens).sum::<u64>()
            + 3 * messages.len() as u64
            + obj.get("system").map(estimate_tokens).unwrap_or(0)
            + obj.get("toolConfig").map(estimate_tokens).unwrap_or(0)
            + 3;
        Ok(ChatRequest {
            model: model.to_owned(),
            stream,
            include_usage: true,
            max_tokens,
            prompt_tokens,
            content_seed,
            output: OutputMode::Text,
            tool,
            continues,
            responses: Default::default(),
        })
    }
}

fn usage(req: &ChatRequest, answer: &Answer) -> Value {
    json!({
        "inputTokens": req.prompt_tokens,
        "outputTokens": answer.completion_tokens,
        "totalTokens": req.prompt_tokens + answer.completion_tokens
    })
}

/// Bedrock's tool-use id: `tooluse_` and 22 characters.
fn tool_use_id(call: &str) -> String {
    format!("tooluse_{}", generate::cut(call, 22))
}

impl Dialect for Bedrock {
    /// The access key id of the SigV4 credential scope
    /// (`Credential=AKID/20250101/us-east-1/bedrock/aws4_request`).
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>> {
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(auth) = auth else {
            return Err(None);
        };
        let id = auth
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .and_then(|rest| rest.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next());
        match id {
            Some(id) if id == key => Ok(()),
            Some(id) => Err(Some(id.to_owned())),
            None => Err(Some(String::new())),
        }
    }

    fn parse(
        &self,
        _headers: &HeaderMap,
        _body: &[u8],
        _seed: u64,
    ) -> Result<ChatRequest, Failure> {
        // Converse names its model in the path: see `parse_at`.
        Err(Failure::invalid("The model id is part of the path"))
    }

    fn parse_at(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        seed: u64,
    ) -> Result<ChatRequest, Failure> {
        let signed = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
        if !signed {
            return Err(Failure::Auth(None));
        }
        let rest = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, r)| r);
        let Some((model, stream)) = converse_path(rest) else {
            return Err(Failure::invalid("Unknown operation"));
        };
        self.parse_converse(&model, stream, body, seed)
    }

    fn error(&self, failure: &Failure, _model: &str) -> Reply {
        match failure {
            Failure::RateLimit { .. } | Failure::Status(429) => error_reply(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
            Failure::LimitExceeded(denied) => {
                let what = match denied.which {
                    crate::limits::Which::Requests => "requests",
                    crate::limits::Which::Tokens => "tokens",
                };
                error_reply(
                    429,
                    "ThrottlingException",
                    &format!("Too many {what}, please wait before trying again."),
                )
            }
            Failure::Quota => error_reply(
                400,
                "ServiceQuotaExceededException",
                "Your request exceeds the service quota for your account. You can view your quotas at https://docs.aws.amazon.com/servicequotas/latest/userguide/gs-request-quota.html. You can resubmit your request later.",
            ),
            Failure::Overloaded | Failure::Status(503 | 529) => error_reply(
                503,
                "ServiceUnavailableException",
                "Bedrock is unable to process your request.",
            ),
            Failure::Server(code) | Failure::Status(code) => {
                let (name, message) = match code {
                    400 => ("ValidationException", "Malformed input request, please reformat your input and try again."),
                    401 | 403 => ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
                    404 => ("ResourceNotFoundException", "The specified resource was not found."),
                    408 | 504 => ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
                    424 => ("ModelErrorException", "The request failed due to an error while processing the model."),
                    c if *c >= 500 => ("InternalServerException", "The server encountered an internal error while processing the request."),
                    _ => ("ValidationException", "Invalid request."),
                };
                let status = if *code == 504 { 408 } else { *code };
                error_reply(status, name, message)
            }
            Failure::Auth(Some(_)) => error_reply(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            Failure::Auth(None) => error_reply(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ),
            Failure::ContextOverflow { .. } => error_reply(
                400,
                "ValidationException",
                "Input is too long for requested model.",
            ),
            Failure::BadRequest => error_reply(
                400,
                "ValidationException",
                "The model returned the following errors: temperature: range: 0..1",
            ),
            Failure::NotFound { model } => error_reply(
                404,
                "ResourceNotFoundException",
                &format!("Model not found: the provided model identifier {model} is invalid."),
            ),
            Failure::InvalidBody { message, .. } => {
                error_reply(400, "ValidationException", message)
            }
            Failure::UnknownRoute { .. } => {
                error_reply(404, "UnknownOperationException", "Unknown operation")
            }
        }
    }

    fn complete(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Bytes {
        let content = match &answer.content {
            Content::Text(pieces) => json!([{ "text": pieces.concat() }]),
            Content::Refusal(text) => json!([{ "text": text }]),
            Content::Empty => json!([]),
            Content::ToolCall {
                id: call,
                name,
                arguments,
            } => {
                let input = serde_json::from_str::<Value>(&arguments.concat())
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                json!([{"toolUse": {"toolUseId": tool_use_id(call), "name": name, "input": input}}])
            }
        };
        Bytes::from(
            json!({
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason(answer.finish),
                "usage": usage(req, answer),
                "metrics": {"latencyMs": 100 + ids.seed % 900}
            })
            .to_string(),
        )
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        // AWS pads payloads (`p`) so their length says nothing.
        let mut rng = generate::rng(ids.seed);
        let pad = generate::id(&mut rng, "", 8);
        let mut events = Vec::with_capacity(6 + answer.completion_tokens as usize);
        events.push(event(
            "messageStart",
            json!({"role": "assistant", "p": pad}),
        ));
        let delta = |d: Value| {
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": d, "p": pad}),
            )
        };
        let stop = || {
            event(
                "contentBlockStop",
                json!({"contentBlockIndex": 0, "p": pad}),
            )
        };
        match &answer.content {
            Content::Text(pieces) => {
                events.extend(pieces.iter().map(|p| delta(json!({ "text": p }))));
                events.push(stop());
            }
            Content::Refusal(text) => {
                let pieces = generate::split_pieces(text, 8);
                events.extend(pieces.iter().map(|p| delta(json!({ "text": p }))));
                events.push(stop());
            }
            Content::ToolCall {
                id: call,
                name,
                arguments,
            } => {
                events.push(event(
                    "contentBlockStart",
                    json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": tool_use_id(call), "name": name}}, "p": pad}),
                ));
                events.extend(
                    arguments
                        .iter()
                        .map(|p| delta(json!({"toolUse": {"input": p}}))),
                );
                events.push(stop());
            }
            Content::Empty => {}
        }
        events.push(event(
            "messageStop",
            json!({"stopReason": stop_reason(answer.finish), "p": pad}),
        ));
        events.push(event(
            "metadata",
            json!({"usage": usage(req, answer), "metrics": {"latencyMs": 100 + ids.seed % 900}, "p": pad}),
        ));
        events
    }

    fn stream_error(&self) -> Bytes {
        exception(
            "serviceUnavailableException",
            "Bedrock is unable to process your request.",
        )
    }

    fn break_event(&self, event: &Bytes) -> Bytes {
        break_frame(event)
    }

    fn stream_content_type(&self) -> &'static str {
        EVENT_STREAM
    }

    fn models(&self, models: &[String], _created: u64) -> Bytes {
        let summaries: Vec<Value> = models
            .iter()
            .map(|m| json!({"modelId": m, "modelName": m, "providerName": "chaos", "responseStreamingSupported": true}))
            .collect();
        Bytes::from(json!({ "modelSummaries": summaries }).to_string())
    }

    fn limit_headers(&self, _snapshot: &LimitSnapshot, _headers: &mut HeaderMap) {
        // Bedrock sends no rate-limit headers.
    }

    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue) {
        let h = generate::mix(seed);
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 20) & 0xfff,
            generate::mix(h) & 0xffff_ffff_ffff
        );
        (
            HeaderName::from_static("x-amzn-requestid"),
            HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("chaos")),
        )
    }

    fn common_headers(&self, _headers: &mut HeaderMap) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn converse_paths_name_the_model_and_the_operation() {
        assert_eq!(
            converse_path("model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"),
            Some(("anthropic.claude-3-5-sonnet-20240620-v1:0".into(), true))
        );
        assert_eq!(converse_path("model/m/converse"), Some(("m".into(), false)));
        assert_eq!(converse_path("model/m/invoke"), None);
        assert_eq!(converse_path("v1/messages"), None);
    }

    #[test]
    fn broken_frames_are_frames_with_unreadable_payloads() {
        let e = event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "hello there"}}),
        );
        let broken = break_frame(&e);
        let m = read_message_from(broken).unwrap();
        assert!(serde_json::from_slice::<Value>(m.payload()).is_err());
    }
}
