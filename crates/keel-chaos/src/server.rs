//! The HTTP server: connection handling and routing.
//!
//! Served with hyper-util's connection builder and a plain service function
//! rather than an axum router, because a `reset` fault has to make the
//! service fail so that hyper drops the connection without any response,
//! and that is not expressible with infallible handlers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::chat::{chat, Endpoint};
use crate::dialect::{dialect, AzureOperation, AzureRoute, Failure};
use crate::generate::mix;
use crate::reply::{error_response, json_response, unix_now, with_headers, DropConnection};
use crate::scenario::{FaultPlan, Scenario};
use crate::shared::{ChaosError, Shared};
use crate::stats::UpstreamStats;
use crate::upstream::Upstream;

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

    /// Waits until at least `n` requests to `upstream` were closed by their
    /// client before their answer finished
    /// ([`UpstreamStats::closed_by_client`]); returns at once for an
    /// unknown upstream. Bound it with a timeout.
    pub async fn closed_by_client(&self, upstream: &str, n: u64) {
        if let Ok(up) = self.inner.shared.upstream(upstream) {
            up.stats.closed_by_client(n).await;
        }
    }

    /// Waits until `upstream` has seen at least `n` attempts; returns at
    /// once for an unknown upstream. Bound it with a timeout.
    pub async fn attempts_reached(&self, upstream: &str, n: u64) {
        if let Ok(up) = self.inner.shared.upstream(upstream) {
            up.stats.attempts(n).await;
        }
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
    if up.spec.kind == crate::Kind::Azure {
        let rest = rest.to_owned();
        return azure(shared, up, req, &rest).await;
    }
    let chat_path = match up.spec.kind {
        crate::Kind::OpenAi => "v1/chat/completions",
        crate::Kind::Anthropic => "v1/messages",
        crate::Kind::Azure => "openai/v1/chat/completions",
        crate::Kind::Gemini => "",
        // The model and the mode are in the path.
        crate::Kind::Bedrock => match crate::dialect::bedrock::converse_path(rest) {
            Some(_) => rest,
            None => "model/{modelId}/converse",
        },
    };
    let endpoint = match (up.spec.kind, rest) {
        (_, p) if p == chat_path => Some(Endpoint::Chat),
        (crate::Kind::Gemini, p) if crate::gemini_embeddings::method(p).is_some() => {
            Some(Endpoint::Embeddings)
        }
        // Google serves both API versions (the SDK's default is `v1`).
        (crate::Kind::Gemini, p)
            if (p.starts_with("v1beta/models/") || p.starts_with("v1/models/"))
                && p.contains(':') =>
        {
            Some(Endpoint::Chat)
        }
        (crate::Kind::OpenAi, "v1/embeddings") => Some(Endpoint::Embeddings),
        (crate::Kind::Anthropic, "v1/messages/count_tokens") => Some(Endpoint::CountTokens),
        _ => None,
    };
    if let (&Method::POST, Some(endpoint)) = (req.method(), endpoint) {
        return chat(shared, up, d, endpoint, req).await;
    }
    // OpenAI's Responses API: the chat endpoint's attempt in its dialect.
    if req.method() == Method::POST && up.spec.kind == crate::Kind::OpenAi && rest == "v1/responses"
    {
        let d = crate::dialect::openai_responses();
        return chat(shared, up, d, Endpoint::Chat, req).await;
    }
    let mut headers = HeaderMap::new();
    d.common_headers(&mut headers);
    let (name, value) = d.request_id(mix(unix_now()));
    headers.insert(name, value);
    let models_path = match up.spec.kind {
        crate::Kind::Gemini => rest == "v1beta/models" || rest == "v1/models",
        _ => rest == "v1/models",
    };
    let resp = if req.method() == Method::GET && models_path {
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

/// A request to an Azure upstream: its paths carry the deployment and the
/// API version ([`crate::dialect::azure_route`]).
async fn azure(
    shared: &Shared,
    up: &Upstream,
    mut req: Request<Incoming>,
    rest: &str,
) -> Result<Response<Body>, DropConnection> {
    let d = dialect(up.spec.kind);
    let route = crate::dialect::azure_route(rest, req.uri().query());
    let mut headers = HeaderMap::new();
    d.common_headers(&mut headers);
    let (name, value) = d.request_id(mix(unix_now()));
    headers.insert(name, value);
    let resp = match (req.method(), route) {
        (&Method::POST, Ok(AzureRoute::Call(operation, deployment))) => {
            let endpoint = match operation {
                AzureOperation::Chat => Endpoint::Chat,
                AzureOperation::Embeddings => Endpoint::Embeddings,
            };
            if let Some(m) = deployment {
                req.extensions_mut().insert(crate::chat::PathModel(m));
            }
            return chat(shared, up, d, endpoint, req).await;
        }
        (&Method::GET, Ok(AzureRoute::Models)) => match up
            .spec
            .api_key
            .as_deref()
            .map(|k| d.check_key(req.headers(), k))
        {
            Some(Err(provided)) => error_response(d, &Failure::Auth(provided), ""),
            _ => json_response(StatusCode::OK, d.models(&up.models, unix_now())),
        },
        (_, Err(failure)) => error_response(d, &failure, ""),
        (method, Ok(_)) => {
            let failure = Failure::UnknownRoute {
                method: method.to_string(),
                path: req.uri().path().to_owned(),
            };
            error_response(d, &failure, "")
        }
    };
    Ok(with_headers(resp, headers))
}
