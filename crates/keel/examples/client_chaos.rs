//! Run with: cargo run -p keel --example client_chaos
//!
//! Keel embedded in a Rust program, no gateway process: a `keel::Client`
//! built in code with an OpenAI-style primary and an Anthropic-style
//! fallback, both served by a fault-injecting fake upstream (`keel_chaos`,
//! in-process on a free loopback port). The primary fails its first two
//! attempts and then has an outage; Keel retries, falls back to the other
//! provider, streams, and tells what happened.

use futures_util::StreamExt;
use keel::client::{Client, ProviderSpec};
use keel_chaos::{ChaosServer, Scenario};
use keel_wire::openai::{ChatRequest, Message};

const SCENARIO: &str = r#"
[[upstream]]
name = "primary"
kind = "openai"
[[upstream.fault]]
kind = "server_error"
sequence = [1, 2]
[[upstream.fault]]
kind = "overloaded"
sequence = [4, 5, 6, 7, 8, 9]

[[upstream]]
name = "fallback"
kind = "anthropic"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scenario = Scenario::from_toml_str(SCENARIO, "client_chaos.rs")?;
    let chaos = ChaosServer::start(scenario, 42, "127.0.0.1:0".parse()?).await?;

    let client = Client::builder()
        .provider(
            "openai",
            ProviderSpec::openai().base_url(chaos.base_url("primary")),
        )
        .provider(
            "anthropic",
            ProviderSpec::anthropic().base_url(chaos.base_url("fallback")),
        )
        .deployment("gpt", "openai", "gpt-4o-mini")
        .deployment("claude", "anthropic", "claude-haiku-4-5")
        .route("chat", ["gpt", "claude"])
        .set("policy.backoff_base", "20ms")
        .set("policy.max_attempts", 3)
        .build()?;

    // 1. Two 500s, then an answer: retried invisibly on the same deployment.
    let request = ChatRequest::new("chat", vec![Message::user("Say hello.")]);
    let outcome = client
        .chat_call(keel_engine::ChatCall::openai(request.clone()))
        .await?;
    println!(
        "answer: {:?} (deployment {:?}, {} upstream attempts)",
        outcome.response().text().unwrap_or_default(),
        outcome.meta.deployment,
        outcome.meta.upstream_attempts
    );
    for a in &outcome.meta.attempts {
        println!(
            "  {} #{}: {:?} -> {} {}",
            a.deployment, a.attempt, a.class, a.next, a.reason
        );
    }

    // 2. The primary is overloaded now: the request falls back to Claude and
    //    still comes back in the OpenAI shape.
    let response = client.chat(request.clone()).await?;
    println!("fallback answer: {:?}", response.text().unwrap_or_default());

    // 3. Streaming goes through the same pipeline.
    let mut stream = std::pin::pin!(client.chat_stream(request));
    print!("streamed: ");
    while let Some(chunk) = stream.next().await {
        for choice in chunk?.choices {
            print!("{}", choice.delta.content.unwrap_or_default());
        }
    }
    println!();

    for name in ["primary", "fallback"] {
        let stats = chaos.stats(name).unwrap_or_default();
        println!(
            "{name} saw {} attempts: {:?}",
            stats.attempts, stats.by_outcome
        );
    }
    chaos.shutdown().await;
    Ok(())
}
