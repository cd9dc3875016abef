//! The official `openai.AzureOpenAI` client (and the plain OpenAI client on
//! Azure's v1 API) against keel-chaos' azure dialect: every fault surfaces
//! as the SDK's own exception.
//!
//! Needs `KEEL_TEST_PYTHON`, as tests/sdk.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use keel_chaos::{ChaosServer, Scenario};

/// Azure upstreams failing every attempt with one fault.
const FAILING: &[(&str, &str)] = &[
    ("z-429", "kind = \"rate_limit\"\nretry_after = \"1500ms\""),
    ("z-quota", "kind = \"quota_exhausted\""),
    ("z-filter", "kind = \"prompt_filter\""),
    ("z-cf", "kind = \"content_filter\""),
    ("z-ctx", "kind = \"context_overflow\""),
    ("z-400", "kind = \"bad_request\""),
    ("z-404", "kind = \"not_found\""),
    ("z-408", "kind = \"status\"\nstatus = 408"),
    ("z-500", "kind = \"server_error\""),
    ("z-503", "kind = \"overloaded\""),
    ("z-hang", "kind = \"hang\""),
    ("z-reset", "kind = \"reset\""),
    (
        "z-stream-error",
        "kind = \"stream_error\"\nafter_chunks = 2",
    ),
    ("z-cut", "kind = \"cut_stream\"\nafter_chunks = 3"),
    (
        "z-429-once",
        "kind = \"rate_limit\"\nretry_after = \"200ms\"\nsequence = [1]",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_sdk_works_unchanged() {
    let python = match std::env::var("KEEL_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!("KEEL_TEST_PYTHON is not set: see tests/sdk.rs"),
    };
    let mut toml =
        "[[upstream]]\nname = \"ok-azure\"\nkind = \"azure\"\napi_key = \"azure-chaos-key\"\n"
            .to_owned();
    for (name, fault) in FAILING {
        toml.push_str(&format!(
            "\n[[upstream]]\nname = \"{name}\"\nkind = \"azure\"\napi_key = \"azure-chaos-key\"\n[[upstream.fault]]\n{fault}\n"
        ));
    }
    let scenario = Scenario::from_toml_str(&toml, "azure.toml").unwrap();
    let chaos = ChaosServer::start(scenario, 13, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let root = format!("http://{}", chaos.addr());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/azure_sdk.py");
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
        "azure_sdk.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    println!("{stdout}");
    // Each failing upstream was reached, and its fault is what it recorded.
    for (name, _) in FAILING {
        let stats = chaos.stats(name).unwrap();
        assert!(stats.attempts >= 1, "{name}: {stats:?}");
    }
    // The SDK's one retry honoured the 429 and then succeeded: two attempts.
    assert_eq!(chaos.stats("z-429-once").unwrap().attempts, 2);
    chaos.shutdown().await;
}
