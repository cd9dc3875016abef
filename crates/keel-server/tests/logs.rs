//! Every log line is JSON, there is one event per attempt with what an
//! operator needs, and no secret (provider keys, the admin token) ever
//! appears in the logs, `/metrics`, `/admin/status`, the `/admin` page or
//! an error body. Alone in its test binary: it installs a global
//! subscriber that captures the events of every thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod obs;

use keel_engine::Engine;
use obs::*;
use serde_json::Value;

#[tokio::test]
async fn logs_are_json_and_no_secret_leaks_anywhere() {
    let buf = Buffer::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let ch = chaos().await;
    let e = Engine::with_seed(config(&ch, true), 11).unwrap();
    let mut bodies = Vec::new();
    let chat = r#"{"model":"r","messages":[{"role":"user","content":"hello"}],"max_tokens":200}"#;
    let (s, b) = call(&e, "POST", "/v1/chat/completions", chat, &[]).await;
    assert_eq!(s, 200, "{b}");
    bodies.push(b);
    let stream = r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"hello"}],"max_tokens":200}"#;
    let (s, b) = call(&e, "POST", "/v1/chat/completions", stream, &[]).await;
    assert_eq!(s, 200, "{b}");
    bodies.push(b);
    let msgs = r#"{"model":"r","max_tokens":200,"messages":[{"role":"user","content":"hello"}]}"#;
    let (s, b) = call(&e, "POST", "/v1/messages", msgs, &[]).await;
    assert_eq!(s, 200, "{b}");
    bodies.push(b);
    // The broken route: the upstream refuses the key (401) twice, which
    // opens its breaker; then the breaker refuses the third.
    for api in ["/v1/chat/completions", "/v1/messages"] {
        for _ in 0..2 {
            let body = chat.replace("\"r\"", "\"broken\"");
            let (s, b) = call(&e, "POST", api, &body, &[]).await;
            assert!(s.is_client_error() || s.is_server_error(), "{s} {b}");
            bodies.push(b);
        }
    }
    let (s, b) = call(&e, "POST", "/v1/chat/completions", "{nope", &[]).await;
    assert_eq!(s, 400);
    bodies.push(b);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (s, metrics) = call(&e, "GET", "/metrics", "", &[]).await;
    assert_eq!(s, 200);
    let (s, status) = call(&e, "GET", "/admin/status", "", &[("authorization", &auth)]).await;
    assert_eq!(s, 200, "{status}");
    let (s, page) = call(&e, "GET", "/admin", "", &[("authorization", &auth)]).await;
    assert_eq!(s, 200);

    for (i, b) in bodies.iter().enumerate() {
        assert_no_secret(&format!("response body #{i}"), b);
    }
    assert_no_secret("/metrics", &metrics);
    assert_no_secret("/admin/status", &status);
    assert_no_secret("/admin", &page);
    assert!(
        metrics.contains("keel_attempts_total{deployment=\"c\",class=\"auth\"} 2"),
        "{metrics}"
    );
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["deployments"][2]["breaker"], "open", "{status}");

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let events: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.len() > 10, "only {} events", events.len());
    assert_no_secret("the logs", &logs);

    // One event per attempt, with everything an operator needs.
    let msg = |ev: &Value| {
        field(ev, "message")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let failed: Vec<&Value> = events
        .iter()
        .filter(|ev| msg(ev).as_deref() == Some("attempt failed"))
        .collect();
    let retried = failed
        .iter()
        .find(|ev| field(ev, "next").and_then(Value::as_str) == Some("retry"))
        .unwrap_or_else(|| panic!("no retried attempt in {failed:?}"));
    for f in [
        "request_id",
        "route",
        "deployment",
        "attempt",
        "class",
        "status",
        "latency_ms",
        "delay_ms",
        "delay_reason",
    ] {
        assert!(
            field(retried, f).is_some(),
            "attempt event lacks {f}: {retried}"
        );
    }
    assert_eq!(field(retried, "class").unwrap(), "server_error");
    assert_eq!(field(retried, "status").unwrap(), 500);
    assert_eq!(field(retried, "delay_reason").unwrap(), "backoff");
    assert!(field(retried, "request_id")
        .unwrap()
        .as_str()
        .unwrap()
        .starts_with("keel-"));
    let auth_fail = failed
        .iter()
        .find(|ev| field(ev, "class").and_then(Value::as_str) == Some("auth"))
        .unwrap();
    assert_eq!(field(auth_fail, "deployment").unwrap(), "c");
    assert_eq!(field(auth_fail, "status").unwrap(), 401);
    let ok = events
        .iter()
        .filter(|ev| msg(ev).as_deref() == Some("attempt ok"))
        .count();
    assert!(ok >= 3, "{ok} ok attempts logged");
    let skip = events
        .iter()
        .find(|ev| msg(ev).as_deref() == Some("attempt skipped"))
        .unwrap_or_else(|| panic!("no skip event"));
    assert_eq!(field(skip, "delay_reason").unwrap(), "breaker_open");
    let transition = events
        .iter()
        .find(|ev| msg(ev).as_deref() == Some("breaker transition"))
        .unwrap_or_else(|| panic!("no breaker transition event"));
    assert_eq!(field(transition, "deployment").unwrap(), "c");
    assert_eq!(field(transition, "from").unwrap(), "closed");
    assert_eq!(field(transition, "to").unwrap(), "open");
}
