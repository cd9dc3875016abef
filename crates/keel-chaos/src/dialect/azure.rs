//! Azure OpenAI, as `NAME.openai.azure.com` speaks it: OpenAI's chat wire
//! (so [`OpenAi`] writes the bodies and streams) with Azure's key header,
//! its content-filter annotations and its own error bodies.
//!
//! What differs from OpenAI, from Azure's REST reference:
//! - the key comes as `api-key` (a Microsoft Entra token, or the key on the
//!   v1 API, as `Authorization: Bearer`);
//! - answers carry `prompt_filter_results` and per-choice
//!   `content_filter_results`, and a stream opens with an event of no
//!   choices that holds only the prompt's filter results;
//! - errors are `{"error": {"code": "429", "message": ...}}`: the code is
//!   often the status as a string, there is no `type`; a prompt the filter
//!   blocks is a 400 `content_filter` with an `innererror`
//!   (`ResponsibleAIPolicyViolation` and the `content_filter_result` per
//!   category);
//! - a 429 says when to come back in `retry-after` and `retry-after-ms`,
//!   and the limits as `x-ratelimit-remaining-{requests,tokens}` (no reset
//!   headers);
//! - an unknown path, or a deployment path without `api-version`, is a 404
//!   `Resource not found` (see [`crate::server`]).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::openai::OpenAi;
use super::{header, Dialect, Failure, Reply, ResponseIds};
use crate::answer::{Answer, ChatRequest, Finish};
use crate::generate;
use crate::limits::{retry_after_secs, Denied, LimitSnapshot, Which};
use crate::scenario::RetryAfterStyle;

/// The Azure OpenAI dialect.
pub(crate) struct Azure;

/// What Azure's content filter says about a prompt or a completion that
/// passed: every category `safe`.
fn passed() -> Value {
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"},
    })
}

/// The filter results of a completion the filter stopped.
fn stopped() -> Value {
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": true, "severity": "medium"},
    })
}

fn prompt_filter_results() -> Value {
    json!([{"prompt_index": 0, "content_filter_results": passed()}])
}

/// An Azure error body: `code` and `message`, no `type`.
fn error_body(code: &str, message: &str) -> Bytes {
    Bytes::from(json!({"error": {"code": code, "message": message}}).to_string())
}

/// The 400 of a prompt the content filter blocked.
fn prompt_filtered() -> Bytes {
    let mut result = passed();
    result["hate"] = json!({"filtered": true, "severity": "high"});
    result["jailbreak"] = json!({"filtered": false, "detected": false});
    Bytes::from(
        json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": result
            }
        }})
        .to_string(),
    )
}

const ACCESS_DENIED: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

/// An injected rate limit: a 429 with the hint headers `style` asks for
/// (Azure has no reset headers: `reset` sends the remaining counts only).
fn rate_limited(headers: &mut HeaderMap, d: Duration, style: &RetryAfterStyle) -> Bytes {
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
        header(headers, "x-ratelimit-remaining-requests", "0");
        header(headers, "x-ratelimit-remaining-tokens", "0");
    }
    error_body(
        "429",
        &format!("Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after {} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.", retry_after_secs(d)),
    )
}

fn limit_exceeded(headers: &mut HeaderMap, denied: &Denied) -> Bytes {
    let d = denied.retry_after;
    header(headers, "retry-after", retry_after_secs(d).to_string());
    header(headers, "retry-after-ms", d.as_millis().to_string());
    Azure.limit_headers(&denied.snapshot, headers);
    let what = match denied.which {
        Which::Requests => "call rate limit",
        Which::Tokens => "token rate limit",
    };
    error_body(
        "429",
        &format!("Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded {what} of your current OpenAI S0 pricing tier. Please retry after {} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.", retry_after_secs(d)),
    )
}

/// A 5xx with Azure's code and message for that status.
fn server_error(code: u16) -> (StatusCode, Bytes) {
    let (name, message) = match code {
        502 => ("BadGateway", "Bad gateway."),
        503 => (
            "ServiceUnavailable",
            "The service is temporarily unable to process your request. Please try again later.",
        ),
        504 => (
            "GatewayTimeout",
            "The gateway did not receive a response in time.",
        ),
        _ => (
            "InternalServerError",
            "The server had an error while processing your request. Sorry about that!",
        ),
    };
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        error_body(name, message),
    )
}

