//! `keel::Client` against `keel chaos` on loopback: retry, fallback across
//! deployments, streaming, errors with the attempt log, and configuration
//! through a file, a string and the builder (same validation, same messages).
//! Upstream attempts are counted from the chaos server's own stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;
use keel::client::{BuildError, Client, ClientBuilder, ProviderSpec, BUILDER_FILE};
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::ChatCall;
use keel_wire::openai::{ChatRequest, Message};

/// Upstreams `a` (openai) and `b` (anthropic), each with its fault TOML.
async fn chaos(a_faults: &str, b_faults: &str) -> ChaosHandle {
    let text = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a_faults}\n\
         [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\n{b_faults}\n"
    );
    let scenario = Scenario::from_toml_str(&text, "test.toml").unwrap();
    ChaosServer::start(scenario, 7, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Deployments `a` and `b` on the chaos upstreams; route `r` = [a, b].
fn builder(ch: &ChaosHandle) -> ClientBuilder {
    Client::builder()
        .provider(
            "a",
            ProviderSpec::openai()
                .base_url(ch.base_url("a"))
                .api_key("sk-a"),
        )
        .provider(
            "b",
            ProviderSpec::anthropic()
                .base_url(ch.base_url("b"))
                .api_key("sk-b"),
        )
        .deployment("a", "a", "gpt-test")
        .deployment("b", "b", "claude-test")
        .route("r", ["a", "b"])
        .set("policy.backoff_base", "10ms")
        .set("policy.backoff_cap", "50ms")
        .seed(42)
}

fn request() -> ChatRequest {
    let mut r = ChatRequest::new("r", vec![Message::user("Say something.")]);
    r.max_tokens = Some(100);
    r
}

fn attempts(ch: &ChaosHandle, name: &str) -> u64 {
    ch.stats(name).map_or(0, |s| s.attempts)
}

#[tokio::test]
async fn client_answers_through_the_first_deployment() {
    let ch = chaos("", "").await;
    let client = builder(&ch).build().unwrap();
    let response = client.chat(request()).await.unwrap();
    assert!(!response.text().unwrap_or_default().is_empty());
    assert_eq!(response.model, "r");
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 0));
}

#[tokio::test]
async fn client_retries_a_server_error_on_the_same_deployment() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nsequence = [1, 2]\n",
        "",
    )
    .await;
    let client = builder(&ch).build().unwrap();
    let outcome = client.chat_call(ChatCall::openai(request())).await.unwrap();
    assert_eq!(outcome.meta.deployment.as_deref(), Some("a"));
    assert_eq!(outcome.meta.upstream_attempts, 3);
    let classes: Vec<_> = outcome.meta.attempts.iter().map(|a| a.class).collect();
    assert_eq!(classes, [Some("server_error"), Some("server_error"), None]);
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (3, 0));
}

#[tokio::test]
async fn client_falls_back_across_deployments_and_providers() {
    let ch = chaos("[[upstream.fault]]\nkind = \"quota_exhausted\"\n", "").await;
    let client = builder(&ch).build().unwrap();
    let outcome = client.chat_call(ChatCall::openai(request())).await.unwrap();
    assert_eq!(outcome.meta.deployment.as_deref(), Some("b"));
    assert_eq!(outcome.meta.fallback_depth, 1);
    // Answered by the Anthropic upstream, still in the OpenAI shape.
    assert_eq!(outcome.response().object, "chat.completion");
    assert!(!outcome.response().text().unwrap_or_default().is_empty());
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
}

#[tokio::test]
async fn client_streams_after_an_invisible_retry() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"overloaded\"\nsequence = [1]\n",
        "",
    )
    .await;
    let client = builder(&ch).build().unwrap();
    let chunks: Vec<_> = client.chat_stream(request()).collect().await;
    assert!(chunks.len() > 1, "{} chunks", chunks.len());
    let mut text = String::new();
    for chunk in chunks {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        for choice in chunk.choices {
            text.push_str(&choice.delta.content.unwrap_or_default());
        }
    }
    assert!(!text.is_empty());
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (2, 0));
    let log = ch.stats("a").unwrap().log;
    assert!(log.iter().all(|r| r.stream));
}

