//! The Google Gemini API, as `generativelanguage.googleapis.com` speaks it:
//! `POST /v1beta/models/{model}:generateContent` (or `/v1/...`) and
//! `:streamGenerateContent?alt=sse`, the key in `x-goog-api-key`, answers
//! as `GenerateContentResponse`s (one per SSE event when streamed, no end
//! event), and failures as Google's `{"error":{"code","message","status",
//! "details"}}`: a rate limit is a 429 `RESOURCE_EXHAUSTED` whose wait is a
//! `google.rpc.RetryInfo` detail (no header), a bad key a 400
//! `INVALID_ARGUMENT` with `ErrorInfo` reason `API_KEY_INVALID`. A refusal
//! is the prompt blocked (`promptFeedback.blockReason`, no candidate), a
//! content-filter cut an answer that ends with `finishReason` `SAFETY`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::{header, Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Content, Finish, OutputMode, ToolChoice};
use crate::generate::{self, estimate_tokens, Fnv};
use crate::limits::LimitSnapshot;

/// The Gemini dialect.
pub(crate) struct Gemini;

const HELP: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";

fn error_body(code: u16, status: &str, message: &str, details: Vec<Value>) -> Bytes {
    let mut error = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    Bytes::from(json!({ "error": error }).to_string())
}

/// A protobuf duration as JSON: `"12s"`, `"0.250s"`.
/// A request body as Google reads it: a JSON object, else its 400.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Failure::invalid(
            "Invalid JSON payload received. Expected an object.",
        )),
        Err(e) => Err(Failure::invalid(format!(
            "Invalid JSON payload received. {e}"
        ))),
    }
}

fn proto_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
    }
}

/// The details of a 429: which quota, where to read about it, when to come back.
fn quota_details(quota_id: &str, metric: &str, model: &str, retry: Option<Duration>) -> Vec<Value> {
    let mut details = vec![
        json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "quotaMetric": format!("generativelanguage.googleapis.com/{metric}"),
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": "10"
            }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": HELP}]
        }),
    ];
    if let Some(d) = retry {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": proto_duration(d)
        }));
    }
    details
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::ToolUse => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::Refusal | Finish::ContentFilter => "SAFETY",
    }
}

/// Safety ratings of an answer, one category blocked when `blocked`.
fn safety_ratings(blocked: bool) -> Value {
    let rating = |category: &str, high: bool| {
        let mut r =
            json!({"category": category, "probability": if high { "HIGH" } else { "NEGLIGIBLE" }});
        if high {
            r["blocked"] = Value::Bool(true);
        }
        r
    };
    json!([
        rating("HARM_CATEGORY_HATE_SPEECH", false),
        rating("HARM_CATEGORY_DANGEROUS_CONTENT", blocked),
        rating("HARM_CATEGORY_HARASSMENT", false),
        rating("HARM_CATEGORY_SEXUALLY_EXPLICIT", false)
    ])
}

/// Gemini's schema types are upper case on the wire from Google's SDKs
/// (`OBJECT`); the generator reads JSON Schema's lower case.
fn lower_types(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("type", Value::String(t)) => (k.clone(), Value::String(t.to_lowercase())),
                    _ => (k.clone(), lower_types(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(lower_types).collect()),
        other => other.clone(),
    }
}

/// The model and the streaming mode named by a request's path
/// (`/{upstream}/v1beta/models/{model}:{method}`).
fn model_and_method(path: &str) -> Option<(String, bool)> {
    let (_, call) = path.split_once("/models/")?;
    let (model, method) = call.split_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    (!model.is_empty()).then(|| (model.to_owned(), stream))
}

