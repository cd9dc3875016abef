//! Run with: cargo run -p keel --example client_toml
//!
//! A `keel::Client` from the same `keel.toml` text the gateway reads (here
//! written to a temporary file, pointing at an in-process `keel_chaos`
//! upstream that rate-limits with `Retry-After`), and what a configuration
//! mistake looks like: the same message `keel check-config` prints.

use keel::Client;
use keel_chaos::{ChaosServer, Scenario};
use keel_wire::openai::{ChatRequest, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"up\"\nkind = \"openai\"\n\
         [[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1]\nretry_after = \"300ms\"\n",
        "client_toml.rs",
    )?;
    let chaos = ChaosServer::start(scenario, 1, "127.0.0.1:0".parse()?).await?;

    let config = format!(
        r#"
[providers.openai]
base_url = "{}"
api_key = "sk-demo"

[deployments.mini]
provider = "openai"
model = "gpt-4o-mini"
rpm = 600

[routes.chat]
chain = ["mini"]

[policy]
timeout = "10s"
"#,
        chaos.base_url("up")
    );
    let path = std::env::temp_dir().join(format!("keel-example-{}.toml", std::process::id()));
    std::fs::write(&path, &config)?;
    let client = Client::from_toml_file(&path)?;
    std::fs::remove_file(&path)?;

    let started = std::time::Instant::now();
    let answer = client
        .chat(ChatRequest::new("chat", vec![Message::user("Hi!")]))
        .await?;
    println!(
        "{:?} after {:?} (the 429's Retry-After was honoured)",
        answer.text().unwrap_or_default(),
        started.elapsed()
    );
    println!(
        "upstream attempts: {}",
        chaos.stats("up").map_or(0, |s| s.attempts)
    );

    // A typo is refused with the file, the key and what was expected.
    match Client::from_toml_str(&config.replace("rpm = 600", "rpm = 0")) {
        Ok(_) => println!("unexpectedly valid"),
        Err(e) => println!("config error: {e}"),
    }
    chaos.shutdown().await;
    Ok(())
}
