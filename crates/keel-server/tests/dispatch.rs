//! A served gateway sends its chat routes straight to their handlers and
//! everything else through the router; both must answer a request the same
//! way. Each request below goes once to a listening gateway and once through
//! `app(...).oneshot`, and the two answers must agree: status, content type,
//! `x-keel-*` headers present, and body (ids and times aside).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::Request;
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use serde_json::Value;
use tower::ServiceExt;

const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
const ANTHROPIC: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"up","content":[{"type":"text","text":"Hi."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}"#;

async fn provider() -> SocketAddr {
    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post(|| async { ([("content-type", "application/json")], ANSWER) }),
        )
        .route(
            "/v1/messages",
            post(|| async { ([("content-type", "application/json")], ANTHROPIC) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn engine(openai: SocketAddr, anthropic: SocketAddr) -> Engine {
    let text = format!(
        r#"
[providers.o]
kind = "openai"
base_url = "http://{openai}/v1"
api_key = "sk-o"
[providers.a]
kind = "anthropic"
base_url = "http://{anthropic}/v1"
api_key = "sk-a"
[deployments.o]
provider = "o"
model = "up"
[deployments.a]
provider = "a"
model = "up"
[routes.r]
chain = ["o"]
[routes.c]
chain = ["a"]
"#
    );
    let config = Config::from_toml_str(&text, "test.toml", &|_| None).unwrap();
    Engine::with_seed(config, 7).unwrap()
}

/// An answer with what differs between two runs of the same request
/// removed: the request id, and ids and times Keel makes.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    content_type: Option<String>,
    keel_headers: Vec<String>,
    retry_after: Option<String>,
    body: Value,
}

fn scrub(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        for k in ["id", "created", "request_id"] {
            if o.contains_key(k) {
                o.insert(k.into(), Value::Null);
            }
        }
        for v in o.values_mut() {
            scrub(v);
        }
    } else if let Some(a) = v.as_array_mut() {
        a.iter_mut().for_each(scrub);
    }
}

fn seen(status: u16, headers: &axum::http::HeaderMap, body: &[u8]) -> Seen {
    let mut keel_headers: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("x-keel-"))
        .collect();
    keel_headers.sort();
    let mut body = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    scrub(&mut body);
    Seen {
        status,
        content_type: headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string()),
        keel_headers,
        retry_after: headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body,
    }
}

struct Case {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
}

const CHAT: &str = r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES: &str =
    r#"{"model":"c","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;

const CASES: &[Case] = &[
    Case {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &[],
        body: CHAT,
    },
    Case {
        method: "POST",
        path: "/v1/chat/completions?x=1",
        headers: &[],
        body: CHAT,
    },
    Case {
        method: "POST",
        path: "/v1/messages",
        headers: &[("anthropic-version", "2023-06-01")],
        body: MESSAGES,
    },
    Case {
        method: "POST",
        path: "/v1/messages",
        headers: &[],
        body: CHAT,
    },
    Case {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &[],
        body: "{not json",
    },
    Case {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &[],
        body: r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
    },
    Case {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &[("x-keel-max-attempts", "99")],
        body: CHAT,
    },
    Case {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &[("x-keel-fallbacks", "off"), ("idempotency-key", "k1")],
        body: CHAT,
    },
    Case {
        method: "GET",
        path: "/v1/chat/completions",
        headers: &[],
        body: "",
    },
    Case {
        method: "POST",
        path: "/v1/chat/completions/",
        headers: &[],
        body: CHAT,
    },
    Case {
        method: "POST",
        path: "/v1/Chat/completions",
        headers: &[],
        body: CHAT,
    },
    Case {
        method: "GET",
        path: "/v1/models",
        headers: &[],
        body: "",
    },
    Case {
        method: "GET",
        path: "/healthz",
        headers: &[],
        body: "",
    },
];

async fn compare(client: reqwest::Client) {
    let mut statuses = Vec::new();
    let (o, a) = (provider().await, provider().await);
    let gw = keel_server::spawn(engine(o, a), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let router = app(AppState::new(engine(o, a)));
    for case in CASES {
        let mut req = client.request(
            case.method.parse().unwrap(),
            format!("http://{gw}{}", case.path),
        );
        let mut local = Request::builder().method(case.method).uri(case.path);
        for (k, v) in case.headers {
            req = req.header(*k, *v);
            local = local.header(*k, *v);
        }
        if !case.body.is_empty() {
            req = req.header("content-type", "application/json");
            local = local.header("content-type", "application/json");
        }
        let served = req.body(case.body).send().await.unwrap();
        let (status, headers) = (served.status().as_u16(), served.headers().clone());
        let served = seen(status, &headers, &served.bytes().await.unwrap());

        let routed = router
            .clone()
            .oneshot(local.body(Body::from(case.body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = routed.into_parts();
        let routed = seen(
            parts.status.as_u16(),
            &parts.headers,
            &body.collect().await.unwrap().to_bytes(),
        );
        assert_eq!(
            served, routed,
            "{} {} {}",
            case.method, case.path, case.body
        );
        statuses.push(served.status);
    }
    // The cases cover answers, client errors and the router's own.
    assert_eq!(
        statuses,
        [200, 200, 200, 400, 400, 404, 400, 200, 405, 404, 404, 200, 200]
    );
}

// The in-flight gate on the served path: `limits.rs` fills it and checks
// the 503 of both APIs.
#[tokio::test]
async fn the_served_chat_routes_answer_as_the_router_does() {
    compare(reqwest::Client::new()).await;
}

#[tokio::test]
async fn over_http2_too() {
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    compare(h2c).await;
}
