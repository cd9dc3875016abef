//! OpenAI Chat Completions, as `api.openai.com` speaks it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::{fingerprint, header, positive_field, quoted, Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Content, Finish, OutputMode, ToolChoice};
use crate::generate::{self, estimate_tokens, Fnv};
use crate::limits::{go_duration, retry_after_secs, Denied, LimitSnapshot, Which};
use crate::scenario::RetryAfterStyle;

/// The OpenAI dialect.
pub(crate) struct OpenAi;

const PARSE_ERROR: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)";

fn error_body(message: &str, ty: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    Bytes::from(
        json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
            .to_string(),
    )
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::Refusal => "stop",
        Finish::Length => "length",
        Finish::ToolUse => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

/// The forced tool, if `tool_choice` (or, with `auto`, the last user
/// message naming a tool) asks for one.
fn chosen_tool(obj: &Map<String, Value>, messages: &[Value]) -> Option<ToolChoice> {
    let tools = obj.get("tools")?.as_array()?;
    let tool = |t: &Value| -> Option<ToolChoice> {
        let f = t.get("function")?;
        Some(ToolChoice {
            name: f.get("name")?.as_str()?.to_owned(),
            schema: f
                .get("parameters")
                .cloned()
                .unwrap_or(json!({"type": "object"})),
        })
    };
    let named = |name: &str| tools.iter().filter_map(tool).find(|t| t.name == name);
    match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::String(s)) if s == "required" => tools.iter().find_map(tool),
        Some(Value::Object(choice)) => {
            let name = choice.get("function")?.get("name")?.as_str()?;
            named(name)
        }
        _ => {
            // auto: call a tool when the last message is a user message naming it.
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
    }
}

impl Dialect for OpenAi {
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>> {
        let provided = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match provided {
            Some(k) if k == key => Ok(()),
            other => Err(other.map(str::to_owned)),
        }
    }

