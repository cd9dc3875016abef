//! End-to-end pipeline tests against `keel chaos` on loopback: one test per
//! failure class of docs/design.md §2 checking the action, with upstream attempts
//! counted from the chaos server's own stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, EngineError, StreamItem};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{report, runs, tally, upstreams, Report};
use common::stream::streamed;

/// Two upstreams (`a` openai, `b` anthropic) with the given fault TOML each.
async fn chaos(a_faults: &str, b_faults: &str) -> ChaosHandle {
    chaos_with(&format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\n{a_faults}\n\
         [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\napi_key = \"sk-b\"\n{b_faults}\n"
    ))
    .await
}

async fn chaos_with(toml: &str) -> ChaosHandle {
    let scenario = Scenario::from_toml_str(toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A config with deployments `a` and `b` on the chaos upstreams, route `r` = [a, b].
fn config(ch: &ChaosHandle, extra: &str) -> Config {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "sk-a"
[providers.b]
kind = "anthropic"
base_url = "{b}"
api_key = "sk-b"
[deployments.a]
provider = "a"
model = "gpt-test"
[deployments.b]
provider = "b"
model = "claude-test"
[routes.r]
chain = ["a", "b"]
[policy]
backoff_base = "10ms"
backoff_cap = "50ms"
attempt_timeout = "2s"
first_token_timeout = "2s"
{extra}
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    Config::from_toml_str(&text, "test.toml", &|_| None).unwrap()
}

fn engine(ch: &ChaosHandle, extra: &str) -> Engine {
    Engine::with_seed(config(ch, extra), 42).unwrap()
}

fn call(stream: bool) -> ChatCall {
    let mut r = ChatRequest::new("r", vec![Message::user("Say something.")]);
    r.max_tokens = Some(200);
    if stream {
        r.stream = Some(true);
    }
    ChatCall::openai(r)
}

fn attempts(ch: &ChaosHandle, name: &str) -> u64 {
    ch.stats(name).map(|s| s.attempts).unwrap_or(0)
}

async fn err(e: &Engine, c: ChatCall) -> EngineError {
    match e.chat(c).await {
        Ok(o) => panic!("expected an error, got {:?}", o.response()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn healthy_primary_answers_once() {
    let ch = chaos("", "").await;
    let e = engine(&ch, "");
    let out = e.chat(call(false)).await.unwrap();
    assert!(!out.response().text().unwrap_or_default().is_empty());
    assert_eq!(out.meta.deployment.as_deref(), Some("a"));
    assert_eq!(out.meta.upstream_attempts, 1);
    assert_eq!(out.response().model, "r");
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 0));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn rate_limit_waits_the_hinted_time_then_retries_same_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1]\nretry_after = \"200ms\"\nheader_style = \"ms\"\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let t0 = Instant::now();
    let out = e.chat(call(false)).await.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "waited only {waited:?}"
    );
    assert_eq!(out.meta.deployment.as_deref(), Some("a"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    let first = &out.meta.attempts[0];
    assert_eq!(first.class, Some("rate_limited"));
    assert_eq!(first.delay_ms, Some(200));
    assert!(first.reason.contains("hint"), "{}", first.reason);
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=retry delay_ms=200 reason=\"Rate limit reached for gpt-test in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 200ms. Visit https://platform.openai.com/account/rate-limits to learn more.; hint retry-after-ms\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 rate_limit=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn long_retry_after_falls_over_at_once() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1]\nretry_after = \"20s\"\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let t0 = Instant::now();
    let out = e.chat(call(false)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=fallback delay_ms=- reason=\"Rate limit reached for gpt-test in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.; wait of 20000 ms (hint retry-after-ms) exceeds failover_after, falling over\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 rate_limit=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn insufficient_quota_is_not_retried_and_falls_back() {
    let ch = chaos("[[upstream.fault]]\nkind = \"quota_exhausted\"\n", "").await;
    let e = engine(&ch, "");
    let out = e.chat(call(false)).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    assert_eq!(out.meta.fallback_depth, 1);
    assert_eq!(out.meta.attempts[0].class, Some("quota_exhausted"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=quota_exhausted status=429 next=fallback delay_ms=- reason=\"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 quota_exhausted=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn bad_request_fails_fast_with_the_provider_message() {
    let ch = chaos("[[upstream.fault]]\nkind = \"bad_request\"\n", "").await;
    let e = engine(&ch, "");
    let error = err(&e, call(false)).await;
    assert_eq!(error.status, 400);
    assert!(!error.message.is_empty());
    assert_eq!(error.meta.attempts.len(), 1);
    assert_eq!(error.meta.attempts[0].class, Some("invalid_request"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 0));
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=invalid_request status=400 next=fail delay_ms=- reason=\"Invalid value for 'temperature': expected a number between 0 and 2.\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 bad_request=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn context_overflow_falls_back_only_to_a_larger_window() {
    let ch = chaos_with(
        "[[upstream]]\nname = \"small\"\nkind = \"openai\"\n[[upstream.fault]]\nkind = \"context_overflow\"\n\
         [[upstream]]\nname = \"same\"\nkind = \"openai\"\n\
         [[upstream]]\nname = \"large\"\nkind = \"anthropic\"\n",
    )
    .await;
    let text = format!(
        r#"
[providers.small]
kind = "openai"
base_url = "{}"
[providers.same]
kind = "openai"
base_url = "{}"
[providers.large]
kind = "anthropic"
base_url = "{}"
[deployments.small]
provider = "small"
model = "m"
context_window = 8000
[deployments.same]
provider = "same"
model = "m"
context_window = 8000
[deployments.large]
provider = "large"
model = "m"
context_window = 200000
[routes.r]
chain = ["small", "same", "large"]
"#,
        ch.base_url("small"),
        ch.base_url("same"),
        ch.base_url("large")
    );
    let e = Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        1,
    )
    .unwrap();
    let out = e.chat(call(false)).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("large"));
    assert_eq!(
        (
            attempts(&ch, "small"),
            attempts(&ch, "same"),
            attempts(&ch, "large")
        ),
        (1, 0, 1)
    );
    assert_eq!(out.meta.attempts[1].next, "skip");
    assert_eq!(
        report(&out.meta, &ch, &["small", "same", "large"]),
        "request_id=\"\" route=r\n\
         attempt small#1 class=context_overflow status=400 next=fallback delay_ms=- reason=\"This model's maximum context length is 128000 tokens. However, your messages resulted in 128012 tokens. Please reduce the length of the messages.\"\n\
         attempt same#0 class=- status=- next=skip delay_ms=- reason=\"context window 8000 not larger than the one that overflowed\"\n\
         attempt large#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=large fallback_depth=2 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream small: attempts=1 context_overflow=1\n\
         upstream same: attempts=0\n\
         upstream large: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn auth_errors_fall_back_and_are_never_retried() {
    let ch = chaos("[[upstream.fault]]\nkind = \"auth\"\n", "").await;
    let e = engine(&ch, "[breaker]\nconsecutive_failures = 100\n");
    let mut reports = Vec::new();
    for _ in 0..3 {
        let out = e.chat(call(false)).await.unwrap();
        assert_eq!(out.meta.deployment.as_deref(), Some("b"));
        reports.push(Report::new(&out.meta).render());
    }
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (3, 3));
    assert_eq!(
        runs(&reports) + &upstreams(&ch, &["a", "b"]),
        "== requests 1-3\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=auth status=401 next=fallback delay_ms=- reason=\"Incorrect API key provided: sk-...oked. You can find your API key at https://platform.openai.com/account/api-keys.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 auth=3\n\
         upstream b: attempts=3 ok=3\n"
    );
}

#[tokio::test]
async fn a_hang_hits_the_attempt_timeout() {
    let ch = chaos("[[upstream.fault]]\nkind = \"hang\"\n", "").await;
    let e = engine(
        &ch,
        "max_attempts = 1\n[routes.r.policy]\nattempt_timeout = \"300ms\"\n",
    );
    let t0 = Instant::now();
    let out = e.chat(call(false)).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(out.meta.attempts[0].class, Some("timeout"));
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    // Asked as a stream (`stream_upstream`), the hang is a missing first
    // token, whose deadline the attempt timeout caps.
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=timeout status=- next=fallback delay_ms=- reason=\"no first token within 300 ms\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 hang=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn an_outage_opens_the_breaker_and_later_requests_skip_the_dead_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(
        &ch,
        "max_attempts = 1\n[breaker]\nconsecutive_failures = 3\nopen_for = \"30s\"\n",
    );
    let mut reports = Vec::new();
    for _ in 0..10 {
        let out = e.chat(call(false)).await.unwrap();
        assert_eq!(out.meta.deployment.as_deref(), Some("b"));
        reports.push(
            Report::new(&out.meta)
                .mask("breaker open for another ")
                .render(),
        );
    }
    assert_eq!(
        attempts(&ch, "a"),
        3,
        "the breaker should stop attempts after 3 failures"
    );
    assert_eq!(attempts(&ch, "b"), 10);
    let stats = e.stats();
    assert_eq!(stats.deployments[0].breaker, "open");
    assert_eq!(stats.deployments[0].breaker_trips, 1);
    // Later requests record a skip, not an attempt.
    let out = e.chat(call(false)).await.unwrap();
    assert_eq!(out.meta.attempts[0].next, "skip");
    assert!(out.meta.attempts[0].reason.contains("breaker open"));
    // The time the breaker has left is measured, not chosen.
    assert_eq!(
        runs(&reports)
            + "== after\n"
            + &Report::new(&out.meta)
                .mask("breaker open for another ")
                .chaos(&ch, &["a", "b"])
                .render(),
        "== requests 1-3\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         == requests 4-10\n\
         request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"breaker open for another N ms\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == after\n\
         request_id=\"\" route=r\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"breaker open for another N ms\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 server_error=3\n\
         upstream b: attempts=11 ok=11\n"
    );
}

#[tokio::test]
async fn an_exhausted_budget_still_falls_over_to_a_healthy_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(
        &ch,
        "max_attempts = 3\n[breaker]\nconsecutive_failures = 1000\n[retry_budget]\nratio = 0.0\nmin_per_sec = 0\nwindow = \"60s\"\n[routes.only-b]\nchain = [\"b\"]\n",
    );
    let mut reports = Vec::new();
    // b answers well (requests straight to it).
    for _ in 0..5 {
        let mut c = call(false);
        c.request_mut().model = "only-b".into();
        reports.push(Report::new(&e.chat(c).await.unwrap().meta).render());
    }
    // a is down and the budget allows no retry at all: every request is
    // still answered by b, with one attempt on a and none repeated there.
    for _ in 0..20 {
        let out = e.chat(call(false)).await.unwrap();
        assert_eq!(out.meta.deployment.as_deref(), Some("b"));
        // The delays are pinned by the single-request tests.
        reports.push(Report::new(&out.meta).without("delay_ms").render());
        assert_eq!(out.meta.upstream_attempts, 2);
    }
    assert_eq!(attempts(&ch, "a"), 20);
    assert_eq!(attempts(&ch, "b"), 25);
    assert!(e.stats().budget_exhausted >= 20);
    assert_eq!(
        runs(&reports) + &upstreams(&ch, &["a", "b"]),
        "== requests 1-5\n\
         request_id=\"\" route=only-b\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == requests 6-25\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#0 class=- status=- next=skip reason=\"retry budget exhausted\"\n\
         attempt b#1 class=- status=200 next=ok reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=20 server_error=20\n\
         upstream b: attempts=25 ok=25\n"
    );
}

#[tokio::test]
async fn the_retry_budget_caps_amplification_in_a_full_outage() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
    )
    .await;
    let e = engine(
        &ch,
        "max_attempts = 3\n[breaker]\nconsecutive_failures = 1000\n[retry_budget]\nratio = 0.2\nmin_per_sec = 1\nwindow = \"60s\"\n",
    );
    let n = 200u64;
    let mut reports = Vec::new();
    for _ in 0..n {
        let error = err(&e, call(false)).await;
        assert!(error.status >= 500);
        // 200 requests' jittered delays would make a long literal that says
        // nothing more than the single-request tests' (which pin them).
        reports.push(Report::new(&error.meta).without("delay_ms").render());
    }
    let total = attempts(&ch, "a") + attempts(&ch, "b");
    let amplification = total as f64 / n as f64;
    // Without a budget this would be 6 attempts per request.
    assert!(
        amplification <= 1.2 + 60.0 / n as f64,
        "amplification {amplification}"
    );

    assert_eq!(
        tally(&reports) + &upstreams(&ch, &["a", "b"]),
        "== 12 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#2 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#3 class=server_error status=500 next=fallback reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=server_error status=500 next=retry reason=\"Internal server error; backoff\"\n\
         attempt b#2 class=server_error status=500 next=retry reason=\"Internal server error; backoff\"\n\
         attempt b#3 class=server_error status=500 next=fallback reason=\"Internal server error\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=6 truncated=false refusal=false cache=none cost_usd=0\n\
         == 1 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#2 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#3 class=server_error status=500 next=fallback reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#0 class=- status=- next=skip reason=\"retry budget exhausted\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         == 149 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#0 class=- status=- next=skip reason=\"retry budget exhausted\"\n\
         attempt b#0 class=- status=- next=skip reason=\"retry budget exhausted\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == 38 of 200 requests\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#2 class=server_error status=500 next=retry reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#0 class=- status=- next=skip reason=\"retry budget exhausted\"\n\
         attempt b#0 class=- status=- next=skip reason=\"retry budget exhausted\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=264 server_error=264\n\
         upstream b: attempts=36 server_error=36\n"
    );
    assert!(e.stats().budget_exhausted > 0);
}

