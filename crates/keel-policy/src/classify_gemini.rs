//! Google's error table: the Gemini API answers every failure with
//! `{"error":{"code","message","status","details":[...]}}`, where `status`
//! is a `google.rpc.Code` name and `details` typed messages. The name says
//! more than the HTTP status: an invalid API key is a 400
//! `INVALID_ARGUMENT` with an `ErrorInfo` reason `API_KEY_INVALID`, and a
//! prompt over the model's window is a 400 whose message says "exceeds the
//! maximum number of tokens". A 429 `RESOURCE_EXHAUSTED` carries its wait
//! in the body (`google.rpc.RetryInfo` `retryDelay`, `"12s"`), not in a
//! header, and says in a `QuotaFailure` which quota ran out: a per-day
//! quota will not come back within a request's deadline.
//!
//! A body that is not Google's shape (a proxy's HTML page) is classified by
//! [`classify_response`]; an unknown `status` name keeps what the HTTP
//! status says there, so an unknown error is not retried.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::Value;

use crate::class::{Action, Classification, FailureClass};
use crate::classify::classify_response;
use crate::retry_after::{
    explicit_retry_hint, parse_go_duration, retry_hint, HintSource, RetryHint, MAX_HINT,
};

/// Bodies larger than this are not read as Google errors.
const MAX_JSON_BODY: usize = 256 * 1024;

/// Markers of a prompt over the model's context window.
const CONTEXT_MARKERS: &[&str] = &[
    "exceeds the maximum number of tokens",
    "input token count",
    "too many tokens",
    "context window",
];

/// `ErrorInfo` reasons of a bad or missing key.
const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "API_KEY_SERVICE_BLOCKED",
];

/// Classifies a Gemini API response; `None` for 2xx.
///
/// ```
/// use http::HeaderMap;
/// use keel_policy::{classify_gemini_response, FailureClass};
/// use std::time::{Duration, SystemTime};
///
/// let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}"#;
/// let c = classify_gemini_response(429, &HeaderMap::new(), body, SystemTime::now()).unwrap();
/// assert_eq!(c.class, FailureClass::RateLimited);
/// assert_eq!(c.hint.unwrap().after, Duration::from_secs(12));
/// ```
pub fn classify_gemini_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Option<Classification> {
    let mut c = classify_response(status, headers, body, now)?;
    let Some(error) = google_error(body) else {
        return Some(c);
    };
    let name = error.get("status").and_then(Value::as_str).unwrap_or("");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let details = error
        .get("details")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let lower = message.to_lowercase();
    let reason = |wanted: &[&str]| {
        details.iter().any(|d| {
            d.get("reason")
                .and_then(Value::as_str)
                .is_some_and(|r| wanted.contains(&r))
        })
    };
    let fall_back_only = Action {
        retry_same: false,
        fall_back: true,
    };
    let (class, action) = match name {
        "RESOURCE_EXHAUSTED" if daily_quota(details) => (FailureClass::QuotaExhausted, None),
        "RESOURCE_EXHAUSTED" => (FailureClass::RateLimited, None),
        "UNAVAILABLE" => (FailureClass::Overloaded, None),
        "DEADLINE_EXCEEDED" => (FailureClass::Timeout, None),
        "INTERNAL" | "UNKNOWN" => (FailureClass::ServerError, None),
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => (FailureClass::Auth, None),
        "INVALID_ARGUMENT" if reason(KEY_REASONS) => (FailureClass::Auth, None),
        "INVALID_ARGUMENT" if CONTEXT_MARKERS.iter().any(|m| lower.contains(m)) => {
            (FailureClass::ContextOverflow, None)
        }
        "INVALID_ARGUMENT" => (FailureClass::InvalidRequest, None),
        // The model is not served here (404), or the API is not available
        // to this key's project (a region, billing): another deployment may
        // serve the request.
        "NOT_FOUND" | "FAILED_PRECONDITION" => (FailureClass::InvalidRequest, Some(fall_back_only)),
        _ => (c.class, Some(c.action)),
    };
    c.class = class;
    c.action = action.unwrap_or_else(|| class.default_action());
    c.hint = match class {
        FailureClass::RateLimited | FailureClass::QuotaExhausted => {
            retry_info(details).or_else(|| retry_hint(headers, now))
        }
        _ => retry_info(details).or_else(|| explicit_retry_hint(headers, now)),
    };
    if !name.is_empty() {
        c.provider_code = Some(name.to_owned());
    }
    Some(c)
}

/// The `error` object of a Google error body (it has a `status` name).
fn google_error(body: &[u8]) -> Option<Value> {
    if body.len() > MAX_JSON_BODY {
        return None;
    }
    let mut json: Value = serde_json::from_slice(body).ok()?;
    // A stream's error may come as a one-element array (the JSON-array
    // stream of `streamGenerateContent` without `alt=sse`).
    if let Value::Array(items) = &mut json {
        json = items.first().cloned()?;
    }
    let error = json.get_mut("error")?.take();
    error.get("status").and_then(Value::as_str)?;
    Some(error)
}

fn type_is(detail: &Value, suffix: &str) -> bool {
    detail
        .get("@type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(suffix))
}

/// `google.rpc.RetryInfo`'s `retryDelay` (a protobuf duration, `"12s"`,
/// `"0.5s"`), capped at [`MAX_HINT`].
fn retry_info(details: &[Value]) -> Option<RetryHint> {
    let delay = details
        .iter()
        .find(|d| type_is(d, "google.rpc.RetryInfo"))?
        .get("retryDelay")?;
    let after = match delay {
        Value::String(s) => parse_go_duration(s)?,
        // The object form of a protobuf Duration.
        Value::Object(o) => {
            let secs = o.get("seconds").and_then(|s| match s {
                Value::String(s) => s.parse::<u64>().ok(),
                other => other.as_u64(),
            });
            let nanos = o.get("nanos").and_then(Value::as_u64).unwrap_or(0);
            Duration::from_secs(secs.unwrap_or(0)) + Duration::from_nanos(nanos)
        }
        _ => return None,
    };
    Some(RetryHint {
        after: after.min(MAX_HINT),
        source: HintSource::RetryInfo,
    })
}

/// Whether a `QuotaFailure` names a per-day quota (it will not be back
/// within a request's deadline).
fn daily_quota(details: &[Value]) -> bool {
    details
        .iter()
        .filter(|d| type_is(d, "google.rpc.QuotaFailure"))
        .filter_map(|d| d.get("violations")?.as_array())
        .flatten()
        .filter_map(|v| v.get("quotaId")?.as_str())
        .any(|id| id.contains("PerDay"))
}