/// Adds Azure's filter annotations to one `data: {...}` chunk of OpenAI's
/// stream: per-choice results on every chunk with choices.
fn annotate_chunk(event: &Bytes, filtered: bool) -> Bytes {
    let text = String::from_utf8_lossy(event);
    let Some(json) = text.trim_end().strip_prefix("data: ") else {
        return event.clone();
    };
    let Ok(mut v) = serde_json::from_str::<Value>(json) else {
        return event.clone();
    };
    let stop = v["choices"][0]["finish_reason"].as_str() == Some("content_filter");
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            c["content_filter_results"] = if filtered && stop {
                stopped()
            } else {
                passed()
            };
        }
    }
    Bytes::from(format!("data: {v}\n\n"))
}

impl Dialect for Azure {
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>> {
        let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (api_key, bearer) {
            (Some(k), _) | (None, Some(k)) if k.trim() == key => Ok(()),
            (Some(k), _) | (None, Some(k)) => Err(Some(k.to_owned())),
            (None, None) => Err(None),
        }
    }

    fn parse(&self, headers: &HeaderMap, body: &[u8], seed: u64) -> Result<ChatRequest, Failure> {
        OpenAi.parse(headers, body, seed)
    }

    fn error(&self, failure: &Failure, model: &str) -> Reply {
        let mut headers = HeaderMap::new();
        let (status, body) = match failure {
            Failure::RateLimit { retry_after, style } => (
                StatusCode::TOO_MANY_REQUESTS,
                rate_limited(&mut headers, *retry_after, style),
            ),
            Failure::Status(429) => (
                StatusCode::TOO_MANY_REQUESTS,
                rate_limited(&mut headers, Duration::from_secs(1), &RetryAfterStyle::All),
            ),
            Failure::LimitExceeded(denied) => (
                StatusCode::TOO_MANY_REQUESTS,
                limit_exceeded(&mut headers, denied),
            ),
            Failure::Quota => (
                StatusCode::TOO_MANY_REQUESTS,
                Bytes::from(json!({"error": {
                    "code": "insufficient_quota",
                    "type": "insufficient_quota",
                    "message": "You exceeded your current quota, please check your plan and billing details."
                }}).to_string()),
            ),
            Failure::Overloaded => server_error(503),
            Failure::Server(code) | Failure::Status(code) if *code >= 500 => server_error(*code),
            Failure::Status(408) => (
                StatusCode::REQUEST_TIMEOUT,
                error_body("Timeout", "The operation was timeout."),
            ),
            Failure::Auth(_) | Failure::Status(401) => {
                (StatusCode::UNAUTHORIZED, error_body("401", ACCESS_DENIED))
            }
            Failure::NotFound { .. } | Failure::Status(404) => (
                StatusCode::NOT_FOUND,
                error_body("DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."),
            ),
            Failure::UnknownRoute { .. } => {
                (StatusCode::NOT_FOUND, error_body("404", "Resource not found"))
            }
            Failure::InvalidBody {
                code: Some("content_filter"),
                ..
            } => (StatusCode::BAD_REQUEST, prompt_filtered()),
            Failure::InvalidBody {
                code: Some("BadRequest"),
                message,
                ..
            } => (StatusCode::BAD_REQUEST, error_body("BadRequest", message)),
            Failure::Server(code) | Failure::Status(code) => {
                let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST);
                let reason = status.canonical_reason().unwrap_or("Error");
                (
                    status,
                    error_body(&code.to_string(), &format!("{reason}: the request was rejected.")),
                )
            }
            // Validation errors are OpenAI's own (Azure passes them on).
            Failure::ContextOverflow { .. } | Failure::BadRequest | Failure::InvalidBody { .. } => {
                return OpenAi.error(failure, model)
            }
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    fn complete(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Bytes {
        let body = OpenAi.complete(req, answer, ids);
        let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        let results = match answer.finish {
            Finish::ContentFilter => stopped(),
            _ => passed(),
        };
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices {
                c["content_filter_results"] = results.clone();
            }
        }
        v["prompt_filter_results"] = prompt_filter_results();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("service_tier");
        }
        Bytes::from(v.to_string())
    }

    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes> {
        let filtered = answer.finish == Finish::ContentFilter;
        let first = json!({
            "choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": prompt_filter_results(),
        });
        let mut events = vec![Bytes::from(format!("data: {first}\n\n"))];
        events.extend(
            OpenAi
                .stream(req, answer, ids)
                .iter()
                .map(|e| annotate_chunk(e, filtered)),
        );
        events
    }

    fn stream_error(&self) -> Bytes {
        let (_, body) = server_error(503);
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }

    fn models(&self, models: &[String], created: u64) -> Bytes {
        OpenAi.models(models, created)
    }

