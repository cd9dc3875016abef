//! Hedged requests against `keel chaos`: a primary that hangs on some
//! attempts, with and without `hedge = true` on the route; latency
//! quantiles measured, upstream attempts counted by the chaos server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine};
use keel_wire::openai::{ChatRequest, Message};

/// `a` hangs on 5% of attempts (seeded); `b` is healthy. Both answer in ~10 ms.
async fn chaos() -> ChaosHandle {
    let toml = "[[upstream]]\nname = \"a\"\nkind = \"openai\"\nlatency = \"10ms\"\n\
                [[upstream.fault]]\nkind = \"hang\"\nprobability = 0.05\n\
                [[upstream]]\nname = \"b\"\nkind = \"openai\"\nlatency = \"10ms\"\n";
    let scenario = Scenario::from_toml_str(toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn engine(ch: &ChaosHandle, hedge: &str) -> Engine {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
[providers.b]
kind = "openai"
base_url = "{b}"
[deployments.a]
provider = "a"
model = "m"
[deployments.b]
provider = "b"
model = "m"
[routes.r]
chain = ["a", "b"]
{hedge}
[policy]
attempt_timeout = "300ms"
max_attempts = 1
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        9,
    )
    .unwrap()
}

/// Sends `n` requests one after another; returns sorted latencies.
async fn run(e: &Engine, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let mut r = ChatRequest::new("r", vec![Message::user("Say something.")]);
        r.max_tokens = Some(300);
        let t0 = Instant::now();
        e.chat(ChatCall::openai(r)).await.unwrap();
        lat.push(t0.elapsed());
    }
    lat.sort();
    lat
}

fn q(lat: &[Duration], q: f64) -> Duration {
    lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1]
}

fn attempts(ch: &ChaosHandle) -> u64 {
    ["a", "b"]
        .iter()
        .map(|n| ch.stats(n).map(|s| s.attempts).unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn hedging_cuts_the_p99_of_a_hanging_primary_within_the_budget() {
    let n = 100;
    let plain_ch = chaos().await;
    let plain = run(&engine(&plain_ch, ""), n).await;

    let ch = chaos().await;
    let hedged = run(&engine(&ch, "hedge = true\nhedge_after = \"40ms\""), n).await;
    let per_request = attempts(&ch) as f64 / n as f64;
    eprintln!(
        "hedge: without p50 {:?} p95 {:?} p99 {:?}; with p50 {:?} p95 {:?} p99 {:?}; attempts/request {per_request:.2} (without {:.2})",
        q(&plain, 0.5), q(&plain, 0.95), q(&plain, 0.99),
        q(&hedged, 0.5), q(&hedged, 0.95), q(&hedged, 0.99),
        attempts(&plain_ch) as f64 / n as f64,
    );
    assert!(
        q(&plain, 0.99) >= Duration::from_millis(300),
        "the hangs show without hedging"
    );
    assert!(
        q(&hedged, 0.99) < Duration::from_millis(150),
        "p99 with hedging {:?}",
        q(&hedged, 0.99)
    );
    // Hedges are paid from the retry budget (ratio 0.2).
    assert!(per_request < 1.2, "attempts per request {per_request}");
    assert!(per_request > 1.0, "some requests were hedged");
}

#[tokio::test]
async fn p95_hedging_waits_for_enough_samples_then_hedges_at_the_p95() {
    let ch = chaos().await;
    let e = engine(&ch, "hedge = true");
    // The first 20 answers only teach the p95 (no hedging without data).
    let _ = run(&e, 30).await;
    let before = attempts(&ch);
    let lat = run(&e, 100).await;
    let per_request = (attempts(&ch) - before) as f64 / 100.0;
    eprintln!(
        "hedge p95: p99 {:?}, attempts/request {per_request:.2}",
        q(&lat, 0.99)
    );
    assert!(per_request < 1.2, "attempts per request {per_request}");
    assert!(
        q(&lat, 0.99) < Duration::from_millis(300),
        "p99 {:?}",
        q(&lat, 0.99)
    );
}

#[tokio::test]
async fn a_hedge_that_loses_is_cancelled_and_logged() {
    // Both fast: with a 1 ms hedge delay every request hedges; whichever
    // answers first wins, and the log says what happened to the other.
    let toml = "[[upstream]]\nname = \"a\"\nkind = \"openai\"\nlatency = \"20ms\"\n\
                [[upstream]]\nname = \"b\"\nkind = \"openai\"\nlatency = \"60ms\"\n";
    let scenario = Scenario::from_toml_str(toml, "test.toml").unwrap();
    let ch = ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let e = engine(&ch, "hedge = true\nhedge_after = \"1ms\"");
    let mut r = ChatRequest::new("r", vec![Message::user("Hi")]);
    r.max_tokens = Some(300);
    let out = e.chat(ChatCall::openai(r)).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("a"));
    assert_eq!(out.meta.upstream_attempts, 2);
    let hedge = out
        .meta
        .attempts
        .iter()
        .find(|a| a.deployment == "b")
        .unwrap();
    assert!(
        hedge.reason.contains("cancelled"),
        "{:?}",
        out.meta.attempts
    );
}
