//! keel-chaos speaks AWS Bedrock's Converse API faithfully: the official
//! `boto3` `bedrock-runtime` client, pointed at it with dummy credentials,
//! reads its answers, streams and tool calls, and raises its own exception
//! for each fault.
//!
//! Needs `KEEL_TEST_PYTHON`: an interpreter with `boto3` installed
//! (`scripts/test` creates that venv and sets the variable).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use keel_chaos::{ChaosServer, Scenario};

/// Upstreams failing every attempt with one fault, and how many attempts
/// the script makes on each (botocore's retries are off).
const FAILING: &[(&str, &str, u64)] = &[
    ("b-429", "kind = \"rate_limit\"", 2),
    ("b-quota", "kind = \"quota_exhausted\"", 1),
    ("b-503", "kind = \"overloaded\"", 1),
    ("b-500", "kind = \"server_error\"", 1),
    ("b-408", "kind = \"status\"\nstatus = 408", 1),
    ("b-400", "kind = \"bad_request\"", 1),
    ("b-ctx", "kind = \"context_overflow\"", 1),
    ("b-404", "kind = \"not_found\"", 1),
    ("b-trunc", "kind = \"truncate\"", 2),
    ("b-filter", "kind = \"content_filter\"", 2),
    ("b-serr", "kind = \"stream_error\"\nafter_chunks = 3", 1),
    ("b-cut", "kind = \"cut_stream\"\nafter_chunks = 3", 1),
    ("b-hang", "kind = \"hang\"", 1),
];

fn python() -> String {
    match std::env::var("KEEL_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "KEEL_TEST_PYTHON is not set: this test needs a Python with `boto3`. Run \
             `scripts/test`, or set KEEL_TEST_PYTHON=/path/to/.venv/bin/python."
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_bedrock_runtime_works_unchanged() {
    let mut toml = String::from(
        "[[upstream]]\nname = \"ok\"\nkind = \"bedrock\"\napi_key = \"AKIDCHAOSGOOD\"\n",
    );
    for (name, fault, _) in FAILING {
        toml.push_str(&format!(
            "\n[[upstream]]\nname = \"{name}\"\nkind = \"bedrock\"\n[[upstream.fault]]\n{fault}\n"
        ));
    }
    let scenario = Scenario::from_toml_str(&toml, "bedrock.toml").unwrap();
    let chaos = ChaosServer::start(scenario, 7, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let root = format!("http://{}", chaos.addr());
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/bedrock_boto3.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .arg(&root)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bedrock_boto3.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    println!("{stdout}");
    // Each failing upstream saw exactly the script's calls: boto3 sent
    // them signed, and nothing retried behind its back.
    for (name, _, calls) in FAILING {
        let stats = chaos.stats(name).unwrap();
        assert_eq!(stats.attempts, *calls, "{name}: {stats:?}");
    }
    let ok = chaos.stats("ok").unwrap();
    assert_eq!(ok.by_outcome.get("auth"), Some(&1), "{ok:?}");
    assert_eq!(ok.attempts, 8, "{:?}", ok.by_outcome);
    chaos.shutdown().await;
}