/// The text of a turn's parts, `None` when it holds anything but text.
fn turn_text(content: &Value) -> Option<String> {
    content
        .get("parts")?
        .as_array()?
        .iter()
        .map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

/// The turns in the OpenAI shape the continuation detector reads.
fn as_messages(contents: &[Value]) -> Vec<Value> {
    contents
        .iter()
        .map(|c| {
            let role = match c.get("role").and_then(Value::as_str) {
                Some("model") => "assistant",
                _ => "user",
            };
            let mut m = json!({"role": role});
            match turn_text(c) {
                Some(t) => m["content"] = Value::String(t),
                None => m["tool_calls"] = c.get("parts").cloned().unwrap_or(Value::Null),
            }
            m
        })
        .collect()
}

fn declarations(obj: &Map<String, Value>) -> Vec<ToolChoice> {
    obj.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations")?.as_array())
        .flatten()
        .filter_map(|d| {
            let schema = d
                .get("parameters")
                .or_else(|| d.get("parametersJsonSchema"))
                .map(lower_types)
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            Some(ToolChoice {
                name: d.get("name")?.as_str()?.to_owned(),
                schema,
            })
        })
        .collect()
}

fn chosen_tool(obj: &Map<String, Value>, contents: &[Value]) -> Option<ToolChoice> {
    let tools = declarations(obj);
    let config = obj
        .get("toolConfig")
        .and_then(|c| c.get("functionCallingConfig"));
    let mode = config
        .and_then(|c| c.get("mode"))
        .and_then(Value::as_str)
        .unwrap_or("AUTO");
    let allowed: Option<Vec<&str>> = config
        .and_then(|c| c.get("allowedFunctionNames"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let allowed_tool = |t: &ToolChoice| {
        allowed
            .as_ref()
            .is_none_or(|a| a.contains(&t.name.as_str()))
    };
    match mode {
        "NONE" => None,
        "ANY" => tools.into_iter().find(allowed_tool),
        _ => {
            // As the other dialects: a tool named in the last user turn
            // (not answered by a function response yet) is called.
            let last = contents.last()?;
            if last.get("role").and_then(Value::as_str) == Some("model") {
                return None;
            }
            let text = turn_text(last)?;
            tools
                .into_iter()
                .filter(allowed_tool)
                .find(|t| text.contains(&t.name))
        }
    }
}

impl Dialect for Gemini {
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>> {
        let provided = headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match provided {
            Some(k) if k == key => Ok(()),
            other => Err(other.map(str::to_owned)),
        }
    }

    fn parse(
        &self,
        _headers: &HeaderMap,
        _body: &[u8],
        _seed: u64,
    ) -> Result<ChatRequest, Failure> {
        Err(Failure::invalid("the model is named in the path"))
    }

    fn parse_at(
        &self,
        path: &str,
        _headers: &HeaderMap,
        body: &[u8],
        seed: u64,
    ) -> Result<ChatRequest, Failure> {
        let Some((model, stream)) = model_and_method(path) else {
            return Err(Failure::UnknownRoute {
                method: "POST".into(),
                path: path.to_owned(),
            });
        };
        let obj = &json_object(body)?;
        let contents = match obj.get("contents") {
            Some(Value::Array(c)) if !c.is_empty() => c,
            _ => {
                return Err(Failure::invalid(
                    "* GenerateContentRequest.contents: contents is not specified\n",
                ))
            }
        };
        let config = obj.get("generationConfig");
        let max_tokens = match config.and_then(|c| c.get("maxOutputTokens")) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => {
                    return Err(Failure::invalid(format!(
                        "* GenerateContentRequest.generation_config.max_output_tokens: must be positive, got {v}\n"
                    )))
                }
            },
        };
        let mime = config
            .and_then(|c| c.get("responseMimeType"))
            .and_then(Value::as_str);
        let schema = config.and_then(|c| {
            c.get("responseSchema")
                .or_else(|| c.get("responseJsonSchema"))
        });
        let output = match (mime, schema) {
            (Some("application/json"), Some(s)) => OutputMode::JsonSchema(lower_types(s)),
            (Some("application/json"), None) => OutputMode::JsonObject,
            _ => OutputMode::Text,
        };
        let tool = chosen_tool(obj, contents);
        let messages = as_messages(contents);
        let seed_of = |messages: &[Value]| {
            let mut h = Fnv::new(seed);
            h.bytes(model.as_bytes());
            h.value(&Value::Array(Vec::new()));
            messages.iter().for_each(|m| h.value(m));
            for key in ["systemInstruction", "tools"] {
                if let Some(v) = obj.get(key) {
                    h.value(v);
                }
            }
            if let Some(s) = schema {
                h.value(s);
            }
            h.finish()
        };
        let (conversation, partial) = crate::answer::continued(&messages);
        let continues = partial.map(|p| (seed_of(conversation), p));
        let content_seed = seed_of(&messages);
        let prompt_tokens = contents.iter().map(estimate_tokens).sum::<u64>()
            + 3 * contents.len() as u64
            + obj
                .get("systemInstruction")
                .map(estimate_tokens)
                .unwrap_or(0)
            + obj.get("tools").map(estimate_tokens).unwrap_or(0)
            + 3;
        Ok(ChatRequest {
            model,
            stream,
            include_usage: true,
            max_tokens,
            prompt_tokens,
            content_seed,
            output,
            tool,
            continues,
            responses: Default::default(),
        })
    }

    fn error(&self, failure: &Failure, model: &str) -> Reply {
        let headers = HeaderMap::new();
        let invalid = |message: &str| {
            (
                StatusCode::BAD_REQUEST,
                error_body(400, "INVALID_ARGUMENT", message, Vec::new()),
            )
        };
        let (status, body) = match failure {
            Failure::RateLimit { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                error_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    &format!("You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: {HELP}."),
                    quota_details(
                        "GenerateRequestsPerMinutePerProjectPerModel",
                        "generate_content_requests",
                        model,
                        Some(*retry_after),
                    ),
                ),
            ),
            Failure::LimitExceeded(denied) => {
                let (id, metric) = match denied.which {
                    crate::limits::Which::Requests => ("GenerateRequestsPerMinutePerProjectPerModel", "generate_content_requests"),
                    crate::limits::Which::Tokens => ("GenerateContentInputTokensPerModelPerMinute", "generate_content_input_token_count"),
                };
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    error_body(
                        429,
                        "RESOURCE_EXHAUSTED",
                        &format!("You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: {HELP}."),
                        quota_details(id, metric, model, Some(denied.retry_after)),
                    ),
                )
            }
            Failure::Quota => (
                StatusCode::TOO_MANY_REQUESTS,
                error_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    &format!("You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: {HELP}."),
                    quota_details(
                        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "generate_content_free_tier_requests",
                        model,
                        None,
                    ),
                ),
            ),
            Failure::Overloaded | Failure::Status(503) | Failure::Server(503) | Failure::Status(529) => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", Vec::new()),
            ),
            Failure::Status(429) => {
                return self.error(
                    &Failure::RateLimit {
                        retry_after: Duration::from_secs(1),
                        style: crate::scenario::RetryAfterStyle::All,
                    },
                    model,
                )
            }
            Failure::Server(code) | Failure::Status(code) => {
                let (status, message) = match code {
                    400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
                    401 => ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
                    403 => ("PERMISSION_DENIED", "The caller does not have permission"),
                    404 => ("NOT_FOUND", "Requested entity was not found."),
                    500 => ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
                    504 => ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
                    c if *c >= 500 => ("UNKNOWN", "An unknown error occurred."),
                    _ => ("FAILED_PRECONDITION", "Precondition check failed."),
                };
                let http = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (http, error_body(*code, status, message, Vec::new()))
            }
            Failure::Auth(Some(_)) => (
                StatusCode::BAD_REQUEST,
                error_body(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    vec![json!({
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}
                    })],
                ),
            ),
            Failure::Auth(None) => (
                StatusCode::FORBIDDEN,
                error_body(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                    Vec::new(),
                ),
            ),
            Failure::ContextOverflow { tokens, limit } => invalid(&format!(
                "The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit})."
            )),
            Failure::BadRequest => invalid(
                "* GenerateContentRequest.generation_config.temperature: must be between 0 and 2, got 7\n",
            ),
            Failure::NotFound { model } => (
                StatusCode::NOT_FOUND,
                error_body(
                    404,
                    "NOT_FOUND",
                    &format!("models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."),
                    Vec::new(),
                ),
            ),
            Failure::InvalidBody { message, .. } => invalid(message),
            Failure::UnknownRoute { path, .. } => (
                StatusCode::NOT_FOUND,
                error_body(404, "NOT_FOUND", &format!("The requested URL {path} was not found on this server."), Vec::new()),
            ),
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    fn complete(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Bytes {
        let mut rng = generate::rng(ids.seed);
        let id = generate::id(&mut rng, "", 22);
        let usage = usage(req, answer.completion_tokens);
        let body = match &answer.content {
            Content::Refusal(_) => blocked(req, &id, usage),
            Content::Text(pieces) => candidate(
                req,
                &id,
                json!([{"text": pieces.concat()}]),
                answer.finish,
                usage,
            ),
            Content::Empty => candidate(req, &id, json!([{"text": ""}]), answer.finish, usage),
            Content::ToolCall {
                name, arguments, ..
            } => candidate(
                req,
                &id,
                json!([function_call(name, arguments)]),
                answer.finish,
                usage,
            ),
        };
        Bytes::from(body.to_string())
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        let mut rng = generate::rng(ids.seed);
        let id = generate::id(&mut rng, "", 22);
        let event = |v: Value| Bytes::from(format!("data: {v}\r\n\r\n"));
        let running = |n: u64| {
            json!({
                "promptTokenCount": req.prompt_tokens,
                "candidatesTokenCount": n,
                "totalTokenCount": req.prompt_tokens + n
            })
        };
        let piece = |parts: Value, n: u64| {
            event(json!({
                "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}],
                "usageMetadata": running(n),
                "modelVersion": req.model,
                "responseId": id
            }))
        };
        let usage = usage(req, answer.completion_tokens);
        let mut events = Vec::new();
        let last_parts = match &answer.content {
            Content::Refusal(_) => {
                events.push(event(blocked(req, &id, usage)));
                return events;
            }
            Content::Text(pieces) => {
                let (last, rest) = pieces
                    .split_last()
                    .map_or((String::new(), &[][..]), |(l, r)| (l.clone(), r));
                for (n, p) in rest.iter().enumerate() {
                    events.push(piece(json!([{"text": p}]), n as u64 + 1));
                }
                json!([{"text": last}])
            }
            Content::Empty => json!([{"text": ""}]),
            Content::ToolCall {
                name, arguments, ..
            } => json!([function_call(name, arguments)]),
        };
        events.push(event(candidate(req, &id, last_parts, answer.finish, usage)));
        events
    }

    fn stream_error(&self) -> Bytes {
        let body = error_body(
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            Vec::new(),
        );
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\r\n\r\n");
        Bytes::from(event)
    }

    fn models(&self, models: &[String], _created: u64) -> Bytes {
        let data: Vec<Value> = models
            .iter()
            .map(|m| {
                json!({
                    "name": format!("models/{m}"),
                    "displayName": m,
                    "inputTokenLimit": 1_048_576,
                    "outputTokenLimit": 65_536,
                    "supportedGenerationMethods": if m.contains("embedding") {
                        json!(["embedContent", "batchEmbedContents"])
                    } else {
                        json!(["generateContent", "countTokens"])
                    }
                })
            })
            .collect();
        Bytes::from(json!({ "models": data }).to_string())
    }

    fn limit_headers(&self, _snapshot: &LimitSnapshot, _headers: &mut HeaderMap) {
        // Google sends no rate-limit headers: the limits are in the console.
    }

    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue) {
        let dur = 200 + generate::mix(seed) % 1800;
        (
            HeaderName::from_static("server-timing"),
            HeaderValue::from_str(&format!("gfet4t7; dur={dur}"))
                .unwrap_or(HeaderValue::from_static("gfet4t7; dur=1")),
        )
    }

    fn common_headers(&self, headers: &mut HeaderMap) {
        header(headers, "server", "scaffolding on HTTPServer2");
        header(headers, "vary", "Origin, X-Origin, Referer");
        header(headers, "x-content-type-options", "nosniff");
    }
}

