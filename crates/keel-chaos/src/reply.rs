//! The small pieces every answer is made of: a JSON response, a provider's
//! error in its own shape, and the error that drops the connection instead.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::dialect::{Dialect, Failure};

/// An error that makes hyper drop the connection without answering.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("chaos: connection reset")
    }
}

impl std::error::Error for DropConnection {}

/// Seconds since the Unix epoch (the `created` of an answer).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn with_headers(mut resp: Response<Body>, headers: HeaderMap) -> Response<Body> {
    resp.headers_mut().extend(headers);
    resp
}

pub(crate) fn error_response(d: &dyn Dialect, failure: &Failure, model: &str) -> Response<Body> {
    let reply = d.error(failure, model);
    let mut resp = json_response(reply.status, reply.body);
    resp.headers_mut().extend(reply.headers);
    resp
}