#[tokio::test]
async fn the_error_lists_every_attempt() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 502\n",
        "[[upstream.fault]]\nkind = \"overloaded\"\n",
    )
    .await;
    let e = engine(&ch, "max_attempts = 2\n");
    let error = err(&e, call(false)).await;
    let classes: Vec<_> = error
        .meta
        .attempts
        .iter()
        .map(|a| (a.deployment.as_str(), a.class))
        .collect();
    assert_eq!(
        classes,
        [
            ("a", Some("server_error")),
            ("a", Some("server_error")),
            ("b", Some("overloaded")),
            ("b", Some("overloaded"))
        ]
    );
    assert_eq!(error.status, 503);
    assert!(error.retry_after.is_some());
    assert!(
        error.message.contains("a#1 server_error (502)"),
        "{}",
        error.message
    );
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=502 next=retry delay_ms=26 reason=\"Bad gateway.; backoff\"\n\
         attempt a#2 class=server_error status=502 next=fallback delay_ms=- reason=\"Bad gateway.\"\n\
         attempt b#1 class=overloaded status=529 next=retry delay_ms=27 reason=\"Overloaded; backoff\"\n\
         attempt b#2 class=overloaded status=529 next=fallback delay_ms=- reason=\"Overloaded\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=4 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 server_error=2\n\
         upstream b: attempts=2 overloaded=2\n"
    );
}

