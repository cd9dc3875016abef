//! The HTTP front of the engine: the OpenAI Chat Completions API, the
//! Anthropic Messages API (and its `count_tokens`), the OpenAI Responses API
//! (streaming included) and OpenAI embeddings, `/v1/models`, `/healthz`,
//! `/readyz`, `/metrics`, `/admin/status` and the `/admin` page. This crate only maps HTTP to
//! [`keel_engine::Engine`] calls and back; every decision is the engine's.

// Handlers return ready-made error responses as their Err.
#![allow(clippy::result_large_err)]

mod admin;
mod auth;
mod embeddings;
mod errors;
mod idempotency;
mod listen;
mod repoll;
mod responses;
mod shed;
mod sse_body;
mod stored_responses;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_engine::{
    CallOptions, ChatCall, ClientApi, Engine, EngineError, LiveEngine, RequestReport,
};
use keel_wire::anthropic::MessagesRequest;
use keel_wire::openai::ChatRequest;
use keel_wire::translate;
use serde_json::json;
use tokio::net::TcpListener;

pub use errors::api_error;
pub use listen::{shed_allowance, MAX_HEADERS, MAX_HEADER_BYTES, SHED_CONNECTION_TIMEOUT};
pub use shed::SHED_RETRY_AFTER_SECS;

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The engine a request runs on, taken from `live` when it started
    /// ([`AppState::for_request`]): a reload never changes it mid-request.
    engine: Engine,
    live: LiveEngine,
    ids: std::sync::Arc<AtomicU64>,
    id_prefix: std::sync::Arc<str>,
    in_flight: shed::InFlight,
}

impl AppState {
    /// State over an engine that is never reloaded.
    pub fn new(engine: Engine) -> Self {
        AppState::live(LiveEngine::new(engine, None))
    }

    /// State over a reloadable engine (`POST /admin/reload`). The in-flight
    /// limit is the first config's (a change takes effect at restart).
    pub fn live(live: LiveEngine) -> Self {
        let engine = live.engine();
        let in_flight = shed::InFlight {
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(
                engine.config().server.max_in_flight.get(),
            )),
            live: live.clone(),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        AppState {
            engine,
            live,
            ids: std::sync::Arc::new(AtomicU64::new(0)),
            id_prefix: format!("{:x}", nanos & 0xffff_ffff).into(),
            in_flight,
        }
    }

    /// This state with the engine running now: what a request starts with
    /// (one atomic load).
    fn for_request(&self) -> AppState {
        AppState {
            engine: self.live.engine(),
            live: self.live.clone(),
            ids: self.ids.clone(),
            id_prefix: self.id_prefix.clone(),
            in_flight: self.in_flight.clone(),
        }
    }

    /// `keel-<prefix>-<n>` (built without the formatting machinery: it
    /// runs on every request).
    fn next_id(&self) -> String {
        let mut n = itoa::Buffer::new();
        let n = n.format(self.ids.fetch_add(1, Ordering::Relaxed));
        let mut id = String::with_capacity(6 + self.id_prefix.len() + n.len());
        id.push_str("keel-");
        id.push_str(&self.id_prefix);
        id.push('-');
        id.push_str(n);
        id
    }
}

/// The router (tests call it with `oneshot`).
pub fn app(state: AppState) -> Router {
    // Load shedding covers the chat routes only; health and admin stay answerable.
    let chat = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(st): State<AppState>, req| openai_chat(State(st.for_request()), req)),
        )
        .route(
            "/v1/messages",
            post(|State(st): State<AppState>, req| {
                anthropic_messages(State(st.for_request()), req)
            }),
        )
        .route(
            "/v1/responses",
            post(|State(st): State<AppState>, req| responses::create(st.for_request(), req)),
        )
        .route(
            "/v1/embeddings",
            post(|State(st): State<AppState>, req| embeddings::create(st.for_request(), req)),
        )
        .route(
            "/v1/messages/count_tokens",
            post(|State(st): State<AppState>, req| embeddings::count_tokens(st.for_request(), req)),
        )
        .route(
            "/v1/responses/{id}",
            get(stored_responses::retrieve).delete(stored_responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(stored_responses::input_items),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.in_flight.clone(),
            shed::shed,
        ));
    Router::new()
        .merge(chat)
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(admin::routes())
        .fallback(not_served)
        .method_not_allowed_fallback(not_served)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Every method and path Keel serves, as the 404 and 405 answers list them
