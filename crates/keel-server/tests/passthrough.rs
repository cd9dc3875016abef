//! Answers pass through byte for byte: when the client speaks the
//! provider's API and nothing in the pipeline changed the answer, the
//! client gets the provider's bytes with only `model` replaced (fields Keel
//! does not model, `null`s and spacing included). Any edit (JSON cleaned,
//! a cut answer continued) sends the edited answer instead. Streamed
//! chunks pass through the same way, each as the provider wrote it. The stub
//! provider also shows which client an upstream's scheme picks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// An OpenAI answer as a provider might write it: odd spacing, fields Keel
/// does not model, explicit `null`s.
const OPENAI: &str = r#"{ "id": "chatcmpl-x1", "object": "chat.completion", "created": 1700000001, "model": "gpt-upstream",
  "choices": [ { "index": 0, "message": { "role": "assistant", "content": "Hi there.", "refusal": null, "annotations": [] }, "logprobs": null, "finish_reason": "stop" } ],
  "usage": { "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "prompt_tokens_details": { "cached_tokens": 0 } },
  "service_tier": "default", "system_fingerprint": "fp_1" }"#;

/// An Anthropic answer with a field Keel does not model.
const ANTHROPIC: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-upstream","content":[{"type":"text","text":"Hi there."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"service_tier":"standard"}}"#;

/// A provider that answers each call with the next queued body (the last
/// one once the queue is down to one).
#[derive(Clone)]
struct Stub(Arc<Mutex<VecDeque<String>>>, Arc<AtomicUsize>);

