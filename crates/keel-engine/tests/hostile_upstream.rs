//! Upstream misbehaviour: a hand-written TCP server that answers every
//! request with one hostile response (an endless body, a 2 GB
//! `content-length`, a non-JSON 200, a stream that never ends, 1 MB of
//! headers). Each must end in a classified error, or in a fallback to a
//! healthy second deployment, quickly and with bounded memory. The hostile
//! server counts the requests it saw.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, StreamItem};
use keel_policy::FailureClass;
use keel_wire::openai::{ChatRequest, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::report::Report;

/// What the hostile server sends after reading a request.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// A chunked 200 whose body never ends.
    EndlessBody,
    /// A 200 announcing 2 GB, then a few bytes, then silence.
    HugeContentLength,
    /// A 200 whose body is invalid UTF-8 and not JSON.
    Garbage,
    /// An SSE 200 that sends only comments, forever.
    EndlessComments,
    /// An SSE 200 that sends a token every few milliseconds, forever.
    EndlessTokens,
    /// An SSE 200 that sends one token, then only comments, forever.
    OneTokenThenComments,
    /// A 200 with 1 MB of headers.
    HugeHeaders,
}

struct HostileServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// Notified each time a connection ends (the peer closed it).
    closed: Arc<tokio::sync::Notify>,
}

impl HostileServer {
    async fn start(mode: Hostile) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(tokio::sync::Notify::new());
        let (seen, ended) = (requests.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (seen, ended) = (seen.clone(), ended.clone());
                tokio::spawn(async move {
                    let _ = serve_one(sock, mode, &seen).await;
                    ended.notify_one();
                });
            }
        });
        HostileServer {
            addr,
            requests,
            closed,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and `content-length` body), then misbehaves.
async fn serve_one(mut sock: TcpStream, mode: Hostile, seen: &AtomicUsize) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    seen.fetch_add(1, Ordering::SeqCst);
    match mode {
        Hostile::EndlessBody => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            loop {
                sock.write_all(chunk.as_bytes()).await?;
            }
        }
        Hostile::HugeContentLength => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2147483648\r\n\r\n{\"id\":")
                .await?;
            // Hold the connection open without sending the rest.
            let _ = sock.read(&mut tmp).await;
            Ok(())
        }
        Hostile::Garbage => {
            let body: &[u8] = b"\xff\xfe\x00not json at all \xc3\x28";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(body).await
        }
        Hostile::EndlessComments | Hostile::EndlessTokens | Hostile::OneTokenThenComments => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let mut i = 0u64;
            loop {
                let event = match mode {
                    Hostile::EndlessComments => ": keep-alive\n\n".to_string(),
                    Hostile::OneTokenThenComments if i > 0 => ": keep-alive\n\n".to_string(),
                    _ => format!(
                        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}},\"finish_reason\":null}}]}}\n\n"
                    ),
                };
                i += 1;
                let framed = format!("{:x}\r\n{event}\r\n", event.len());
                sock.write_all(framed.as_bytes()).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Hostile::HugeHeaders => {
            let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
            let value = "v".repeat(1000);
            for i in 0..1024 {
                head.push_str(&format!("x-junk-{i}: {value}\r\n"));
            }
            head.push_str("content-length: 2\r\n\r\n{}");
            sock.write_all(head.as_bytes()).await
        }
    }
}

async fn healthy() -> ChaosHandle {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"good\"\nkind = \"openai\"\napi_key = \"sk-good\"\n",
        "test.toml",
    )
    .unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// An engine whose route `r` is `chain` over deployments `bad` (hostile) and
/// `good` (the chaos server, when given).
fn engine(bad: &HostileServer, good: Option<&ChaosHandle>, chain: &str, policy: &str) -> Engine {
    let good_part = match good {
        Some(g) => format!(
            "[providers.good]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-good\"\n[deployments.good]\nprovider = \"good\"\nmodel = \"gpt-test\"\n",
            g.base_url("good")
        ),
        None => String::new(),
    };
    let text = format!(
        r#"
[providers.bad]
kind = "openai"
base_url = "{bad}"
api_key = "sk-bad"
[deployments.bad]
provider = "bad"
model = "gpt-test"
{good_part}
[policy]
max_attempts = 1
{policy}
[routes.r]
chain = {chain}
"#,
        bad = bad.base_url(),
    );
    let config = Config::from_toml_str(&text, "test.toml", &|_| None).unwrap();
    Engine::with_seed(config, 7).unwrap()
}

fn call(stream: bool) -> ChatCall {
    let mut r = ChatRequest::new("r", vec![Message::user("hello")]);
    if stream {
        r.stream = Some(true);
    }
    ChatCall::openai(r)
}

const POLICY: &str = "attempt_timeout = \"5s\"\ntimeout = \"8s\"\n";