#[tokio::test]
async fn static_fallback_is_the_last_tier() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
    )
    .await;
    let mut cfg = config(&ch, "max_attempts = 1\n");
    cfg.routes.get_mut("r").unwrap().static_response = Some("We are busy; try again soon.".into());
    let e = Engine::with_seed(cfg, 1).unwrap();
    let out = e.chat(call(false)).await.unwrap();
    assert_eq!(out.response().text(), Some("We are busy; try again soon."));
    assert_eq!(out.meta.tier, keel_engine::Tier::Static);
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=server_error status=500 next=fallback delay_ms=- reason=\"Internal server error\"\n\
         deployment=- fallback_depth=0 tier=Static upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=1 server_error=1\n"
    );
}

#[tokio::test]
async fn sdk_retries_spend_fewer_keel_attempts() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(
        &ch,
        "max_attempts = 3\n[breaker]\nconsecutive_failures = 1000\n",
    );
    let mut c = call(false);
    c.options.sdk_retry_count = 2;
    let out = e.chat(c).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    assert_eq!(attempts(&ch, "a"), 1);
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn fallbacks_off_uses_only_the_first_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(&ch, "max_attempts = 2\n");
    let mut c = call(false);
    c.options.no_fallbacks = true;
    let error = err(&e, c).await;
    assert_eq!(error.status, 502);
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry delay_ms=26 reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#2 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 server_error=2\n\
         upstream b: attempts=0\n"
    );
}

