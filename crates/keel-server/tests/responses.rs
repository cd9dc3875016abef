//! The official `openai` Python SDK's Responses API through Keel, against
//! `keel chaos` with faults on the primary deployment. The interpreter comes
//! from `KEEL_TEST_PYTHON` (see tests/sdk.rs). Upstream attempts are counted
//! from the chaos stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use serde_json::Value;

fn python() -> String {
    std::env::var("KEEL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("KEEL_TEST_PYTHON is not set: run the tests with scripts/test, which installs the openai SDK")
    })
}

const SCENARIO: &str = r#"
[[upstream]]
name = "primary"
kind = "openai"
[[upstream.fault]]
kind = "server_error"
status = 500
every = 3
[[upstream]]
name = "backup"
kind = "openai"
"#;

fn config(ch: &ChaosHandle) -> Config {
    let mut text = String::new();
    for name in ["primary", "backup"] {
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"gpt-4o-mini\"\n",
            ch.base_url(name)
        ));
    }
    text.push_str(
        "[routes.gpt]\nchain = [\"primary\", \"backup\"]\n\
         [policy]\nmax_attempts = 1\n[breaker]\nconsecutive_failures = 1000\n",
    );
    Config::from_toml_str(&text, "responses.toml", &|_| None).unwrap()
}

/// Runs `script` against Keel at `addr`; its `FACTS {json}` line.
async fn run_script(script: &'static str, addr: std::net::SocketAddr) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(format!("http://{addr}"))
            .output()
    })
    .await
    .unwrap()
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let facts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FACTS "))
        .unwrap_or_else(|| panic!("no FACTS line\n{stdout}"));
    serde_json::from_str(facts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_responses_api_works_through_keel() {
    let scenario = Scenario::from_toml_str(SCENARIO, "responses.toml").unwrap();
    let ch = ChaosServer::start(scenario, 11, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let engine = Engine::with_seed(config(&ch), 1).unwrap();
    let addr = keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/responses/responses_sdk.py"
    );
    let facts = run_script(script, addr).await;
    // Every request that reached the chain met the primary once; every
    // third attempt failed there and went to the backup. The rejected
    // inputs (400) reached no upstream.
    let calls = facts["gpt_calls"].as_u64().unwrap();
    let primary = ch.stats("primary").unwrap();
    let backup = ch.stats("backup").unwrap();
    assert_eq!(primary.attempts, calls, "{primary:?}");
    assert_eq!(primary.by_outcome.get("server_error"), Some(&(calls / 3)));
    assert_eq!(backup.attempts, calls / 3, "{backup:?}");
}
