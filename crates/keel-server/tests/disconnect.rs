//! A client that disconnects cancels every attempt of its request at once:
//! plain or streaming, before the first token or mid-stream, and both
//! attempts of a hedge. Keel is served on a loopback port, the client is a
//! raw TCP connection that is closed at the chosen moment, and the upstream
//! is `keel chaos`, which counts the requests whose client (Keel) closed
//! them before their answer finished.
//!
//! Every deadline Keel has is a minute here, so only the client's
//! disconnect can end an attempt within the test's failsafe bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A failsafe only: each wait below ends as soon as chaos reports the
/// event; this bounds a regression to a failure instead of a hang.
const FAILSAFE: Duration = Duration::from_secs(20);

/// `hang` and `hang2` never answer; `slow` streams a long answer at one
/// token per 100 ms (a minute and more).
async fn chaos() -> ChaosHandle {
    let toml = "[[upstream]]\nname = \"hang\"\nkind = \"openai\"\n\
                [[upstream.fault]]\nkind = \"hang\"\n\
                [[upstream]]\nname = \"hang2\"\nkind = \"openai\"\n\
                [[upstream.fault]]\nkind = \"hang\"\n\
                [[upstream]]\nname = \"slow\"\nkind = \"openai\"\ntoken_delay = \"100ms\"\n";
    ChaosServer::start(
        Scenario::from_toml_str(toml, "disconnect.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// Keel on a loopback port: route `hang` = [hang], `slow` = [slow],
/// `hedged` = [hang, hang2] hedged after 20 ms.
async fn keel(ch: &ChaosHandle) -> std::net::SocketAddr {
    let mut text = String::new();
    for name in ["hang", "hang2", "slow"] {
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"m\"\n",
            ch.base_url(name)
        ));
    }
    text.push_str(
        "[routes.hang]\nchain = [\"hang\"]\n\
         [routes.slow]\nchain = [\"slow\"]\n\
         [routes.hedged]\nchain = [\"hang\", \"hang2\"]\nhedge = true\nhedge_after = \"20ms\"\n\
         [policy]\nmax_attempts = 1\ntimeout = \"60s\"\nattempt_timeout = \"60s\"\n\
         first_token_timeout = \"60s\"\nfirst_token_floor = \"60s\"\ninter_token_timeout = \"60s\"\n",
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&text, "keel.toml", &|_| None).unwrap(),
        1,
    )
    .unwrap();
    keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Opens a connection to Keel and sends a chat request on `route`.
async fn send(keel: std::net::SocketAddr, route: &str, stream: bool) -> TcpStream {
    let body = format!(
        r#"{{"model":"{route}","stream":{stream},"max_tokens":1000,"messages":[{{"role":"user","content":"Tell me a long story."}}]}}"#
    );
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: keel\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(keel).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    conn
}

/// Waits (bounded by the failsafe) until `upstream` saw `n` attempts.
async fn attempts(ch: &ChaosHandle, upstream: &str, n: u64) {
    tokio::time::timeout(FAILSAFE, ch.attempts_reached(upstream, n))
        .await
        .unwrap_or_else(|_| panic!("{upstream} never saw {n} attempt(s)"));
}

/// Waits (bounded by the failsafe) until Keel closed `n` requests to
/// `upstream` before their answer finished.
async fn closed(ch: &ChaosHandle, upstream: &str, n: u64) {
    tokio::time::timeout(FAILSAFE, ch.closed_by_client(upstream, n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{upstream}: Keel kept its attempt open after the client left ({:?})",
                ch.stats(upstream).map(|s| s.closed_by_client)
            )
        });
}

#[tokio::test]
async fn a_plain_request_whose_client_leaves_is_cancelled_upstream() {
    let ch = chaos().await;
    let keel = keel(&ch).await;
    let conn = send(keel, "hang", false).await;
    attempts(&ch, "hang", 1).await;
    assert_eq!(ch.stats("hang").unwrap().closed_by_client, 0);
    drop(conn);
    closed(&ch, "hang", 1).await;
    assert_eq!(ch.stats("hang").unwrap().attempts, 1);
}

#[tokio::test]
async fn a_stream_whose_client_leaves_is_cancelled_upstream_before_and_after_its_commit() {
    let ch = chaos().await;
    let keel = keel(&ch).await;
    // Before the first token.
    let conn = send(keel, "hang", true).await;
    attempts(&ch, "hang", 1).await;
    drop(conn);
    closed(&ch, "hang", 1).await;

    // Mid-stream: the client reads the first chunk Keel sent, then leaves.
    let mut conn = send(keel, "slow", true).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = tokio::time::timeout(FAILSAFE, conn.read(&mut buf))
            .await
            .expect("the stream's first chunk")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert_eq!(ch.stats("slow").unwrap().closed_by_client, 0);
    drop(conn);
    closed(&ch, "slow", 1).await;
    assert_eq!(ch.stats("slow").unwrap().attempts, 1);
}

#[tokio::test]
async fn a_hedged_request_whose_client_leaves_cancels_both_attempts() {
    let ch = chaos().await;
    let keel = keel(&ch).await;
    for (n, stream) in [(1, false), (2, true)] {
        let conn = send(keel, "hedged", stream).await;
        // The first attempt, then its hedge, are in flight.
        attempts(&ch, "hang", n).await;
        attempts(&ch, "hang2", n).await;
        drop(conn);
        closed(&ch, "hang", n).await;
        closed(&ch, "hang2", n).await;
    }
}
