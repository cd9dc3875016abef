//! Route strategies end to end against `keel chaos` on loopback: each one on
//! a controlled scenario, with the first deployment of every request read
//! from the attempt log and upstream attempts counted by the chaos server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_chaos::{ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Scenario, Trigger};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{
    kinds, record, record_report, recorded, report, runs, tally, upstreams, Report,
};

/// Two OpenAI-style upstreams `a` and `b`, each with its own extra TOML.
async fn chaos(a: &str, b: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a}\n[[upstream]]\nname = \"b\"\nkind = \"openai\"\n{b}\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Deployments `a` and `b` on the chaos upstreams; `route` is the `[routes.r]` body.
fn engine(ch: &ChaosHandle, deployments: (&str, &str), route: &str) -> Engine {
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
{da}
[deployments.b]
provider = "b"
model = "m"
{db}
[routes.r]
{route}
[policy]
max_attempts = 1
backoff_base = "5ms"
attempt_timeout = "2s"
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
        da = deployments.0,
        db = deployments.1,
    );
    let config = Config::from_toml_str(&text, "test.toml", &|_| None).unwrap();
    Engine::with_seed(config, 42).unwrap()
}

fn request() -> ChatRequest {
    let mut r = ChatRequest::new("r", vec![Message::user("Say something.")]);
    r.max_tokens = Some(50);
    r
}

fn tool_request() -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "r",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "What is the weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    }))
    .unwrap()
}

/// The deployment of the request's first upstream attempt.
async fn first(e: &Engine, call: ChatCall) -> String {
    let meta = match e.chat(call).await {
        Ok(o) => o.meta,
        Err(err) => err.meta,
    };
    record_report(Report::new(&meta).mask("breaker open for another "));
    meta.attempts
        .iter()
        .find(|a| a.attempt > 0)
        .map(|a| a.deployment.clone())
        .unwrap_or_default()
}

/// How many of `n` sequential requests went first to `a` and to `b`.
async fn shares(e: &Engine, n: usize) -> (usize, usize) {
    let mut a = 0;
    let mut b = 0;
    for _ in 0..n {
        match first(e, ChatCall::openai(request())).await.as_str() {
            "a" => a += 1,
            "b" => b += 1,
            other => panic!("no attempt ({other:?})"),
        }
    }
    (a, b)
}

fn attempts(ch: &ChaosHandle, name: &str) -> u64 {
    ch.stats(name).map(|s| s.attempts).unwrap_or(0)
}

fn slow(delay_ms: u64) -> FaultPlan {
    FaultPlan {
        faults: vec![FaultRule::always(Fault::SlowFirstByte {
            delay: Duration::from_millis(delay_ms),
        })],
    }
}

