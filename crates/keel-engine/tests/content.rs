//! Content errors against `keel chaos`: structured output with repair,
//! truncation (continue / raise / accept, streaming too), refusals, empty
//! answers. Upstream attempts are counted from the chaos stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, StreamItem};
use keel_wire::openai::{ChatRequest, JsonSchemaFormat, Message, ResponseFormat};
use serde_json::{json, Value};

mod common;
use common::report::report;

async fn chaos(a_faults: &str, b_faults: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a_faults}\n\
         [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\n{b_faults}\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "content.toml").unwrap();
    ChaosServer::start(scenario, 11, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn engine(ch: &ChaosHandle, extra: &str) -> Engine {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
[providers.b]
kind = "anthropic"
base_url = "{b}"
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
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    Engine::with_seed(
        Config::from_toml_str(&text, "content.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap()
}

fn attempts(ch: &ChaosHandle, name: &str) -> u64 {
    ch.stats(name).map(|s| s.attempts).unwrap_or(0)
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

fn json_call(schema: Value) -> ChatCall {
    let mut r = ChatRequest::new("r", vec![Message::user("Extract the person.")]);
    r.response_format = Some(ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat {
            name: "person".into(),
            description: None,
            schema: Some(schema),
            strict: Some(true),
            extra: Default::default(),
        },
    });
    ChatCall::openai(r)
}

fn text_call(max_tokens: u32, stream: bool) -> ChatCall {
    let mut r = ChatRequest::new("r", vec![Message::user("Tell me a story.")]);
    r.max_tokens = Some(max_tokens);
    if stream {
        r.stream = Some(true);
    }
    ChatCall::openai(r)
}

fn valid_person(text: &str) -> bool {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    v["name"].is_string() && v["age"].is_i64()
}

#[tokio::test]
async fn invalid_json_is_repaired_on_the_same_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"invalid_json\"\nsequence = [1]\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let out = e.chat(json_call(schema())).await.unwrap();
    let text = out.response().text().unwrap();
    assert!(valid_person(text), "{text}");
    assert_eq!(out.meta.deployment.as_deref(), Some("a"));
    assert_eq!(out.meta.attempts[0].class, Some("invalid_output"));
    assert_eq!(out.meta.attempts[0].next, "repair");
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 invalid_json=1 ok=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn invalid_json_forever_falls_back_then_fails_with_the_validation_errors() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"invalid_json\"\n",
        "[[upstream.fault]]\nkind = \"invalid_json\"\n",
    )
    .await;
    let e = engine(&ch, "max_repairs = 1\n");
    let error = e.chat(json_call(schema())).await.unwrap_err();
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 2));
    let classes: Vec<_> = error
        .meta
        .attempts
        .iter()
        .map(|a| (a.deployment.as_str(), a.attempt, a.next))
        .collect();
    assert_eq!(
        classes,
        [
            ("a", 1, "repair"),
            ("a", 2, "fallback"),
            ("b", 1, "repair"),
            ("b", 2, "fallback")
        ]
    );
    assert!(error
        .meta
        .attempts
        .iter()
        .all(|a| a.class == Some("invalid_output")));
    assert!(
        error.message.contains("invalid_output"),
        "{}",
        error.message
    );
    assert!(error.message.contains("last error:"), "{}", error.message);
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt a#2 class=invalid_output status=200 next=fallback delay_ms=- reason=\"invalid structured output after 1 repairs: the answer contains no JSON document\"\n\
         attempt b#1 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: \\\"name\\\" is a required property; \\\"age\\\" is a required property\"\n\
         attempt b#2 class=invalid_output status=200 next=fallback delay_ms=- reason=\"invalid structured output after 1 repairs: \\\"name\\\" is a required property; \\\"age\\\" is a required property\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=4 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 invalid_json=2\n\
         upstream b: attempts=2 invalid_json=2\n"
    );
}

#[tokio::test]
async fn anthropic_serves_json_schema_through_the_tool_technique() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(&ch, "max_attempts = 1\n");
    let out = e.chat(json_call(schema())).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    let text = out.response().text().unwrap();
    assert!(valid_person(text), "{text}");

    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=1 ok=1\n"
    );
    assert_eq!(out.response().finish_reason(), Some("stop"));
}