/// (`{id}` stands for one path segment).
const SERVED: [&str; 15] = [
    "POST /v1/chat/completions",
    "POST /v1/embeddings",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/responses",
    "GET /v1/responses/{id}",
    "DELETE /v1/responses/{id}",
    "GET /v1/responses/{id}/input_items",
    "GET /v1/models",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /admin",
    "GET /admin/status",
    "POST /admin/reload",
];

/// Whether `path` is an instance of `pattern` (`{id}`: any one segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (a == "{id}" && !b.is_empty()) => {}
            _ => return false,
        }
    }
}

/// What Keel answers on a path or method it does not serve: an error in the
/// shape of the API the client speaks (Anthropic's for `/v1/messages...` or
/// a request with `anthropic-version`, OpenAI's otherwise) that names what
/// it does serve, instead of an empty body the SDKs report as a bare 404.
async fn not_served(method: http::Method, uri: http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let api = match headers.contains_key("anthropic-version") {
        true => ClientApi::Anthropic,
        false => shed::api_of(path),
    };
    let allowed: Vec<&str> = SERVED
        .iter()
        .filter_map(|s| s.split_once(' '))
        .filter(|(_, p)| path_matches(p, path))
        .map(|(m, _)| m)
        .collect();
    let known = !allowed.is_empty();
    let (status, what) = match known {
        true => (405, format!("{path} does not accept {method}")),
        false => (404, format!("Keel does not serve {method} {path}")),
    };
    let mut resp = api_error(
        api,
        status,
        "invalid_request_error",
        &format!("{what}; it serves {}", SERVED.join(", ")),
        Some(if known {
            "method_not_allowed"
        } else {
            "not_found"
        }),
    );
    if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
        if known {
            resp.headers_mut().insert(http::header::ALLOW, v);
        }
    }
    resp.headers_mut()
        .insert("x-should-retry", http::HeaderValue::from_static("false"));
    resp
}

/// The connection service: the two chat routes go straight to their
/// handlers behind the in-flight gate, everything else through [`app`].
///
/// The chat routes are the hot path, and the router costs them more than
/// its lookup: each request clones the route's boxed service and its
/// middleware's, and moves the handler's whole future (several kilobytes:
/// it holds the engine's) into a fresh allocation. Here the handler's future
/// lives in hyper's per-connection slot. What a chat request meets is the
/// same either way (the gate, the handler, its answer); the tests hold the
/// two paths to the same answers.
fn dispatch(
    state: AppState,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone
       + Send
       + Sync
       + 'static {
    let router = app(state.clone());
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let req = req.map(Body::new);
        let api = match (req.method(), req.uri().path()) {
            (&http::Method::POST, "/v1/chat/completions") => Some(ClientApi::OpenAi),
            (&http::Method::POST, "/v1/messages") => Some(ClientApi::Anthropic),
            (&http::Method::POST, "/v1/responses") => Some(ClientApi::Responses),
            _ => None,
        };
        match api {
            // Built in its box: hyper would otherwise copy the whole
            // handler future (about 10 KB) into its connection's slot.
            Some(api) => futures_util::future::Either::Left(keel_engine::boxed_in_place(|| {
                chat_route(state.for_request(), api, req)
            })),
            None => {
                futures_util::future::Either::Right(tower::ServiceExt::oneshot(router.clone(), req))
            }
        }
    })
}

/// A chat route without the router: the in-flight gate, then the handler.
async fn chat_route(
    st: AppState,
    api: ClientApi,
    req: axum::extract::Request,
) -> Result<Response, std::convert::Infallible> {
    let permit = match shed::admit(&st.in_flight, req.uri().path()) {
        Ok(p) => p,
        Err(r) => return Ok(r),
    };
    let resp = match api {
        ClientApi::OpenAi => openai_chat(State(st), req).await,
        ClientApi::Anthropic => anthropic_messages(State(st), req).await,
        ClientApi::Responses => responses::create(st, req).await,
        ClientApi::Embeddings => embeddings::create(st, req).await,
    };
    Ok(shed::hold(permit, resp))
}

/// Serves `engine` on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_live(LiveEngine::new(engine, None), listener, shutdown).await
}