#[tokio::test]
async fn weighted_splits_by_weight() {
    let ch = chaos("", "").await;
    let e = engine(
        &ch,
        ("", ""),
        "chain = [\"a\", \"b\"]\nweights = { a = 3, b = 1 }",
    );
    let (a, b) = shares(&e, 200).await;
    assert!((130..=170).contains(&a), "a {a}, b {b}");
    assert_eq!(
        (attempts(&ch, "a"), attempts(&ch, "b")),
        (a as u64, b as u64)
    );

    assert_eq!(
        tally(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== 161 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 39 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=161 ok=161\n\
         upstream b: attempts=39 ok=39\n"
    );
}

#[tokio::test]
async fn priority_is_the_default() {
    let ch = chaos("", "").await;
    let e = engine(&ch, ("", ""), "chain = [\"b\", \"a\"]");
    assert_eq!(shares(&e, 20).await, (0, 20));
    assert_eq!(
        tally(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== 20 of 20 requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=0\n\
         upstream b: attempts=20 ok=20\n"
    );
}

#[tokio::test]
async fn least_latency_prefers_the_faster_and_returns_after_recovery() {
    let ch = chaos("latency = \"5ms\"", "latency = \"5ms\"").await;
    ch.set_faults("b", slow(50)).unwrap();
    // `b` first in the chain: priority would send everything there.
    let e = engine(
        &ch,
        ("", ""),
        "chain = [\"b\", \"a\"]\nstrategy = \"least-latency\"\ndecay = \"200ms\"",
    );
    let (a1, b1) = shares(&e, 100).await;
    assert!(b1 <= 15, "slow b still got {b1} of 100 (a {a1})");

    // Which deployment answers follows measured latency: the kinds of
    // report only, and no counts.
    assert_eq!(
        kinds(&recorded()),
        "== some requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == some requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n"
    );
    // b recovers; its old latency fades and it is probed and used again.
    ch.set_faults("b", FaultPlan::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (a2, b2) = shares(&e, 100).await;
    assert!(b2 >= 25, "recovered b got only {b2} of 100 (a {a2})");
    eprintln!("least-latency: slow phase a={a1} b={b1}; recovered phase a={a2} b={b2}");
    assert_eq!(
        kinds(&recorded()),
        "== some requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == some requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n"
    );
}

#[tokio::test]
async fn least_busy_balances_in_flight() {
    let ch = chaos("latency = \"100ms\"", "latency = \"100ms\"").await;
    let e = engine(
        &ch,
        ("", ""),
        "chain = [\"a\", \"b\"]\nstrategy = \"least-busy\"",
    );
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            record(&e.chat(ChatCall::openai(request())).await.unwrap().meta);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (a, b) = (attempts(&ch, "a"), attempts(&ch, "b"));
    assert_eq!(a + b, 20);
    assert!(a.abs_diff(b) <= 2, "a {a}, b {b}");
    // The split follows what is in flight when each request starts.
    assert_eq!(
        kinds(&recorded()),
        "== some requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == some requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n"
    );
}

#[tokio::test]
async fn cost_picks_the_cheapest_capable_deployment_and_honours_the_budget_header() {
    let ch = chaos("", "").await;
    let e = engine(
        &ch,
        (
            "input_price = 10.0\noutput_price = 30.0",
            "input_price = 1.0\noutput_price = 3.0\ntools = false",
        ),
        "chain = [\"a\", \"b\"]\nstrategy = \"cost\"",
    );
    let out = e.chat(ChatCall::openai(request())).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    let u = out.response().usage.clone().unwrap();
    let want = (u.prompt_tokens as f64 * 1.0 + u.completion_tokens as f64 * 3.0) / 1e6;
    assert!(
        (out.meta.cost_usd - want).abs() < 1e-12,
        "{} vs {want}",
        out.meta.cost_usd
    );

    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0.000092\n\
         upstream a: attempts=0\n\
         upstream b: attempts=1 ok=1\n"
    );
    // Tools: only `a` can serve, whatever it costs.
    let out = e.chat(ChatCall::openai(tool_request())).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("a"));

    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt b#0 class=- status=- next=skip delay_ms=- reason=\"no tool support\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0.00021\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 ok=1\n"
    );
    // A budget below every estimate: refused before any upstream call.
    let before = attempts(&ch, "a") + attempts(&ch, "b");
    let mut call = ChatCall::openai(request());
    call.options.max_cost_usd = Some(0.000_000_1);
    let err = e.chat(call).await.unwrap_err();
    assert_eq!(err.status, 400);
    assert!(
        err.message.contains("exceeds x-keel-max-cost-usd"),
        "{}",
        err.message
    );
    assert_eq!(attempts(&ch, "a") + attempts(&ch, "b"), before);

    assert_eq!(
        report(&err.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"estimated cost $0.001600 exceeds x-keel-max-cost-usd 0.0000001\"\n\
         attempt b#0 class=- status=- next=skip delay_ms=- reason=\"estimated cost $0.000160 exceeds x-keel-max-cost-usd 0.0000001\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 ok=1\n"
    );
    // A budget between the two estimates excludes only the expensive one.
    let mut call = ChatCall::openai(request());
    call.options.max_cost_usd = Some(0.0005);
    call.options.no_fallbacks = false;
    let out = e.chat(call).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));

    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"estimated cost $0.001600 exceeds x-keel-max-cost-usd 0.0005\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0.000092\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=2 ok=2\n"
    );
}

