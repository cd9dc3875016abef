//! Server limits on a real socket: load shedding past `max_in_flight` (a
//! fast 503 with `Retry-After` in the API's error shape), the header read
//! timeout (slowloris, and idle kept-alive connections), header count and
//! size limits (431), and the connection ceiling (a fast 503 past it, within
//! a bounded shed allowance; `keel_shed_total` counts both kinds of shedding).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_engine::config::Config;
use keel_engine::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that accepts connections, reads, and never answers; counts
/// the connections it holds.
async fn hanging_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (addr, held)
}

async fn gateway(upstream: SocketAddr, server: &str) -> SocketAddr {
    gateway_to(&format!("http://{upstream}/v1"), server).await
}

async fn gateway_to(base_url: &str, server: &str) -> SocketAddr {
    let text = format!(
        r#"
[server]
{server}
[providers.up]
kind = "openai"
base_url = "{base_url}"
api_key = "sk-up"
[deployments.up]
provider = "up"
model = "gpt-test"
[policy]
max_attempts = 1
attempt_timeout = "8s"
timeout = "8s"
[routes.r]
chain = ["up"]
"#
    );
    let config = Config::from_toml_str(&text, "test.toml", &|_| None).unwrap();
    let engine = Engine::with_seed(config, 7).unwrap();
    keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const BODY: &str = r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#;
const ANTHROPIC_BODY: &str =
    r#"{"model":"r","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn past_max_in_flight_the_next_request_gets_a_fast_503_with_retry_after() {
    let (up, held) = hanging_upstream().await;
    let gw = gateway(up, "max_in_flight = 2").await;
    let client = reqwest::Client::new();
    let url = format!("http://{gw}/v1/chat/completions");
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let (c, u) = (client.clone(), url.clone());
        hanging.push(tokio::spawn(async move {
            c.post(u)
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await
        }));
    }
    eventually("two requests held upstream", || {
        held.load(Ordering::SeqCst) == 2
    })
    .await;

    let t = Instant::now();
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "shed after {:?}",
        t.elapsed()
    );
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("in-flight"));

    // The Anthropic route answers in its own shape.
    let resp = client
        .post(format!("http://{gw}/v1/messages"))
        .header("content-type", "application/json")
        .body(ANTHROPIC_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");

    // Health stays answerable under overload; the upstream saw only two calls.
    let health = client
        .get(format!("http://{gw}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(held.load(Ordering::SeqCst), 2);
    let metrics = client
        .get(format!("http://{gw}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keel_shed_total{reason=\"in_flight\"} 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("keel_shed_total{reason=\"connections\"} 0\n"));
    for h in hanging {
        h.abort();
    }
}

#[tokio::test]
async fn a_slot_frees_when_a_request_ends() {
    let (up, _held) = hanging_upstream().await;
    let gw = gateway(up, "max_in_flight = 1").await;
    let client = reqwest::Client::new();
    // A bad request takes the slot only while it is handled.
    for _ in 0..3 {
        let resp = client
            .post(format!("http://{gw}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    }
}

/// Reads until EOF or error; returns what was read and how long it took.
async fn read_to_close(sock: &mut TcpStream) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, t.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after 5 s"),
        }
    }
}

#[tokio::test]
async fn a_slowloris_client_is_cut_at_the_header_read_timeout() {
    let (up, _) = hanging_upstream().await;
    let gw = gateway(up, "header_read_timeout = \"300ms\"").await;
    let mut sock = TcpStream::connect(gw).await.unwrap();
    sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: keel\r\nx-slow: ")
        .await
        .unwrap();
    let (_, took) = read_to_close(&mut sock).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (up, _) = hanging_upstream().await;
    let gw = gateway(up, "header_read_timeout = \"300ms\"").await;
    let mut sock = TcpStream::connect(gw).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: keel\r\n\r\n")
        .await
        .unwrap();
    let (got, took) = read_to_close(&mut sock).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
}

async fn raw_status(gw: SocketAddr, request: &[u8]) -> String {
    let mut sock = TcpStream::connect(gw).await.unwrap();
    let _ = sock.write_all(request).await;
    let (got, _) = read_to_close(&mut sock).await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let (up, _) = hanging_upstream().await;
    let gw = gateway(up, "").await;
    let mut req = String::from("GET /healthz HTTP/1.1\r\nhost: keel\r\n");
    for i in 0..=keel_server::MAX_HEADERS {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let status = raw_status(gw, req.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status:?}");
}

#[tokio::test]
async fn as_many_headers_as_the_limit_are_accepted() {
    let (up, _) = hanging_upstream().await;
    let gw = gateway(up, "").await;
    let mut req = String::from("GET /healthz HTTP/1.1\r\nhost: keel\r\nconnection: close\r\n");
    for i in 2..keel_server::MAX_HEADERS {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let status = raw_status(gw, req.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let (up, _) = hanging_upstream().await;
    let gw = gateway(up, "").await;
    let req = format!(
        "GET /healthz HTTP/1.1\r\nhost: keel\r\nx-big: {}\r\n\r\n",
        "a".repeat(keel_server::MAX_HEADER_BYTES + 1)
    );
    let status = raw_status(gw, req.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status:?}");
}

/// The value of `keel_shed_total{reason}`.
fn shed_count(engine: &Engine, reason: &str) -> u64 {
    let text = engine.render_metrics();
    let prefix = format!("keel_shed_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn past_max_connections_a_new_connection_gets_a_fast_503_then_the_backlog() {
    let (up, _) = hanging_upstream().await;
    let text = format!(
        "[server]\nmax_connections = 2\nheader_read_timeout = \"30s\"\n\
         [providers.up]\nkind = \"openai\"\nbase_url = \"http://{up}/v1\"\napi_key = \"sk-up\"\n\
         [deployments.up]\nprovider = \"up\"\nmodel = \"gpt-test\"\n[routes.r]\nchain = [\"up\"]\n"
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        7,
    )
    .unwrap();
    let gw = keel_server::spawn(engine.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(keel_server::shed_allowance(2), 1);
    // Two idle connections hold the two serving slots.
    let a = TcpStream::connect(gw).await.unwrap();
    let b = TcpStream::connect(gw).await.unwrap();
    // Health answers on them prove they were accepted and are served.
    let mut a = a;
    a.write_all(b"GET /healthz HTTP/1.1\r\nhost: keel\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = a.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // (Connections are accepted in arrival order: a and b before c.)

    // The third is answered 503 at once, in the API's shape, and closed.
    let t = Instant::now();
    let mut c = TcpStream::connect(gw).await.unwrap();
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: keel\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANTHROPIC_BODY}",
        ANTHROPIC_BODY.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let (got, _) = read_to_close(&mut c).await;
    let took = t.elapsed();
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{got}"
    );
    assert!(
        got.contains("overloaded_error") && got.contains("open connections"),
        "{got}"
    );
    assert!(took < Duration::from_millis(500), "shed after {took:?}");
    println!("connection shed: 503 read to close in {took:?}");
    // The same through an HTTP client: an OpenAI-shaped 503.
    let resp = reqwest::Client::new()
        .post(format!("http://{gw}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    assert_eq!(shed_count(&engine, "connections"), 2);
    assert_eq!(shed_count(&engine, "in_flight"), 0);

    // The shed allowance is bounded: with its one slot held by a silent
    // client, the next connection waits in the backlog, unanswered...
    let silent = TcpStream::connect(gw).await.unwrap();
    let mut d = TcpStream::connect(gw).await.unwrap();
    d.write_all(b"GET /healthz HTTP/1.1\r\nhost: keel\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(200), d.read(&mut buf)).await;
    assert!(early.is_err(), "answered past the shed allowance");
    // ...and is served normally once a serving slot frees.
    drop(a);
    drop(b);
    let (got, _) = read_to_close(&mut d).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    drop(silent);
}

#[tokio::test]
async fn a_streamed_answer_holds_its_slot_until_it_ends() {
    let scenario = keel_chaos::Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-up\"\ntoken_delay = \"30ms\"\n",
        "chaos.toml",
    )
    .unwrap();
    let ch = keel_chaos::ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gw = gateway_to(&ch.base_url("a"), "max_in_flight = 1").await;
    let client = reqwest::Client::new();
    let url = format!("http://{gw}/v1/chat/completions");
    let mut stream = client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // Headers are out and the body is still coming: the slot is taken.
    let first = stream.chunk().await.unwrap();
    assert!(first.is_some());
    let shed = client
        .post(&url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    // Once the stream ends, the slot is free again.
    while stream.chunk().await.unwrap().is_some() {}
    let t = Instant::now();
    loop {
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "slot never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
