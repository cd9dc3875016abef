//! The official Python SDKs against keel-chaos.
//!
//! Needs `KEEL_TEST_PYTHON`: an interpreter with `openai` and `anthropic`
//! installed. `scripts/test` creates that venv and sets the variable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};

const SCENARIO: &str = r#"
[[upstream]]
name = "ok-openai"
kind = "openai"
api_key = "sk-chaos-good"

[[upstream]]
name = "ok-anthropic"
kind = "anthropic"
api_key = "sk-ant-chaos-good"

[[upstream]]
name = "ok-gemini"
kind = "gemini"
api_key = "chaos-gemini-good"

[[upstream]]
name = "g-sig"
kind = "gemini"
api_key = "chaos-gemini-good"
require_thought_signatures = true
"#;

/// Upstreams failing every attempt with one fault.
const FAILING: &[(&str, &str, &str)] = &[
    (
        "o-429",
        "openai",
        "kind = \"rate_limit\"\nretry_after = \"250ms\"",
    ),
    ("o-quota", "openai", "kind = \"quota_exhausted\""),
    ("o-400", "openai", "kind = \"bad_request\""),
    ("o-ctx", "openai", "kind = \"context_overflow\""),
    ("o-404", "openai", "kind = \"not_found\""),
    ("o-500", "openai", "kind = \"server_error\""),
    ("o-503", "openai", "kind = \"overloaded\""),
    ("o-reset", "openai", "kind = \"reset\""),
    ("o-cut", "openai", "kind = \"cut_stream\"\nafter_chunks = 2"),
    ("a-429", "anthropic", "kind = \"rate_limit\""),
    ("a-529", "anthropic", "kind = \"overloaded\""),
    ("a-500", "anthropic", "kind = \"server_error\""),
    ("a-400", "anthropic", "kind = \"bad_request\""),
    ("a-ctx", "anthropic", "kind = \"context_overflow\""),
    ("a-reset", "anthropic", "kind = \"reset\""),
    (
        "a-cut",
        "anthropic",
        "kind = \"cut_stream\"\nafter_chunks = 3",
    ),
    (
        "g-429",
        "gemini",
        "kind = \"rate_limit\"\nretry_after = \"250ms\"",
    ),
    ("g-quota", "gemini", "kind = \"quota_exhausted\""),
    ("g-503", "gemini", "kind = \"overloaded\""),
    ("g-500", "gemini", "kind = \"server_error\""),
    ("g-504", "gemini", "kind = \"server_error\"\nstatus = 504"),
    ("g-ctx", "gemini", "kind = \"context_overflow\""),
    ("g-400", "gemini", "kind = \"bad_request\""),
    ("g-404", "gemini", "kind = \"not_found\""),
    ("g-trunc", "gemini", "kind = \"truncate\""),
    ("g-filter", "gemini", "kind = \"content_filter\""),
    ("g-refusal", "gemini", "kind = \"refusal\""),
    (
        "g-stream-error",
        "gemini",
        "kind = \"stream_error\"\nafter_chunks = 2",
    ),
    ("g-cut", "gemini", "kind = \"cut_stream\"\nafter_chunks = 2"),
    ("g-reset", "gemini", "kind = \"reset\""),
];

async fn start() -> ChaosHandle {
    let mut toml = SCENARIO.to_owned();
    for (name, kind, fault) in FAILING {
        toml.push_str(&format!(
            "\n[[upstream]]\nname = \"{name}\"\nkind = \"{kind}\"\n[[upstream.fault]]\n{fault}\n"
        ));
    }
    let scenario = Scenario::from_toml_str(&toml, "sdk.toml").unwrap();
    ChaosServer::start(scenario, 11, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn python() -> String {
    match std::env::var("KEEL_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "KEEL_TEST_PYTHON is not set: the SDK tests need a Python with the official \
             `openai` and `anthropic` packages. Run `scripts/test` (it creates the venv and \
             sets the variable), or set KEEL_TEST_PYTHON=/path/to/.venv/bin/python."
        ),
    }
}

async fn run_script(script: &str) {
    let python = python();
    let chaos = start().await;
    let root = format!("http://{}", chaos.addr());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&path)
            .arg(&root)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONUNBUFFERED", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    println!("{stdout}");
    // The failing upstreams really were hit.
    assert!(
        chaos.stats("ok-openai").unwrap().attempts
            + chaos.stats("ok-anthropic").unwrap().attempts
            + chaos.stats("ok-gemini").unwrap().attempts
            > 0
    );
    chaos.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_works_unchanged() {
    run_script("openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_works_unchanged() {
    run_script("anthropic_sdk.py").await;
}

/// The official `google-genai` SDK (`http_options.base_url` at chaos):
/// plain, streamed, function calling, JSON schema, and every fault as the
/// SDK's own exception (`ClientError`/`ServerError` with Google's code and
/// status) or finish (`MAX_TOKENS`, `SAFETY`, a blocked prompt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_sdk_works_unchanged() {
    run_script("gemini_sdk.py").await;
}
