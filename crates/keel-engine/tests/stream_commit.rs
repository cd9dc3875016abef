//! Streams judged before they reach the client: within a stream's commit
//! window (its first characters, or a tool call, or its end) an empty
//! stream, a refusal, a content filter, an error event or a cut is retried
//! or fallen over exactly like a bad plain answer, and the client receives
//! one well-formed stream: the good one. Against `keel chaos`, attempts
//! counted from its stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::ChaosHandle;
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, StreamItem};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::report;

/// Upstreams `a` (OpenAI) and `b` (Anthropic) with the given faults;
/// route `ab` = [a, b] and `ba` = [b, a].
async fn setup(a_faults: &str, b_faults: &str, policy: &str) -> (ChaosHandle, Engine) {
    let ch = common::chaos(
        &format!(
            "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a_faults}\n\
             [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\n{b_faults}\n"
        ),
        3,
    )
    .await;
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
[routes.ab]
chain = ["a", "b"]
[routes.ba]
chain = ["b", "a"]
[policy]
max_attempts = 2
backoff_base = "1ms"
backoff_cap = "2ms"
{policy}
[breaker]
consecutive_failures = 1000
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    let config = Config::from_toml_str(&text, "keel.toml", &|_| None).unwrap();
    (ch, Engine::with_seed(config, 7).unwrap())
}

fn call(route: &str) -> ChatCall {
    let mut r = ChatRequest::new(route, vec![Message::user("Tell me about rivers.")]);
    r.max_tokens = Some(200);
    r.stream = Some(true);
    ChatCall::openai(r)
}

/// What the client receives: the text, the finish reasons, the error items.
struct Received {
    text: String,
    finishes: Vec<String>,
    errors: usize,
    meta: keel_engine::RequestReport,
}

async fn receive(e: &Engine, c: ChatCall) -> Received {
    let mut out = e.chat_stream(c).await.unwrap();
    let mut r = Received {
        text: String::new(),
        finishes: Vec::new(),
        errors: 0,
        meta: out.meta.clone(),
    };
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(c) => {
                for choice in c.into_parsed().unwrap().choices {
                    r.text
                        .push_str(choice.delta.content.as_deref().unwrap_or(""));
                    r.finishes.extend(choice.finish_reason);
                }
            }
            StreamItem::Error { .. } => r.errors += 1,
        }
    }
    r
}

/// The text the healthy upstream streams for the same request.
async fn reference(route: &str) -> String {
    let (_ch, e) = setup("", "", "").await;
    receive(&e, call(route)).await.text
}

fn fault(kind: &str) -> String {
    format!("[[upstream.fault]]\nkind = \"{kind}\"\n")
}

