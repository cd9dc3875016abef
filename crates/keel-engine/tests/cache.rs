//! The response cache through the engine against `keel chaos`: hit, miss,
//! `Cache-Control` (no-cache, no-store, max-age), stale-if-error, streamed
//! answers recorded and replayed as a stream, tenant isolation, and an
//! entry shared by two engines through Redis. Upstream attempts are
//! counted from the chaos server's stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Scenario};
use keel_engine::config::Config;
use keel_engine::{CacheControl, CacheStatus, ChatCall, Engine, StreamItem};
use keel_store::testing::RedisServer;
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{record, recorded, report, runs, upstreams};

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

fn config(ch: &ChaosHandle, extra: &str) -> Config {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "sk-a"
[deployments.a]
provider = "a"
model = "gpt-test"
[policy]
max_attempts = 1
attempt_timeout = "2s"
first_token_timeout = "2s"
{extra}
"#,
        a = ch.base_url("a"),
    );
    Config::from_toml_str(&text, "test.toml", &|_| None).unwrap()
}

fn engine(ch: &ChaosHandle, extra: &str) -> Engine {
    Engine::with_seed(config(ch, extra), 7).unwrap()
}

const CACHED: &str = "[routes.r]\nchain = [\"a\"]\ncache_ttl = \"10m\"\nstale_ttl = \"1h\"\n";

fn call(prompt: &str, stream: bool) -> ChatCall {
    let mut r = ChatRequest::new("r", vec![Message::user(prompt)]);
    if stream {
        r.stream = Some(true);
    }
    ChatCall::openai(r)
}

fn with_control(mut c: ChatCall, header: &str) -> ChatCall {
    c.options.cache_control = CacheControl::parse(header);
    c
}

fn attempts(ch: &ChaosHandle) -> u64 {
    ch.stats("a").map(|s| s.attempts).unwrap_or(0)
}

async fn text(e: &Engine, c: ChatCall) -> (String, CacheStatus) {
    let out = e.chat(c).await.unwrap();
    record(&out.meta);
    (
        out.response().text().unwrap_or_default().to_string(),
        out.meta.cache,
    )
}

async fn stream_text(e: &Engine, c: ChatCall) -> (String, CacheStatus, Option<String>) {
    let mut out = e.chat_stream(c).await.unwrap();
    let mut s = String::new();
    let mut finish = None;
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(ch) => {
                for c in ch.into_parsed().unwrap().choices {
                    if let Some(t) = c.delta.content {
                        s.push_str(&t);
                    }
                    if c.finish_reason.is_some() {
                        finish = c.finish_reason;
                    }
                }
            }
            StreamItem::Error { message, .. } => panic!("stream error: {message}"),
        }
    }
    record(&out.meta);
    (s, out.meta.cache, finish)
}

#[tokio::test]
async fn second_identical_request_is_a_hit_without_upstream_attempt() {
    let ch = chaos().await;
    let e = engine(&ch, CACHED);
    let (first, s1) = text(&e, call("Say something.", false)).await;
    assert_eq!(s1, CacheStatus::Miss);
    let out = e.chat(call("Say something.", false)).await.unwrap();
    assert_eq!(out.meta.cache, CacheStatus::Hit);
    record(&out.meta);
    assert_eq!(out.response().text().unwrap(), first);
    assert_eq!(out.response().model, "r");
    assert_eq!(out.meta.upstream_attempts, 0);
    assert_eq!(attempts(&ch), 1);
    // A different prompt or a different parameter is another entry.
    assert_eq!(
        text(&e, call("Say another thing.", false)).await.1,
        CacheStatus::Miss
    );
    let mut hot = call("Say something.", false);
    hot.request_mut().temperature = Some(1.5);
    assert_eq!(text(&e, hot).await.1, CacheStatus::Miss);
    assert_eq!(attempts(&ch), 3);
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=hit cost_usd=0\n\
         == requests 3-4\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         upstream a: attempts=3 ok=3\n"
    );
}

#[tokio::test]
async fn routes_without_a_ttl_do_not_cache() {
    let ch = chaos().await;
    let e = engine(&ch, "[routes.r]\nchain = [\"a\"]\n");
    assert_eq!(text(&e, call("x", false)).await.1, CacheStatus::None);
    assert_eq!(text(&e, call("x", false)).await.1, CacheStatus::None);
    assert_eq!(attempts(&ch), 2);
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a"]),
        "== requests 1-2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=2\n"
    );
}

#[tokio::test]
async fn cache_control_no_cache_no_store_and_max_age() {
    let ch = chaos().await;
    let e = engine(&ch, CACHED);
    // no-store: neither read nor written.
    assert_eq!(
        text(&e, with_control(call("q", false), "no-store")).await.1,
        CacheStatus::None
    );
    assert_eq!(text(&e, call("q", false)).await.1, CacheStatus::Miss);
    assert_eq!(attempts(&ch), 2);
    // no-cache: not answered from the cache, but the fresh answer is stored.
    let (fresh, s) = text(&e, with_control(call("q", false), "no-cache")).await;
    assert_eq!(s, CacheStatus::Miss);
    assert_eq!(attempts(&ch), 3);
    let (again, s) = text(&e, call("q", false)).await;
    assert_eq!((again.as_str(), s), (fresh.as_str(), CacheStatus::Hit));
    // max-age: an entry older than the client accepts is a miss.
    assert_eq!(
        text(&e, with_control(call("q", false), "max-age=3600"))
            .await
            .1,
        CacheStatus::Hit
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        text(&e, with_control(call("q", false), "max-age=1"))
            .await
            .1,
        CacheStatus::Miss
    );
    assert_eq!(attempts(&ch), 4);
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == requests 2-3\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         == requests 4-5\n\
         request_id=\"\" route=r\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=hit cost_usd=0\n\
         == request 6\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         upstream a: attempts=4 ok=4\n"
    );
}