#[tokio::test]
async fn rules_send_tool_requests_to_the_tool_sub_chain() {
    let ch = chaos("", "").await;
    let e = engine(
        &ch,
        ("tools = false", ""),
        r#"chain = ["a"]
[[routes.r.rules]]
when = { tools = true }
chain = ["b"]
[[routes.r.rules]]
when = { header = "x-tier", header_value = "premium" }
chain = ["b", "a"]
"#,
    );
    assert_eq!(first(&e, ChatCall::openai(tool_request())).await, "b");
    assert_eq!(first(&e, ChatCall::openai(request())).await, "a");
    let mut call = ChatCall::openai(request());
    call.options.headers = vec![("x-tier".into(), "premium".into())];
    assert_eq!(first(&e, call).await, "b");
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 2));
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"no tool support\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == request 3\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=2 ok=2\n"
    );
}

#[tokio::test]
async fn learned_converges_to_the_best_and_re_explores_after_a_change() {
    let failing = |p: f64| FaultPlan {
        faults: vec![FaultRule::new(
            Fault::ServerError { status: 500 },
            Trigger::Probability(p),
        )],
    };
    let ch = chaos("", "").await;
    ch.set_faults("a", failing(0.5)).unwrap();
    let e = engine(
        &ch,
        ("", ""),
        "chain = [\"a\", \"b\"]\nstrategy = \"learned\"\nlearned = { success = 1.0, latency = 0.0, cost = 0.0, exploration = 0.05 }\ndecay = \"5s\"",
    );
    let _ = shares(&e, 100).await;
    let (a1, b1) = shares(&e, 100).await;
    assert!(b1 >= 80, "b should win: a {a1}, b {b1}");

    assert_eq!(
        tally(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== 195 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 4 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         == 1 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=5 ok=1 server_error=4\n\
         upstream b: attempts=199 ok=199\n"
    );
    ch.set_faults("a", FaultPlan::default()).unwrap();
    ch.set_faults("b", failing(0.6)).unwrap();
    let _ = shares(&e, 200).await;
    let (a2, b2) = shares(&e, 100).await;
    assert!(a2 >= 60, "a should win again: a {a2}, b {b2}");

    assert_eq!(
        tally(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== 253 of 300 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 25 of 300 requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 15 of 300 requests\n\
         request_id=\"\" route=r\n\
         attempt b#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         == 7 of 300 requests\n\
         request_id=\"\" route=r\n\
         attempt b#0 class=- status=- next=skip delay_ms=- reason=\"breaker open for another N ms\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=1 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=280 ok=276 server_error=4\n\
         upstream b: attempts=239 ok=224 server_error=15\n"
    );
    eprintln!("learned: before change last 100 a={a1} b={b1}; after change last 100 a={a2} b={b2}");
}

/// A deployment capability matching leaves out is in the attempt log as a
/// skip with its reason even when a later one serves the request, and it
/// receives nothing: a Responses request with a built-in tool only the
/// native deployment declares, and a chat request with tools on a route
/// whose first deployment has none.
#[tokio::test]
async fn deployments_that_cannot_serve_are_skipped_with_their_reason() {
    let ch = chaos("", "").await;
    let e = engine(
        &ch,
        (
            "tools = false",
            "responses = true\nbuiltin_tools = [\"web_search\"]",
        ),
        "chain = [\"a\", \"b\"]",
    );
    let body = serde_json::json!({"model": "r", "input": "What happened today?",
        "max_output_tokens": 50, "tools": [{"type": "web_search"}]});
    let req: keel_wire::responses::ResponsesRequest = serde_json::from_value(body.clone()).unwrap();
    let chat = keel_wire::translate::responses_to_chat(&req, &[]).unwrap();
    let mut call = ChatCall::from_responses_body(
        chat,
        serde_json::to_vec(&body).unwrap().into(),
        Default::default(),
    );
    call.options.responses = keel_engine::ResponsesNeeds::of(&req).unwrap();
    let out = e.chat(call).await.unwrap();
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"does not serve the built-in tool `web_search` (not in its builtin_tools)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=0\n\
         upstream b: attempts=1 ok=1\n"
    );
    // The native deployment got the Responses body, built-in tool included.
    let sent = &ch.stats("b").unwrap().log[0].body;
    assert!(
        sent.contains("\"web_search\"") && sent.contains("\"input\""),
        "{sent}"
    );

    // A chat request with tools: `a` has none.
    let out = e.chat(ChatCall::openai(tool_request())).await.unwrap();
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"no tool support\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=0\n\
         upstream b: attempts=2 ok=2\n"
    );
}
