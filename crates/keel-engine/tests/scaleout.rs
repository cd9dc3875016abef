//! Scale-out (docs/design.md §9): two engines (two replicas) sharing one real
//! `redis-server`. A route limited to 600 RPM admits the global rate, not
//! twice it; a breaker opened by failures seen on one replica stops the
//! other's attempts; killing Redis mid-run leaves both serving on local
//! state, and they reconnect when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine};
use keel_store::testing::RedisServer;
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{kinds, report, runs, upstreams, Report};
use common::stream::streamed;

fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server (run scripts/test to install it)")
}

async fn chaos() -> ChaosHandle {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\n",
        "test.toml",
    )
    .unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(ch: &ChaosHandle, redis: &RedisServer, extra: &str) -> Config {
    let text = format!(
        r#"
[store]
redis = "{url}"
timeout = "1s"
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "sk-a"
[routes.r]
chain = ["a"]
[policy]
max_attempts = 1
attempt_timeout = "2s"
{extra}
"#,
        url = redis.url(),
        a = ch.base_url("a"),
    );
    Config::from_toml_str(&text, "test.toml", &|_| None).unwrap()
}

fn call(i: usize) -> ChatCall {
    ChatCall::openai(ChatRequest::new(
        "r",
        vec![Message::user(format!("Question {i}."))],
    ))
}

fn attempts(ch: &ChaosHandle) -> u64 {
    ch.stats("a").map(|s| s.attempts).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hold_one_global_rate_limit() {
    let server = redis();
    let ch = chaos().await;
    // 600 RPM = 10/s with a burst of 100 (a sixth of a minute); no queueing,
    // so whatever the limiter refuses fails at once.
    let extra = "[deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\nrpm = 600\n";
    let mut cfg = config(&ch, &server, extra);
    cfg.routes
        .values_mut()
        .for_each(|r| r.policy.max_queue_wait = Duration::ZERO);
    let e1 = Engine::connect(cfg.clone()).await.unwrap();
    let e2 = Engine::connect(cfg).await.unwrap();

    // 2,000 requests spread over both replicas at ~400/s (about 5 s).
    let total = 2000usize;
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_micros(2500));
    for i in 0..total {
        tick.tick().await;
        let e = if i % 2 == 0 { e1.clone() } else { e2.clone() };
        tasks.push(tokio::spawn(async move {
            let out = e.chat(call(i)).await;
            let report = match &out {
                Ok(o) => Report::new(&o.meta).mask("for another ").render(),
                Err(err) => Report::new(&err.meta).mask("for another ").render(),
            };
            (out.is_ok(), report)
        }));
    }
    let sent_for = t0.elapsed();
    let mut ok = 0u64;
    let mut reports = Vec::new();
    for t in tasks {
        let (answered, report) = t.await.unwrap();
        if answered {
            ok += 1;
        }
        reports.push(report);
    }
    // How many are admitted, and the waits named, follow the clock: the
    // kinds of report only.
    // Whether this replica's own limiter or the fleet-wide one refuses
    // first follows the clock (a token is held while the fleet is asked):
    // every report is one of these three, and the last two always occur.
    let local = "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"local rate limit (Rpm) for another N ms\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n";
    let fleet = "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"local rate limit (Rpm, fleet-wide) for another N ms\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n";
    let answered = "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n";
    for r in &reports {
        assert!([local, fleet, answered].contains(&r.as_str()), "{r}");
    }
    for kind in [fleet, answered] {
        assert!(reports.iter().any(|r| r == kind), "{}", kinds(&reports));
    }
    let upstream = attempts(&ch);
    assert_eq!(
        ok, upstream,
        "every admitted request reached the upstream once"
    );
    let expected = 100.0 + 10.0 * sent_for.as_secs_f64();
    let ratio = upstream as f64 / expected;
    eprintln!(
        "global limit: admitted {upstream} of {total} in {:.2} s; expected {expected:.0} at 600 RPM + burst 100 (ratio {ratio:.3}); post-burst rate {:.2}/s",
        sent_for.as_secs_f64(),
        (upstream as f64 - 100.0) / sent_for.as_secs_f64()
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "admitted {upstream}, expected {expected:.0} (twice would be {:.0})",
        2.0 * expected
    );
    for e in [&e1, &e2] {
        let s = e.store_stats();
        assert!(s.redis_up, "{s:?}");
        assert_eq!(s.local_fallbacks, 0, "{s:?}");
    }
}

