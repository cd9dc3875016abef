//! Anthropic Messages, as `api.anthropic.com` speaks it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::{header, positive_field, quoted, Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Content, Finish, OutputMode, ToolChoice};
use crate::generate::{self, estimate_tokens, Fnv};
use crate::limits::{retry_after_secs, rfc3339_in, LimitSnapshot, Window};
use crate::scenario::RetryAfterStyle;

/// The Anthropic dialect.
pub(crate) struct Anthropic;

fn error_body(ty: &str, message: &str) -> Bytes {
    Bytes::from(json!({"type": "error", "error": {"type": ty, "message": message}}).to_string())
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolUse => "tool_use",
        Finish::Refusal | Finish::ContentFilter => "refusal",
    }
}

fn chosen_tool(obj: &Map<String, Value>, messages: &[Value]) -> Option<ToolChoice> {
    let tools = obj.get("tools")?.as_array()?;
    let tool = |t: &Value| -> Option<ToolChoice> {
        Some(ToolChoice {
            name: t.get("name")?.as_str()?.to_owned(),
            schema: t.get("input_schema")?.clone(),
        })
    };
    let choice = obj.get("tool_choice");
    match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
        Some("none") => None,
        Some("any") => tools.iter().find_map(tool),
        Some("tool") => {
            let name = choice?.get("name")?.as_str()?;
            tools.iter().filter_map(tool).find(|t| t.name == name)
        }
        _ => {
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

fn window_headers(headers: &mut HeaderMap, kind: &str, w: &Window) {
    let set = |headers: &mut HeaderMap, suffix: &str, value: String| {
        if let (Ok(name), Ok(v)) = (
            HeaderName::from_bytes(format!("anthropic-ratelimit-{kind}-{suffix}").as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, v);
        }
    };
    set(headers, "limit", w.limit.to_string());
    set(headers, "remaining", w.remaining.to_string());
    set(headers, "reset", rfc3339_in(w.reset));
}

impl Dialect for Anthropic {
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>> {
        let provided = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .map(str::trim);
        match provided {
            Some(k) if k == key => Ok(()),
            other => Err(other.map(str::to_owned)),
        }
    }

    fn parse(&self, headers: &HeaderMap, body: &[u8], seed: u64) -> Result<ChatRequest, Failure> {
        if !headers.contains_key("anthropic-version") {
            return Err(Failure::invalid("anthropic-version: header is required"));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Failure::invalid(format!(
                "There was an issue with the JSON in the request body: {e}"
            ))
        })?;
        let Value::Object(obj) = &value else {
            return Err(Failure::invalid("Input should be a valid dictionary"));
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) => m.clone(),
            Some(_) => return Err(Failure::invalid("model: Input should be a valid string")),
            None => return Err(Failure::invalid("model: Field required")),
        };
        let messages = match obj.get("messages") {
            None => return Err(Failure::invalid("messages: Field required")),
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => {
                return Err(Failure::invalid(
                    "messages: at least one message is required",
                ))
            }
            Some(_) => return Err(Failure::invalid("messages: Input should be a valid list")),
        };
        let max_tokens = match positive_field(obj, "max_tokens") {
            Ok(Some(n)) => n,
            Ok(None) => return Err(Failure::invalid("max_tokens: Field required")),
            Err(_) => {
                return Err(Failure::invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ))
            }
        };
        let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
        // Structured output: `output_config.format`, or the older beta
        // `output_format`.
        let format = obj
            .get("output_config")
            .and_then(|c| c.get("format"))
            .or_else(|| obj.get("output_format"));
        let output = match format {
            Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
                OutputMode::JsonSchema(
                    f.get("schema")
                        .cloned()
                        .unwrap_or(json!({"type": "object"})),
                )
            }
            _ => OutputMode::Text,
        };
        let tool = chosen_tool(obj, messages);
        let seed_of = |messages: &[Value]| {
            let mut h = Fnv::new(seed);
            h.bytes(model.as_bytes());
            h.value(&Value::Array(Vec::new()));
            messages.iter().for_each(|m| h.value(m));
            for key in ["system", "tools", "output_format", "output_config"] {
                if let Some(v) = obj.get(key) {
                    h.value(v);
                }
            }
            h.finish()
        };
        // A continuation is answered from the conversation it continues.
        let (conversation, partial) = crate::answer::continued(messages);
        let continues = partial.map(|p| (seed_of(conversation), p));
        let content_seed = seed_of(messages);
        let prompt_tokens = messages.iter().map(estimate_tokens).sum::<u64>()
            + 3 * messages.len() as u64
            + obj.get("system").map(estimate_tokens).unwrap_or(0)
            + obj.get("tools").map(estimate_tokens).unwrap_or(0)
            + 3;
        Ok(ChatRequest {
            model,
            stream,
            include_usage: true,
            max_tokens: Some(max_tokens),
            prompt_tokens,
            content_seed,
            output,
            tool,
            continues,
            responses: Default::default(),
        })
    }

    fn error(&self, failure: &Failure, _model: &str) -> Reply {
        let mut headers = HeaderMap::new();
        let (status, body) = match failure {
            Failure::RateLimit { retry_after, style } => {
                let d = *retry_after;
                let all = *style == RetryAfterStyle::All;
                if all || *style == RetryAfterStyle::Seconds {
                    header(&mut headers, "retry-after", retry_after_secs(d).to_string());
                }
                if *style == RetryAfterStyle::Milliseconds {
                    header(&mut headers, "retry-after-ms", d.as_millis().to_string());
                }
                if *style == RetryAfterStyle::HttpDate {
                    let at = std::time::SystemTime::now() + d;
                    header(&mut headers, "retry-after", httpdate::fmt_http_date(at));
                }
                if all || *style == RetryAfterStyle::Reset {
                    let w = Window {
                        limit: 50,
                        remaining: 0,
                        reset: d,
                    };
                    window_headers(&mut headers, "requests", &w);
                }
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    error_body("rate_limit_error", "This request would exceed the rate limit for your organization (org-chaos) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later."),
                )
            }
            Failure::LimitExceeded(denied) => {
                header(
                    &mut headers,
                    "retry-after",
                    retry_after_secs(denied.retry_after).to_string(),
                );
                self.limit_headers(&denied.snapshot, &mut headers);
                let what = match denied.which {
                    crate::limits::Which::Requests => "requests",
                    crate::limits::Which::Tokens => "input tokens",
                };
                let limit = match denied.which {
                    crate::limits::Which::Requests => denied.snapshot.requests,
                    crate::limits::Which::Tokens => denied.snapshot.tokens,
                }
                .map(|w| w.limit)
                .unwrap_or_default();
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    error_body("rate_limit_error", &format!("This request would exceed the rate limit for your organization (org-chaos) of {limit} {what} per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.")),
                )
            }
            Failure::Quota => (
                StatusCode::PAYMENT_REQUIRED,
                error_body("billing_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."),
            ),
            Failure::Overloaded | Failure::Status(529) => (
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                error_body("overloaded_error", "Overloaded"),
            ),
            Failure::Status(429) => {
                return self.error(
                    &Failure::RateLimit {
                        retry_after: std::time::Duration::from_secs(1),
                        style: RetryAfterStyle::All,
                    },
                    _model,
                )
            }
            Failure::Server(code) | Failure::Status(code) => {
                let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let (ty, message) = match code {
                    400 => ("invalid_request_error", "Invalid request."),
                    401 => ("authentication_error", "invalid x-api-key"),
                    402 => ("billing_error", "There's an issue with your billing or payment information."),
                    403 => ("permission_error", "Your API key does not have permission to use the specified resource."),
                    404 => ("not_found_error", "Not found."),
                    413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
                    504 => ("timeout_error", "Request timed out."),
                    c if *c >= 500 => ("api_error", "Internal server error"),
                    _ => ("invalid_request_error", "Invalid request."),
                };
                (status, error_body(ty, message))
            }
            Failure::Auth(provided) => (
                StatusCode::UNAUTHORIZED,
                error_body(
                    "authentication_error",
                    if provided.is_some() {
                        "invalid x-api-key"
                    } else {
                        "x-api-key header is required"
                    },
                ),
            ),
            Failure::ContextOverflow { tokens, limit } => (
                StatusCode::BAD_REQUEST,
                error_body(
                    "invalid_request_error",
                    &format!("prompt is too long: {tokens} tokens > {limit} maximum"),
                ),
            ),
            Failure::BadRequest => (
                StatusCode::BAD_REQUEST,
                error_body(
                    "invalid_request_error",
                    "temperature: Input should be less than or equal to 1",
                ),
            ),
            Failure::NotFound { model } => (
                StatusCode::NOT_FOUND,
                error_body("not_found_error", &format!("model: {model}")),
            ),
            Failure::InvalidBody { message, .. } => (
                StatusCode::BAD_REQUEST,
                error_body("invalid_request_error", message),
            ),
            Failure::UnknownRoute { .. } => (
                StatusCode::NOT_FOUND,
                error_body("not_found_error", "Not Found"),
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
        let id = generate::id(&mut rng, "msg_01", 22);
        let content = match &answer.content {
            Content::Text(pieces) => json!([{"type": "text", "text": pieces.concat()}]),
            Content::Refusal(text) => json!([{"type": "text", "text": text}]),
            Content::Empty => json!([]),
            Content::ToolCall {
                id: call,
                name,
                arguments,
            } => {
                // A non-streaming answer always carries parsed input; broken
                // arguments become an input that does not match the schema.
                let input = serde_json::from_str::<Value>(&arguments.concat())
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                json!([{
                    "type": "tool_use",
                    "id": format!("toolu_01{}", generate::cut(call, 22)),
                    "name": name,
                    "input": input
                }])
            }
        };
        Bytes::from(
            json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": req.model,
                "content": content,
                "stop_reason": stop_reason(answer.finish),
                "stop_sequence": null,
                "usage": {
                    "input_tokens": req.prompt_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": answer.completion_tokens,
                    "service_tier": "standard"
                }
            })
            .to_string(),
        )
    }

    fn stream_error(&self) -> Bytes {
        let body = error_body("overloaded_error", "Overloaded");
        let mut event = b"event: error\ndata: ".to_vec();
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        let mut rng = generate::rng(ids.seed);
        let id = generate::id(&mut rng, "msg_01", 22);
        let event =
            |name: &str, data: String| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
        let mut events = Vec::with_capacity(8 + answer.completion_tokens as usize);
        events.push(event(
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": req.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": req.prompt_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                        "service_tier": "standard"
                    }
                }
            })
            .to_string(),
        ));
        let block_start = |block: &str| {
            event(
                "content_block_start",
                format!(
                    "{{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{block}}}"
                ),
            )
        };
        let delta = |d: String| {
            event(
                "content_block_delta",
                format!("{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{d}}}"),
            )
        };
        let ping = || event("ping", "{\"type\": \"ping\"}".to_owned());
        let text_deltas = |events: &mut Vec<Bytes>, pieces: &[String]| {
            events.push(block_start("{\"type\":\"text\",\"text\":\"\"}"));
            events.push(ping());
            for p in pieces {
                events.push(delta(format!(
                    "{{\"type\":\"text_delta\",\"text\":{}}}",
                    quoted(p)
                )));
            }
        };
        match &answer.content {
            Content::Text(pieces) => text_deltas(&mut events, pieces),
            Content::Refusal(text) => text_deltas(&mut events, &generate::split_pieces(text, 8)),
            Content::ToolCall {
                id: call,
                name,
                arguments,
            } => {
                events.push(block_start(&format!(
                    "{{\"type\":\"tool_use\",\"id\":\"toolu_01{}\",\"name\":{},\"input\":{{}}}}",
                    generate::cut(call, 22),
                    quoted(name)
                )));
                events.push(ping());
                for p in arguments {
                    events.push(delta(format!(
                        "{{\"type\":\"input_json_delta\",\"partial_json\":{}}}",
                        quoted(p)
                    )));
                }
            }
            Content::Empty => events.push(ping()),
        }
        if !matches!(answer.content, Content::Empty) {
            events.push(event(
                "content_block_stop",
                "{\"type\":\"content_block_stop\",\"index\":0}".to_owned(),
            ));
        }
        events.push(event(
            "message_delta",
            format!(
                "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
                stop_reason(answer.finish),
                answer.completion_tokens
            ),
        ));
        events.push(event(
            "message_stop",
            "{\"type\":\"message_stop\"}".to_owned(),
        ));
        events
    }

    fn models(&self, models: &[String], _created: u64) -> Bytes {
        let data: Vec<Value> = models
            .iter()
            .map(|m| {
                json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"})
            })
            .collect();
        Bytes::from(
            json!({
                "data": data,
                "has_more": false,
                "first_id": models.first(),
                "last_id": models.last()
            })
            .to_string(),
        )
    }

    fn limit_headers(&self, snapshot: &LimitSnapshot, headers: &mut HeaderMap) {
        if let Some(w) = snapshot.requests {
            window_headers(headers, "requests", &w);
        }
        if let Some(w) = snapshot.tokens {
            window_headers(headers, "tokens", &w);
            window_headers(headers, "input-tokens", &w);
        }
    }

    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue) {
        let mut rng = generate::rng(seed);
        let id = generate::id(&mut rng, "req_011C", 20);
        (
            HeaderName::from_static("request-id"),
            HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_chaos")),
        )
    }

    fn common_headers(&self, headers: &mut HeaderMap) {
        headers.insert(
            "anthropic-organization-id",
            HeaderValue::from_static("00000000-0000-4000-8000-00000000c4a0"),
        );
    }
}
