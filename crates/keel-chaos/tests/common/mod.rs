//! Helpers shared by the integration tests: a server per test on port 0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use serde_json::{json, Value};

/// Start a server for a TOML scenario.
pub async fn start(toml: &str) -> ChaosHandle {
    start_seeded(toml, 7).await
}

pub async fn start_seeded(toml: &str, seed: u64) -> ChaosHandle {
    let scenario = Scenario::from_toml_str(toml, "test.toml").unwrap();
    ChaosServer::start(scenario, seed, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// One OpenAI upstream `o` and one Anthropic upstream `a`, plus extra TOML for `o`'s faults.
pub fn both(faults_for_o: &str) -> String {
    format!(
        "[[upstream]]\nname = \"o\"\nkind = \"openai\"\n{faults_for_o}\n[[upstream]]\nname = \"a\"\nkind = \"anthropic\"\n"
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn openai_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": stream,
    })
}

pub fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": stream,
    })
}

pub async fn post_openai(
    h: &ChaosHandle,
    name: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}/chat/completions", h.base_url(name)))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
}

pub async fn post_anthropic(
    h: &ChaosHandle,
    name: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}/messages", h.base_url(name)))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
}

/// Data payloads of an SSE body (`data: ...` lines).
pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Read a streamed body chunk by chunk; returns what arrived and whether it ended in an error.
pub async fn read_until_end(mut resp: reqwest::Response) -> (String, bool) {
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
}
