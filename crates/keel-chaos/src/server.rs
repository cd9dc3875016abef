//! The HTTP server: connection handling, routing and the chat pipeline.
//!
//! Served with hyper-util's connection builder and a plain service function
//! rather than an axum router, because a `reset` fault has to make the
//! service fail so that hyper drops the connection without any response,
//! and that is not expressible with infallible handlers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::answer::Twist;
use crate::dialect::{break_event, dialect, Dialect, Failure, ResponseIds};
use crate::generate::{self, mix};
use crate::limits::Which;
use crate::scenario::{Fault, FaultPlan, Scenario};
use crate::stats::UpstreamStats;
use crate::upstream::Upstream;

/// Largest request body accepted.
const MAX_BODY: usize = 32 << 20;

/// An error that makes hyper drop the connection without answering.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("chaos: connection reset")
    }
}

impl std::error::Error for DropConnection {}

/// Errors of the run-time control surface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// No upstream has this name.
    #[error("unknown upstream \"{name}\", expected one of {known}")]
    UnknownUpstream {
        /// The name asked for.
        name: String,
        /// The upstreams that exist, comma-separated.
        known: String,
    },
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) started: Instant,
    pub(crate) upstreams: Vec<Upstream>,
}

impl Shared {
    pub(crate) fn upstream(&self, name: &str) -> Result<&Upstream, ChaosError> {
        self.upstreams
            .iter()
            .find(|u| u.spec.name == name)
            .ok_or_else(|| ChaosError::UnknownUpstream {
                name: name.to_owned(),
                known: self
                    .upstreams
                    .iter()
                    .map(|u| u.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The fault-injecting fake upstream server.
#[derive(Debug)]
pub struct ChaosServer;

impl ChaosServer {
    /// Bind `listen` (port 0 picks a free port) and serve `scenario` until
    /// [`ChaosHandle::shutdown`]. `seed` fixes every answer and every
    /// probabilistic fault.
    pub async fn start(
        scenario: Scenario,
        seed: u64,
        listen: SocketAddr,
    ) -> std::io::Result<ChaosHandle> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            seed,
            started: Instant::now(),
            upstreams: scenario
                .upstreams
                .into_iter()
                .enumerate()
                .map(|(i, spec)| Upstream::new(i, spec))
                .collect(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Ok(ChaosHandle {
            inner: Arc::new(HandleInner {
                addr,
                shared,
                stop,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

#[derive(Debug)]
struct HandleInner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A running chaos server: addresses, stats and run-time control.
#[derive(Debug, Clone)]
pub struct ChaosHandle {
    inner: Arc<HandleInner>,
}

impl ChaosHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Base URL of an upstream for an SDK: `http://127.0.0.1:PORT/{name}/v1`.
    pub fn base_url(&self, upstream: &str) -> String {
        let mut addr = self.inner.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}/{upstream}/v1")
    }

    /// Counters and log of an upstream, `None` if there is no such upstream.
    pub fn stats(&self, upstream: &str) -> Option<UpstreamStats> {
        let up = self.inner.shared.upstream(upstream).ok()?;
        Some(up.stats.snapshot(true))
    }

    /// Replace an upstream's fault plan; its attempt numbers and time window
    /// restart from this moment.
    pub fn set_faults(&self, upstream: &str, plan: FaultPlan) -> Result<(), ChaosError> {
        self.inner.shared.upstream(upstream)?.set_plan(plan);
        Ok(())
    }

    /// Zero every upstream's stats and attempt counters, restart plan windows
    /// and refill rate limits.
    pub fn reset(&self) {
        self.inner.shared.upstreams.iter().for_each(Upstream::reset);
    }

    /// Stop accepting, drop every open connection (hanging ones included)
    /// and wait for the server task.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Resolves when shutdown is asked; never if every handle is dropped.
async fn stopped(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, rx: watch::Receiver<bool>) {
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        TokioExecutor::new(),
    ));
    let stop = stopped(rx.clone());
    tokio::pin!(stop);
    loop {
        let (socket, _) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "chaos: accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let rx = rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { route(&shared, req).await }
            });
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                _ = conn => {}
                () = stopped(rx) => {}
            }
        });
    }
}

fn unix_now() -> u64 {
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

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, DropConnection> {
    let path = req.uri().path().trim_start_matches('/');
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    if first == "_chaos" {
        let rest = rest.to_owned();
        return Ok(crate::control::handle(shared, req, &rest).await);
    }
    let Ok(up) = shared.upstream(first) else {
        let body = serde_json::json!({"error": {"message": format!("no upstream named \"{first}\""), "type": "invalid_request_error", "param": null, "code": null}});
        return Ok(json_response(StatusCode::NOT_FOUND, body.to_string()));
    };
    let d = dialect(up.spec.kind);
    let rest = rest.trim_end_matches('/');
    let chat_path = match up.spec.kind {
        crate::Kind::OpenAi => "v1/chat/completions",
        crate::Kind::Anthropic => "v1/messages",
    };
    if req.method() == Method::POST && rest == chat_path {
        return chat(shared, up, d, req).await;
    }
    let mut headers = HeaderMap::new();
    d.common_headers(&mut headers);
    let (name, value) = d.request_id(mix(unix_now()));
    headers.insert(name, value);
    let resp = if req.method() == Method::GET && rest == "v1/models" {
        match up
            .spec
            .api_key
            .as_deref()
            .map(|k| d.check_key(req.headers(), k))
        {
            Some(Err(provided)) => error_response(d, &Failure::Auth(provided), ""),
            _ => json_response(StatusCode::OK, d.models(&up.models, unix_now())),
        }
    } else {
        let failure = Failure::UnknownRoute {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
        };
        error_response(d, &failure, "")
    };
    Ok(with_headers(resp, headers))
}

fn with_headers(mut resp: Response<Body>, headers: HeaderMap) -> Response<Body> {
    resp.headers_mut().extend(headers);
    resp
}

fn error_response(d: &dyn Dialect, failure: &Failure, model: &str) -> Response<Body> {
    let reply = d.error(failure, model);
    let mut resp = json_response(reply.status, reply.body);
    resp.headers_mut().extend(reply.headers);
    resp
}

/// How a successful answer is bent by a non-error fault.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    twist: Twist,
    first_byte: Duration,
    token_delay: Duration,
    slow_tokens: Option<Duration>,
    cut: Option<u32>,
    malformed: bool,
}

async fn chat(
    shared: &Shared,
    up: &Upstream,
    d: &'static dyn Dialect,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), MAX_BODY).await else {
        return Err(DropConnection);
    };
    let plan = up.plan();
    let attempt = plan.attempts.fetch_add(1, Ordering::Relaxed) + 1;
    let total = up.total.fetch_add(1, Ordering::Relaxed) + 1;
    let now = Instant::now();
    let at_ms = now.saturating_duration_since(shared.started).as_millis() as u64;
    let ids = ResponseIds {
        seed: mix(shared.seed ^ mix((up.index as u64) << 48 ^ total)),
        created: unix_now(),
    };
    let mut headers = HeaderMap::new();
    d.common_headers(&mut headers);
    let (name, value) = d.request_id(ids.seed ^ 0x5eed);
    headers.insert(name, value);
    let latency = up.spec.latency;

    // Answer with an error after the base latency, and record it.
    let fail = |failure: Failure, outcome: &'static str, stream: bool, model: &str, headers| {
        let resp = with_headers(error_response(d, &failure, model), headers);
        up.stats.record(
            at_ms,
            outcome,
            resp.status().as_u16(),
            stream,
            model,
            &bytes,
        );
        async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(resp)
        }
    };

