//! The accept loop. Keel serves with hyper-util's builder rather than
//! `axum::serve` because a gateway must not be the weak link: it needs a
//! header read timeout (slowloris, which also closes idle kept-alive
//! connections), header size and count limits, a ceiling on open
//! connections, and a drain deadline on shutdown, none of which
//! `axum::serve` exposes.
//!
//! Past the connection ceiling Keel does not leave clients in the kernel
//! backlog, where they wait without an answer until their own timeout: it
//! accepts a few more ([`shed_allowance`]) and answers each at once with a
//! 503 and `Retry-After`, then closes it, so a client or load balancer
//! knows to go elsewhere. Those extra connections are bounded in number and
//! in lifetime ([`SHED_CONNECTION_TIMEOUT`]), so the shedding itself cannot
//! be used to hold the gateway; past them, the backlog holds the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use keel_engine::config::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::repoll::Repoll;

/// Most header lines accepted in one HTTP/1 request. This is hyper's own
/// default, left implicit on purpose: with an explicit `max_headers`,
/// hyper initialises two arrays of that many entries for every request it
/// parses (about 1.5 K instructions); with its default it uses them
/// uninitialised. `tests/limits.rs` holds the limit to this value.
pub const MAX_HEADERS: usize = 100;
/// Largest request head (HTTP/1 read buffer; HTTP/2 header list), in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Longest a connection accepted past the ceiling may live (to send its
/// request and read the 503), whatever `header_read_timeout` says.
pub const SHED_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes of a shed request's body read before answering (so a small body
/// is consumed and the close is clean); a larger body is not waited for.
const SHED_BODY_BYTES: usize = 64 * 1024;

/// Connections accepted past `max_connections` only to be answered 503:
/// a sixteenth of the ceiling, at least 1 and at most 256.
pub fn shed_allowance(max_connections: usize) -> usize {
    (max_connections / 16).clamp(1, 256)
}

/// A free connection slot: to be served, or only to be answered 503.
enum Slot {
    Serve(OwnedSemaphorePermit),
    Shed(OwnedSemaphorePermit),
}

/// Waits for a slot, preferring a serving one; `None` if the gates closed.
async fn free_slot(serve: &Arc<Semaphore>, shed: &Arc<Semaphore>) -> Option<Slot> {
    if let Ok(p) = serve.clone().try_acquire_owned() {
        return Some(Slot::Serve(p));
    }
    tokio::select! {
        biased;
        p = serve.clone().acquire_owned() => p.ok().map(Slot::Serve),
        p = shed.clone().acquire_owned() => p.ok().map(Slot::Shed),
    }
}

/// The router of a shed connection: every request gets the overload answer
/// (in the API's error shape for the path) and `connection: close`.
/// `on_shed` counts each answer.
fn shed_router(on_shed: Arc<dyn Fn() + Send + Sync>) -> Router {
    Router::new().fallback(move |req: Request| async move {
        on_shed();
        let path = req.uri().path().to_string();
        let _ = axum::body::to_bytes(req.into_body(), SHED_BODY_BYTES).await;
        let mut resp: Response = crate::shed::overloaded(
            &path,
            "Keel is at its limit of open connections; retry shortly",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    })
}

/// Serves `service` on `listener` until `shutdown`, then drains for at most
/// the configured drain timeout.
pub(crate) async fn run<S, F>(
    listener: TcpListener,
    service: S,
    limits: &ServerConfig,
    on_shed: impl Fn() + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
            Future = F,
        > + Clone
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    // Shed connections: one request each, a short header timeout, no keep-alive.
    let shed_timeout = SHED_CONNECTION_TIMEOUT.min(limits.header_read_timeout);
    let mut shed_builder = auto::Builder::new(TokioExecutor::new());
    shed_builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shed_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEADER_BYTES);
    shed_builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let connections = Arc::new(Semaphore::new(limits.max_connections.get()));
    let shed_connections = Arc::new(Semaphore::new(shed_allowance(limits.max_connections.get())));
    let graceful = GracefulShutdown::new();
    let shed_service = TowerToHyperService::new(shed_router(Arc::new(on_shed)));
    tokio::pin!(shutdown);
    loop {
        // At the connection ceiling, accept only to answer 503; past the
        // shed allowance too, stop accepting (the kernel backlog holds the rest).
        let slot = tokio::select! {
            s = free_slot(&connections, &shed_connections) => match s {
                Some(s) => s,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = sock.set_nodelay(true);
        // A serving slot may have freed while waiting for the connection.
        let slot = match slot {
            Slot::Shed(p) => match connections.clone().try_acquire_owned() {
                Ok(serve) => {
                    drop(p);
                    Slot::Serve(serve)
                }
                Err(_) => Slot::Shed(p),
            },
            serve => serve,
        };
        let permit = match slot {
            Slot::Serve(p) => p,
            Slot::Shed(p) => {
                let conn = shed_builder
                    .serve_connection_with_upgrades(TokioIo::new(sock), shed_service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(shed_timeout, conn).await;
                    drop(p);
                });
                continue;
            }
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(sock), service.clone())
            .into_owned();
        let conn = Repoll::new(graceful.watch(conn));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            warn!(
                drain_timeout_ms = limits.drain_timeout.as_millis() as u64,
                "drain timeout reached; closing the remaining connections"
            );
        }
    }
    Ok(())
}
