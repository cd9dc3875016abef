//! Turning an attempt's outcome into a [`Classification`]: HTTP responses,
//! transport errors and completed-but-unusable answers.
//!
//! Status codes alone lie: OpenAI answers "out of credit" with the same 429
//! as "slow down", and a 400 may mean "your prompt is too long for this
//! model" (fall back to a larger window) or "your JSON is wrong" (fail
//! fast). So the error body is parsed (OpenAI `error.type`/`error.code`,
//! Anthropic `error.type`) and its markers override the status where they
//! are more precise.
//!
//! Unknown statuses are not retried: an unexpected 4xx is
//! [`FailureClass::InvalidRequest`]; an unexpected 5xx (501, 505, ...) is a
//! [`FailureClass::ServerError`] that falls back but does not retry the same
//! deployment. Bodies may be anything (HTML error pages, truncated JSON,
//! megabytes of garbage); parsing is bounded and never panics.

use std::time::SystemTime;

use http::HeaderMap;
use serde_json::Value;

use crate::class::{Action, Classification, FailureClass};
use crate::retry_after::{explicit_retry_hint, retry_hint};

/// Bodies larger than this are not parsed as JSON (only scanned for markers).
const MAX_JSON_BODY: usize = 256 * 1024;
/// Only this much of a non-JSON body is scanned for markers.
const MAX_SCAN: usize = 16 * 1024;
/// Messages kept in a [`Classification`] are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 1024;

/// What we could read from an error body.
#[derive(Default, Debug)]
struct ErrorBody {
    /// OpenAI `error.type` or Anthropic `error.type`.
    kind: Option<String>,
    /// OpenAI `error.code` (string or number).
    code: Option<String>,
    message: Option<String>,
    /// Lower-cased text searched for markers (type, code, message, or the raw body).
    haystack: String,
}

fn string_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn cut(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => format!("{}…", &s[..idx]),
        None => s.to_owned(),
    }
}

fn parse_body(body: &[u8]) -> ErrorBody {
    let mut out = ErrorBody::default();
    let json = if body.len() <= MAX_JSON_BODY {
        serde_json::from_slice::<Value>(body).ok()
    } else {
        None
    };
    if let Some(json) = json {
        let error = json.get("error");
        match error {
            Some(Value::Object(e)) => {
                out.kind = string_of(e.get("type"));
                out.code = string_of(e.get("code"));
                out.message = string_of(e.get("message"));
            }
            Some(Value::String(s)) => out.message = Some(s.clone()),
            _ => {}
        }
        if out.message.is_none() {
            out.message = string_of(json.get("message")).or_else(|| string_of(json.get("detail")));
        }
        if out.kind.is_none() && json.get("type").and_then(Value::as_str) != Some("error") {
            out.kind = string_of(json.get("type"));
        }
        for part in [&out.kind, &out.code, &out.message].into_iter().flatten() {
            out.haystack.push_str(&part.to_lowercase());
            out.haystack.push('\n');
        }
    } else {
        let head = &body[..body.len().min(MAX_SCAN)];
        let text = String::from_utf8_lossy(head);
        out.haystack = text.to_lowercase();
        let trimmed = text.trim();
        if !trimmed.is_empty() {
            out.message = Some(trimmed.to_owned());
        }
    }
    out.message = out.message.map(|m| cut(&m, MAX_MESSAGE_CHARS));
    out
}

impl ErrorBody {
    fn has(&self, markers: &[&str]) -> bool {
        markers.iter().any(|m| self.haystack.contains(m))
    }

    fn kind_is(&self, kinds: &[&str]) -> bool {
        let k = |v: &Option<String>| v.as_deref().is_some_and(|v| kinds.contains(&v));
        k(&self.kind) || k(&self.code)
    }
}

const QUOTA_MARKERS: &[&str] = &[
    "insufficient_quota",
    "billing_hard_limit",
    "billing_not_active",
    "billing_error",
    "exceeded your current quota",
    "credit balance is too low",
    "check your plan and billing",
];
const CONTEXT_MARKERS: &[&str] = &[
    "context_length_exceeded",
    "prompt is too long",
    "maximum context length",
    "context window",
    "request_too_large",
    "string_above_max_length",
];
const CONTENT_FILTER_KINDS: &[&str] = &["content_filter", "content_policy_violation"];