    if let Some(key) = &up.spec.api_key {
        if let Err(provided) = d.check_key(&parts.headers, key) {
            return fail(Failure::Auth(provided), "auth", false, "", headers).await;
        }
    }
    let req = match d.parse(&parts.headers, &bytes, shared.seed) {
        Ok(r) => r,
        Err(f) => return fail(f, "invalid_request", false, "", headers).await,
    };
    let (stream, model) = (req.stream, req.model.as_str());

    let mut delivery = Delivery {
        twist: Twist::None,
        first_byte: latency,
        token_delay: up.spec.token_delay,
        slow_tokens: None,
        cut: None,
        malformed: false,
    };
    let elapsed = now.saturating_duration_since(plan.since);
    let fault = plan.select(attempt, elapsed, stream, shared.seed, up.index);
    let outcome = fault.map_or("ok", Fault::name);
    if let Some(fault) = fault {
        let failure = match fault {
            Fault::RateLimit {
                retry_after,
                header_style,
            } => Some(Failure::RateLimit {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
                style: *header_style,
            }),
            Fault::QuotaExhausted => Some(Failure::Quota),
            Fault::Overloaded => Some(Failure::Overloaded),
            Fault::ServerError { status } => Some(Failure::Server(*status)),
            Fault::Status { status } => Some(Failure::Status(*status)),
            Fault::Auth => Some(Failure::Auth(Some("sk-chaos-revoked".to_owned()))),
            Fault::ContextOverflow => {
                let limit = up.spec.context_window.map_or(
                    match up.spec.kind {
                        crate::Kind::OpenAi => 128_000,
                        crate::Kind::Anthropic => 200_000,
                    },
                    u64::from,
                );
                Some(Failure::ContextOverflow {
                    tokens: limit + 1 + req.prompt_tokens,
                    limit,
                })
            }
            Fault::BadRequest => Some(Failure::BadRequest),
            Fault::NotFound => Some(Failure::NotFound {
                model: model.to_owned(),
            }),
            Fault::Hang => {
                up.stats.record(at_ms, outcome, 0, stream, model, &bytes);
                return std::future::pending().await;
            }
            Fault::Reset => {
                up.stats.record(at_ms, outcome, 0, stream, model, &bytes);
                return Err(DropConnection);
            }
            Fault::SlowFirstByte { delay } => {
                delivery.first_byte += *delay;
                None
            }
            Fault::SlowTokens { delay } => {
                delivery.token_delay = *delay;
                delivery.slow_tokens = Some(*delay);
                None
            }
            Fault::CutStream { after_chunks } => {
                delivery.cut = Some(*after_chunks);
                None
            }
            Fault::MalformedJson => {
                delivery.malformed = true;
                None
            }
            Fault::Empty => {
                delivery.twist = Twist::Empty;
                None
            }
            Fault::Truncate => {
                delivery.twist = Twist::Truncate;
                None
            }
            Fault::Refusal => {
                delivery.twist = Twist::Refusal;
                None
            }
            Fault::InvalidJson => {
                delivery.twist = Twist::InvalidJson;
                None
            }
        };
        if let Some(failure) = failure {
            return fail(failure, outcome, stream, model, headers).await;
        }
    }

