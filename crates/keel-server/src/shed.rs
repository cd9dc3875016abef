//! Load shedding. Past `[server] max_in_flight` chat requests, Keel answers
//! 503 with `Retry-After` at once: a queue without bound turns an overload
//! into timeouts for everyone and into memory growth for the gateway, while
//! a fast 503 lets clients (and their SDKs) back off and retry elsewhere.
//! The same answer serves connections past `[server] max_connections`
//! (see `listen`). Every shed request is counted in `keel_shed_total`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use keel_engine::{ClientApi, LiveEngine, ShedReason};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::api_error;

/// Seconds a shed client is told to wait.
pub const SHED_RETRY_AFTER_SECS: u64 = 1;

/// The in-flight gate shared by the chat routes.
#[derive(Clone)]
pub(crate) struct InFlight {
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) live: LiveEngine,
}

/// The API a request path belongs to (for the error shape).
pub(crate) fn api_of(path: &str) -> ClientApi {
    if path.starts_with("/v1/messages") || path.starts_with("/v1/complete") {
        ClientApi::Anthropic
    } else if path.starts_with("/v1/responses") {
        ClientApi::Responses
    } else if path == "/v1/embeddings" {
        ClientApi::Embeddings
    } else {
        ClientApi::OpenAi
    }
}

/// The shed answer: 503 with `Retry-After`, in the shape of the API the
/// path belongs to.
pub(crate) fn overloaded(path: &str, message: &str) -> Response {
    let mut resp = api_error(api_of(path), 503, "overloaded_error", message, None);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(SHED_RETRY_AFTER_SECS),
    );
    resp.headers_mut()
        .insert("x-should-retry", HeaderValue::from_static("true"));
    resp
}

/// Admits the request if a slot is free; otherwise answers 503 at once. A
/// streamed answer holds its slot until the stream ends.
pub(crate) async fn shed(State(st): State<InFlight>, req: Request, next: Next) -> Response {
    let permit = match admit(&st, req.uri().path()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    hold(permit, next.run(req).await)
}

/// A slot for a request to `path`, or the 503 that says there is none.
pub(crate) fn admit(st: &InFlight, path: &str) -> Result<OwnedSemaphorePermit, Response> {
    st.gate.clone().try_acquire_owned().map_err(|_| {
        st.live.engine().record_shed(ShedReason::InFlight);
        overloaded(
            path,
            "Keel is at its limit of in-flight requests; retry shortly",
        )
    })
}

/// `resp` with `permit` released when it is done: at once for a whole
/// answer, when the body ends for a stream.
pub(crate) fn hold(permit: OwnedSemaphorePermit, resp: Response) -> Response {
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