#[tokio::test]
async fn stale_answer_is_served_when_the_whole_chain_fails() {
    let ch = chaos().await;
    let e = engine(
        &ch,
        "[routes.r]\nchain = [\"a\"]\ncache_ttl = \"50ms\"\nstale_ttl = \"1h\"\nstatic_response = \"static\"\n",
    );
    let (first, _) = text(&e, call("q", false)).await;
    ch.set_faults(
        "a",
        FaultPlan {
            faults: vec![FaultRule::always(Fault::ServerError { status: 500 })],
        },
    )
    .unwrap();
    let first_report = runs(&recorded());
    // Fresh for 50 ms; afterwards the chain is tried, fails, and the stale entry answers.
    let t0 = Instant::now();
    let out = loop {
        let out = e.chat(call("q", false)).await.unwrap();
        if out.meta.cache != CacheStatus::Hit {
            break out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "entry never went stale"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(out.meta.cache, CacheStatus::Stale);
    assert_eq!(
        out.response().text().unwrap(),
        first,
        "stale beats the static tier"
    );
    assert_eq!(out.meta.attempts[0].class, Some("server_error"));
    assert!(out.meta.upstream_attempts >= 1);
    // How many hits came before the entry went stale depends on timing.
    let stale = report(&out.meta, &ch, &["a"]);
    // Without an entry, the static tier still answers.
    let out = e.chat(call("never asked", false)).await.unwrap();
    assert_eq!(out.meta.tier, keel_engine::Tier::Static);

    assert_eq!(
        first_report + "== stale\n" + &stale + "== never asked\n" + &report(&out.meta, &ch, &["a"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         == stale\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=stale cost_usd=0\n\
         upstream a: attempts=2 ok=1 server_error=1\n\
         == never asked\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         deployment=- fallback_depth=0 tier=Static upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         upstream a: attempts=3 ok=1 server_error=2\n"
    );
    assert_eq!(out.meta.cache, CacheStatus::Miss);
}

#[tokio::test]
async fn streamed_answer_is_cached_when_complete_and_replayed_as_a_stream() {
    let ch = chaos().await;
    let e = engine(&ch, CACHED);
    let (streamed, s, finish) = stream_text(&e, call("stream me", true)).await;
    assert_eq!(s, CacheStatus::Miss);
    assert!(!streamed.is_empty());
    assert!(finish.is_some());
    // The entry is written when the stream ends; poll until it is there.
    let t0 = Instant::now();
    let (replayed, s, finish2) = loop {
        let r = stream_text(&e, call("stream me", true)).await;
        if r.1 == CacheStatus::Hit {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "stream never cached");
    };
    assert_eq!(s, CacheStatus::Hit);
    assert_eq!(replayed, streamed);
    assert_eq!(finish2, finish);
    // The same answer, whole, for a non-streaming client.
    let (whole, s) = text(&e, call("stream me", false)).await;
    assert_eq!((whole.as_str(), s), (streamed.as_str(), CacheStatus::Hit));
    let upstream = attempts(&ch);
    let _ = stream_text(&e, call("stream me", true)).await;
    assert_eq!(attempts(&ch), upstream);
    // How many requests missed before the entry was written depends on
    // timing: each report once.
    let mut reports = recorded();
    reports.dedup();
    assert_eq!(
        runs(&reports) + &upstreams(&ch, &["a"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=hit cost_usd=0\n\
         upstream a: attempts=2 ok=2\n"
    );
}

#[tokio::test]
async fn tenants_never_share_an_entry() {
    let ch = chaos().await;
    let tenants = "[[tenants]]\nname = \"acme\"\ntoken = \"t-acme\"\n[[tenants]]\nname = \"globex\"\ntoken = \"t-globex\"\n";
    let e = engine(&ch, &format!("{CACHED}{tenants}"));
    let tenant = |t: &str| {
        let mut c = call("same prompt", false);
        c.options.tenant = Some(t.to_string());
        c
    };
    assert_eq!(text(&e, tenant("acme")).await.1, CacheStatus::Miss);
    assert_eq!(text(&e, tenant("globex")).await.1, CacheStatus::Miss);
    assert_eq!(text(&e, tenant("acme")).await.1, CacheStatus::Hit);
    assert_eq!(text(&e, tenant("globex")).await.1, CacheStatus::Hit);
    assert_eq!(attempts(&ch), 2);
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a"]),
        "== requests 1-2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         == requests 3-4\n\
         request_id=\"\" route=r\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=hit cost_usd=0\n\
         upstream a: attempts=2 ok=2\n"
    );
}

#[tokio::test]
async fn two_engines_share_entries_through_redis() {
    let server = RedisServer::start().expect("redis-server (run scripts/test to install it)");
    let ch = chaos().await;
    let extra = format!(
        "{CACHED}[store]\nredis = \"{}\"\ntimeout = \"1s\"\n",
        server.url()
    );
    let e1 = Engine::connect(config(&ch, &extra)).await.unwrap();
    let e2 = Engine::connect(config(&ch, &extra)).await.unwrap();
    let (a, s) = text(&e1, call("shared", false)).await;
    assert_eq!(s, CacheStatus::Miss);
    let (b, s) = text(&e2, call("shared", false)).await;
    assert_eq!((b.as_str(), s), (a.as_str(), CacheStatus::Hit));
    assert_eq!(attempts(&ch), 1);
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=miss cost_usd=0\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=hit cost_usd=0\n\
         upstream a: attempts=1 ok=1\n"
    );
}