impl Stub {
    async fn start(bodies: &[&str]) -> (Stub, SocketAddr) {
        let stub = Stub(
            Arc::new(Mutex::new(bodies.iter().map(|b| b.to_string()).collect())),
            Arc::new(AtomicUsize::new(0)),
        );
        let s = stub.clone();
        let answer = move || {
            let s = s.clone();
            async move {
                s.1.fetch_add(1, Ordering::SeqCst);
                let mut q = s.0.lock().unwrap();
                let body = if q.len() > 1 {
                    q.pop_front().unwrap()
                } else {
                    q.front().cloned().unwrap()
                };
                let kind = match body.starts_with("data:") {
                    true => "text/event-stream",
                    false => "application/json",
                };
                ([("content-type", kind)], body)
            }
        };
        let router = Router::new()
            .route("/v1/chat/completions", post(answer.clone()))
            .route("/v1/messages", post(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (stub, addr)
    }
}

fn engine(kind: &str, addr: SocketAddr) -> Engine {
    engine_at(kind, &format!("http://{addr}/v1"))
}

fn engine_at(kind: &str, base_url: &str) -> Engine {
    let text = format!(
        r#"
[providers.p]
kind = "{kind}"
base_url = "{base_url}"
[deployments.d]
provider = "p"
model = "upstream-model"
[routes.r]
chain = ["d"]
"#
    );
    Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        1,
    )
    .unwrap()
}

async fn send(e: &Engine, path: &str, body: &str) -> Vec<u8> {
    let (status, body) = exchange(e, path, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

async fn exchange(e: &Engine, path: &str, body: &str) -> (u16, Vec<u8>) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app(AppState::new(e.clone())).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

const OPENAI_CALL: &str = r#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#;
const ANTHROPIC_CALL: &str =
    r#"{"model":"r","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn an_answer_reaches_a_client_of_its_own_api_byte_for_byte() {
    let cases = [
        (
            "openai",
            OPENAI,
            "/v1/chat/completions",
            OPENAI_CALL,
            r#""model": "gpt-upstream""#,
            r#""model": "r""#,
        ),
        (
            "anthropic",
            ANTHROPIC,
            "/v1/messages",
            ANTHROPIC_CALL,
            r#""model":"claude-upstream""#,
            r#""model":"r""#,
        ),
    ];
    for (kind, answer, path, call, model, renamed) in cases {
        let (_stub, addr) = Stub::start(&[answer]).await;
        let got = send(&engine(kind, addr), path, call).await;
        assert_eq!(
            String::from_utf8(got).unwrap(),
            answer.replace(model, renamed),
            "{kind}"
        );
    }
}

/// A streamed OpenAI answer as a provider might write it: spacing, `null`s,
/// fields Keel does not model, an escaped newline, usage on the last chunk.
const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,\"model\":\"gpt-upstream\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"obfuscation\":\"a1\"}\n\n",
    "data: { \"id\": \"chatcmpl-s1\", \"object\": \"chat.completion.chunk\", \"created\": 1700000001, \"model\": \"gpt-upstream\", \"choices\": [ { \"index\": 0, \"delta\": { \"content\": \"Hi\\n\" }, \"logprobs\": null, \"finish_reason\": null } ] }\n\n",
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,\"model\":\"gpt-upstream\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"there.\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,\"model\":\"gpt-upstream\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-s1\",\"object\":\"chat.completion.chunk\",\"created\":1700000001,\"model\":\"gpt-upstream\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test]
async fn a_streamed_answer_reaches_an_openai_client_chunk_for_chunk() {
    let (_stub, addr) = Stub::start(&[OPENAI_STREAM]).await;
    let e = engine("openai", addr);
    let expected = OPENAI_STREAM
        .replace(r#""model":"gpt-upstream""#, r#""model":"r""#)
        .replace(r#""model": "gpt-upstream""#, r#""model": "r""#);
    // A client that asked for usage gets every chunk as the provider wrote it.
    let call = r#"{"model":"r","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let got = String::from_utf8(send(&e, "/v1/chat/completions", call).await).unwrap();
    assert_eq!(got, expected);
    // One that did not gets every chunk but the usage-only one Keel asked
    // for: a chunk without choices breaks `chunk.choices[0]` loops.
    let call = r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let got = String::from_utf8(send(&e, "/v1/chat/completions", call).await).unwrap();
    let usage_chunk = expected
        .split_inclusive("\n\n")
        .find(|event| event.contains(r#""choices":[]"#))
        .unwrap();
    assert_eq!(got, expected.replace(usage_chunk, ""));

    // An Anthropic client gets the same stream translated, text and usage whole.
    let call = r#"{"model":"r","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let got = String::from_utf8(send(&e, "/v1/messages", call).await).unwrap();
    assert!(got.starts_with("event: message_start\n"), "{got}");
    assert!(
        got.contains(r#""text":"Hi\n""#) && got.contains(r#""text":"there.""#),
        "{got}"
    );
    assert!(got.contains(r#""output_tokens":3"#), "{got}");
    assert!(
        got.trim_end().ends_with(r#"data: {"type":"message_stop"}"#),
        "{got}"
    );
}

#[tokio::test]
async fn an_answer_in_the_other_api_is_translated() {
    let (_stub, addr) = Stub::start(&[ANTHROPIC]).await;
    let e = engine("anthropic", addr);
    let v: Value =
        serde_json::from_slice(&send(&e, "/v1/chat/completions", OPENAI_CALL).await).unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(v["model"], "r");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi there.");
    assert_eq!(v["usage"]["total_tokens"], 12);

    let (_stub, addr) = Stub::start(&[OPENAI]).await;
    let e = engine("openai", addr);
    let v: Value = serde_json::from_slice(&send(&e, "/v1/messages", ANTHROPIC_CALL).await).unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["model"], "r");
    assert_eq!(v["content"][0]["text"], "Hi there.");
}

#[tokio::test]
async fn a_cleaned_json_answer_is_sent_as_cleaned_not_as_the_provider_wrote_it() {
    let fenced = OPENAI.replace("Hi there.", "```json\\n{\\\"a\\\": 1}\\n```");
    let (_stub, addr) = Stub::start(&[&fenced]).await;
    let e = engine("openai", addr);
    let call = r#"{"model":"r","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"json please"}]}"#;
    let v: Value = serde_json::from_slice(&send(&e, "/v1/chat/completions", call).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"a": 1}"#, "{v}");
    assert_eq!(v["model"], "r");
    assert_eq!(v["id"], "chatcmpl-x1");
}

#[tokio::test]
async fn a_continued_answer_is_sent_stitched_with_summed_usage() {
    let cut = OPENAI
        .replace("Hi there.", "Hi ")
        .replace(r#""finish_reason": "stop""#, r#""finish_reason": "length""#);
    let rest = OPENAI.replace("Hi there.", "there.");
    let (_stub, addr) = Stub::start(&[&cut, &rest]).await;
    let e = engine("openai", addr);
    let v: Value =
        serde_json::from_slice(&send(&e, "/v1/chat/completions", OPENAI_CALL).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hi there.", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 24, "{v}");
    assert_eq!(v["model"], "r");
}

#[tokio::test]
async fn an_https_upstream_is_spoken_to_over_tls_and_an_http_one_in_plain_text() {
    let (stub, addr) = Stub::start(&[OPENAI]).await;
    // The stub speaks plain HTTP: a TLS handshake never becomes a request.
    let e = engine_at("openai", &format!("https://{addr}/v1"));
    let (status, body) = exchange(&e, "/v1/chat/completions", OPENAI_CALL).await;
    let body = String::from_utf8_lossy(&body);
    assert_ne!(status, 200, "{body}");
    // rustls's own words for a plain-text reply to its ClientHello.
    assert!(body.contains("InvalidContentType"), "{body}");
    assert_eq!(stub.1.load(Ordering::SeqCst), 0);
    let e = engine("openai", addr);
    send(&e, "/v1/chat/completions", OPENAI_CALL).await;
    assert_eq!(stub.1.load(Ordering::SeqCst), 1);
}

/// A stream without usage, as servers that ignore `stream_options` send it.
const STREAM_WITHOUT_USAGE: &str = concat!(
    "data: {\"id\":\"c-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello there, \"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"my friend.\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test]
async fn a_client_that_asked_for_usage_gets_keels_estimate_when_the_provider_sends_none() {
    let (_stub, addr) = Stub::start(&[STREAM_WITHOUT_USAGE]).await;
    let e = engine("openai", addr);
    let estimated = |e: &Engine| -> String {
        e.render_metrics()
            .lines()
            .filter(|l| l.starts_with("keel_tokens_estimated_total{"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(!estimated(&e).contains("} 1"), "{}", estimated(&e));

    let call = r#"{"model":"r","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello to my friend."}]}"#;
    let got = String::from_utf8(send(&e, "/v1/chat/completions", call).await).unwrap();
    let events: Vec<Value> = got
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["choices"], serde_json::json!([]), "{got}");
    // "Hello there, my friend." is 23 bytes: 6 tokens at 4 bytes a token;
    // the prompt as the capacity check counts it: 23 characters / 4 + 4 + 3.
    assert_eq!(
        last["usage"],
        serde_json::json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}),
        "{got}"
    );
    assert!(got.trim_end().ends_with("data: [DONE]"), "{got}");
    let lines = estimated(&e);
    assert!(
        lines.contains(r#"deployment="d",direction="in"} 12"#),
        "{lines}"
    );
    assert!(
        lines.contains(r#"deployment="d",direction="out"} 6"#),
        "{lines}"
    );

    // A client that did not ask gets no usage chunk; the estimate still counts.
    let call = r#"{"model":"r","stream":true,"messages":[{"role":"user","content":"Say hello to my friend."}]}"#;
    let got = String::from_utf8(send(&e, "/v1/chat/completions", call).await).unwrap();
    assert!(!got.contains(r#""choices":[]"#), "{got}");
    assert!(!got.contains(r#""usage""#), "{got}");
    let lines = estimated(&e);
    assert!(
        lines.contains(r#"deployment="d",direction="out"} 12"#),
        "{lines}"
    );
}