async fn collect(e: &Engine, c: ChatCall) -> (String, Vec<StreamItem>, keel_engine::RequestReport) {
    let mut out = e.chat_stream(c).await.unwrap();
    let mut text = String::new();
    let mut items = Vec::new();
    while let Some(item) = out.items.recv().await {
        if let StreamItem::Chunk(c) = &item {
            for ch in &c.parsed().unwrap().choices {
                if let Some(t) = &ch.delta.content {
                    text.push_str(t);
                }
            }
        }
        items.push(item);
    }
    (text, items, out.meta)
}

#[tokio::test]
async fn stream_faults_before_the_first_byte_are_invisible() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\nsequence = [1]\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let (text, items, meta) = collect(&e, call(true)).await;
    assert!(!text.is_empty());
    assert!(items.iter().all(|i| matches!(i, StreamItem::Chunk(_))));
    assert_eq!(meta.upstream_attempts, 2);
    assert_eq!(attempts(&ch, "a"), 2);
    let finish = items.iter().rev().find_map(|i| match i {
        StreamItem::Chunk(c) => c
            .parsed()
            .unwrap()
            .choices
            .first()
            .and_then(|c| c.finish_reason.clone()),
        _ => None,
    });
    assert!(finish.is_some());
    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry delay_ms=26 reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 server_error=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_resumed_on_the_next_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 4\n",
        "",
    )
    .await;
    // The cut comes after the commit (a small window), so it is resumed.
    let e = engine(&ch, "stream_commit_chars = 8\n");
    let (text, items, meta) = collect(&e, call(true)).await;
    assert_eq!(meta.deployment.as_deref(), Some("a"));
    assert!(
        items.iter().all(|i| matches!(i, StreamItem::Chunk(_))),
        "no error item expected"
    );
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
    // One id for the whole answer, one role chunk, and a finish reason at the end.
    let ids: std::collections::BTreeSet<_> = items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Chunk(c) => Some(c.parsed().unwrap().id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let roles = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Chunk(c) if c.parsed().unwrap().choices.iter().any(|ch| ch.delta.role.is_some())))
        .count();
    assert_eq!(roles, 1);
    assert!(text.split_whitespace().count() > 3, "{text}");

    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 cut_stream=1\n\
         upstream b: attempts=1 ok=1\n"
    );
    assert_eq!(e.stats().stream_resumes, 1);
}

