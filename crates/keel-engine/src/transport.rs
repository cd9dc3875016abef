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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    plain: Client<HttpConnector, Full<Bytes>>,
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
        let plain = pooled().build(http.clone());
        http.enforce_http(false);
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