/// Serves a reloadable engine on `listener` until `shutdown` resolves.
/// Listener limits (connections, header timeout, drain) are the first
/// config's.
pub async fn serve_live(
    live: LiveEngine,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = live.engine();
    auth::warn_if_open(&engine, listener.local_addr().ok());
    let limits = engine.config().server.clone();
    let on_shed = {
        let live = live.clone();
        move || {
            live.engine()
                .record_shed(keel_engine::ShedReason::Connections)
        }
    };
    let served = listen::run(
        listener,
        dispatch(AppState::live(live.clone())),
        &limits,
        on_shed,
        shutdown,
    )
    .await;
    // The last requests' spans go out before the process ends, within the drain bound.
    let _ = tokio::time::timeout(limits.drain_timeout, live.engine().flush_traces()).await;
    served
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(engine: Engine, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = serve(engine, listener, std::future::pending()).await;
    });
    Ok(local)
}

async fn readyz(State(st): State<AppState>) -> Response {
    let st = st.for_request();
    if st.engine.config().routes.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no routes configured").into_response()
    } else {
        "ready".into_response()
    }
}

/// `GET /v1/models`: the routes, as models. With tenants it needs a valid
/// key and lists only the routes the tenant may call. Errors are in the
/// shape of the API the client looks like (Anthropic SDKs send
/// `anthropic-version`).
async fn models(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let st = st.for_request();
    let api = if headers.contains_key("anthropic-version") {
        ClientApi::Anthropic
    } else {
        ClientApi::OpenAi
    };
    let tenant = match auth::tenant(&st.engine, api, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let allowed = tenant.as_deref().and_then(|t| st.engine.tenant_routes(t));
    let data: Vec<_> = st
        .engine
        .config()
        .routes
        .keys()
        .filter(|name| allowed.is_none_or(|a| a.contains(name)))
        .map(|name| {
            json!({
                "id": name, "object": "model", "created": 0, "owned_by": "keel",
                "type": "model", "display_name": name, "created_at": "1970-01-01T00:00:00Z"
            })
        })
        .collect();
    let first = data
        .first()
        .and_then(|d| d["id"].as_str())
        .map(str::to_string);
    let last = data
        .last()
        .and_then(|d| d["id"].as_str())
        .map(str::to_string);
    Json(json!({"object": "list", "data": data, "has_more": false, "first_id": first, "last_id": last})).into_response()
}

/// Reads the body up to the configured limit.
pub(crate) async fn read_body(
    st: &AppState,
    api: ClientApi,
    body: Body,
) -> Result<bytes::Bytes, Response> {
    let max_body = st.engine.config().server.max_body_bytes;
    axum::body::to_bytes(body, max_body).await.map_err(|_| {
        api_error(
            api,
            413,
            "request_too_large",
            &format!(
                "request body is larger than the limit of {} bytes",
                max_body
            ),
            None,
        )
    })
}

/// Reads `x-keel-*` overrides and the SDK retry marker of a request from
/// `tenant` (already authenticated).
pub(crate) fn options(
    st: &AppState,
    api: ClientApi,
    headers: &HeaderMap,
    tenant: Option<String>,
) -> Result<CallOptions, Response> {
    use axum::http::HeaderName;
    // Names built once, not parsed from text on every request.
    const MAX_COST: HeaderName = HeaderName::from_static("x-keel-max-cost-usd");
    const MAX_ATTEMPTS: HeaderName = HeaderName::from_static("x-keel-max-attempts");
    const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-keel-timeout-ms");
    const FALLBACKS: HeaderName = HeaderName::from_static("x-keel-fallbacks");
    const SDK_RETRY: HeaderName = HeaderName::from_static("x-stainless-retry-count");
    const OPENAI_TIMEOUT: HeaderName = HeaderName::from_static("x-stainless-read-timeout");
    const ANTHROPIC_TIMEOUT: HeaderName = HeaderName::from_static("x-stainless-timeout");
    let header = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let bad = |name: &str, expected: &str, got: &str| {
        api_error(
            api,
            400,
            "invalid_request_error",
            &format!("header {name}: expected {expected}, got {got:?}"),
            None,
        )
    };
    let mut o = CallOptions {
        request_id: st.next_id(),
        tenant,
        ..CallOptions::default()
    };
    if let Some(v) = header(MAX_COST) {
        match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => o.max_cost_usd = Some(n),
            _ => return Err(bad("x-keel-max-cost-usd", "an amount in USD >= 0", v)),
        }
    }
    // Only the headers a `rules` route matches on are copied (usually none).
    o.headers = st
        .engine
        .rule_headers()
        .iter()
        .filter(|k| !matches!(k.as_str(), "authorization" | "x-api-key" | "cookie"))
        .flat_map(|k| {
            headers
                .get_all(k.as_str())
                .iter()
                .filter_map(|v| Some((k.clone(), v.to_str().ok()?.to_string())))
        })
        .collect();
    if let Some(v) = header(MAX_ATTEMPTS) {
        match v.parse::<u32>() {
            Ok(n) if (1..=20).contains(&n) => o.max_attempts = Some(n),
            _ => return Err(bad("x-keel-max-attempts", "an integer in 1..=20", v)),
        }
    }
    if let Some(v) = header(TIMEOUT_MS) {
        match v.parse::<u64>() {
            Ok(n) if n > 0 => o.timeout = Some(Duration::from_millis(n)),
            _ => {
                return Err(bad(
                    "x-keel-timeout-ms",
                    "a positive integer of milliseconds",
                    v,
                ))
            }
        }
    }
    if let Some(v) = header(FALLBACKS) {
        match v {
            "off" => o.no_fallbacks = true,
            "on" => {}
            _ => return Err(bad("x-keel-fallbacks", "\"on\" or \"off\"", v)),
        }
    }
    if let Some(v) = header(SDK_RETRY) {
        o.sdk_retry_count = v.parse().unwrap_or(0);
    }
    // The SDK's timeout, in seconds: Keel answers before the client gives
    // up. Written by the SDK, not the user, so a value it cannot read is
    // ignored rather than refused.
    o.client_timeout = header(OPENAI_TIMEOUT)
        .or_else(|| header(ANTHROPIC_TIMEOUT))
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64);
    if let Some(v) = header(axum::http::header::CACHE_CONTROL) {
        o.cache_control = keel_engine::CacheControl::parse(v);
    }
    if st.engine.traces_on() {
        o.traceparent =
            header(axum::http::HeaderName::from_static("traceparent")).map(str::to_string);
        o.tracestate =
            header(axum::http::HeaderName::from_static("tracestate")).map(str::to_string);
    }
    Ok(o)
}