/// The single hostile deployment fails the call with a classified error
/// whose message contains `needle`, within `within`, and the report reads
/// `report`.
async fn fails_with(mode: Hostile, needle: &str, within: Duration, report: &str) {
    let bad = HostileServer::start(mode).await;
    let e = engine(&bad, None, "[\"bad\"]", POLICY);
    let t = Instant::now();
    let err = e
        .chat(call(false))
        .await
        .expect_err("hostile answer accepted");
    assert!(t.elapsed() < within, "{mode:?} took {:?}", t.elapsed());
    assert!(err.status >= 500, "{mode:?}: status {}", err.status);
    assert!(
        err.message.contains(needle),
        "{mode:?}: message {:?} lacks {needle:?}",
        err.message
    );
    assert_eq!(
        Report::new(&err.meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        report
    );
    assert_eq!(bad.requests(), 1, "{mode:?}: upstream attempts");
}

/// With a healthy second deployment, the call falls back and succeeds, and
/// the report reads `report`.
async fn falls_back(mode: Hostile, report: &str) {
    let bad = HostileServer::start(mode).await;
    let good = healthy().await;
    let e = engine(&bad, Some(&good), "[\"bad\", \"good\"]", POLICY);
    let out = e.chat(call(false)).await.unwrap();
    assert!(out.response().text().is_some_and(|t| !t.is_empty()));
    assert_eq!(out.meta.deployment.as_deref(), Some("good"));
    assert_eq!(bad.requests(), 1, "{mode:?}: hostile attempts");
    assert_eq!(
        good.stats("good").unwrap().attempts,
        1,
        "{mode:?}: healthy attempts"
    );
    assert_eq!(
        Report::new(&out.meta)
            .upstream("bad", bad.requests() as u64)
            .chaos(&good, &["good"])
            .render(),
        report
    );
}

#[tokio::test]
async fn endless_body_is_cut_at_the_body_cap() {
    fails_with(
        Hostile::EndlessBody,
        "32 MiB",
        Duration::from_secs(5),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"upstream body larger than 32 MiB\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n",
    )
    .await;
}

#[tokio::test]
async fn endless_body_falls_back_to_a_healthy_deployment() {
    falls_back(
        Hostile::EndlessBody,
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"upstream body larger than 32 MiB\"\n\
         attempt good#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=good fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n\
         upstream good: attempts=1 ok=1\n",
    )
    .await;
}

#[tokio::test]
async fn huge_content_length_is_refused_before_reading() {
    fails_with(
        Hostile::HugeContentLength,
        "32 MiB",
        Duration::from_secs(1),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"upstream body larger than 32 MiB\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n",
    )
    .await;
}

#[tokio::test]
async fn non_json_200_is_a_classified_error() {
    fails_with(
        Hostile::Garbage,
        "unreadable openai response",
        Duration::from_secs(2),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"upstream sent an unreadable openai response: expected value at line 1 column 1\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n",
    )
    .await;
}

#[tokio::test]
async fn non_json_200_falls_back_to_a_healthy_deployment() {
    falls_back(
        Hostile::Garbage,
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"upstream sent an unreadable openai response: expected value at line 1 column 1\"\n\
         attempt good#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=good fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n\
         upstream good: attempts=1 ok=1\n",
    )
    .await;
}

#[tokio::test]
async fn huge_headers_are_a_classified_error() {
    let bad = HostileServer::start(Hostile::HugeHeaders).await;
    let e = engine(&bad, None, "[\"bad\"]", POLICY);
    let t = Instant::now();
    let err = e
        .chat(call(false))
        .await
        .expect_err("1 MB of headers accepted");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        Report::new(&err.meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"client error (SendRequest): message head is too large\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n"
    );
    assert!(err.status >= 500, "status {}", err.status);
    assert_eq!(bad.requests(), 1);
}

#[tokio::test]
async fn huge_headers_fall_back_to_a_healthy_deployment() {
    falls_back(
        Hostile::HugeHeaders,
        "request_id=\"\" route=r\n\
         attempt bad#1 class=network status=- next=fallback delay_ms=- reason=\"client error (SendRequest): message head is too large\"\n\
         attempt good#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=good fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n\
         upstream good: attempts=1 ok=1\n",
    )
    .await;
}

#[tokio::test]
async fn a_stream_of_comments_only_hits_the_first_token_timeout() {
    let bad = HostileServer::start(Hostile::EndlessComments).await;
    let e = engine(
        &bad,
        None,
        "[\"bad\"]",
        "first_token_timeout = \"300ms\"\ntimeout = \"5s\"\n",
    );
    let t = Instant::now();
    let err = e
        .chat_stream(call(true))
        .await
        .err()
        .expect("comments opened a stream");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.status >= 500, "status {}", err.status);
    assert!(err.message.contains("first token"), "{}", err.message);
    assert_eq!(bad.requests(), 1);
    assert_eq!(
        Report::new(&err.meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=timeout status=- next=fallback delay_ms=- reason=\"no first token within 300 ms\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n"
    );
}

#[tokio::test]
async fn a_stream_of_comments_only_falls_back_before_the_first_token() {
    let bad = HostileServer::start(Hostile::EndlessComments).await;
    let good = healthy().await;
    let e = engine(
        &bad,
        Some(&good),
        "[\"bad\", \"good\"]",
        "first_token_timeout = \"300ms\"\ntimeout = \"5s\"\n",
    );
    let mut out = e.chat_stream(call(true)).await.unwrap();
    let mut text = String::new();
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(c) => {
                for ch in c.into_parsed().unwrap().choices {
                    text.push_str(ch.delta.content.as_deref().unwrap_or(""));
                }
            }
            StreamItem::Error { message, .. } => panic!("stream error: {message}"),
        }
    }
    assert!(!text.is_empty());
    assert_eq!(out.meta.deployment.as_deref(), Some("good"));
    assert_eq!(bad.requests(), 1);
    assert_eq!(
        Report::new(&out.meta)
            .upstream("bad", bad.requests() as u64)
            .chaos(&good, &["good"])
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=timeout status=- next=fallback delay_ms=- reason=\"no first token within 300 ms\"\n\
         attempt good#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=good fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n\
         upstream good: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn a_stream_that_never_ends_is_cut_at_the_request_deadline() {
    let bad = HostileServer::start(Hostile::EndlessTokens).await;
    let e = engine(
        &bad,
        None,
        "[\"bad\"]",
        "first_token_timeout = \"1s\"\ninter_token_timeout = \"1s\"\ntimeout = \"700ms\"\nstream_failure = \"fail\"\n",
    );
    let t = Instant::now();
    let mut out = e.chat_stream(call(true)).await.unwrap();
    let mut chunks = 0usize;
    let mut failure = None;
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(_) => chunks += 1,
            StreamItem::Error { class, message } => failure = Some((class, message)),
        }
    }
    let took = t.elapsed();
    let (class, message) = failure.expect("an endless stream ended cleanly");
    assert!(chunks > 10, "only {chunks} chunks before the cut");
    assert_eq!(class, FailureClass::Timeout, "{message}");
    assert!(message.contains("deadline"), "{message}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );
    assert_eq!(bad.requests(), 1);
    assert_eq!(
        Report::new(&out.meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=bad fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n"
    );
}

#[tokio::test]
async fn a_stream_that_never_ends_is_cut_even_when_resuming() {
    // Resume (the default) asks another deployment for the rest; with none
    // left the stream still ends with an error, never hangs.
    let bad = HostileServer::start(Hostile::EndlessTokens).await;
    let e = engine(
        &bad,
        None,
        "[\"bad\"]",
        "first_token_timeout = \"1s\"\ntimeout = \"500ms\"\n",
    );
    let t = Instant::now();
    let mut out = e.chat_stream(call(true)).await.unwrap();
    let mut failed = false;
    while let Some(item) = out.items.recv().await {
        failed |= matches!(item, StreamItem::Error { .. });
    }
    assert!(failed, "an endless stream ended cleanly");
    assert_eq!(
        Report::new(&out.meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=bad fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_leaves_a_stream_closes_the_upstream_at_once() {
    // The upstream sends one token, then only keep-alives: nothing more
    // would ever reach the client. Dropping the stream's items must drop the
    // upstream connection now, not at the inter-token timeout a minute away.
    let bad = HostileServer::start(Hostile::OneTokenThenComments).await;
    let e = engine(
        &bad,
        None,
        "[\"bad\"]",
        "inter_token_timeout = \"60s\"\ntimeout = \"120s\"\nstream_failure = \"fail\"\n",
    );
    let mut out = e.chat_stream(call(true)).await.unwrap();
    assert!(matches!(out.items.recv().await, Some(StreamItem::Chunk(_))));
    let meta = out.meta.clone();
    drop(out);
    tokio::time::timeout(Duration::from_secs(10), bad.closed.notified())
        .await
        .expect("the upstream connection outlived the client");
    assert_eq!(bad.requests(), 1);
    assert_eq!(
        Report::new(&meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=bad fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n"
    );
}

#[tokio::test]
async fn a_stream_that_sends_only_comments_after_a_token_hits_the_inter_token_timeout() {
    let bad = HostileServer::start(Hostile::OneTokenThenComments).await;
    let e = engine(
        &bad,
        None,
        "[\"bad\"]",
        "inter_token_timeout = \"300ms\"\ntimeout = \"5s\"\nstream_failure = \"fail\"\n",
    );
    let t = Instant::now();
    let mut out = e.chat_stream(call(true)).await.unwrap();
    let mut failure = None;
    while let Some(item) = out.items.recv().await {
        if let StreamItem::Error { class, message } = item {
            failure = Some((class, message));
        }
    }
    let (class, message) = failure.expect("a silent stream ended cleanly");
    assert_eq!(class, FailureClass::Timeout, "{message}");
    assert!(message.contains("no token for 300 ms"), "{message}");
    assert_eq!(
        Report::new(&out.meta)
            .upstream("bad", bad.requests() as u64)
            .render(),
        "request_id=\"\" route=r\n\
         attempt bad#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=bad fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream bad: attempts=1\n"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut after {:?}",
        t.elapsed()
    );
    assert_eq!(bad.requests(), 1);
}