    fn parse(&self, _headers: &HeaderMap, body: &[u8], seed: u64) -> Result<ChatRequest, Failure> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| Failure::invalid(PARSE_ERROR))?;
        let Value::Object(obj) = &value else {
            return Err(Failure::invalid(PARSE_ERROR));
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) => m.clone(),
            _ => return Err(Failure::invalid("you must provide a model parameter")),
        };
        let messages = match obj.get("messages") {
            None => {
                return Err(Failure::InvalidBody {
                    message: "Missing required parameter: 'messages'.".into(),
                    param: Some("messages"),
                    code: Some("missing_required_parameter"),
                })
            }
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => {
                return Err(Failure::InvalidBody {
                    message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into(),
                    param: Some("messages"),
                    code: Some("empty_array"),
                })
            }
            Some(other) => {
                return Err(Failure::InvalidBody {
                    message: format!(
                        "Invalid type for 'messages': expected an array of objects, but got {} instead.",
                        if other.is_string() { "a string" } else { "another type" }
                    ),
                    param: Some("messages"),
                    code: Some("invalid_type"),
                })
            }
        };
        let mut max_tokens = None;
        for key in ["max_completion_tokens", "max_tokens"] {
            match positive_field(obj, key) {
                Ok(Some(n)) => {
                    max_tokens = Some(n);
                    break;
                }
                Ok(None) => {}
                Err(v) => {
                    return Err(Failure::InvalidBody {
                        message: format!("Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {v} instead."),
                        param: Some(if key == "max_tokens" { "max_tokens" } else { "max_completion_tokens" }),
                        code: Some("integer_below_min_value"),
                    })
                }
            }
        }
        let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let output = match obj.get("response_format") {
            Some(rf) => match rf.get("type").and_then(Value::as_str) {
                Some("json_object") => OutputMode::JsonObject,
                Some("json_schema") => OutputMode::JsonSchema(
                    rf.get("json_schema")
                        .and_then(|s| s.get("schema"))
                        .cloned()
                        .unwrap_or(json!({"type": "object"})),
                ),
                _ => OutputMode::Text,
            },
            None => OutputMode::Text,
        };
        let tool = chosen_tool(obj, messages);
        let seed_of = |messages: &[Value]| {
            let mut h = Fnv::new(seed);
            h.bytes(model.as_bytes());
            h.value(&Value::Array(Vec::new()));
            messages.iter().for_each(|m| h.value(m));
            if let Some(t) = obj.get("tools") {
                h.value(t);
            }
            if let Some(rf) = obj.get("response_format") {
                h.value(rf);
            }
            h.finish()
        };
        // A continuation is answered from the conversation it continues.
        let (conversation, partial) = crate::answer::continued(messages);
        let continues = partial.map(|p| (seed_of(conversation), p));
        let content_seed = seed_of(messages);
        let prompt_tokens = messages.iter().map(estimate_tokens).sum::<u64>()
            + 3 * messages.len() as u64
            + obj.get("tools").map(estimate_tokens).unwrap_or(0)
            + 3;
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
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
        let mut headers = HeaderMap::new();
        let (status, body) = match failure {
            Failure::RateLimit { retry_after, style } => {
                rate_limited(&mut headers, *retry_after, style, model)
            }
            Failure::LimitExceeded(denied) => limit_exceeded(&mut headers, denied, model),
            Failure::Quota => (
                StatusCode::TOO_MANY_REQUESTS,
                error_body(
                    "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                    "insufficient_quota",
                    None,
                    Some("insufficient_quota"),
                ),
            ),
            Failure::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(
                    "The engine is currently overloaded, please try again later.",
                    "server_error",
                    None,
                    None,
                ),
            ),
            Failure::Server(code) | Failure::Status(code) if *code >= 500 => server_error(*code),
            Failure::Status(429) => {
                return self.error(
                    &Failure::RateLimit {
                        retry_after: std::time::Duration::from_secs(1),
                        style: RetryAfterStyle::All,
                    },
                    model,
                )
            }
            Failure::Status(401) => return self.error(&Failure::Auth(Some("sk-chaos".into())), model),
            Failure::Status(404) => {
                return self.error(
                    &Failure::NotFound {
                        model: model.to_owned(),
                    },
                    model,
                )
            }
            Failure::Server(code) | Failure::Status(code) => client_error(*code),
            Failure::Auth(provided) => unauthorized(provided.as_deref()),
            Failure::ContextOverflow { tokens, limit } => (
                StatusCode::BAD_REQUEST,
                error_body(
                    &format!("This model's maximum context length is {limit} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."),
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                ),
            ),
            Failure::BadRequest => (
                StatusCode::BAD_REQUEST,
                error_body(
                    "Invalid value for 'temperature': expected a number between 0 and 2.",
                    "invalid_request_error",
                    Some("temperature"),
                    Some("invalid_value"),
                ),
            ),
            Failure::NotFound { model } => (
                StatusCode::NOT_FOUND,
                error_body(
                    &format!("The model `{model}` does not exist or you do not have access to it."),
                    "invalid_request_error",
                    None,
                    Some("model_not_found"),
                ),
            ),
            Failure::InvalidBody {
                message,
                param,
                code,
            } => (
                StatusCode::BAD_REQUEST,
                error_body(message, "invalid_request_error", *param, *code),
            ),
            Failure::UnknownRoute { method, path } => (
                StatusCode::NOT_FOUND,
                error_body(
                    &format!("Invalid URL ({method} {path})"),
                    "invalid_request_error",
                    None,
                    None,
                ),
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
        let id = generate::id(&mut rng, "chatcmpl-", 29);
        let message = match &answer.content {
            Content::Text(pieces) => json!({
                "role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []
            }),
            Content::Empty => json!({
                "role": "assistant", "content": "", "refusal": null, "annotations": []
            }),
            Content::Refusal(text) => json!({
                "role": "assistant", "content": null, "refusal": text, "annotations": []
            }),
            Content::ToolCall {
                id: call,
                name,
                arguments,
            } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": format!("call_{call}"),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments.concat()}
                }],
                "refusal": null,
                "annotations": []
            }),
        };
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": ids.created,
            "model": req.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(answer.finish)
            }],
            "usage": usage(req, answer),
            "service_tier": "default",
            "system_fingerprint": fingerprint(req.content_seed ^ 1),
        });
        Bytes::from(body.to_string())
    }

    fn stream_error(&self) -> Bytes {
        let body = error_body(
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
            None,
        );
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        let mut rng = generate::rng(ids.seed);
        let id = generate::id(&mut rng, "chatcmpl-", 29);
        let prefix = format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"service_tier\":\"default\",\"system_fingerprint\":\"{}\",\"choices\":[",
            ids.created,
            quoted(&req.model),
            fingerprint(req.content_seed ^ 1)
        );
        let usage_null = if req.include_usage {
            ",\"usage\":null"
        } else {
            ""
        };
        let chunk = |delta: &str, finish: Option<&str>| {
            let finish = finish.map(quoted).unwrap_or_else(|| "null".to_owned());
            Bytes::from(format!(
                "{prefix}{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]{usage_null}}}\n\n"
            ))
        };
        let mut events = Vec::with_capacity(8 + answer.completion_tokens as usize);
        events.push(chunk(
            "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
            None,
        ));
        match &answer.content {
            Content::Text(pieces) => {
                for p in pieces {
                    events.push(chunk(&format!("{{\"content\":{}}}", quoted(p)), None));
                }
            }
            Content::Refusal(text) => {
                for p in generate::split_pieces(text, 8) {
                    events.push(chunk(&format!("{{\"refusal\":{}}}", quoted(&p)), None));
                }
            }
            Content::ToolCall {
                id: call,
                name,
                arguments,
            } => {
                events.push(chunk(
                    &format!(
                        "{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_{call}\",\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":\"\"}}}}]}}",
                        quoted(name)
                    ),
                    None,
                ));
                for p in arguments {
                    events.push(chunk(
                        &format!(
                            "{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{}}}}}]}}",
                            quoted(p)
                        ),
                        None,
                    ));
                }
            }
            Content::Empty => {}
        }
        events.push(chunk("{}", Some(finish_reason(answer.finish))));
        if req.include_usage {
            events.push(Bytes::from(format!(
                "{prefix}],\"usage\":{}}}\n\n",
                usage(req, answer)
            )));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    fn models(&self, models: &[String], created: u64) -> Bytes {
        let data: Vec<Value> = models
            .iter()
            .map(|m| json!({"id": m, "object": "model", "created": created, "owned_by": "system"}))
            .collect();
        Bytes::from(json!({"object": "list", "data": data}).to_string())
    }

    fn limit_headers(&self, snapshot: &LimitSnapshot, headers: &mut HeaderMap) {
        if let Some(w) = snapshot.requests {
            header(headers, "x-ratelimit-limit-requests", w.limit.to_string());
            header(
                headers,
                "x-ratelimit-remaining-requests",
                w.remaining.to_string(),
            );
            header(headers, "x-ratelimit-reset-requests", go_duration(w.reset));
        }
        if let Some(w) = snapshot.tokens {
            header(headers, "x-ratelimit-limit-tokens", w.limit.to_string());
            header(
                headers,
                "x-ratelimit-remaining-tokens",
                w.remaining.to_string(),
            );
            header(headers, "x-ratelimit-reset-tokens", go_duration(w.reset));
        }
    }

    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue) {
        let id = format!(
            "req_{:016x}{:016x}",
            generate::mix(seed),
            generate::mix(seed ^ 0x5bd1)
        );
        (
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_chaos")),
        )
    }

    fn common_headers(&self, headers: &mut HeaderMap) {
        headers.insert("openai-version", HeaderValue::from_static("2020-10-01"));
        headers.insert("openai-organization", HeaderValue::from_static("org-chaos"));
        headers.insert("openai-processing-ms", HeaderValue::from_static("1"));
    }
}