#[tokio::test]
async fn breaker_opened_on_one_replica_stops_the_other() {
    let server = redis();
    let ch = chaos().await;
    let extra = "[deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\n[breaker]\nconsecutive_failures = 3\nopen_for = \"30s\"\n";
    let e1 = Engine::connect(config(&ch, &server, extra)).await.unwrap();
    let e2 = Engine::connect(config(&ch, &server, extra)).await.unwrap();
    ch.set_faults(
        "a",
        FaultPlan {
            faults: vec![FaultRule::always(Fault::ServerError { status: 500 })],
        },
    )
    .unwrap();
    let mut reports = Vec::new();
    for i in 0..3 {
        let out = e1.chat(call(i)).await;
        assert!(out.is_err());
        reports.push(Report::new(&out.unwrap_err().meta).render());
    }
    assert_eq!(attempts(&ch), 3);
    assert_eq!(
        runs(&reports) + &upstreams(&ch, &["a"]),
        "== requests 1-3\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 server_error=3\n"
    );
    // Replica 1's breaker is open; it publishes that in the background.
    let t0 = Instant::now();
    let err = loop {
        let before = attempts(&ch);
        let err = e2.chat(call(99)).await.unwrap_err();
        if attempts(&ch) == before {
            break err;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "replica 2 kept sending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(err.status, 503);
    assert!(
        err.meta.attempts[0]
            .reason
            .starts_with("breaker open (on another replica) for another"),
        "{:?}",
        err.meta.attempts
    );
    assert_eq!(err.meta.upstream_attempts, 0);
    // The time left is measured, and how many requests replica 2 sent
    // before the news reached it follows the clock (no upstream counts).
    assert_eq!(
        Report::new(&err.meta).mask("for another ").render(),
        "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"breaker open (on another replica) for another N ms\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n"
    );
}

#[tokio::test]
async fn replicas_serve_on_local_state_while_redis_is_down_and_reconnect() {
    let mut server = redis();
    let ch = chaos().await;
    let extra = "[deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\nrpm = 60000\n";
    let mut cfg1 = config(&ch, &server, extra);
    cfg1.store.timeout = Duration::from_millis(200);
    let cfg2 = cfg1.clone();
    let e1 = Engine::connect(cfg1).await.unwrap();
    let e2 = Engine::connect(cfg2).await.unwrap();
    let mut reports = Vec::new();
    for i in 0..4 {
        let e = if i % 2 == 0 { &e1 } else { &e2 };
        reports.push(Report::new(&e.chat(call(i)).await.unwrap().meta).render());
    }
    server.kill();
    for i in 0..20 {
        let e = if i % 2 == 0 { &e1 } else { &e2 };
        let out = e
            .chat(call(100 + i))
            .await
            .unwrap_or_else(|err| panic!("request {i} failed without redis: {}", err.message));
        reports.push(Report::new(&out.meta).render());
    }
    for e in [&e1, &e2] {
        let s = e.store_stats();
        assert!(!s.redis_up, "{s:?}");
        assert_eq!(s.redis_down_transitions, 1, "logged once: {s:?}");
        assert!(s.local_fallbacks > 0, "{s:?}");
        // The same health is exported to Prometheus.
        let text = e.render_metrics();
        assert!(text.contains("keel_store_redis_up 0"), "{text}");
        assert!(
            text.contains("keel_store_redis_down_transitions_total 1"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("keel_store_local_fallbacks_total "))
            .unwrap();
        assert_eq!(
            line,
            format!("keel_store_local_fallbacks_total {}", s.local_fallbacks)
        );
    }
    server.restart().unwrap();
    let t0 = Instant::now();
    while !(e1.store_stats().redis_up && e2.store_stats().redis_up) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "replicas did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fallbacks = e1.store_stats().local_fallbacks;
    reports.push(Report::new(&e1.chat(call(1000)).await.unwrap().meta).render());
    assert_eq!(
        runs(&reports) + &upstreams(&ch, &["a"]),
        "== requests 1-25\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=25 ok=25\n"
    );
    assert_eq!(e1.store_stats().local_fallbacks, fallbacks, "back on redis");
    assert!(e1.render_metrics().contains("keel_store_redis_up 1"));
}

/// The streamed twin of the global limit: a burst of one request for the
/// whole fleet. Replica 1's stream takes it on `a`; replica 2's own limiter
/// would admit a stream, the fleet-wide one refuses, and the stream comes
/// from `b`.
#[tokio::test]
async fn a_fleet_wide_limit_sends_the_other_replicas_stream_to_the_next_deployment() {
    let server = redis();
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\n\
         [[upstream]]\nname = \"b\"\nkind = \"openai\"\napi_key = \"sk-b\"\n",
        "test.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // 6 RPM: a burst of one (a sixth of a minute), then one every 10 s.
    let extra = format!(
        "[deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\nrpm = 6\n\
         [providers.b]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-b\"\n\
         [deployments.b]\nprovider = \"b\"\nmodel = \"gpt-test\"\n\
         [routes.ab]\nchain = [\"a\", \"b\"]\n",
        ch.base_url("b")
    );
    let mut cfg = config(&ch, &server, &extra);
    cfg.routes
        .values_mut()
        .for_each(|r| r.policy.max_queue_wait = Duration::ZERO);
    let e1 = Engine::connect(cfg.clone()).await.unwrap();
    let e2 = Engine::connect(cfg).await.unwrap();
    let call = || {
        let mut r = ChatRequest::new("ab", vec![Message::user("Stream something.")]);
        r.stream = Some(true);
        ChatCall::openai(r)
    };
    let (first, m1) = streamed(&e1, call()).await;
    let (second, m2) = streamed(&e2, call()).await;
    assert_eq!((attempts(&ch), ch.stats("b").unwrap().attempts), (1, 1));
    for e in [&e1, &e2] {
        assert_eq!(e.store_stats().local_fallbacks, 0);
    }
    assert_eq!(
        format!("{first}\n== replica 2\n{second}"),
        "Labore commodo sint laboris excepteur velit. Laborum est esse magna proident duis sed culpa occaecat.\n\
         == replica 2\n\
         Labore commodo sint laboris excepteur velit. Laborum est esse magna proident duis sed culpa occaecat."
    );
    // The wait the refusal names is measured from the clock.
    assert_eq!(
        report(&m1, &ch, &["a", "b"])
            + "== replica 2\n"
            + &Report::new(&m2)
                .mask("for another ")
                .chaos(&ch, &["a", "b"])
                .render(),
        "request_id=\"\" route=ab\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 ok=1\n\
         == replica 2\n\
         request_id=\"\" route=ab\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"local rate limit (Rpm, fleet-wide) for another N ms\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}