pub(crate) fn parse_error(api: ClientApi, e: &serde_json::Error) -> Response {
    let msg = if e.is_syntax() || e.is_eof() {
        format!("the request body is not valid JSON: {e}")
    } else {
        format!("invalid request body: {e}")
    };
    api_error(api, 400, "invalid_request_error", &msg, None)
}

async fn openai_chat(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    let api = ClientApi::OpenAi;
    // The headers are taken from the request, not cloned (a `HeaderMap`
    // extractor copies every header of every request).
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // Authenticate before reading or parsing the body: a client without a
    // valid key learns nothing about the request's shape (401, not 400).
    let tenant = match auth::tenant(&st.engine, api, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&st, api, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(key) = idempotency::key_of(&headers) {
        let (st2, h2, t2) = (st.clone(), headers.clone(), tenant.clone());
        let run = move |b: bytes::Bytes| -> idempotency::Run {
            Box::pin(async move { openai_chat_body(&st2, &h2, t2, b).await })
        };
        return idempotency::single_flight(
            &st,
            api,
            "/v1/chat/completions",
            tenant.as_deref(),
            &key,
            bytes,
            run,
        )
        .await;
    }
    openai_chat_body(&st, &headers, tenant, bytes).await
}

async fn openai_chat_body(
    st: &AppState,
    headers: &HeaderMap,
    tenant: Option<String>,
    bytes: bytes::Bytes,
) -> Response {
    let api = ClientApi::OpenAi;
    let (request, layout) = match ChatRequest::from_json_with_layout(&bytes) {
        Ok(r) => r,
        Err(e) => return parse_error(api, &e),
    };
    if request.messages.is_empty() {
        return api_error(
            api,
            400,
            "invalid_request_error",
            "messages: expected at least one message",
            None,
        );
    }
    let options = match options(st, api, headers, tenant) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let stream = request.is_stream();
    let call = ChatCall::from_openai_body(request, bytes, layout, options);
    run(st, call, stream).await
}

async fn anthropic_messages(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    let api = ClientApi::Anthropic;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // Authenticate before reading or parsing the body: a client without a
    // valid key learns nothing about the request's shape (401, not 400).
    let tenant = match auth::tenant(&st.engine, api, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&st, api, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(key) = idempotency::key_of(&headers) {
        let (st2, h2, t2) = (st.clone(), headers.clone(), tenant.clone());
        let run = move |b: bytes::Bytes| -> idempotency::Run {
            Box::pin(async move { anthropic_messages_body(&st2, &h2, t2, b).await })
        };
        return idempotency::single_flight(
            &st,
            api,
            "/v1/messages",
            tenant.as_deref(),
            &key,
            bytes,
            run,
        )
        .await;
    }
    anthropic_messages_body(&st, &headers, tenant, bytes).await
}

async fn anthropic_messages_body(
    st: &AppState,
    headers: &HeaderMap,
    tenant: Option<String>,
    bytes: bytes::Bytes,
) -> Response {
    let api = ClientApi::Anthropic;
    let original: MessagesRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return parse_error(api, &e),
    };
    if original.messages.is_empty() {
        return api_error(
            api,
            400,
            "invalid_request_error",
            "messages: at least one message is required",
            None,
        );
    }
    let request = match translate::anthropic_to_openai_request(&original) {
        Ok(r) => r,
        Err(e) => return api_error(api, 400, "invalid_request_error", &e.to_string(), None),
    };
    let options = match options(st, api, headers, tenant) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let stream = original.stream.unwrap_or(false);
    let call = ChatCall::from_anthropic_body(request, original, bytes, options);
    run(st, call, stream).await
}

async fn run(st: &AppState, call: ChatCall, stream: bool) -> Response {
    let api = call.api;
    if stream {
        match st.engine.chat_stream(call).await {
            Ok(out) => {
                let mut resp = sse_body::response(api, out.items);
                add_meta_headers(resp.headers_mut(), &out.meta);
                resp
            }
            Err(e) => engine_error(api, &e),
        }
    } else {
        match st.engine.chat(call).await {
            Ok(out) => {
                // The provider's bytes go back as they came when the client
                // speaks the provider's API and nothing changed the answer.
                let body = match (api, out.raw()) {
                    (api, Some(raw)) if raw.api == api => Ok(raw.body.clone()),
                    (ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings, _) => {
                        serde_json::to_vec(out.response()).map(Into::into)
                    }
                    (ClientApi::Anthropic, _) => {
                        serde_json::to_vec(&translate::openai_to_anthropic_response(out.response()))
                            .map(Into::into)
                    }
                };
                json_answer(api, body, &out.meta)
            }
            Err(e) => engine_error(api, &e),
        }
    }
}

/// A 200 JSON answer with Keel's headers, or the API's 500 when the
/// answer could not be encoded.
pub(crate) fn json_answer<B: IntoResponse>(
    api: ClientApi,
    body: Result<B, serde_json::Error>,
    meta: &RequestReport,
) -> Response {
    let mut resp = match body {
        Ok(b) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            b,
        )
            .into_response(),
        Err(e) => api_error(
            api,
            500,
            "api_error",
            &format!("could not encode the answer: {e}"),
            None,
        ),
    };
    add_meta_headers(resp.headers_mut(), meta);
    resp
}