#[tokio::test]
async fn an_invalid_schema_is_a_400_before_any_upstream_call() {
    let ch = chaos("", "").await;
    let e = engine(&ch, "");
    let error = e
        .chat(json_call(json!({"type": "nonsense"})))
        .await
        .unwrap_err();
    assert_eq!(error.status, 400);
    assert!(
        error
            .message
            .starts_with("response_format.json_schema.schema is not a valid JSON Schema:"),
        "{}",
        error.message
    );
    assert!(error.message.contains("nonsense"), "{}", error.message);
    assert_eq!(attempts(&ch, "a") + attempts(&ch, "b"), 0);
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=0\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn a_request_without_json_is_never_validated() {
    let ch = chaos("[[upstream.fault]]\nkind = \"invalid_json\"\n", "").await;
    let e = engine(&ch, "");
    let out = e.chat(text_call(200, false)).await.unwrap();
    assert!(serde_json::from_str::<Value>(out.response().text().unwrap()).is_err());

    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 invalid_json=1\n\
         upstream b: attempts=0\n"
    );
    assert_eq!(attempts(&ch, "a"), 1);
}

#[tokio::test]
async fn truncation_continue_stitches_the_rest_with_summed_usage() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let out = e.chat(text_call(200, false)).await.unwrap();
    assert_eq!(out.meta.attempts[0].next, "continue");
    assert_eq!(out.response().finish_reason(), Some("stop"));
    assert!(!out.meta.truncated);
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    let usage = out.response().usage.clone().unwrap();
    // A fresh, untruncated answer to the same question, for comparison.
    let plain = e.chat(text_call(200, false)).await.unwrap();
    let single = plain.response().usage.clone().unwrap();
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]) + "== plain\n" + &report(&plain.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=truncated status=200 next=continue delay_ms=- reason=\"cut by max_tokens; asking for the rest (round 1)\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 ok=2 truncate=1\n\
         upstream b: attempts=0\n\
         == plain\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 ok=2 truncate=1\n\
         upstream b: attempts=0\n"
    );
    assert!(
        usage.prompt_tokens > single.prompt_tokens,
        "usage is summed over both rounds: {usage:?} vs {single:?}"
    );
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    let text = out.response().text().unwrap();
    assert!(
        text.len() > plain.response().text().unwrap().len() / 3,
        "{text}"
    );
}

#[tokio::test]
async fn truncation_continue_works_while_streaming() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]\n",
        "",
    )
    .await;
    let e = engine(&ch, "");
    let mut out = e.chat_stream(text_call(200, true)).await.unwrap();
    let mut finishes = Vec::new();
    let mut text = String::new();
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(c) => {
                for ch in &c.parsed().unwrap().choices {
                    if let Some(t) = &ch.delta.content {
                        text.push_str(t);
                    }
                    if let Some(f) = &ch.finish_reason {
                        finishes.push(f.clone());
                    }
                }
            }
            StreamItem::Error { message, .. } => panic!("{message}"),
        }
    }
    assert_eq!(
        finishes,
        ["stop"],
        "the length finish of round one is held back"
    );
    assert!(!text.is_empty());
    assert_eq!(attempts(&ch, "a"), 2);
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 truncate=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn truncation_raise_retries_with_a_larger_limit() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]\n",
        "",
    )
    .await;
    let e = engine(&ch, "truncation = \"raise\"\n");
    let out = e.chat(text_call(30, false)).await.unwrap();
    assert_eq!(out.meta.attempts[0].next, "raise");
    assert!(
        out.meta.attempts[0].reason.contains("max_tokens 60"),
        "{}",
        out.meta.attempts[0].reason
    );
    assert_eq!(attempts(&ch, "a"), 2);
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=truncated status=200 next=raise delay_ms=- reason=\"cut by max_tokens; retrying with max_tokens 60\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 ok=1 truncate=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn truncation_accept_returns_it_flagged() {
    let ch = chaos("[[upstream.fault]]\nkind = \"truncate\"\n", "").await;
    let e = engine(&ch, "truncation = \"accept\"\n");
    let out = e.chat(text_call(200, false)).await.unwrap();
    assert!(out.meta.truncated);
    assert_eq!(out.response().finish_reason(), Some("length"));
    assert_eq!(attempts(&ch, "a"), 1);
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=truncated status=200 next=ok delay_ms=- reason=\"cut by max_tokens; returned flagged\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=true refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 truncate=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn a_refusal_triggers_fallback() {
    let ch = chaos("[[upstream.fault]]\nkind = \"refusal\"\n", "").await;
    let e = engine(&ch, "");
    let out = e.chat(text_call(40, false)).await.unwrap();
    assert_eq!(out.meta.deployment.as_deref(), Some("b"));
    assert!(!out.meta.refusal);
    assert_eq!(out.meta.attempts[0].class, Some("content_filtered"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=content_filtered status=200 next=fallback delay_ms=- reason=\"refusal; trying the deployments listed for refusals\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 refusal=1\n\
         upstream b: attempts=1 ok=1\n"
    );
}