/// Each content fault on the OpenAI primary: the client gets the Anthropic
/// secondary's answer as one clean stream, and nothing of the primary's.
#[tokio::test]
async fn a_bad_stream_before_its_commit_falls_over_invisibly() {
    let good = reference("ba").await;
    assert!(good.chars().count() > 48, "{good}");
    let mut all = String::new();
    for kind in [
        "empty",
        "refusal",
        "content_filter",
        "stream_error",
        "cut_stream",
    ] {
        let faults = match kind {
            "stream_error" | "cut_stream" => format!("{}after_chunks = 2\n", fault(kind)),
            _ => fault(kind),
        };
        let (ch, e) = setup(&faults, "", "").await;
        let got = receive(&e, call("ab")).await;
        assert_eq!(got.text, good, "{kind}");
        assert_eq!(got.finishes, ["stop"], "{kind}");
        assert_eq!(got.errors, 0, "{kind}");
        all.push_str(&format!("{kind}:\n{}", report(&got.meta, &ch, &["a", "b"])));
        // Each rejection before the commit is counted, by class.
        let rejected = e
            .render_metrics()
            .lines()
            .filter(|l| l.starts_with("keel_stream_rejections_total{deployment=\"a\""))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        match rejected.is_empty() {
            true => all.push_str("no rejection in the window (failed at its first token)\n"),
            false => all.push_str(&format!("{}\n", rejected.join("\n"))),
        }
    }
    assert_eq!(
        all,
        "empty:\n\
         request_id=\"\" route=ab\n\
         attempt a#1 class=empty status=200 next=retry delay_ms=0 reason=\"the stream ended with no content and no tool call (before commit); backoff\"\n\
         attempt a#2 class=empty status=200 next=fallback delay_ms=- reason=\"the stream ended with no content and no tool call (before commit)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 empty=2\n\
         upstream b: attempts=1 ok=1\n\
         keel_stream_rejections_total{deployment=\"a\",class=\"empty\"} 2\n\
         refusal:\n\
         request_id=\"\" route=ab\n\
         attempt a#1 class=content_filtered status=200 next=fallback delay_ms=- reason=\"refusal; trying the deployments listed for refusals (before commit)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 refusal=1\n\
         upstream b: attempts=1 ok=1\n\
         keel_stream_rejections_total{deployment=\"a\",class=\"content_filtered\"} 1\n\
         content_filter:\n\
         request_id=\"\" route=ab\n\
         attempt a#1 class=content_filtered status=200 next=fallback delay_ms=- reason=\"refusal; trying the deployments listed for refusals (before commit)\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 content_filter=1\n\
         upstream b: attempts=1 ok=1\n\
         keel_stream_rejections_total{deployment=\"a\",class=\"content_filtered\"} 1\n\
         stream_error:\n\
         request_id=\"\" route=ab\n\
         attempt a#1 class=overloaded status=- next=retry delay_ms=0 reason=\"The engine is currently overloaded, please try again later.; backoff\"\n\
         attempt a#2 class=overloaded status=- next=fallback delay_ms=- reason=\"The engine is currently overloaded, please try again later.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 stream_error=2\n\
         upstream b: attempts=1 ok=1\n\
         no rejection in the window (failed at its first token)\n\
         cut_stream:\n\
         request_id=\"\" route=ab\n\
         attempt a#1 class=network status=- next=retry delay_ms=0 reason=\"stream broke: error reading a body from connection: unexpected EOF during chunk size line; backoff\"\n\
         attempt a#2 class=network status=- next=fallback delay_ms=- reason=\"stream broke: error reading a body from connection: unexpected EOF during chunk size line\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 cut_stream=2\n\
         upstream b: attempts=1 ok=1\n\
         keel_stream_rejections_total{deployment=\"a\",class=\"network\"} 2\n"
    );
}

/// The same with the Anthropic deployment first: its `refusal` stop reason
/// (after refusal text), a content filter, an empty answer, an error event.
#[tokio::test]
async fn an_anthropic_stream_is_judged_the_same() {
    let good = reference("ab").await;
    let mut all = String::new();
    for kind in ["empty", "refusal", "content_filter", "stream_error"] {
        let faults = match kind {
            "stream_error" => format!("{}after_chunks = 3\n", fault(kind)),
            _ => fault(kind),
        };
        let (ch, e) = setup("", &faults, "").await;
        let got = receive(&e, call("ba")).await;
        assert_eq!(got.text, good, "{kind}");
        assert_eq!(got.finishes, ["stop"], "{kind}");
        assert_eq!(got.errors, 0, "{kind}");
        all.push_str(&format!("{kind}:\n{}", report(&got.meta, &ch, &["a", "b"])));
    }
    assert_eq!(
        all,
        "empty:\n\
         request_id=\"\" route=ba\n\
         attempt b#1 class=empty status=200 next=retry delay_ms=0 reason=\"the stream ended with no content and no tool call (before commit); backoff\"\n\
         attempt b#2 class=empty status=200 next=fallback delay_ms=- reason=\"the stream ended with no content and no tool call (before commit)\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=1 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=2 empty=2\n\
         refusal:\n\
         request_id=\"\" route=ba\n\
         attempt b#1 class=content_filtered status=200 next=fallback delay_ms=- reason=\"refusal; trying the deployments listed for refusals (before commit)\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 refusal=1\n\
         content_filter:\n\
         request_id=\"\" route=ba\n\
         attempt b#1 class=content_filtered status=200 next=fallback delay_ms=- reason=\"refusal; trying the deployments listed for refusals (before commit)\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=1 content_filter=1\n\
         stream_error:\n\
         request_id=\"\" route=ba\n\
         attempt b#1 class=overloaded status=- next=retry delay_ms=0 reason=\"Overloaded; backoff\"\n\
         attempt b#2 class=overloaded status=- next=fallback delay_ms=- reason=\"Overloaded\"\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=1 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 ok=1\n\
         upstream b: attempts=2 stream_error=2\n"
    );
}

