//! The HTTP client Keel calls providers with: hyper-util's pooled client
//! over rustls (ring; webpki roots plus the system's CA store), HTTP/2 by
//! ALPN, connection reuse.
//!
//! **Why not reqwest.** Keel sends one kind of request (a POST of a JSON
//! body to a URL from its config) and needs none of what reqwest adds around
//! hyper: redirects, proxies, cookies, URL parsing. Those layers ran on
//! every attempt (the redirect policy alone re-parses the URL from its
//! string form) and cost about a tenth of Keel's CPU per request under
//! load, as much as all of Keel's own policy work.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keel_policy::TransportError;

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pooled upstream client (cheap to clone). Plain `http://` upstreams
/// (self-hosted OpenAI-compatible servers, sidecars) get a client without
/// the TLS connector: its request future is a fraction of the size, and
/// every attempt moved that future around (measured as ~2% of Keel's CPU).
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<Tcp>, Full<Bytes>>,
    plain: Client<Tcp, Full<Bytes>>,
}

/// A failed exchange: its transport class and a message without secrets.
#[derive(Debug)]
pub(crate) struct SendError {
    pub kind: TransportError,
    pub message: String,
}

impl HttpClient {
    /// A client that trusts the webpki roots and speaks HTTP/1.1 or HTTP/2.
    pub(crate) fn new() -> Result<HttpClient, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let plain = pooled().build(Tcp(http.clone()));
        http.enforce_http(false);
        let http = Tcp(http);
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Plus the system's store (and `SSL_CERT_FILE` / `SSL_CERT_DIR`):
        // behind a TLS-inspecting proxy, or for a self-hosted server with
        // a private CA, the provider's certificate chains to a local root.
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if !native.errors.is_empty() {
            tracing::debug!(
                added,
                errors = native.errors.len(),
                "some system CA certificates could not be loaded"
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = pooled().build(https);
        Ok(HttpClient { client, plain })
    }

    /// POSTs `body` to `uri` with `headers` and returns the response head
    /// (its body is read by the caller).
    pub(crate) async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut req = Request::post(uri)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError {
                kind: TransportError::Connect,
                message: format!("cannot build the request: {e}"),
            })?;
        *req.headers_mut() = headers;
        let sent = if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            self.plain.request(req).await
        } else {
            self.client.request(req).await
        };
        sent.map_err(|e| {
            let detail = chain(&e);
            let kind = if e.is_connect() {
                let d = detail.to_ascii_lowercase();
                if d.contains("dns") {
                    TransportError::Dns
                } else if d.contains("tls") || d.contains("certificate") {
                    TransportError::Tls
                } else {
                    TransportError::Connect
                }
            } else {
                TransportError::Reset
            };
            SendError {
                kind,
                message: detail,
            }
        })
    }
}

/// hyper-util's TCP connector, minus the `HttpInfo` (peer and local
/// address) it attaches to every response: the client copies a
/// connection's extras into each response's extensions, which allocated a
/// map and hashed a type id per answer for a value Keel never reads.
#[derive(Clone)]
pub(crate) struct Tcp(HttpConnector);

/// A connection of [`Tcp`]: the TCP stream, reporting no extras.
pub(crate) struct TcpConn(hyper_util::rt::TokioIo<tokio::net::TcpStream>);

impl tower_service::Service<Uri> for Tcp {
    type Response = TcpConn;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = futures_util::future::MapOk<
        <HttpConnector as tower_service::Service<Uri>>::Future,
        fn(hyper_util::rt::TokioIo<tokio::net::TcpStream>) -> TcpConn,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(uri).map_ok(TcpConn as fn(_) -> TcpConn)
    }
}

impl hyper_util::client::legacy::connect::Connection for TcpConn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for TcpConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TcpConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// The pool both clients share the settings of: idle connections kept
/// 90 s, up to 256 per upstream.
fn pooled() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    b
}

/// An error and its sources on one line (hyper's own message is terse).
/// Errors of this client never carry URLs or headers, so nothing secret.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// The body of a response as a stream of chunks.
pub(crate) fn body_stream(
    resp: Response<Incoming>,
) -> impl Stream<Item = Result<Bytes, hyper::Error>> + Send {
    BodyDataStream::new(resp.into_body())
}

/// Reads the next data chunk of `body` (`None` at its end), skipping trailers.
pub(crate) async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_) => continue,
            },
            Err(e) => return Some(Err(e)),
        }
    }
}

/// `value` as a header value marked sensitive (never logged by hyper).
pub(crate) fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request on every connection with `200 ok`, counting
    /// the connections it accepts.
    async fn server(conns: Arc<AtomicUsize>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // A request is whole once its head and the body its
                        // content-length names have come.
                        while let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                            let len: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() < head + 4 + len {
                                break;
                            }
                            buf.drain(..head + 4 + len);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            sock.write_all(reply).await.unwrap();
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn plain_connections_are_reused_and_answers_carry_no_connection_info() {
        let conns = Arc::new(AtomicUsize::new(0));
        let addr = server(conns.clone()).await;
        let client = HttpClient::new().unwrap();
        let uri: Uri = format!("http://{addr}/v1/chat/completions")
            .parse()
            .unwrap();
        for _ in 0..3 {
            let resp = client
                .post(uri.clone(), HeaderMap::new(), b"{}".to_vec())
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            // hyper-util's TCP connector would have put its HttpInfo here.
            assert!(resp.extensions().is_empty());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one pooled connection");
    }
}
