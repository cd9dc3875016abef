#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keel batch` with `/v1/responses` lines, as the real binary against
//! chaos: a native Responses primary with faults, falling back to a chat
//! deployment; lines in OpenAI's batch output shape with Response bodies;
//! bad lines dead-lettered before any call; a `kill -9` in the middle
//! followed by a rerun that writes each item once and asks nothing
//! answered again.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keel::batch;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keel");

const SCENARIO: &str = r#"
[[upstream]]
name = "native"
kind = "openai"
latency = "3ms"
[[upstream.fault]]
kind = "server_error"
status = 500
every = 4
[[upstream]]
name = "chat"
kind = "openai"
latency = "3ms"
"#;

fn config(ch: &ChaosHandle) -> String {
    format!(
        r#"
[providers.native]
kind = "openai"
base_url = "{}"
[providers.chat]
kind = "openai"
base_url = "{}"
[deployments.native]
provider = "native"
model = "gpt-4o-mini"
responses = true
input_price = 1.0
output_price = 2.0
[deployments.chat]
provider = "chat"
model = "gpt-4o-mini"
input_price = 1.0
output_price = 2.0
[routes.gpt]
chain = ["native", "chat"]
[policy]
max_attempts = 1
timeout = "10s"
[breaker]
consecutive_failures = 100000
"#,
        ch.base_url("native"),
        ch.base_url("chat"),
    )
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// 200s chaos sent.
fn answered(ch: &ChaosHandle) -> u64 {
    ["native", "chat"]
        .iter()
        .filter_map(|u| ch.stats(u))
        .map(|s| s.by_outcome.get("ok").copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_lines_survive_kill_nine_and_are_written_once() {
    let scenario = Scenario::from_toml_str(SCENARIO, "batch.toml").unwrap();
    let ch = ChaosServer::start(scenario, 31, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("keel.toml");
    std::fs::write(&config_path, config(&ch)).unwrap();
    let input = dir.path().join("input.jsonl");
    let n = 400;
    let mut ids: Vec<String> = (0..n).map(|i| format!("resp-{i:04}")).collect();
    let mut text: String = ids
        .iter()
        .map(|id| {
            json!({"custom_id": id, "method": "POST", "url": "/v1/responses",
                   "body": {"model": "gpt", "input": format!("Tell me about {id}"), "instructions": "Be brief"}})
            .to_string()
                + "\n"
        })
        .collect();
    for (id, body) in [
        (
            "bad-previous",
            json!({"model": "gpt", "input": "x", "previous_response_id": "resp_1"}),
        ),
        (
            "bad-item",
            json!({"model": "gpt", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}),
        ),
    ] {
        ids.push(id.into());
        text.push_str(&json!({"custom_id": id, "url": "/v1/responses", "body": body}).to_string());
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let dead = batch::default_dead_letter(&out);
    let cmd = |json: bool| {
        let mut c = Command::new(BIN);
        c.arg("batch")
            .arg(&input)
            .arg("--config")
            .arg(&config_path)
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            c.arg("--json-summary");
        }
        c
    };

    let kill_at = 120;
    let mut child = cmd(false).spawn().unwrap();
    loop {
        if count_lines(&out) >= kill_at {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("batch ended before the kill point: {status}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let written_1 = read_lines(&out);
    assert!(written_1.len() >= kill_at && written_1.len() < n);

    ch.reset();
    let second = cmd(true).output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let summary: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(summary["already_done"], written_1.len() as u64);
    let written = read_lines(&out);
    let dead_lines = read_lines(&dead);
    let mut seen: HashMap<String, u32> = HashMap::new();
    for l in written.iter().chain(&dead_lines) {
        *seen
            .entry(l["custom_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(seen.values().all(|&c| c == 1), "written more than once");
    assert_eq!(seen.len(), ids.len());
    // The rerun asked upstream only for what it wrote: every fourth native
    // attempt failed and went to the chat deployment.
    let rerun = (written.len() - written_1.len()) as u64;
    assert_eq!(answered(&ch), rerun);
    let native = ch.stats("native").unwrap();
    let chat = ch.stats("chat").unwrap();
    assert_eq!(native.attempts, rerun);
    assert_eq!(
        native.by_outcome.get("server_error").copied(),
        Some(rerun / 4)
    );
    assert_eq!(chat.attempts, rerun / 4);
    assert!(native.log.iter().all(|a| a.body.contains("\"input\"")));
    assert!(chat.log.iter().all(|a| a.body.contains("\"messages\"")));

    // OpenAI's batch output shape, a Response body either way.
    for line in &written {
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        let body = &line["response"]["body"];
        assert_eq!(body["object"], "response", "{line}");
        assert_eq!(body["model"], "gpt");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["instructions"], "Be brief");
        assert_eq!(body["output"][0]["type"], "message");
        assert!(line["cost_usd"].as_f64().unwrap() > 0.0, "{line}");
    }
    let bad: HashMap<&str, &Value> = dead_lines
        .iter()
        .map(|l| (l["custom_id"].as_str().unwrap(), l))
        .collect();
    assert_eq!(bad.len(), 2, "{dead_lines:?}");
    let message = |id: &str| {
        bad[id]["keel_error"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(message("bad-previous")
        .contains("`body.previous_response_id` is not supported by keel batch"));
    assert!(message("bad-item").contains(
        "`body.input[0].call_id: no function_call with call_id \"c\" precedes this function_call_output"
    ));
    ch.shutdown().await;
}