pub(crate) fn engine_error(api: ClientApi, e: &EngineError) -> Response {
    let mut resp = errors::from_engine(api, e);
    add_meta_headers(resp.headers_mut(), &e.meta);
    resp
}

/// The `x-keel-*` headers of docs/design.md §4. Names are constants and numbers are
/// formatted without allocating (this runs on every answer).
pub(crate) fn add_meta_headers(h: &mut HeaderMap, meta: &RequestReport) {
    use axum::http::HeaderName;
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-keel-request-id");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-keel-attempts");
    const DEPTH: HeaderName = HeaderName::from_static("x-keel-fallback-depth");
    const CACHE: HeaderName = HeaderName::from_static("x-keel-cache");
    const DEPLOYMENT: HeaderName = HeaderName::from_static("x-keel-deployment");
    const TRUNCATED: HeaderName = HeaderName::from_static("x-keel-truncated");
    const REFUSAL: HeaderName = HeaderName::from_static("x-keel-refusal");
    const COST: HeaderName = HeaderName::from_static("x-keel-cost-usd");
    const TRUE: HeaderValue = HeaderValue::from_static("true");
    let text = |v: &str| HeaderValue::from_str(v).ok();
    h.reserve(8);
    if let Some(v) = text(&meta.request_id) {
        h.insert(REQUEST_ID, v);
    }
    h.insert(ATTEMPTS, HeaderValue::from(meta.upstream_attempts));
    h.insert(DEPTH, HeaderValue::from(meta.fallback_depth));
    h.insert(CACHE, HeaderValue::from_static(meta.cache.as_str()));
    let deployment = match (&meta.deployment, meta.tier) {
        (Some(d), _) => text(d),
        (None, keel_engine::Tier::Static) => Some(HeaderValue::from_static("static")),
        (None, _) => Some(HeaderValue::from_static("none")),
    };
    if let Some(v) = deployment {
        h.insert(DEPLOYMENT, v);
    }
    if let Some(id) = meta.trace_id.as_deref().and_then(text) {
        h.insert(HeaderName::from_static("x-keel-trace-id"), id);
    }
    if meta.truncated {
        h.insert(TRUNCATED, TRUE);
    }
    if meta.refusal {
        h.insert(REFUSAL, TRUE);
    }
    let mut cost = [0u8; 48];
    if let Some(text) = usd6(meta.cost_usd, &mut cost) {
        if let Ok(v) = HeaderValue::from_bytes(text) {
            h.insert(COST, v);
        }
    }
}