/// Classifies an HTTP response; `None` for 2xx.
///
/// `now` is the wall-clock time of the response, used to turn absolute
/// dates in headers into delays.
///
/// ```
/// use http::HeaderMap;
/// use keel_policy::{classify_response, FailureClass};
/// use std::time::SystemTime;
///
/// let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
/// let c = classify_response(429, &HeaderMap::new(), body, SystemTime::now()).unwrap();
/// assert_eq!(c.class, FailureClass::QuotaExhausted);
/// assert!(!c.action.retry_same && c.action.fall_back);
/// assert!(classify_response(200, &HeaderMap::new(), b"{}", SystemTime::now()).is_none());
/// ```
pub fn classify_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Option<Classification> {
    if (200..300).contains(&status) {
        return None;
    }
    // AWS names its exceptions in a header (Bedrock's own table).
    if let Some(c) = crate::classify_bedrock::classify_bedrock_response(status, headers, body, now)
    {
        return Some(c);
    }
    let parsed = parse_body(body);
    let client_error = (400..500).contains(&status);
    let mut action = None;

    let class = if (client_error && parsed.has(QUOTA_MARKERS)) || status == 402 {
        FailureClass::QuotaExhausted
    } else if client_error && (status == 413 || parsed.has(CONTEXT_MARKERS)) {
        FailureClass::ContextOverflow
    } else if client_error && parsed.kind_is(CONTENT_FILTER_KINDS) {
        FailureClass::ContentFiltered
    } else if status == 529 || status == 503 || parsed.kind_is(&["overloaded_error"]) {
        FailureClass::Overloaded
    } else {
        match status {
            408 => FailureClass::Timeout,
            401 | 403 => FailureClass::Auth,
            429 => FailureClass::RateLimited,
            404 => {
                // At a chat endpoint the only resource named by the path is the
                // deployment's model (or the deployment's URL itself), so a 404
                // is the deployment's problem: another deployment may serve it.
                action = Some(Action {
                    retry_same: false,
                    fall_back: true,
                });
                FailureClass::InvalidRequest
            }
            400..=499 => FailureClass::InvalidRequest,
            500 if parsed.has(&["overloaded"]) => FailureClass::Overloaded,
            500 | 502 | 504 => FailureClass::ServerError,
            // Proxy/CDN origin errors (Cloudflare 520-524, 598/599): transient.
            520..=524 | 598 | 599 => FailureClass::ServerError,
            _ => {
                // 501, 505, 1xx, 3xx...: not understood, so not retried here.
                action = Some(Action {
                    retry_same: false,
                    fall_back: true,
                });
                FailureClass::ServerError
            }
        }
    };

    let hint = match class {
        FailureClass::RateLimited | FailureClass::QuotaExhausted => retry_hint(headers, now),
        _ => explicit_retry_hint(headers, now),
    };
    Some(Classification {
        class,
        action: action.unwrap_or_else(|| class.default_action()),
        hint,
        status: Some(status),
        message: parsed.message,
        provider_code: parsed.code.or(parsed.kind),
    })
}

/// Classifies a structured-output validation failure (JSON or JSON Schema)
/// as [`FailureClass::InvalidOutput`], keeping the validator's message for
/// the repair prompt.
///
/// ```
/// use keel_policy::{classify_invalid_output, FailureClass};
/// let c = classify_invalid_output("missing field `name`");
/// assert_eq!(c.class, FailureClass::InvalidOutput);
/// assert!(c.action.retry_same);
/// ```
pub fn classify_invalid_output(validation_error: &str) -> Classification {
    Classification {
        message: Some(cut(validation_error, MAX_MESSAGE_CHARS)),
        ..Classification::new(FailureClass::InvalidOutput)
    }
}

/// A failure below HTTP: no response (or no complete one) was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportError {
    /// Connection refused or unreachable.
    Connect,
    /// Connection reset by the peer.
    Reset,
    /// Name resolution failed.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// The response body ended early.
    BodyCut,
    /// The per-attempt timeout fired.
    AttemptTimeout,
    /// No first byte (or first token) within the allowed time.
    FirstByteTimeout,
    /// Too long between two streamed tokens.
    InterTokenTimeout,
}

impl TransportError {
    /// Stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Connect => "connect",
            TransportError::Reset => "reset",
            TransportError::Dns => "dns",
            TransportError::Tls => "tls",
            TransportError::BodyCut => "body_cut",
            TransportError::AttemptTimeout => "attempt_timeout",
            TransportError::FirstByteTimeout => "first_byte_timeout",
            TransportError::InterTokenTimeout => "inter_token_timeout",
        }
    }
}

/// Classifies a transport failure: timeouts are [`FailureClass::Timeout`],
/// everything else [`FailureClass::Network`].
///
/// ```
/// use keel_policy::{classify_transport, FailureClass, TransportError};
/// assert_eq!(classify_transport(TransportError::Dns).class, FailureClass::Network);
/// assert_eq!(classify_transport(TransportError::FirstByteTimeout).class, FailureClass::Timeout);
/// ```
pub fn classify_transport(err: TransportError) -> Classification {
    let class = match err {
        TransportError::Connect
        | TransportError::Reset
        | TransportError::Dns
        | TransportError::Tls
        | TransportError::BodyCut => FailureClass::Network,
        TransportError::AttemptTimeout
        | TransportError::FirstByteTimeout
        | TransportError::InterTokenTimeout => FailureClass::Timeout,
    };
    Classification {
        message: Some(err.as_str().to_owned()),
        ..Classification::new(class)
    }
}

/// Classifies a successful (2xx) completion whose content is unusable;
/// `None` when the answer is fine.
///
/// Precedence: content filter / refusal, then truncation (`length`,
/// `max_tokens`, `model_context_window_exceeded`), then emptiness (no
/// content and no tool call).
///
/// ```
/// use keel_policy::{classify_completion, FailureClass};
/// let c = classify_completion(Some("length"), true, false, false).unwrap();
/// assert_eq!(c.class, FailureClass::Truncated);
/// assert!(classify_completion(Some("stop"), true, false, false).is_none());
/// assert_eq!(classify_completion(Some("stop"), false, false, false).unwrap().class, FailureClass::Empty);
/// ```
pub fn classify_completion(
    finish_reason: Option<&str>,
    has_content: bool,
    has_tool_calls: bool,
    refusal: bool,
) -> Option<Classification> {
    let class = match finish_reason {
        _ if refusal => FailureClass::ContentFiltered,
        Some("content_filter" | "refusal") => FailureClass::ContentFiltered,
        Some("length" | "max_tokens" | "model_context_window_exceeded") => FailureClass::Truncated,
        _ if !has_content && !has_tool_calls => FailureClass::Empty,
        _ => return None,
    };
    Some(Classification {
        provider_code: finish_reason.map(str::to_owned),
        ..Classification::new(class)
    })
}