#[tokio::test]
async fn a_refusal_everywhere_is_returned_flagged() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"refusal\"\n",
        "[[upstream.fault]]\nkind = \"refusal\"\n",
    )
    .await;
    let e = engine(&ch, "");
    let out = e.chat(text_call(40, false)).await.unwrap();
    assert!(out.meta.refusal);
    assert_eq!(
        out.meta.deployment.as_deref(),
        Some("b"),
        "the last refusal is returned"
    );
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=content_filtered status=200 next=fallback delay_ms=- reason=\"refusal; trying the deployments listed for refusals\"\n\
         attempt b#1 class=content_filtered status=200 next=ok delay_ms=- reason=\"refusal; returned flagged\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=true cache=none cost_usd=0\n\
         upstream a: attempts=1 refusal=1\n\
         upstream b: attempts=1 refusal=1\n"
    );
}

#[tokio::test]
async fn refusal_policy_accept_returns_at_once() {
    let ch = chaos("[[upstream.fault]]\nkind = \"refusal\"\n", "").await;
    let e = engine(&ch, "refusal = \"accept\"\n");
    let out = e.chat(text_call(40, false)).await.unwrap();
    assert!(out.meta.refusal);
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 0));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=content_filtered status=200 next=ok delay_ms=- reason=\"refusal; returned flagged\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=true cache=none cost_usd=0\n\
         upstream a: attempts=1 refusal=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn an_empty_answer_is_retried() {
    let ch = chaos("[[upstream.fault]]\nkind = \"empty\"\nsequence = [1]\n", "").await;
    let e = engine(&ch, "");
    let out = e.chat(text_call(200, false)).await.unwrap();
    assert_eq!(out.meta.attempts[0].class, Some("empty"));
    assert_eq!(out.meta.deployment.as_deref(), Some("a"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=empty status=200 next=retry delay_ms=0 reason=\"the answer had no content and no tool call; backoff\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 empty=1 ok=1\n\
         upstream b: attempts=0\n"
    );
}

#[tokio::test]
async fn a_route_schema_validates_every_answer() {
    let ch = chaos("", "").await;
    let e = engine(
        &ch,
        "[routes.r.json_schema]\ntype = \"object\"\nrequired = [\"answer\"]\n",
    );
    // The chaos server answers free text without response_format: invalid
    // everywhere (a limit above any chaos answer: none is cut).
    let error = e.chat(text_call(200, false)).await.unwrap_err();
    assert!(error
        .meta
        .attempts
        .iter()
        .any(|a| a.class == Some("invalid_output")));
    assert_eq!(
        report(&error.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt a#2 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt a#3 class=invalid_output status=200 next=fallback delay_ms=- reason=\"invalid structured output after 2 repairs: the answer contains no JSON document\"\n\
         attempt b#1 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt b#2 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt b#3 class=invalid_output status=200 next=fallback delay_ms=- reason=\"invalid structured output after 2 repairs: the answer contains no JSON document\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=6 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=3 ok=3\n\
         upstream b: attempts=3 ok=3\n"
    );
}
