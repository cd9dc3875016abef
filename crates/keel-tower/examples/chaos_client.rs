//! Run with: cargo run -p keel-tower --example chaos_client
//!
//! A plain hyper HTTP client made resilient with Keel's tower layers, calling
//! a flaky fake OpenAI upstream (`keel_chaos`, started in-process on a free
//! loopback port): one request in three fails with a 503 or a 429 with
//! `Retry-After`, and the retry layer hides every failure. The chaos server
//! counts the attempts it saw.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keel_chaos::{ChaosServer, Scenario};
use keel_policy::{Backoff, BackoffConfig, BackoffKind, BreakerConfig, LimiterConfig};
use keel_tower::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer, TimeoutLayer};
use tower::{service_fn, ServiceBuilder, ServiceExt};

const SCENARIO: &str = r#"
[[upstream]]
name = "flaky"
kind = "openai"
[[upstream.fault]]
kind = "overloaded"
every = 3
[[upstream.fault]]
kind = "rate_limit"
every = 5
retry_after = "200ms"
"#;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scenario = Scenario::from_toml_str(SCENARIO, "chaos_client.rs")?;
    let chaos = ChaosServer::start(scenario, 42, "127.0.0.1:0".parse()?).await?;
    let url = format!("{}/chat/completions", chaos.base_url("flaky"));

    // The inner service: one HTTP POST of a JSON body. Its request type
    // (`Bytes`) is cheap to clone, which the retry layer needs.
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = service_fn(move |body: Bytes| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let request = http::Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(body))?;
            Ok::<_, BoxError>(http.request(request).await?)
        }
    });

    let backoff = Backoff::new(BackoffConfig {
        kind: BackoffKind::FullJitter,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
        max_attempts: 4,
    })?;
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::new(backoff)
                .deadline(Duration::from_secs(10))
                .seed(1),
        )
        .layer(CircuitBreakerLayer::new(BreakerConfig::default())?)
        .layer(RateLimitLayer::new(LimiterConfig {
            rpm: Some(6_000),
            ..LimiterConfig::default()
        })?)
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .service(post);

    let body = Bytes::from_static(
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi."}],"max_tokens":20}"#,
    );
    let requests = 20;
    let mut ok = 0;
    for _ in 0..requests {
        let response = client.clone().oneshot(body.clone()).await?;
        if response.status().is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes)?;
            ok += usize::from(json["choices"][0]["message"]["content"].is_string());
        }
    }
    let stats = chaos.stats("flaky").unwrap_or_default();
    println!("{ok}/{requests} requests answered");
    println!(
        "the upstream saw {} attempts: {:?}",
        stats.attempts, stats.by_outcome
    );
    chaos.shutdown().await;
    Ok(())
}