    fn limit_headers(&self, snapshot: &LimitSnapshot, headers: &mut HeaderMap) {
        if let Some(w) = snapshot.requests {
            header(headers, "x-ratelimit-limit-requests", w.limit.to_string());
            header(
                headers,
                "x-ratelimit-remaining-requests",
                w.remaining.to_string(),
            );
        }
        if let Some(w) = snapshot.tokens {
            header(headers, "x-ratelimit-limit-tokens", w.limit.to_string());
            header(
                headers,
                "x-ratelimit-remaining-tokens",
                w.remaining.to_string(),
            );
        }
    }

    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue) {
        let (a, b) = (generate::mix(seed), generate::mix(seed ^ 0x5bd1));
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        );
        (
            HeaderName::from_static("apim-request-id"),
            HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("chaos")),
        )
    }

    fn common_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ms-region", HeaderValue::from_static("East US"));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }
}

/// An operation an Azure path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `.../chat/completions`.
    Chat,
    /// `.../embeddings`.
    Embeddings,
}

/// Where a request to an Azure upstream goes: `rest` is its path after the
/// upstream's name, `query` its query string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AzureRoute {
    /// A chat or embeddings call, with the deployment its path names (the
    /// v1 API names it in the body).
    Call(Operation, Option<String>),
    /// `GET /openai/v1/models`.
    Models,
}

/// Routes an Azure path as the service does: a deployment path needs a
/// dated `api-version` (none: Azure's 404 `Resource not found`; one it
/// does not know: 400 `API version not supported`); the v1 API takes none
/// (or `preview`/`latest`).
pub(crate) fn route(rest: &str, query: Option<&str>) -> Result<AzureRoute, Failure> {
    let version = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("api-version="))
            .map(str::to_owned)
    });
    let unsupported = || Failure::InvalidBody {
        message: "API version not supported".into(),
        param: None,
        code: Some("BadRequest"),
    };
    let not_found = || Failure::UnknownRoute {
        method: String::new(),
        path: String::new(),
    };
    let operation = |op: &str| match op {
        "chat/completions" => Some(Operation::Chat),
        "embeddings" => Some(Operation::Embeddings),
        _ => None,
    };
    if let Some(rest) = rest.strip_prefix("openai/v1/") {
        if !matches!(version.as_deref(), None | Some("preview" | "latest")) {
            return Err(unsupported());
        }
        if rest == "models" {
            return Ok(AzureRoute::Models);
        }
        return operation(rest)
            .map(|e| AzureRoute::Call(e, None))
            .ok_or_else(not_found);
    }
    let Some((deployment, op)) = rest
        .strip_prefix("openai/deployments/")
        .and_then(|r| r.split_once('/'))
    else {
        return Err(not_found());
    };
    let endpoint = operation(op).ok_or_else(not_found)?;
    match version {
        None => Err(not_found()),
        Some(v) if dated(&v) => Ok(AzureRoute::Call(endpoint, Some(deployment.to_owned()))),
        Some(_) => Err(unsupported()),
    }
}

/// `2024-10-21` or `2025-04-01-preview`.
fn dated(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && matches!(&v[10..], "" | "-preview")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes_as_azure_does() {
        let call = |e, d: Option<&str>| Some(AzureRoute::Call(e, d.map(str::to_owned)));
        let dep = "openai/deployments/gpt4o/chat/completions";
        assert_eq!(
            route(dep, Some("api-version=2024-10-21")).ok(),
            call(Operation::Chat, Some("gpt4o"))
        );
        assert_eq!(
            route(
                "openai/deployments/emb/embeddings",
                Some("x=1&api-version=2025-04-01-preview")
            )
            .ok(),
            call(Operation::Embeddings, Some("emb"))
        );
        assert_eq!(
            route("openai/v1/chat/completions", None).ok(),
            call(Operation::Chat, None)
        );
        assert_eq!(
            route("openai/v1/models", Some("api-version=preview")).ok(),
            Some(AzureRoute::Models)
        );
        assert!(matches!(
            route(dep, None),
            Err(Failure::UnknownRoute { .. })
        ));
        assert!(matches!(
            route(dep, Some("api-version=2024-13")),
            Err(Failure::InvalidBody {
                code: Some("BadRequest"),
                ..
            })
        ));
        assert!(matches!(
            route("openai/v1/chat/completions", Some("api-version=2024-10-21")),
            Err(Failure::InvalidBody {
                code: Some("BadRequest"),
                ..
            })
        ));
        assert!(matches!(
            route("v1/chat/completions", None),
            Err(Failure::UnknownRoute { .. })
        ));
    }
}
