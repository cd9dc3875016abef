//! Key pools and slow start (issue 7, step 3) against `keel chaos` on
//! loopback: a 429 on one key is followed by an attempt with another key of
//! the same deployment, not by a fallback; a single-key deployment falls
//! over; a deployment whose breaker closed again is ramped back in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::call::RequestReport;
use keel_engine::config::{Config, ConfigError};
use keel_engine::{ChatCall, Engine};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{report, runs};
use common::stream::streamed;

/// Two OpenAI-style upstreams `a` and `b`; `a_extra` is TOML for `a`.
async fn chaos(a_extra: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a_extra}\n[[upstream]]\nname = \"b\"\nkind = \"openai\"\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Deployments `a` and `b` (route `r` = [a, b]); `keys` is the TOML of provider a's keys.
fn engine(ch: &ChaosHandle, keys: &str, extra: &str) -> Engine {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
{keys}
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
[policy]
max_attempts = 1
backoff_base = "5ms"
attempt_timeout = "2s"
{extra}
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    let config = Config::from_toml_str(&text, "test.toml", &|_| None).unwrap();
    Engine::with_seed(config, 42).unwrap()
}

fn request() -> ChatRequest {
    let mut r = ChatRequest::new("r", vec![Message::user("Say something.")]);
    r.max_tokens = Some(50);
    r
}

async fn meta(e: &Engine) -> RequestReport {
    match e.chat(ChatCall::openai(request())).await {
        Ok(o) => o.meta,
        Err(err) => panic!("request failed: {}", err.message),
    }
}

fn attempts(ch: &ChaosHandle, name: &str) -> u64 {
    ch.stats(name).map(|s| s.attempts).unwrap_or(0)
}

const FAULT_429: &str =
    "[[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1]\nretry_after = \"5s\"\n";

#[tokio::test]
async fn a_429_on_one_key_switches_key_before_any_fallback() {
    let mut reports = Vec::new();
    for fault in [
        FAULT_429.to_string(),
        "[[upstream.fault]]\nkind = \"quota_exhausted\"\nsequence = [1]\n".to_string(),
    ] {
        let ch = chaos(&fault).await;
        let e = engine(
            &ch,
            "api_keys = [\"sk-pool-key-one\", \"sk-pool-key-two\"]",
            "",
        );
        let m = meta(&e).await;
        assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0), "{m:?}");
        assert_eq!(m.deployment.as_deref(), Some("a"));
        assert_eq!(m.fallback_depth, 0);
        let [first, second] = &m.attempts[..] else {
            panic!("{:?}", m.attempts)
        };
        assert_eq!((first.deployment.as_str(), first.next), ("a", "key_switch"));
        assert!(
            first
                .reason
                .contains("key #0 rate limited, switching to key #1"),
            "{}",
            first.reason
        );
        assert_eq!((second.deployment.as_str(), second.next), ("a", "ok"));
        assert_eq!(second.reason, "answered (key #1)");
        // Keys never show, by index only.
        let all = format!("{m:?}");
        assert!(!all.contains("sk-pool-key"), "{all}");
        reports.push(report(&m, &ch, &["a", "b"]));

        // The next request starts on the key that is not cooling.
        let m = meta(&e).await;
        assert_eq!(m.attempts.len(), 1, "{m:?}");
        assert_eq!(m.attempts[0].reason, "answered (key #1)");
        reports.push(report(&m, &ch, &["a", "b"]));
        assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (3, 0));
    }
    assert_eq!(
        runs(&reports),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=key_switch delay_ms=- reason=\"Rate limit reached for m in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 5s. Visit https://platform.openai.com/account/rate-limits to learn more.; key #0 rate limited, switching to key #1\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered (key #1)\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 rate_limit=1\n\
         upstream b: attempts=0\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered (key #1)\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 ok=2 rate_limit=1\n\
         upstream b: attempts=0\n\
         == request 3\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=quota_exhausted status=429 next=key_switch delay_ms=- reason=\"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.; key #0 rate limited, switching to key #1\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered (key #1)\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 quota_exhausted=1\n\
         upstream b: attempts=0\n\
         == request 4\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered (key #1)\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 ok=2 quota_exhausted=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn a_single_key_falls_over_to_the_next_deployment() {
    let ch = chaos(FAULT_429).await;
    let e = engine(&ch, "api_key = \"sk-only-key\"", "");
    let m = meta(&e).await;
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1), "{m:?}");
    assert_eq!(m.deployment.as_deref(), Some("b"));
    assert_eq!(m.attempts[0].next, "fallback");
    assert!(m.attempts.iter().all(|a| a.next != "key_switch"));
    assert_eq!(
        report(&m, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=fallback delay_ms=- reason=\"Rate limit reached for m in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 5s. Visit https://platform.openai.com/account/rate-limits to learn more.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 rate_limit=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn key_switches_are_bounded_by_the_pool() {
    // Every attempt on `a` is rate limited: two keys -> two attempts, then fallback.
    let ch = chaos("[[upstream.fault]]\nkind = \"rate_limit\"\nretry_after = \"5s\"\n").await;
    let e = engine(&ch, "api_keys = [\"k1\", \"k2\"]", "");
    let m = meta(&e).await;
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 1), "{m:?}");
    assert_eq!(m.deployment.as_deref(), Some("b"));
    let nexts: Vec<&str> = m.attempts.iter().map(|a| a.next).collect();
    assert_eq!(nexts, ["key_switch", "fallback", "ok"]);
    assert_eq!(
        report(&m, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=key_switch delay_ms=- reason=\"Rate limit reached for m in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 5s. Visit https://platform.openai.com/account/rate-limits to learn more.; key #0 rate limited, switching to key #1\"\n\
         attempt a#2 class=rate_limited status=429 next=fallback delay_ms=- reason=\"Rate limit reached for m in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 5s. Visit https://platform.openai.com/account/rate-limits to learn more.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 rate_limit=2\n\
         upstream b: attempts=1 ok=1\n"
    );
}

