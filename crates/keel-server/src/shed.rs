//! Load shedding. Past `[server] max_in_flight` chat requests, Keel answers
//! 503 with `Retry-After` at once: a queue without bound turns an overload
//! into timeouts for everyone and into memory growth for the gateway, while
//! a fast 503 lets clients (and their SDKs) back off and retry elsewhere.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use keel_engine::ClientApi;
use tokio::sync::Semaphore;

use crate::errors::api_error;

/// Seconds a shed client is told to wait.
pub const SHED_RETRY_AFTER_SECS: u64 = 1;

/// The in-flight gate shared by the chat routes.
#[derive(Clone)]
pub(crate) struct InFlight(pub(crate) Arc<Semaphore>);

/// Admits the request if a slot is free; otherwise answers 503 at once. A
/// streamed answer holds its slot until the stream ends.
pub(crate) async fn shed(State(gate): State<InFlight>, req: Request, next: Next) -> Response {
    let Ok(permit) = gate.0.clone().try_acquire_owned() else {
        let api = if req.uri().path().starts_with("/v1/messages") {
            ClientApi::Anthropic
        } else {
            ClientApi::OpenAi
        };
        let mut resp = api_error(
            api,
            503,
            "overloaded_error",
            "Keel is at its limit of in-flight requests; retry shortly",
            None,
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(SHED_RETRY_AFTER_SECS),
        );
        return resp;
    };
    let resp = next.run(req).await;
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}
