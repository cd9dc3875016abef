//! The accept loop. Keel serves with hyper-util's builder rather than
//! `axum::serve` because a gateway must not be the weak link: it needs a
//! header read timeout (slowloris, which also closes idle kept-alive
//! connections), header size and count limits, a ceiling on open
//! connections, and a drain deadline on shutdown, none of which
//! `axum::serve` exposes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use keel_engine::config::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;

/// Most header lines accepted in one HTTP/1 request.
pub const MAX_HEADERS: usize = 100;
/// Largest request head (HTTP/1 read buffer; HTTP/2 header list), in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown`, then drains for at most
/// the configured drain timeout.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections.get()));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        // At the connection ceiling, stop accepting (the kernel backlog holds the rest).
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
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
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(sock), service.clone())
            .into_owned();
        let conn = graceful.watch(conn);
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