#[tokio::test]
async fn client_stream_falls_back_when_the_first_deployment_is_down() {
    let ch = chaos("[[upstream.fault]]\nkind = \"auth\"\n", "").await;
    let client = builder(&ch).build().unwrap();
    let chunks: Vec<_> = client.chat_stream(request()).collect().await;
    assert!(chunks.iter().all(Result::is_ok));
    assert!(!chunks.is_empty());
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 1));
}

#[tokio::test]
async fn client_error_carries_status_message_and_attempt_log() {
    let ch = chaos("[[upstream.fault]]\nkind = \"bad_request\"\n", "").await;
    let client = builder(&ch).build().unwrap();
    let error = client.chat(request()).await.unwrap_err();
    assert_eq!(error.status, 400);
    assert!(!error.message.is_empty());
    assert_eq!(error.meta.attempts.len(), 1);
    assert_eq!(error.meta.attempts[0].class, Some("invalid_request"));
    assert_eq!((attempts(&ch, "a"), attempts(&ch, "b")), (1, 0));

    // A streaming request fails the same way, as the stream's only item.
    let items: Vec<_> = client.chat_stream(request()).collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().status, 400);
}

#[tokio::test]
async fn unknown_route_is_a_404() {
    let ch = chaos("", "").await;
    let client = builder(&ch).build().unwrap();
    let mut r = request();
    r.model = "nope".into();
    let error = client.chat(r).await.unwrap_err();
    assert_eq!(error.status, 404);
    assert!(
        error.message.contains("configured routes: r"),
        "{}",
        error.message
    );
    assert_eq!(attempts(&ch, "a"), 0);
}

#[tokio::test]
async fn file_string_and_builder_give_the_same_client() {
    let ch = chaos("", "").await;
    let text = builder(&ch).to_toml();
    let path = std::env::temp_dir().join(format!("keel-client-{}.toml", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let from_file = Client::from_toml_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let from_str = Client::from_toml_str(&text).unwrap();
    for client in [from_file, from_str] {
        assert!(client.engine().config().routes.contains_key("r"));
        client.chat(request()).await.unwrap();
    }
    assert_eq!(attempts(&ch, "a"), 2);
}

#[test]
fn builder_errors_are_the_config_errors() {
    let b = Client::builder()
        .provider("a", ProviderSpec::openai())
        .deployment("d", "missing", "m")
        .route("r", ["d"]);
    let expected = Config::from_toml_str(&b.to_toml(), BUILDER_FILE, &|_| None).unwrap_err();
    let Err(BuildError::Config(got)) = b.build() else {
        panic!("expected a config error");
    };
    assert_eq!(got, expected);
    assert_eq!(
        got.to_string(),
        "<builder>: deployments.d.provider: expected one of the providers (a), got \"missing\""
    );

    // A key the gateway does not know is refused the same way.
    let unknown = Client::builder().set("policy.max_atempts", 3).build();
    let Err(BuildError::Config(got)) = unknown else {
        panic!("expected a config error");
    };
    assert!(got.to_string().starts_with("<builder>: policy"), "{got}");
    assert!(got.to_string().contains("max_atempts"), "{got}");

    // And a value out of range.
    let bad = Client::builder().set("policy.max_attempts", 0).build();
    let Err(BuildError::Config(got)) = bad else {
        panic!("expected a config error");
    };
    assert!(got.to_string().contains("policy.max_attempts"), "{got}");
}

#[test]
fn from_toml_file_reports_a_missing_file() {
    let err = Client::from_toml_file("/nonexistent/keel.toml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/keel.toml: cannot read"),
        "{err}"
    );
}
