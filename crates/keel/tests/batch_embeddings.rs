#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keel batch` with `/v1/embeddings` lines, as the real binary against
//! chaos: faults retried and fallen over inside one embedding space, lines
//! in OpenAI's batch output shape with the vectors chaos gives directly,
//! bad lines dead-lettered, and a `kill -9` in the middle followed by a
//! rerun that writes each item once and asks nothing answered again.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keel::batch;
use keel_chaos::{
    ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Kind, RetryAfterStyle, Scenario,
    Trigger, UpstreamSpec,
};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keel");

fn p(fault: Fault, prob: f64) -> FaultRule {
    FaultRule::new(fault, Trigger::Probability(prob))
}

async fn chaos() -> ChaosHandle {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.latency = Duration::from_millis(3);
    primary.faults = FaultPlan {
        faults: vec![
            p(Fault::ServerError { status: 500 }, 0.08),
            p(
                Fault::RateLimit {
                    retry_after: Some(Duration::from_millis(20)),
                    header_style: RetryAfterStyle::All,
                },
                0.05,
            ),
            p(Fault::Reset, 0.03),
            p(Fault::Empty, 0.03),
        ],
    };
    let mut secondary = UpstreamSpec::new("secondary", Kind::OpenAi);
    secondary.latency = Duration::from_millis(3);
    let other = UpstreamSpec::new("other", Kind::OpenAi);
    let scenario = Scenario {
        upstreams: vec![primary, secondary, other],
    };
    ChaosServer::start(scenario, 21, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(ch: &ChaosHandle) -> String {
    format!(
        r#"
[providers.primary]
kind = "openai"
base_url = "{}"
[providers.secondary]
kind = "openai"
base_url = "{}"
[providers.other]
kind = "openai"
base_url = "{}"
[deployments.primary]
provider = "primary"
model = "text-embedding-3-small"
embedding_space = "small"
input_price = 0.02
[deployments.secondary]
provider = "secondary"
model = "text-embedding-3-small"
embedding_space = "small"
input_price = 0.02
[deployments.other]
provider = "other"
model = "text-embedding-3-large"
embedding_space = "large"
dimensions = false
[routes.embed]
chain = ["primary", "secondary"]
[routes.large]
chain = ["other"]
[policy]
max_attempts = 3
backoff_base = "5ms"
backoff_cap = "50ms"
timeout = "10s"
attempt_timeout = "2s"
failover_after = "100ms"
[breaker]
consecutive_failures = 5
open_for = "200ms"
max_open_for = "1s"
"#,
        ch.base_url("primary"),
        ch.base_url("secondary"),
        ch.base_url("other"),
    )
}

fn read_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// 200s chaos sent on the route's space.
fn answered(ch: &ChaosHandle) -> u64 {
    ["primary", "secondary"]
        .iter()
        .filter_map(|u| ch.stats(u))
        .map(|s| s.by_outcome.get("ok").copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_lines_survive_kill_nine_and_are_written_once_in_openais_shape() {
    let ch = chaos().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("keel.toml");
    std::fs::write(&config_path, config(&ch)).unwrap();
    let input = dir.path().join("input.jsonl");
    let n = 600;
    let mut ids: Vec<String> = (0..n).map(|i| format!("emb-{i:04}")).collect();
    let mut text: String = ids
        .iter()
        .map(|id| {
            json!({"custom_id": id, "method": "POST", "url": "/v1/embeddings",
                   "body": {"model": "embed", "input": [format!("{id} first"), format!("{id} second")]}})
            .to_string()
                + "\n"
        })
        .collect();
    // Two lines no deployment can serve: dead-lettered before any call.
    for (id, body) in [
        (
            "bad-dims",
            json!({"model": "large", "input": "x", "dimensions": 8}),
        ),
        ("bad-empty", json!({"model": "embed", "input": []})),
    ] {
        ids.push(id.into());
        text.push_str(&json!({"custom_id": id, "url": "/v1/embeddings", "body": body}).to_string());
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

    let kill_at = rand::rngs::StdRng::seed_from_u64(0x0065_6d62).random_range(60..400);
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
    let first_ok = answered(&ch);
    // Answered upstream but not written when killed: at most what was in flight.
    assert!(first_ok >= written_1.len() as u64);
    assert!(first_ok - written_1.len() as u64 <= 512);
    // A torn write, as a kill in mid-line leaves it.
    let mut torn = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut torn, br#"{"id":"batch_req_x","custom_id":"emb-0"#).unwrap();
    drop(torn);

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
    // Every item exactly once across the output and the dead letter.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for l in written.iter().chain(&dead_lines) {
        *seen
            .entry(l["custom_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(seen.values().all(|&c| c == 1), "written more than once");
    assert_eq!(seen.len(), ids.len());
    assert!(ids.iter().all(|id| seen.contains_key(id)));
    // The rerun asked upstream only for what it wrote.
    assert_eq!(answered(&ch), (written.len() - written_1.len()) as u64);
    assert_eq!(
        summary["answered"].as_u64().unwrap(),
        (written.len() - written_1.len()) as u64
    );
    // The other space's deployment never received a request.
    assert_eq!(ch.stats("other").unwrap().attempts, 0);

    // OpenAI's batch output shape, with the vectors chaos gives directly.
    let line = written
        .iter()
        .find(|l| l["custom_id"] == "emb-0007")
        .unwrap();
    assert_eq!(line["response"]["status_code"], 200);
    assert_eq!(line["error"], Value::Null);
    let body = &line["response"]["body"];
    assert_eq!(
        (body["object"].as_str(), body["model"].as_str()),
        (Some("list"), Some("embed"))
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/embeddings", ch.base_url("other")))
        .json(&json!({"model": "text-embedding-3-small", "input": ["emb-0007 first", "emb-0007 second"]}))
        .send()
        .await
        .unwrap();
    let direct: Value = resp.json().await.unwrap();
    assert_eq!(body["data"], direct["data"]);
    assert!(line["cost_usd"].as_f64().unwrap() > 0.0, "{line}");
    // The dead letters say why, and can be fed back as they are.
    let bad: HashMap<&str, &Value> = dead_lines
        .iter()
        .map(|l| (l["custom_id"].as_str().unwrap(), l))
        .collect();
    assert_eq!(bad.len(), 2, "{dead_lines:?}");
    assert_eq!(
        bad["bad-dims"]["keel_error"]["message"],
        "no deployment of route 'large' can serve this request (other: does not support dimensions)"
    );
    assert_eq!(bad["bad-dims"]["url"], "/v1/embeddings");
    assert!(bad["bad-empty"]["keel_error"]["message"]
        .as_str()
        .unwrap()
        .contains("input: expected at least one input, got an empty array"));
    ch.shutdown().await;
}