    // The upstream's own checks, as the provider makes them.
    if !up.spec.models.is_empty() && !up.spec.models.iter().any(|m| m == model) {
        let failure = Failure::NotFound {
            model: model.to_owned(),
        };
        return fail(failure, "not_found", stream, model, headers).await;
    }
    if let Some(window) = up.spec.context_window {
        if req.prompt_tokens > u64::from(window) {
            let failure = Failure::ContextOverflow {
                tokens: req.prompt_tokens,
                limit: u64::from(window),
            };
            return fail(failure, "context_overflow", stream, model, headers).await;
        }
    }
    let cost = req.prompt_tokens + req.max_tokens.unwrap_or(256);
    match up.admit(cost) {
        None => {}
        Some(Ok(snapshot)) => d.limit_headers(&snapshot, &mut headers),
        Some(Err(denied)) => {
            let outcome = match denied.which {
                Which::Requests => "rpm_limit",
                Which::Tokens => "tpm_limit",
            };
            return fail(
                Failure::LimitExceeded(denied),
                outcome,
                stream,
                model,
                headers,
            )
            .await;
        }
    }

    let answer = req.answer(delivery.twist);
    up.stats.record(at_ms, outcome, 200, stream, model, &bytes);
    if !delivery.first_byte.is_zero() {
        tokio::time::sleep(delivery.first_byte).await;
    }
    let resp = if stream {
        let mut events = d.stream(&req, &answer, ids);
        if delivery.malformed && events.len() > 1 {
            events[1] = break_event(&events[1]);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let mut resp = Response::new(sse_body(events, delivery.token_delay, delivery.cut));
        *resp.headers_mut() = headers;
        resp
    } else {
        let mut body = d.complete(&req, &answer, ids);
        if let Some(delay) = delivery.slow_tokens {
            let n = u32::try_from(answer.completion_tokens).unwrap_or(u32::MAX);
            tokio::time::sleep(delay.saturating_mul(n)).await;
        }
        if delivery.malformed {
            let keep =
                generate::cut(std::str::from_utf8(&body).unwrap_or(""), body.len() * 2 / 3).len();
            body = body.slice(..keep);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let resp_body = match delivery.cut {
            None => Body::from(body),
            Some(_) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                let half = body.slice(..body.len() / 2);
                cut_body(vec![half])
            }
        };
        let mut resp = Response::new(resp_body);
        *resp.headers_mut() = headers;
        resp
    };
    Ok(resp)
}

/// A body that sends `chunks` and then fails, which makes hyper abort the
/// connection mid-body.
fn cut_body(chunks: Vec<Bytes>) -> Body {
    let sent = stream::iter(chunks.into_iter().map(Ok::<Bytes, std::io::Error>));
    let cut = stream::once(async {
        // Let hyper flush what was sent before the connection is aborted.
        tokio::time::sleep(Duration::from_millis(1)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "chaos: body cut",
        ))
    });
    Body::from_stream(futures_util::StreamExt::chain(sent, cut))
}

/// SSE events with `delay` between them, cut after `cut` events if asked.
fn sse_body(events: Vec<Bytes>, delay: Duration, cut: Option<u32>) -> Body {
    if let Some(n) = cut {
        let keep = (n as usize).min(events.len());
        let kept: Vec<Bytes> = events.into_iter().take(keep).collect();
        if delay.is_zero() {
            return cut_body(kept);
        }
        let paced = paced(kept, delay);
        let cut = stream::once(async move {
            tokio::time::sleep(delay).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "chaos: stream cut",
            ))
        });
        return Body::from_stream(futures_util::StreamExt::chain(paced, cut));
    }
    if delay.is_zero() {
        let len = events.iter().map(Bytes::len).sum();
        let mut all = Vec::with_capacity(len);
        events.iter().for_each(|e| all.extend_from_slice(e));
        return Body::from(all);
    }
    Body::from_stream(paced(events, delay))
}

fn paced(
    events: Vec<Bytes>,
    delay: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    stream::unfold(
        (events.into_iter(), true),
        move |(mut it, first)| async move {
            let next = it.next()?;
            if !first {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(next), (it, false)))
        },
    )
}
