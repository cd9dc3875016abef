//! Hedged streams against `keel chaos`: a stream has answered when its
//! first token arrived, so a primary whose first byte is slow is raced by a
//! hedge on the next deployment before anything reaches the client. Upstream
//! attempts are counted by the chaos server, the cancelled primaries by
//! Keel's attempt records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, Meta, StreamItem};
use keel_wire::openai::{ChatRequest, Message};

/// `a` answers in ~10 ms except when its `fault` says otherwise; `b` is
/// healthy and answers in ~10 ms. `a_extra` adds fields to `a`.
async fn chaos(a_extra: &str, fault: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\nlatency = \"10ms\"\n{a_extra}\
         [[upstream.fault]]\nkind = \"slow_first_byte\"\n{fault}\n\
         [[upstream]]\nname = \"b\"\nkind = \"openai\"\nlatency = \"10ms\"\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn engine(ch: &ChaosHandle, hedge: &str, budget: &str) -> Engine {
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
first_token_timeout = "5s"
max_attempts = 1
{budget}
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

/// One streamed request: time to first token (when `chat_stream` returned,
/// the race was decided), what happened before it, and the whole text.
async fn stream(e: &Engine) -> (Duration, Meta, String) {
    let mut r = ChatRequest::new("r", vec![Message::user("Say something.")]);
    r.max_tokens = Some(40);
    r.stream = Some(true);
    let t0 = Instant::now();
    let mut out = e.chat_stream(ChatCall::openai(r)).await.unwrap();
    let ttft = t0.elapsed();
    let mut text = String::new();
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(c) => {
                for ch in &c.choices {
                    if let Some(t) = &ch.delta.content {
                        text.push_str(t);
                    }
                }
            }
            StreamItem::Error { message, .. } => panic!("{message}"),
        }
    }
    (ttft, out.meta, text)
}

fn stats(ch: &ChaosHandle, name: &str) -> (u64, u64) {
    let s = ch.stats(name).unwrap();
    let slow = s.by_outcome.get("slow_first_byte").copied().unwrap_or(0);
    (s.attempts, slow)
}

/// Requests whose first attempt Keel cancelled because the hedge's first
/// token came first (the hedge on `b` served them).
fn cancelled(metas: &[Meta]) -> usize {
    metas
        .iter()
        .filter(|m| {
            m.deployment.as_deref() == Some("b")
                && m.attempts
                    .iter()
                    .any(|a| a.deployment == "a" && a.next == "cancelled")
        })
        .count()
}

#[tokio::test]
async fn a_slow_first_token_is_hedged_and_the_slow_primary_cancelled() {
    // Every 10th attempt on `a` sends its first byte after 1 s.
    let n = 60;
    let fault = "every = 10\ndelay = \"1s\"";

    let plain_ch = chaos("", fault).await;
    let plain = engine(&plain_ch, "", "");
    let mut plain_max = Duration::ZERO;
    for _ in 0..n {
        let (ttft, meta, text) = stream(&plain).await;
        assert!(!text.is_empty());
        assert_eq!(meta.upstream_attempts, 1);
        plain_max = plain_max.max(ttft);
    }

    let ch = chaos("", fault).await;
    let e = engine(&ch, "hedge = true\nhedge_after = \"50ms\"", "");
    let mut hedged_max = Duration::ZERO;
    let mut metas = Vec::new();
    for _ in 0..n {
        let (ttft, meta, text) = stream(&e).await;
        assert!(!text.is_empty());
        hedged_max = hedged_max.max(ttft);
        metas.push(meta);
    }
    let (a_attempts, a_slow) = stats(&ch, "a");
    let (b_attempts, _) = stats(&ch, "b");
    let per_request = (a_attempts + b_attempts) as f64 / n as f64;
    eprintln!(
        "stream hedge: max time to first token without {plain_max:?}, with {hedged_max:?}; \
         a attempts {a_attempts} (slow {a_slow}), b attempts {b_attempts}, \
         cancelled primaries {}, attempts/request {per_request:.2}",
        cancelled(&metas)
    );
    assert!(
        plain_max >= Duration::from_secs(1),
        "without hedging the stream waits for the slow primary: {plain_max:?}"
    );
    assert!(
        hedged_max < Duration::from_millis(500),
        "with hedging the first token comes from the hedge: {hedged_max:?}"
    );
    assert_eq!(a_attempts, n as u64);
    assert_eq!(a_slow, 6, "chaos saw every slow primary");
    assert_eq!(b_attempts, 6, "one hedge per slow primary, none otherwise");
    assert_eq!(cancelled(&metas), 6, "Keel cancelled every slow primary");
    for m in &metas {
        if m.deployment.as_deref() == Some("b") {
            assert_eq!(m.upstream_attempts, 2);
            let a = m.attempts.iter().find(|a| a.deployment == "a").unwrap();
            assert!(a.reason.contains("cancelled"), "{:?}", m.attempts);
            let b = m.attempts.iter().find(|a| a.deployment == "b").unwrap();
            assert!(
                b.reason.contains("hedge sent after 50 ms"),
                "{:?}",
                m.attempts
            );
        } else {
            assert_eq!(m.upstream_attempts, 1, "{:?}", m.attempts);
        }
    }
    assert!(per_request < 1.2, "attempts per request {per_request}");
}