/// `usd` with six decimals, as `{:.6}` writes it (to the nearest
/// millionth; a tie may round the other way), into `out`. Float formatting
/// cost about 1.5 K instructions per answer; this is integer work.
fn usd6(usd: f64, out: &mut [u8; 48]) -> Option<&[u8]> {
    if !(usd.is_finite() && (0.0..1e12).contains(&usd)) {
        let mut w = &mut out[..];
        std::io::Write::write_fmt(&mut w, format_args!("{usd:.6}")).ok()?;
        let n = 48 - w.len();
        return Some(&out[..n]);
    }
    let micros = (usd * 1e6).round() as u64;
    let mut whole = itoa::Buffer::new();
    let whole = whole.format(micros / 1_000_000).as_bytes();
    let mut frac = itoa::Buffer::new();
    let frac = frac.format(micros % 1_000_000).as_bytes();
    let n = whole.len() + 7;
    out[..whole.len()].copy_from_slice(whole);
    out[whole.len()] = b'.';
    out[whole.len() + 1..n].fill(b'0');
    out[n - frac.len()..n].copy_from_slice(frac);
    Some(&out[..n])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn usd(x: f64) -> String {
        let mut buf = [0u8; 48];
        String::from_utf8(usd6(x, &mut buf).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn costs_are_written_with_six_decimals_as_format_writes_them() {
        for (x, want) in [
            (0.0, "0.000000"),
            (0.000001, "0.000001"),
            (0.0000004, "0.000000"),
            (0.0000006, "0.000001"),
            (0.123456, "0.123456"),
            (1.5, "1.500000"),
            (12.0000001, "12.000000"),
            (999_999.999_999_6, "1000000.000000"),
        ] {
            assert_eq!(usd(x), want, "{x}");
            assert_eq!(usd(x), format!("{x:.6}"), "{x}");
        }
        // Every whole number of millionths, over a spread of magnitudes.
        let mut micros: u64 = 1;
        while micros < 10_000_000_000_000 {
            for m in [micros, micros + 7, micros * 3 + 1] {
                let x = m as f64 / 1e6;
                assert_eq!(usd(x), format!("{x:.6}"), "{m} millionths");
            }
            micros = micros * 10 + 3;
        }
        // Out of the fast path's range: as `{:.6}` writes it.
        assert_eq!(usd(-0.5), "-0.500000");
        assert_eq!(usd(f64::NAN), "NaN");
        assert_eq!(usd(2e12), "2000000000000.000000");
        let mut buf = [0u8; 48];
        assert!(usd6(1e300, &mut buf).is_none(), "too long for a header");
    }
}