/// The deployment of the request's first upstream attempt.
async fn first(e: &Engine) -> String {
    let m = meta(e).await;
    m.attempts
        .iter()
        .find(|a| a.attempt > 0)
        .map(|a| a.deployment.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn slow_start_holds_back_a_deployment_whose_breaker_just_closed() {
    let mut reports = Vec::new();
    for (slow_start, want_a) in [("\"0s\"", 40..=40), ("\"1h\"", 0..=2)] {
        let ch = chaos("[[upstream.fault]]\nkind = \"server_error\"\nsequence = [1]\n").await;
        let breaker = format!(
            "[breaker]\nconsecutive_failures = 1\nopen_for = \"50ms\"\nhalf_open_probes = 1\nslow_start = {slow_start}\n"
        );
        let e = engine(&ch, "", &breaker);
        // Fails on a (breaker opens), answered by b.
        let m = meta(&e).await;
        assert_eq!(m.deployment.as_deref(), Some("b"));
        reports.push(report(&m, &ch, &["a", "b"]));
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        // The half-open probe succeeds: the breaker closes again.
        assert_eq!(first(&e).await, "a");
        let mut a = 0;
        for _ in 0..40 {
            if first(&e).await == "a" {
                a += 1;
            }
        }
        assert!(
            want_a.contains(&a),
            "slow_start {slow_start}: a first {a} of 40"
        );
    }
    assert_eq!(
        runs(&reports),
        "== requests 1-2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

fn err(extra: &str) -> ConfigError {
    let text = format!(
        "[providers.p]\nkind = \"openai\"\n{extra}\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n"
    );
    match Config::from_toml_str(&text, "keel.toml", &|k| {
        (k == "K1").then(|| "sk-env-one".to_string())
    }) {
        Ok(_) => panic!("config unexpectedly valid: {extra}"),
        Err(e) => e,
    }
}

#[test]
fn key_pool_config_errors_name_the_key() {
    assert_eq!(
        err("api_keys = []").to_string(),
        "keel.toml: providers.p.api_keys: expected at least one key, got []"
    );
    assert_eq!(
        err("api_keys = [\"${K1}\", \"${K2}\"]").to_string(),
        "keel.toml: providers.p.api_keys[1]: environment variable K2 is not set"
    );
    assert_eq!(
        err("api_keys = [\"${K1}\", \"\"]").to_string(),
        "keel.toml: providers.p.api_keys[1]: expected a non-empty key, got \"\""
    );
    let dup = err("api_key = \"${K1}\"\napi_keys = [\"${K1}\"]").to_string();
    assert_eq!(
        dup,
        "keel.toml: providers.p.api_keys[0]: expected a key not already in the pool, got a duplicate"
    );
    assert_eq!(
        err("[breaker]\nslow_start = \"soon\"").to_string(),
        "keel.toml: breaker.slow_start: expected a duration like \"30s\" or \"250ms\", got \"soon\""
    );
}

#[test]
fn key_pool_and_slow_start_load() {
    let text = "[providers.p]\nkind = \"openai\"\napi_key = \"${K1}\"\napi_keys = [\"sk-b\", \"sk-c\"]\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n[breaker]\nslow_start = \"30s\"\n";
    let c = Config::from_toml_str(text, "keel.toml", &|k| {
        (k == "K1").then(|| "sk-env-one".to_string())
    })
    .unwrap();
    let d = &c.deployments[0];
    assert_eq!(d.api_keys.len(), 3);
    assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-env-one");
    assert_eq!(c.slow_start, Some(std::time::Duration::from_secs(30)));
    let described = c.describe();
    assert!(described.contains("(+2 more in the pool)"), "{described}");
    assert!(!described.contains("sk-env-one"), "{described}");
}

/// The streamed twin of the key switch: the 429 comes before the first
/// byte, so the client reads one answer, from the second key.
#[tokio::test]
async fn a_429_on_one_key_switches_key_on_a_stream() {
    let ch = chaos(FAULT_429).await;
    let e = engine(
        &ch,
        "api_keys = [\"sk-pool-key-one\", \"sk-pool-key-two\"]",
        "",
    );
    let mut r = request();
    r.stream = Some(true);
    let (text, m) = streamed(&e, ChatCall::openai(r)).await;
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0), "{m:?}");
    assert_eq!(
        text,
        "Adipiscing incididunt in exercitation reprehenderit. Aliquip fugiat voluptate fugiat cupidatat mollit nulla quis ullamco. Minim sunt sunt non ut id labore sit et ullamco. Irure id eiusmod."
    );
    assert_eq!(
        report(&m, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=key_switch delay_ms=- reason=\"Rate limit reached for m in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 5s. Visit https://platform.openai.com/account/rate-limits to learn more.; key #0 rate limited, switching to key #1\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered (key #1)\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 rate_limit=1\n\
         upstream b: attempts=0\n"
    );
}
