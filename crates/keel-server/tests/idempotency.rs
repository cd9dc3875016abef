//! `Idempotency-Key` through the HTTP front against `keel chaos`: 50
//! concurrent duplicates cause one upstream attempt and get one body; a
//! completed key is replayed with its status and headers; the same key
//! with another body is a 422 in the API's error shape; two gateways on one
//! Redis share the single flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use keel_store::testing::RedisServer;
use tower::ServiceExt;

async fn chaos() -> ChaosHandle {
    // Slow enough that the duplicates arrive while the first is in flight.
    let toml = "[[upstream]]\nname = \"a\"\nkind = \"openai\"\nlatency = \"300ms\"\n";
    let scenario = Scenario::from_toml_str(toml, "t.toml").unwrap();
    ChaosServer::start(scenario, 3, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(ch: &ChaosHandle, extra: &str) -> Config {
    let text = format!(
        "[providers.a]\nkind = \"openai\"\nbase_url = \"{}\"\n[deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\n[routes.r]\nchain = [\"a\"]\n{extra}\n",
        ch.base_url("a"),
    );
    Config::from_toml_str(&text, "t.toml", &|_| None).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

async fn send(e: &Engine, path: &str, body: &str, key: &str) -> Answer {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app(AppState::new(e.clone())).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

const BODY: &str = r#"{"model":"r","messages":[{"role":"user","content":"Write a haiku."}]}"#;
const OTHER: &str = r#"{"model":"r","messages":[{"role":"user","content":"Write a limerick."}]}"#;

fn attempts(ch: &ChaosHandle) -> u64 {
    ch.stats("a").map(|s| s.attempts).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_duplicates_make_one_upstream_attempt() {
    let ch = chaos().await;
    let e = Engine::with_seed(config(&ch, ""), 1).unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { send(&e, "/v1/chat/completions", BODY, "key-50").await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        bodies.push(a.body);
    }
    assert_eq!(attempts(&ch), 1, "exactly one upstream attempt");
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "all 50 got the same body"
    );
    let v: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string());
}

#[tokio::test]
async fn completed_key_is_replayed_with_status_body_and_headers() {
    let ch = chaos().await;
    let e = Engine::with_seed(config(&ch, ""), 1).unwrap();
    let first = send(&e, "/v1/chat/completions", BODY, "k1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = send(&e, "/v1/chat/completions", BODY, "k1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    for h in [
        "content-type",
        "x-keel-request-id",
        "x-keel-deployment",
        "x-keel-attempts",
    ] {
        assert_eq!(again.headers.get(h), first.headers.get(h), "{h}");
    }
    assert_eq!(attempts(&ch), 1);
    // Another key is another request.
    let other = send(&e, "/v1/chat/completions", BODY, "k2").await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(attempts(&ch), 2);
}

#[tokio::test]
async fn same_key_with_another_body_is_422_in_the_api_shape() {
    let ch = chaos().await;
    let e = Engine::with_seed(config(&ch, ""), 1).unwrap();
    assert_eq!(
        send(&e, "/v1/chat/completions", BODY, "k").await.status,
        StatusCode::OK
    );
    let a = send(&e, "/v1/chat/completions", OTHER, "k").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["error"]["code"], "idempotency_key_reused");
    assert_eq!(
        v["error"]["message"],
        "Idempotency-Key \"k\" was already used with a different request body"
    );
    // Anthropic clients get Anthropic's shape.
    let anth = r#"{"model":"r","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        send(&e, "/v1/messages", anth, "ka").await.status,
        StatusCode::OK
    );
    let a = send(&e, "/v1/messages", BODY, "ka").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(attempts(&ch), 2);
}

#[tokio::test]
async fn streamed_answer_is_recorded_and_replayed() {
    let ch = chaos().await;
    let e = Engine::with_seed(config(&ch, ""), 1).unwrap();
    let body = r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"Stream."}]}"#;
    let first = send(&e, "/v1/chat/completions", body, "s").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&first.body).ends_with("data: [DONE]\n\n"));
    let again = send(&e, "/v1/chat/completions", body, "s").await;
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["content-type"], first.headers["content-type"]);
    assert_eq!(attempts(&ch), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_the_single_flight() {
    let server = RedisServer::start().expect("redis-server (run scripts/test to install it)");
    let ch = chaos().await;
    let extra = format!("[store]\nredis = \"{}\"\ntimeout = \"1s\"\n", server.url());
    let e1 = Engine::connect(config(&ch, &extra)).await.unwrap();
    let e2 = Engine::connect(config(&ch, &extra)).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let e = if i % 2 == 0 { e1.clone() } else { e2.clone() };
            tokio::spawn(async move { send(&e, "/v1/chat/completions", BODY, "shared").await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        bodies.push(a.body);
    }
    assert_eq!(attempts(&ch), 1);
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}