#[tokio::test]
async fn stream_hedges_are_paid_from_the_retry_budget() {
    // `a` is always slow (an outage of sorts); without a floor, the budget
    // (ratio 0.2) lets at most a fifth of the requests hedge.
    let n = 30;
    let ch = chaos("", "delay = \"150ms\"").await;
    let e = engine(
        &ch,
        "hedge = true\nhedge_after = \"20ms\"",
        "[retry_budget]\nratio = 0.2\nmin_per_sec = 0\n",
    );
    let mut metas = Vec::new();
    for _ in 0..n {
        let (_, meta, text) = stream(&e).await;
        assert!(!text.is_empty());
        metas.push(meta);
    }
    let (a_attempts, _) = stats(&ch, "a");
    let (b_attempts, _) = stats(&ch, "b");
    let per_request = (a_attempts + b_attempts) as f64 / n as f64;
    let refused = metas
        .iter()
        .filter(|m| {
            m.attempts
                .iter()
                .any(|a| a.reason == "hedge refused by the retry budget")
        })
        .count();
    eprintln!(
        "stream hedge budget: a {a_attempts}, b {b_attempts}, attempts/request {per_request:.2}, \
         refused {refused}, cancelled {}",
        cancelled(&metas)
    );
    assert_eq!(a_attempts, n as u64);
    assert!(b_attempts >= 1, "some requests were hedged");
    assert!(
        per_request <= 1.2 + 1e-9,
        "attempts per request {per_request}"
    );
    assert_eq!(b_attempts as usize + refused, n);
    assert_eq!(cancelled(&metas), b_attempts as usize);
}

#[tokio::test]
async fn the_p95_delay_of_a_stream_is_learned_from_first_tokens() {
    // `a` streams slowly (~35 pieces 20 ms apart) but its first token is
    // quick, except on attempt 50 (first byte after 1 s). The stream's hedge
    // delay is the p95 of first tokens (~10 ms, so min_delay 50 ms), not of
    // whole streams (~700 ms): the slow one is hedged at ~50 ms. (With
    // whole streams in the tracker, its first token took ~360 ms with
    // 10 ms pieces.)
    let ch = chaos(
        "token_delay = \"20ms\"\n",
        "sequence = [50]\ndelay = \"1s\"",
    )
    .await;
    let e = engine(&ch, "hedge = true", "");
    // Concurrent, to keep the test short: 30 to learn, then 20 measured.
    async fn batch(e: &Engine, n: usize) -> Vec<(Duration, Meta)> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let e = e.clone();
            set.spawn(async move {
                let (ttft, meta, _) = stream(&e).await;
                (ttft, meta)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    }
    let learn = batch(&e, 30).await;
    assert!(learn.iter().all(|(_, m)| m.upstream_attempts == 1));
    let measured = batch(&e, 20).await;
    let max = measured.iter().map(|(t, _)| *t).max().unwrap();
    let metas: Vec<Meta> = measured.into_iter().map(|(_, m)| m).collect();
    eprintln!(
        "stream hedge p95: max time to first token {max:?}, cancelled {}",
        cancelled(&metas)
    );
    assert_eq!(cancelled(&metas), 1, "the slow attempt was hedged");
    assert!(max < Duration::from_millis(300), "{max:?}");
}