#[tokio::test]
async fn stream_policy_fail_ends_with_an_error_item() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 4\n",
        "",
    )
    .await;
    let e = engine(&ch, "stream_failure = \"fail\"\nstream_commit_chars = 8\n");
    let (_, items, meta) = collect(&e, call(true)).await;
    assert!(
        matches!(items.last(), Some(StreamItem::Error { .. })),
        "{:?}",
        items.last()
    );

    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 cut_stream=1\n\
         upstream b: attempts=0\n"
    );
    assert_eq!(attempts(&ch, "b"), 0);
}

#[tokio::test]
async fn anthropic_deployment_serves_an_openai_stream() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(&ch, "max_attempts = 1\n");
    let (text, items, meta) = collect(&e, call(true)).await;
    assert_eq!(meta.deployment.as_deref(), Some("b"));
    assert!(!text.is_empty());

    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=1 ok=1\n"
    );
    assert!(items.iter().all(|i| matches!(i, StreamItem::Chunk(_))));
}

#[tokio::test]
async fn unknown_route_is_a_404() {
    let ch = chaos("", "").await;
    let e = engine(&ch, "");
    let mut c = call(false);
    c.request_mut().model = "nope".into();
    let error = err(&e, c).await;
    assert_eq!(error.status, 404);
    assert_eq!(error.code.as_deref(), Some("model_not_found"));
    assert!(
        error.message.contains("configured routes: r"),
        "{}",
        error.message
    );
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=nope\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=0\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn the_request_deadline_bounds_every_retry() {
    let ch = chaos("[[upstream.fault]]\nkind = \"hang\"\n", "").await;
    let e = engine(&ch, "");
    let mut c = call(false);
    c.options.timeout = Some(Duration::from_millis(400));
    let t0 = Instant::now();
    let error = err(&e, c).await;
    let took = t0.elapsed();
    assert_eq!(error.status, 504, "{}", error.message);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // What was left of the deadline when the attempt started is measured.
    assert_eq!(
        Report::new(&error.meta)
            .mask("no answer within ")
            .chaos(&ch, &["a", "b"])
            .render(),
        "request_id=\"\" route=r\n\
         attempt a#1 class=timeout status=- next=fallback delay_ms=- reason=\"no answer within N ms; DeadlineExhausted\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 hang=1\n\
         upstream b: attempts=0\n"
    );
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 0));
}