/// An injected rate limit: a 429 with the `retry-after` headers `style` asks for.
fn rate_limited(
    headers: &mut HeaderMap,
    d: Duration,
    style: &RetryAfterStyle,
    model: &str,
) -> (StatusCode, Bytes) {
    let all = *style == RetryAfterStyle::All;
    if all || *style == RetryAfterStyle::Seconds {
        header(headers, "retry-after", retry_after_secs(d).to_string());
    }
    if all || *style == RetryAfterStyle::Milliseconds {
        header(headers, "retry-after-ms", d.as_millis().to_string());
    }
    if *style == RetryAfterStyle::HttpDate {
        let at = std::time::SystemTime::now() + d;
        header(headers, "retry-after", httpdate::fmt_http_date(at));
    }
    if all || *style == RetryAfterStyle::Reset {
        header(headers, "x-ratelimit-limit-requests", "60");
        header(headers, "x-ratelimit-remaining-requests", "0");
        header(headers, "x-ratelimit-reset-requests", go_duration(d));
    }
    (
        StatusCode::TOO_MANY_REQUESTS,
        error_body(
            &format!("Rate limit reached for {model} in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.", go_duration(d)),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
    )
}

/// The upstream's own rpm/tpm limit refused: a 429 naming the limit, with
/// the limit headers.
fn limit_exceeded(headers: &mut HeaderMap, denied: &Denied, model: &str) -> (StatusCode, Bytes) {
    let d = denied.retry_after;
    header(headers, "retry-after", retry_after_secs(d).to_string());
    header(headers, "retry-after-ms", d.as_millis().to_string());
    OpenAi.limit_headers(&denied.snapshot, headers);
    let (what, short, ty, limit) = match denied.which {
        Which::Requests => (
            "requests per min",
            "RPM",
            "requests",
            denied.snapshot.requests.map(|w| w.limit),
        ),
        Which::Tokens => (
            "tokens per min",
            "TPM",
            "tokens",
            denied.snapshot.tokens.map(|w| w.limit),
        ),
    };
    let limit = limit.unwrap_or_default();
    let used = match denied.which {
        Which::Requests => denied.snapshot.requests,
        Which::Tokens => denied.snapshot.tokens,
    }
    .map(|w| w.limit - w.remaining)
    .unwrap_or_default();
    (
        StatusCode::TOO_MANY_REQUESTS,
        error_body(
            &format!("Rate limit reached for {model} in organization org-chaos on {what} ({short}): Limit {limit}, Used {used}, Requested {}. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.", denied.requested, go_duration(d)),
            ty,
            None,
            Some("rate_limit_exceeded"),
        ),
    )
}

/// A 5xx, with the message OpenAI gives for that status.
fn server_error(code: u16) -> (StatusCode, Bytes) {
    let message = match code {
        502 => "Bad gateway.",
        503 => "The server is overloaded or not ready yet.",
        504 => "Gateway timeout.",
        _ => "The server had an error while processing your request. Sorry about that!",
    };
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        error_body(message, "server_error", None, None),
    )
}

/// Any other 4xx: the request was rejected.
fn client_error(code: u16) -> (StatusCode, Bytes) {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let message = format!(
        "{}: the request was rejected.",
        status.canonical_reason().unwrap_or("Error")
    );
    (
        status,
        error_body(&message, "invalid_request_error", None, None),
    )
}

/// A wrong key (`Some`, its last four characters quoted back) or none.
fn unauthorized(provided: Option<&str>) -> (StatusCode, Bytes) {
    let message = match provided {
        None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.".to_owned(),
        Some(k) => {
            let tail: String = k.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            format!("Incorrect API key provided: sk-...{tail}. You can find your API key at https://platform.openai.com/account/api-keys.")
        }
    };
    let code = provided.map(|_| "invalid_api_key");
    (
        StatusCode::UNAUTHORIZED,
        error_body(&message, "invalid_request_error", None, code),
    )
}

fn usage(req: &ChatRequest, answer: &Answer) -> Value {
    json!({
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": req.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}