/// `stream_commit_chars = 0` turns the window off: the stream is committed
/// at its first token, as a refusal then reaches the client.
#[tokio::test]
async fn with_the_window_off_a_refusal_streams_through() {
    let (ch, e) = setup(&fault("refusal"), "", "stream_commit_chars = 0").await;
    let got = receive(&e, call("ab")).await;
    assert_eq!(got.meta.deployment.as_deref(), Some("a"));
    assert_eq!(got.errors, 0);
    assert_eq!(
        (
            ch.stats("a").unwrap().attempts,
            ch.stats("b").unwrap().attempts
        ),
        (1, 0)
    );
}

/// A stream that fails after its commit is never retracted: what the
/// client has stays, and the rest comes as a resume (today's rules).
#[tokio::test]
async fn a_stream_failing_after_its_commit_is_resumed_not_retracted() {
    let good = reference("ab").await;
    let (ch, e) = setup(
        &format!("{}after_chunks = 30\n", fault("stream_error")),
        "",
        "",
    )
    .await;
    let got = receive(&e, call("ab")).await;
    assert_eq!(got.meta.deployment.as_deref(), Some("a"));
    assert_eq!(got.errors, 0);
    assert_eq!(got.finishes, ["stop"]);
    // The primary's first words, then the secondary's continuation.
    assert!(got.text.len() > 48 && got.text != good, "{}", got.text);
    assert_eq!(
        (
            ch.stats("a").unwrap().attempts,
            ch.stats("b").unwrap().attempts
        ),
        (1, 1)
    );
    assert_eq!(e.stats().stream_resumes, 1);
    // Committed once, on `a` (the resume is not a new commit).
    let commits: Vec<_> = e
        .render_metrics()
        .lines()
        .filter(|l| l.starts_with("keel_stream_commits_total"))
        .map(str::to_owned)
        .collect();
    assert_eq!(commits, ["keel_stream_commits_total{deployment=\"a\"} 1"]);
}

fn json_call(route: &str) -> ChatCall {
    let mut r = ChatRequest::new(
        route,
        vec![Message::user("Describe a river as a JSON object.")],
    );
    r.max_tokens = Some(200);
    r.stream = Some(true);
    r.response_format = Some(keel_wire::openai::ResponseFormat::JsonObject);
    ChatCall::openai(r)
}

/// A streamed request for JSON (`stream_json = "validate"`, the default):
/// the answer is judged whole, invalid JSON is repaired, and the client
/// receives one well-formed stream of valid JSON.
#[tokio::test]
async fn a_json_stream_is_validated_and_repaired_before_the_client_sees_it() {
    let invalid_once = "[[upstream.fault]]\nkind = \"invalid_json\"\nsequence = [1]\n";
    let (ch, e) = setup(invalid_once, "", "").await;
    let got = receive(&e, json_call("ab")).await;
    assert!(
        serde_json::from_str::<serde_json::Value>(&got.text).is_ok(),
        "{}",
        got.text
    );
    assert_eq!(got.finishes, ["stop"]);
    assert_eq!(got.errors, 0);
    assert_eq!(
        report(&got.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=ab\n\
         attempt a#1 class=invalid_output status=200 next=repair delay_ms=- reason=\"invalid structured output: the answer contains no JSON document\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 invalid_json=1 ok=1\n\
         upstream b: attempts=0\n"
    );
    // Each attempt was asked as a stream (`stream_upstream`, on by default),
    // assembled and judged whole, then sent to the client as one stream.
    let log = ch.stats("a").unwrap().log;
    assert!(log.iter().all(|a| a.stream), "{log:?}");
    let metrics = e.render_metrics();
    assert!(
        metrics.contains("keel_stream_json_buffered_total{route=\"ab\"} 1"),
        "{metrics}"
    );

    // `stream_json = "pass"`: streamed as it comes, invalid JSON included.
    let (ch, e) = setup(invalid_once, "", "stream_json = \"pass\"").await;
    let got = receive(&e, json_call("ab")).await;
    assert!(serde_json::from_str::<serde_json::Value>(&got.text).is_err());
    assert_eq!(
        (
            ch.stats("a").unwrap().attempts,
            ch.stats("b").unwrap().attempts
        ),
        (1, 0)
    );
}
