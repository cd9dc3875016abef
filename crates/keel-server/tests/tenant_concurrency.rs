//! Per-tenant concurrency (`[[tenants]] max_concurrency`) over HTTP against
//! `keel chaos`: a tenant at its limit gets 429 with `Retry-After` in its
//! API's shape and no upstream call, while another tenant is served; a
//! stream holds its slot until it ends, and a client that leaves frees its
//! slot. Refusals are counted in `keel_shed_total{reason="tenant_concurrency"}`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use serde_json::{json, Value};

/// `h` hangs every request; `s` streams slowly; `a` is healthy.
async fn chaos() -> ChaosHandle {
    let scenario = Scenario::from_toml_str(
        r#"
[[upstream]]
name = "h"
kind = "openai"
[[upstream.fault]]
kind = "hang"
[[upstream]]
name = "s"
kind = "openai"
token_delay = "50ms"
[[upstream]]
name = "a"
kind = "openai"
"#,
        "t.toml",
    )
    .unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Routes `hang`, `slow` and `r` on the three upstreams; tenant `alpha` may
/// run 2 requests at once, `beta` 1.
async fn keel(ch: &ChaosHandle) -> (String, Engine) {
    let mut text = String::new();
    for (name, route) in [("h", "hang"), ("s", "slow"), ("a", "r")] {
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"m\"\n\
             [routes.{route}]\nchain = [\"{name}\"]\n",
            ch.base_url(name)
        ));
    }
    text.push_str(
        r#"
[policy]
max_attempts = 1
timeout = "30s"
attempt_timeout = "30s"
[[tenants]]
name = "alpha"
token = "tok-alpha"
max_concurrency = 2
[[tenants]]
name = "beta"
token = "tok-beta"
max_concurrency = 1
"#,
    );
    let config = Config::from_toml_str(&text, "keel.toml", &|_| None).unwrap();
    let engine = Engine::with_seed(config, 7).unwrap();
    let addr = keel_server::spawn(engine.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (format!("http://{addr}"), engine)
}

fn openai(base: &str, token: &str, model: &str, stream: bool) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({"model": model, "stream": stream, "max_tokens": 50,
            "messages": [{"role": "user", "content": "Say something."}]}))
}

fn attempts(ch: &ChaosHandle, name: &str) -> u64 {
    ch.stats(name).map(|s| s.attempts).unwrap_or(0)
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn shed_count(engine: &Engine) -> u64 {
    let text = engine.render_metrics();
    text.lines()
        .find_map(|l| l.strip_prefix("keel_shed_total{reason=\"tenant_concurrency\"} "))
        .unwrap_or_else(|| panic!("no tenant_concurrency shed metric in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_concurrency_limit_gets_429_while_another_is_served() {
    let ch = chaos().await;
    let (base, engine) = keel(&ch).await;

    // alpha fills its two slots: a request that hangs upstream, and a stream
    // whose first chunk has arrived and which is still running.
    let hanging = tokio::spawn(openai(&base, "tok-alpha", "hang", false).send());
    until("the hanging request reached upstream", || {
        attempts(&ch, "h") == 1
    })
    .await;
    let mut stream = openai(&base, "tok-alpha", "slow", true)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some());

    // A third request from alpha: 429 with Retry-After, nothing sent upstream.
    let t = Instant::now();
    let resp = openai(&base, "tok-alpha", "r", false).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_exceeded", "{body}");
    assert_eq!(
        body["error"]["code"], "tenant_concurrency_exceeded",
        "{body}"
    );
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    // The same in the Anthropic API's shape.
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "tok-alpha")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "r", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(attempts(&ch, "a"), 0, "a refused request reached upstream");
    assert_eq!(shed_count(&engine), 2);

    // beta is not affected by alpha's limit.
    let resp = openai(&base, "tok-beta", "r", false).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(attempts(&ch, "a"), 1);

    // The stream held its slot until it ended; then alpha is served again.
    while stream.chunk().await.unwrap().is_some() {}
    let t = Instant::now();
    loop {
        let resp = openai(&base, "tok-alpha", "r", false).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(t.elapsed() < Duration::from_secs(5), "slot never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A client that leaves frees its slot: with the hanging request gone,
    // alpha can run two again.
    hanging.abort();
    let _ = hanging.await;
    let t = Instant::now();
    loop {
        let one = openai(&base, "tok-alpha", "slow", true)
            .send()
            .await
            .unwrap();
        let two = openai(&base, "tok-alpha", "r", false).send().await.unwrap();
        if one.status() == 200 && two.status() == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "slot of a gone client never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
