//! Errors in the shape of the API the client speaks.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_engine::{ClientApi, EngineError, ErrorKind};
use serde_json::{json, Value};

/// The error type string each API uses for a status.
fn error_type(api: ClientApi, status: u16, fallback: &str) -> String {
    match api {
        ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings => match status {
            429 => "rate_limit_exceeded".into(),
            401 | 403 => "authentication_error".into(),
            500..=599 => "server_error".into(),
            _ => fallback.into(),
        },
        ClientApi::Anthropic => match status {
            400 | 405 | 422 => "invalid_request_error".into(),
            401 => "authentication_error".into(),
            403 => "permission_error".into(),
            404 => "not_found_error".into(),
            413 => "request_too_large".into(),
            429 => "rate_limit_error".into(),
            503 | 529 => "overloaded_error".into(),
            _ => "api_error".into(),
        },
    }
}

fn build(
    api: ClientApi,
    status: u16,
    kind: &str,
    message: &str,
    code: Option<&str>,
    extra: Option<Value>,
) -> Response {
    let ty = error_type(api, status, kind);
    let body = match api {
        ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings => {
            let mut err = json!({"message": message, "type": ty, "param": null, "code": code});
            if let (Some(extra), Some(obj)) = (extra, err.as_object_mut()) {
                obj.insert("keel".into(), extra);
            }
            json!({ "error": err })
        }
        ClientApi::Anthropic => {
            let mut v = json!({"type": "error", "error": {"type": ty, "message": message}});
            if let (Some(extra), Some(obj)) = (extra, v.as_object_mut()) {
                obj.insert("keel".into(), extra);
            }
            v
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, axum::Json(body)).into_response()
}

/// An error response in `api`'s shape.
pub fn api_error(
    api: ClientApi,
    status: u16,
    kind: &str,
    message: &str,
    code: Option<&str>,
) -> Response {
    build(api, status, kind, message, code, None)
}

/// A 400 in OpenAI's shape naming the request member at fault (`param`).
pub(crate) fn invalid_param(message: &str, param: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}});
    let mut resp = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert("x-should-retry", HeaderValue::from_static("false"));
    resp
}

/// Maps an engine failure, with its attempt log, to the API's error shape.
pub(crate) fn from_engine(api: ClientApi, e: &EngineError) -> Response {
    let kind = match e.kind {
        ErrorKind::InvalidRequest | ErrorKind::UnknownRoute => "invalid_request_error",
        ErrorKind::RateLimited => "rate_limit_exceeded",
        ErrorKind::Unavailable | ErrorKind::Upstream | ErrorKind::Timeout => "server_error",
    };
    // Anthropic clients know 529 as "overloaded".
    let status = if api == ClientApi::Anthropic && e.kind == ErrorKind::Unavailable {
        529
    } else {
        e.status
    };
    let extra = json!({
        "request_id": e.meta.request_id,
        "route": e.meta.route,
        "attempts": e.meta.attempts,
    });
    let mut resp = build(
        api,
        status,
        kind,
        &e.message,
        e.code.as_deref(),
        Some(extra),
    );
    // The official SDKs obey it: no retry of theirs on top of Keel's when
    // retrying cannot help.
    resp.headers_mut().insert(
        "x-should-retry",
        HeaderValue::from_static(if e.retryable { "true" } else { "false" }),
    );
    if let Some(ra) = e.retry_after {
        let secs = ra.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
        if let Ok(v) = HeaderValue::from_str(&ra.as_millis().max(1).to_string()) {
            resp.headers_mut().insert("retry-after-ms", v);
        }
    }
    resp
}
