//! Hedged requests against `keel chaos`: a primary that hangs on some
//! attempts, with and without `hedge = true` on the route; latency
//! quantiles measured, upstream attempts counted by the chaos server.
//! Streams too: a stream has answered when its first token arrived, so a
//! primary whose first byte is slow is raced by a hedge on the next
//! deployment before anything reaches the client (the cancelled primaries
//! are counted from Keel's attempt records).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, RequestReport, StreamItem};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{report, tally, upstreams, Report};

/// `a` hangs on 5% of attempts (seeded); `b` is healthy. Both answer in ~10 ms.
async fn chaos() -> ChaosHandle {
    let toml = "[[upstream]]\nname = \"a\"\nkind = \"openai\"\nlatency = \"10ms\"\n\
                [[upstream.fault]]\nkind = \"hang\"\nprobability = 0.05\n\
                [[upstream]]\nname = \"b\"\nkind = \"openai\"\nlatency = \"10ms\"\n";
    start(toml).await
}

async fn start(toml: &str) -> ChaosHandle {
    let scenario = Scenario::from_toml_str(toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `a` answers in ~10 ms except when its `fault` says otherwise; `b` is
/// healthy and answers in ~10 ms. `a_extra` adds fields to `a`.
async fn slow_chaos(a_extra: &str, fault: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\nlatency = \"10ms\"\n{a_extra}\
         [[upstream.fault]]\nkind = \"slow_first_byte\"\n{fault}\n\
         [[upstream]]\nname = \"b\"\nkind = \"openai\"\nlatency = \"10ms\"\n"
    );
    start(&toml).await
}

/// The policy of the plain tests: a hanging attempt times out at 300 ms.
const PLAIN_POLICY: &str = "attempt_timeout = \"300ms\"";
/// The policy of the stream tests: a slow first byte does not time out
/// (nor meets the adaptive first-token deadline, whose floor is raised).
const STREAM_POLICY: &str = "first_token_timeout = \"5s\"\nfirst_token_floor = \"5s\"";

/// Route `r` = [a, b] with `hedge` on the route and `policy` (one attempt per deployment).
fn engine(ch: &ChaosHandle, hedge: &str, policy: &str) -> Engine {
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
max_attempts = 1
{policy}
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
    let plain = run(&engine(&plain_ch, "", PLAIN_POLICY), n).await;

    let ch = chaos().await;
    let hedged = run(
        &engine(&ch, "hedge = true\nhedge_after = \"40ms\"", PLAIN_POLICY),
        n,
    )
    .await;
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
    // Which requests are hedged, and so `b`'s count with hedging, follows
    // measured latencies: the attempts the chaos seed decides are pinned.
    assert_eq!(
        upstreams(&plain_ch, &["a", "b"]) + "== hedged\n" + &upstreams(&ch, &["a"]),
        "upstream a: attempts=100 hang=6 ok=94\n\
         upstream b: attempts=6 ok=6\n\
         == hedged\n\
         upstream a: attempts=100 hang=6 ok=94\n"
    );
}

#[tokio::test]
async fn p95_hedging_waits_for_enough_samples_then_hedges_at_the_p95() {
    let ch = chaos().await;
    let e = engine(&ch, "hedge = true", PLAIN_POLICY);
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
    // The hedge delay is a measured p95: `b`'s count is left out.
    assert_eq!(
        upstreams(&ch, &["a"]),
        "upstream a: attempts=130 hang=6 ok=124\n"
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
    let e = engine(&ch, "hedge = true\nhedge_after = \"1ms\"", PLAIN_POLICY);
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
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt b#0 class=- status=- next=skip delay_ms=- reason=\"hedge sent after 1 ms, cancelled: the first attempt answered first\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

/// One streamed request: time to first token (when `chat_stream` returned,
/// the race was decided), what happened before it, and the whole text.
async fn stream(e: &Engine) -> (Duration, RequestReport, String) {
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
                for ch in &c.parsed().unwrap().choices {
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
fn cancelled(metas: &[RequestReport]) -> usize {
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

    let plain_ch = slow_chaos("", fault).await;
    let plain = engine(&plain_ch, "", STREAM_POLICY);
    let mut plain_metas = Vec::new();
    let mut plain_max = Duration::ZERO;
    for _ in 0..n {
        let (ttft, meta, text) = stream(&plain).await;
        assert!(!text.is_empty());
        assert_eq!(meta.upstream_attempts, 1);
        plain_max = plain_max.max(ttft);
        plain_metas.push(Report::new(&meta).render());
    }

    let ch = slow_chaos("", fault).await;
    let e = engine(&ch, "hedge = true\nhedge_after = \"50ms\"", STREAM_POLICY);
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

    assert_eq!(
        tally(&plain_metas)
            + &upstreams(&plain_ch, &["a", "b"])
            + "== hedged\n"
            + &tally(
                &metas
                    .iter()
                    .map(|m| Report::new(m).render())
                    .collect::<Vec<_>>(),
            )
            + &upstreams(&ch, &["a", "b"]),
        "== 60 of 60 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=60 ok=54 slow_first_byte=6\n\
         upstream b: attempts=0\n\
         == hedged\n\
         == 54 of 60 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 6 of 60 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=- next=cancelled delay_ms=- reason=\"cancelled: the hedge sent its first token first (this attempt had not)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"hedge sent after 50 ms sent its first token first\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=60 ok=54 slow_first_byte=6\n\
         upstream b: attempts=6 ok=6\n"
    );
    assert!(per_request < 1.2, "attempts per request {per_request}");
}

#[tokio::test]
async fn stream_hedges_are_paid_from_the_retry_budget() {
    // `a` is always slow (an outage of sorts); without a floor, the budget
    // (ratio 0.2) lets at most a fifth of the requests hedge.
    let n = 30;
    let ch = slow_chaos("", "delay = \"150ms\"").await;
    let e = engine(
        &ch,
        "hedge = true\nhedge_after = \"20ms\"",
        &format!("{STREAM_POLICY}\n[retry_budget]\nratio = 0.2\nmin_per_sec = 0\n"),
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
    assert_eq!(
        tally(
            &metas
                .iter()
                .map(|m| Report::new(m).render())
                .collect::<Vec<_>>(),
        ) + &upstreams(&ch, &["a", "b"]),
        "== 24 of 30 requests\n\
         request_id=\"\" route=r\n\
         attempt b#0 class=- status=- next=skip delay_ms=- reason=\"hedge refused by the retry budget\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 6 of 30 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=- next=cancelled delay_ms=- reason=\"cancelled: the hedge sent its first token first (this attempt had not)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"hedge sent after 20 ms sent its first token first\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=30 slow_first_byte=30\n\
         upstream b: attempts=6 ok=6\n"
    );
}

#[tokio::test]
async fn the_p95_delay_of_a_stream_is_learned_from_first_tokens() {
    // `a` streams slowly (~35 pieces 20 ms apart) but its first token is
    // quick, except on attempt 50 (first byte after 1 s). The stream's hedge
    // delay is the p95 of first tokens (~10 ms, so min_delay 50 ms), not of
    // whole streams (~700 ms): the slow one is hedged at ~50 ms. (With
    // whole streams in the tracker, its first token took ~360 ms with
    // 10 ms pieces.)
    let ch = slow_chaos(
        "token_delay = \"20ms\"\n",
        "sequence = [50]\ndelay = \"1s\"",
    )
    .await;
    let e = engine(&ch, "hedge = true", STREAM_POLICY);
    // Concurrent, to keep the test short: 30 to learn, then 20 measured.
    async fn batch(e: &Engine, n: usize) -> Vec<(Duration, RequestReport)> {
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
    let metas: Vec<RequestReport> = measured.into_iter().map(|(_, m)| m).collect();
    eprintln!(
        "stream hedge p95: max time to first token {max:?}, cancelled {}",
        cancelled(&metas)
    );
    assert_eq!(cancelled(&metas), 1, "the slow attempt was hedged");
    assert!(max < Duration::from_millis(300), "{max:?}");
    // The hedge delay is the p95 of measured first tokens, and whether an
    // ordinary request's hedge is sent (and loses) depends on how its first
    // token compares with it on a loaded machine: of the measured requests
    // only the one the hedge won is pinned, and `b`'s count is left out.
    let render = |m: &RequestReport| Report::new(m).mask("hedge sent after ").render();
    let won: Vec<String> = metas
        .iter()
        .filter(|m| m.deployment.as_deref() == Some("b"))
        .map(render)
        .collect();
    assert_eq!(
        tally(&learn.iter().map(|(_, m)| render(m)).collect::<Vec<_>>())
            + "== measured, won by the hedge\n"
            + &tally(&won)
            + &upstreams(&ch, &["a"]),
        "== 30 of 30 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == measured, won by the hedge\n\
         == 1 of 1 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=- next=cancelled delay_ms=- reason=\"cancelled: the hedge sent its first token first (this attempt had not)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"hedge sent after N ms sent its first token first\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=50 ok=49 slow_first_byte=1\n"
    );
}