fn usage(req: &ChatRequest, completion: u64) -> Value {
    json!({
        "promptTokenCount": req.prompt_tokens,
        "candidatesTokenCount": completion,
        "totalTokenCount": req.prompt_tokens + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": req.prompt_tokens}]
    })
}

fn function_call(name: &str, arguments: &[String]) -> Value {
    // Gemini sends parsed arguments; broken ones become arguments that do
    // not match the schema.
    let args = serde_json::from_str::<Value>(&arguments.concat())
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    // Signed as a thinking model signs its calls.
    let signature = super::gemini_signatures::signature(name, &args);
    json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": signature})
}

/// An answer with one candidate that ends.
fn candidate(req: &ChatRequest, id: &str, parts: Value, finish: Finish, usage: Value) -> Value {
    let mut c = json!({
        "content": {"parts": parts, "role": "model"},
        "finishReason": finish_reason(finish),
        "index": 0
    });
    if matches!(finish, Finish::ContentFilter | Finish::Refusal) {
        c["safetyRatings"] = safety_ratings(true);
    }
    json!({
        "candidates": [c],
        "usageMetadata": usage,
        "modelVersion": req.model,
        "responseId": id
    })
}

/// The answer to a blocked prompt: no candidate, the block's reason.
fn blocked(req: &ChatRequest, id: &str, _usage: Value) -> Value {
    json!({
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": safety_ratings(true)},
        "usageMetadata": {"promptTokenCount": req.prompt_tokens, "totalTokenCount": req.prompt_tokens},
        "modelVersion": req.model,
        "responseId": id
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_path_names_the_model_and_the_mode() {
        assert_eq!(
            model_and_method("/g/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(("gemini-2.5-flash".into(), false))
        );
        assert_eq!(
            model_and_method("/g/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some(("gemini-2.5-flash".into(), true))
        );
        assert_eq!(model_and_method("/g/v1beta/models/x:countTokens"), None);
        assert_eq!(model_and_method("/g/v1beta/models"), None);
    }

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(proto_duration(Duration::from_secs(12)), "12s");
        assert_eq!(proto_duration(Duration::from_millis(1250)), "1.250s");
    }
}