#[tokio::test]
async fn an_inter_token_stall_breaks_the_stream_and_it_resumes() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"slow_tokens\"\ndelay = \"600ms\"\n",
        "",
    )
    .await;
    let e = engine(&ch, "inter_token_timeout = \"150ms\"\n");
    let (text, items, meta) = collect(&e, call(true)).await;
    assert!(
        items.iter().all(|i| matches!(i, StreamItem::Chunk(_))),
        "{:?}",
        items.last()
    );
    assert!(!text.is_empty());
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));

    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 slow_tokens=1\n\
         upstream b: attempts=1 ok=1\n"
    );
    assert_eq!(e.stats().stream_breaks, 1);
}

/// A resumed stream shares the request's total deadline. `a` breaks early;
/// `b` streams slower than the deadline allows. With a fresh deadline per
/// resume, `b` would run a full timeout of its own and then a third stream
/// would start on `a` (up to ~3x the timeout); sharing it, `b` is cut at the
/// request's deadline and nothing more is tried.
#[tokio::test]
async fn a_resumed_stream_shares_the_request_deadline() {
    let ch = chaos(
        "token_delay = \"20ms\"\n[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 4\n",
        "token_delay = \"150ms\"\n",
    )
    .await;
    let e = engine(&ch, "stream_commit_chars = 8\n");
    let mut c = call(true);
    c.options.timeout = Some(Duration::from_millis(1000));
    let t0 = Instant::now();
    let (_, items, meta) = collect(&e, c).await;
    let took = t0.elapsed();
    match items.last() {
        Some(StreamItem::Error { message, .. }) => {
            assert!(message.contains("deadline"), "{message}")
        }
        other => panic!("expected an error item at the deadline, got {other:?}"),
    }
    // One resume (on b), none after the deadline.
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
    assert_eq!(e.stats().stream_resumes, 1);
    assert_eq!(e.stats().stream_breaks, 2);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 cut_stream=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

/// The streamed twin of the hinted rate-limit retry: the 429 comes before
/// the first byte, Keel waits the hint and retries the same deployment, and
/// the client reads one answer.
#[tokio::test]
async fn a_rate_limited_stream_waits_the_hinted_time_then_retries_same_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1]\nretry_after = \"200ms\"\nheader_style = \"ms\"\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let t0 = Instant::now();
    let (text, meta) = streamed(&e, call(true)).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "waited only {waited:?}"
    );
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    assert_eq!(
        text,
        "Consectetur cupidatat minim sunt anchor sunt velit. Velit sint incididunt velit excepteur magna commodo irure in esse culpa. Ipsum deserunt laborum consectetur dolor velit et quis. Ut labore enim eiusmod et exercitation mollit."
    );
    assert_eq!(
        report(&meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=retry delay_ms=200 reason=\"Rate limit reached for gpt-test in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 200ms. Visit https://platform.openai.com/account/rate-limits to learn more.; hint retry-after-ms\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 rate_limit=1\n\
         upstream b: attempts=0\n"
    );
}

/// The streamed twin of budget exhaustion: `a` is down and the budget
/// allows no retry, so the stream is served by `b` (which answered well
/// before, so a fallback to it is not refused) after one attempt on `a`.
#[tokio::test]
async fn an_exhausted_budget_still_falls_over_on_a_stream() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(
        &ch,
        "max_attempts = 3\n[breaker]\nconsecutive_failures = 1000\n[retry_budget]\nratio = 0.0\nmin_per_sec = 0\nwindow = \"60s\"\n[routes.only-b]\nchain = [\"b\"]\n",
    );
    // b answers well: five streams straight to it (at least three
    // discounted answers make a deployment healthy).
    let mut warm_reports = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let mut c = call(true);
        c.request_mut().model = "only-b".into();
        let (text, meta) = streamed(&e, c).await;
        warm_reports.push(Report::new(&meta).render());
        warm.push(text);
    }
    warm.dedup();
    let (text, meta) = streamed(&e, call(true)).await;
    assert_eq!(e.stats().budget_exhausted, 1);
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 6));
    assert_eq!(
        format!("{}\n== on r\n{text}", warm.join("\n")),
        "Et aliquip esse dolore keel ex keel. Esse elit officia quis incididunt est commodo velit.\n\
         == on r\n\
         Et aliquip esse dolore keel ex keel. Esse elit officia quis incididunt est commodo velit."
    );
    assert_eq!(
        runs(&warm_reports) + "== on r\n" + &report(&meta, &ch, &["a", "b"]),
        "== requests 1-5\n\
         request_id=\"\" route=only-b\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == on r\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry delay_ms=26 reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"retry budget exhausted\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=6 ok=6\n"
    );
}
