//! Observability of the HTTP front: `/metrics` speaks the exposition
//! format and the admin token guards the admin endpoints. (Logs and
//! secrets: `tests/logs.rs`, alone in its binary for a global subscriber.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod obs;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use keel_engine::Engine;
use keel_server::{app, AppState};
use obs::*;
use serde_json::Value;
use tower::ServiceExt;

#[tokio::test]
async fn admin_token_guards_the_admin_endpoints() {
    let ch = chaos().await;
    let guarded = Engine::with_seed(config(&ch, true), 1).unwrap();
    let good = format!("Bearer {ADMIN_TOKEN}");
    for path in ["/admin", "/admin/status"] {
        let (s, b) = call(&guarded, "GET", path, "", &[]).await;
        assert_eq!(s, 401, "{path} without a token: {b}");
        assert!(b.contains("Authorization: Bearer"), "{b}");
        let (s, _) = call(
            &guarded,
            "GET",
            path,
            "",
            &[("authorization", "Bearer wrong")],
        )
        .await;
        assert_eq!(s, 401, "{path} with a wrong token");
        let (s, _) = call(&guarded, "GET", path, "", &[("authorization", ADMIN_TOKEN)]).await;
        assert_eq!(s, 401, "{path} without the Bearer scheme");
        let (s, _) = call(&guarded, "GET", path, "", &[("authorization", &good)]).await;
        assert_eq!(s, 200, "{path} with the token");
    }
    // The scraper needs no token.
    let (s, m) = call(&guarded, "GET", "/metrics", "", &[]).await;
    assert_eq!(s, 200);
    assert!(m.contains("# TYPE keel_attempts counter"), "{m}");

    // Without a configured token the admin endpoints are open.
    let open = Engine::with_seed(config(&ch, false), 1).unwrap();
    let (s, b) = call(&open, "GET", "/admin/status", "", &[]).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["deployments"][0]["name"], "a");
    assert_eq!(v["deployments"][0]["breaker"], "closed");
    assert!(
        v["deployments"][0]["limiter_headroom"]["requests"].is_number(),
        "{v}"
    );
    assert_eq!(v["routes"][0]["name"], "broken");
    let (s, page) = call(&open, "GET", "/admin", "", &[]).await;
    assert_eq!(s, 200);
    assert!(page.contains("/admin/status") && page.contains("sparkline"));
}

#[tokio::test]
async fn metrics_endpoint_speaks_the_exposition_format() {
    let ch = chaos().await;
    let e = Engine::with_seed(config(&ch, false), 2).unwrap();
    let chat = r#"{"model":"r","messages":[{"role":"user","content":"hello"}],"max_tokens":200}"#;
    let (s, _) = call(&e, "POST", "/v1/chat/completions", chat, &[]).await;
    assert_eq!(s, 200);
    let stream = chat.replace("{\"model\"", "{\"stream\":true,\"model\"");
    let (s, b) = call(&e, "POST", "/v1/chat/completions", &stream, &[]).await;
    assert_eq!(s, 200);
    assert!(b.contains("data: [DONE]"), "{b}");
    let resp = app(AppState::new(e.clone()))
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for needle in [
        "keel_requests_total{route=\"r\",tenant=\"default\",api=\"openai\",outcome=\"ok\"} 2",
        "keel_attempts_total{deployment=\"a\",class=\"server_error\"} 1",
        "keel_attempts_total{deployment=\"a\",class=\"ok\"} 2",
        "keel_request_duration_seconds_count{route=\"r\",stream=\"false\"} 1",
        "keel_request_duration_seconds_count{route=\"r\",stream=\"true\"} 1",
        "keel_time_to_first_token_seconds_count{route=\"r\"} 1",
        "keel_retries_total{class=\"server_error\"} 1",
        "keel_breaker_state{deployment=\"a\"} 0",
        "keel_in_flight{deployment=\"a\"} 0",
        "# TYPE keel_request_duration_seconds histogram",
        "# TYPE keel_time_to_first_token_seconds histogram",
        "# TYPE keel_limiter_wait_seconds histogram",
        "# TYPE keel_cost_usd counter",
        "# TYPE keel_retry_budget_available gauge",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}
