//! The HTTP front: bad input gets the API's own error shape, answers carry
//! the `x-keel-*` headers, and both APIs stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn chaos(a_faults: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a_faults}\n[[upstream]]\nname = \"b\"\nkind = \"anthropic\"\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "t.toml").unwrap();
    ChaosServer::start(scenario, 3, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn engine(ch: &ChaosHandle, extra: &str) -> Engine {
    let text = format!(
        r#"
[server]
max_body_bytes = 2000
[providers.a]
kind = "openai"
base_url = "{}"
[providers.b]
kind = "anthropic"
base_url = "{}"
[deployments.a]
provider = "a"
model = "gpt-test"
[deployments.b]
provider = "b"
model = "claude-test"
[routes.r]
chain = ["a", "b"]
[policy]
backoff_base = "5ms"
{extra}
"#,
        ch.base_url("a"),
        ch.base_url("b")
    );
    Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        5,
    )
    .unwrap()
}

async fn send(
    e: &Engine,
    path: &str,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(AppState::new(e.clone()))
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

fn assert_openai_error(v: &Value, needle: &str) {
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OpenAI error: {v}"));
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

fn assert_anthropic_error(v: &Value, needle: &str) {
    assert_eq!(v["type"], "error", "{v}");
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an Anthropic error: {v}"));
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

#[tokio::test]
async fn bad_input_gets_the_openai_error_shape() {
    let ch = chaos("").await;
    let e = engine(&ch, "");
    let (s, _, v) = send(&e, "/v1/chat/completions", "{not json", &[]).await;
    assert_eq!(s, 400);
    assert_openai_error(&v, "not valid JSON");
    let (s, _, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 400);
    assert_openai_error(&v, "missing field `model`");
    let (s, _, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 404);
    assert_openai_error(&v, "The model `nope` does not exist");
    assert_eq!(v["error"]["code"], "model_not_found");
    let big = json!({"model": "r", "messages": [{"role": "user", "content": "x".repeat(5000)}]})
        .to_string();
    let (s, _, v) = send(&e, "/v1/chat/completions", big, &[]).await;
    assert_eq!(s, 413);
    assert_openai_error(&v, "larger than the limit of 2000 bytes");
    let (s, _, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#,
        &[("x-keel-max-attempts", "lots")],
    )
    .await;
    assert_eq!(s, 400);
    assert_openai_error(
        &v,
        "header x-keel-max-attempts: expected an integer in 1..=20, got \"lots\"",
    );
    assert_eq!(
        ch.stats("a").unwrap().attempts,
        0,
        "bad input must not reach the upstream"
    );
}

#[tokio::test]
async fn bad_input_gets_the_anthropic_error_shape() {
    let ch = chaos("").await;
    let e = engine(&ch, "");
    let (s, _, v) = send(&e, "/v1/messages", "{not json", &[]).await;
    assert_eq!(s, 400);
    assert_anthropic_error(&v, "not valid JSON");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, _, v) = send(
        &e,
        "/v1/messages",
        r#"{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 400);
    assert_anthropic_error(&v, "missing field `model`");
    let (s, _, v) = send(
        &e,
        "/v1/messages",
        r#"{"model":"nope","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 404);
    assert_anthropic_error(&v, "The model `nope` does not exist");
    assert_eq!(v["error"]["type"], "not_found_error");
    let big = json!({"model": "r", "max_tokens": 10, "messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string();
    let (s, _, v) = send(&e, "/v1/messages", big, &[]).await;
    assert_eq!(s, 413);
    assert_anthropic_error(&v, "larger than the limit");
    assert_eq!(v["error"]["type"], "request_too_large");
}

#[tokio::test]
async fn answers_carry_keel_headers() {
    let ch = chaos("[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n").await;
    let e = engine(&ch, "max_attempts = 2\n");
    let (s, h, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h["x-keel-attempts"], "3");
    assert_eq!(h["x-keel-deployment"], "b");
    assert_eq!(h["x-keel-fallback-depth"], "1");
    assert!(h.contains_key("x-keel-cache"));
    // keel-<hex prefix>-<sequence number>
    let id = h["x-keel-request-id"].to_str().unwrap();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!(parts[0], "keel");
    assert!(u64::from_str_radix(parts[1], 16).is_ok(), "{id}");
    assert!(parts[2].parse::<u64>().is_ok(), "{id}");
    assert!(h["x-keel-cost-usd"]
        .to_str()
        .unwrap()
        .parse::<f64>()
        .is_ok());
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "r");
}

#[tokio::test]
async fn upstream_failure_lists_attempts_in_the_error_body_with_retry_after() {
    let ch = chaos("[[upstream.fault]]\nkind = \"overloaded\"\n").await;
    let e = engine(
        &ch,
        "max_attempts = 1\n[routes.r.policy]\nmax_attempts = 1\n",
    );
    ch.set_faults(
        "b",
        keel_chaos::FaultPlan::from_json_str(r#"{"faults":[{"kind":"overloaded"}]}"#).unwrap(),
    )
    .unwrap();
    let (s, h, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(h.contains_key("retry-after"));
    // Transient: the client's own retry may help.
    assert_eq!(h["x-should-retry"], "true");
    let attempts = v["error"]["keel"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["class"], "overloaded");
    assert_eq!(attempts[0]["deployment"], "a");
    let (s, _, v) = send(
        &e,
        "/v1/messages",
        r#"{"model":"r","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 529, "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn anthropic_api_non_streaming_and_streaming() {
    let ch = chaos("").await;
    let e = engine(&ch, "");
    let (s, _, v) = send(
        &e,
        "/v1/messages",
        r#"{"model":"r","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert!(
        v["content"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    let (s, h, v) = send(&e, "/v1/messages", r#"{"model":"r","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/event-stream");
    let text = v.as_str().unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: content_block_delta"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn openai_stream_ends_with_done_or_an_error_event_never_both() {
    let ch = chaos("[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 3\n").await;
    // The cut comes after the commit (a one-character window).
    let e = engine(&ch, "stream_failure = \"fail\"\nstream_commit_chars = 1\n");
    let (s, _, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let text = v.as_str().unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().lines().last().unwrap();
    assert!(last.starts_with("data: {\"error\""), "{text}");
    ch.set_faults("a", keel_chaos::FaultPlan::none()).unwrap();
    let (_, _, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    let text = v.as_str().unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

#[tokio::test]
async fn models_lists_routes() {
    let ch = chaos("").await;
    let e = engine(&ch, "");
    let resp = app(AppState::new(e))
        .oneshot(Request::get("/v1/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["data"][0]["id"], "r");
}

#[tokio::test]
async fn a_request_every_deployment_refuses_tells_the_sdk_not_to_retry() {
    let ch = chaos("[[upstream.fault]]\nkind = \"bad_request\"\n").await;
    let e = engine(&ch, "max_attempts = 1\n");
    ch.set_faults(
        "b",
        keel_chaos::FaultPlan::from_json_str(r#"{"faults":[{"kind":"auth"}]}"#).unwrap(),
    )
    .unwrap();
    let (s, h, v) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert!(s.is_client_error() || s.is_server_error(), "{s} {v}");
    assert_eq!(h["x-should-retry"], "false", "{s} {v}");
    assert_eq!(ch.stats("a").unwrap().attempts, 1);
    assert!(ch.stats("b").unwrap().attempts <= 1);
    // A request Keel itself refuses (no such route) is not worth retrying.
    let (s, h, _) = send(
        &e,
        "/v1/chat/completions",
        r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(h["x-should-retry"], "false");
}
