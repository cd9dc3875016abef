//! Soak: moderate load through a child `keel serve` in front of an
//! in-process `keel chaos`, with the primary's faults rotated every few
//! seconds through `PUT /_chaos/upstreams/p/faults` (transient 500/502/503,
//! 429 with Retry-After, 529 overloaded, connection resets, broken streams,
//! a full outage, healthy), and a healthy secondary. Every request must
//! succeed (these are faults the policy absorbs); the gateway's VmRSS and
//! open file descriptors are reported at start and end and must stay flat.
//!
//! `KEEL_SOAK_SECS` (default 60: the CI version of issue 11's soak;
//! `bench/soak.sh` runs 600 by hand), `KEEL_SOAK_RPS` (default 20),
//! `KEEL_SOAK_ROTATE_SECS` (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_chaos::{ChaosServer, Scenario};

mod support;
use support::{fds, free_addr, rss_kb};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rotation: each plan replaces the primary's faults for one period.
const PLANS: &[(&str, &str)] = &[
    (
        "500 x30%",
        r#"[{"kind":"server_error","status":500,"probability":0.3}]"#,
    ),
    (
        "429 retry-after 100ms x30%",
        r#"[{"kind":"rate_limit","retry_after":"100ms","probability":0.3}]"#,
    ),
    ("healthy", r#"[]"#),
    (
        "529 overloaded x30% + 502 x10%",
        r#"[{"kind":"overloaded","probability":0.3},{"kind":"server_error","status":502,"probability":0.1}]"#,
    ),
    (
        "outage (503 always)",
        r#"[{"kind":"server_error","status":503}]"#,
    ),
    ("reset x20%", r#"[{"kind":"reset","probability":0.2}]"#),
    (
        "cut stream x30%",
        r#"[{"kind":"cut_stream","after_chunks":2,"probability":0.3,"streaming_only":true}]"#,
    ),
];

fn complete(api_anthropic: bool, stream: bool, text: &str) -> bool {
    match (api_anthropic, stream) {
        (false, true) => text.trim_end().ends_with("data: [DONE]") && !text.contains("\"error\""),
        (true, true) => text.contains("message_stop") && !text.contains("event: error"),
        (false, false) => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(|s| !s.is_empty())
            })
            .unwrap_or(false),
        (true, false) => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["content"][0]["text"].as_str().map(|s| !s.is_empty()))
            .unwrap_or(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_rotating_faults() {
    let secs = env_u64("KEEL_SOAK_SECS", 60);
    let rps = env_u64("KEEL_SOAK_RPS", 20).max(1);
    let rotate = Duration::from_secs(env_u64("KEEL_SOAK_ROTATE_SECS", 3).max(1));
    let scenario = Scenario::from_toml_str(
        r#"
[[upstream]]
name = "p"
kind = "openai"
api_key = "sk-p"
latency = "10ms"
token_delay = "1ms"
[[upstream]]
name = "s"
kind = "anthropic"
api_key = "sk-s"
latency = "30ms"
token_delay = "1ms"
"#,
        "chaos.toml",
    )
    .unwrap();
    let chaos = ChaosServer::start(scenario, 5, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let text = format!(
        r#"
[server]
listen = "{addr}"
drain_timeout = "1s"
[providers.p]
kind = "openai"
base_url = "{p}"
api_key = "sk-p"
[providers.s]
kind = "anthropic"
base_url = "{s}"
api_key = "sk-s"
[deployments.p]
provider = "p"
model = "gpt-4o-mini"
[deployments.s]
provider = "s"
model = "claude-haiku-4-5"
[routes.r]
chain = ["p", "s"]
[policy]
max_attempts = 3
backoff = "full_jitter"
backoff_base = "20ms"
backoff_cap = "200ms"
timeout = "10s"
attempt_timeout = "2s"
first_token_timeout = "2s"
inter_token_timeout = "2s"
failover_after = "250ms"
[breaker]
consecutive_failures = 5
open_for = "1s"
max_open_for = "3s"
"#,
        p = chaos.base_url("p"),
        s = chaos.base_url("s"),
    );
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _child = Kill(child);
    let client = reqwest::Client::new();
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "keel did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let control = format!("http://{}/_chaos/upstreams/p/faults", chaos.addr());
    let ok = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let per_plan: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        PLANS
            .iter()
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    );
    let total = secs * rps;
    let gap = Duration::from_secs_f64(1.0 / rps as f64);
    let start = tokio::time::Instant::now();
    let mut plan_ix = usize::MAX;
    let mut tasks = Vec::with_capacity(total as usize);
    let mut start_sample = None;
    for i in 0..total {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let want = ((start.elapsed().as_secs_f64() / rotate.as_secs_f64()) as usize) % PLANS.len();
        if want != plan_ix {
            plan_ix = want;
            let r = client
                .put(&control)
                .header("content-type", "application/json")
                .body(format!(r#"{{"faults":{}}}"#, PLANS[plan_ix].1))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "fault plan refused: {r:?}");
        }
        // The start sample once the pools and histograms are warm.
        if start_sample.is_none() && start.elapsed() >= Duration::from_secs(2) {
            start_sample = Some((rss_kb(pid), fds(pid)));
        }
        let anthropic = i % 2 == 1;
        let stream = (i / 2) % 2 == 1;
        let (url, body) = if anthropic {
            (
                format!("http://{addr}/v1/messages"),
                format!(
                    r#"{{"model":"r","stream":{stream},"max_tokens":200,"messages":[{{"role":"user","content":"soak #{i}"}}]}}"#
                ),
            )
        } else {
            (
                format!("http://{addr}/v1/chat/completions"),
                format!(
                    r#"{{"model":"r","stream":{stream},"max_tokens":200,"messages":[{{"role":"user","content":"soak #{i}"}}]}}"#
                ),
            )
        };
        let req = client
            .post(url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(20))
            .body(body);
        let (ok, sent, failures, per_plan) =
            (ok.clone(), sent.clone(), failures.clone(), per_plan.clone());
        let ix = plan_ix;
        tasks.push(tokio::spawn(async move {
            sent.fetch_add(1, Ordering::Relaxed);
            per_plan[ix].0.fetch_add(1, Ordering::Relaxed);
            let outcome = match req.send().await {
                Ok(r) => {
                    let status = r.status();
                    match r.text().await {
                        Ok(t) if status == 200 && complete(anthropic, stream, &t) => Ok(()),
                        Ok(t) => Err(format!("{status}: {}", &t[..t.len().min(300)])),
                        Err(e) => Err(format!("{status}: body: {e}")),
                    }
                }
                Err(e) => Err(format!("send: {e}")),
            };
            match outcome {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    per_plan[ix].1.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failures.lock().unwrap().push(format!(
                    "#{i} [{}] anthropic={anthropic} stream={stream}: {e}",
                    PLANS[ix].0
                )),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (rss_start, fds_start) = start_sample.unwrap_or((rss_kb(pid), fds(pid)));
    let (rss_end, fds_end) = (rss_kb(pid), fds(pid));
    let (ok, sent) = (ok.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
    println!("soak: {secs} s at {rps} req/s, faults rotated every {rotate:?} (half Anthropic API, half streaming)");
    for (j, (name, _)) in PLANS.iter().enumerate() {
        let (n, k) = (
            per_plan[j].0.load(Ordering::Relaxed),
            per_plan[j].1.load(Ordering::Relaxed),
        );
        if n > 0 {
            println!("  {name:<32} {k}/{n} ok");
        }
    }
    println!(
        "  success {ok}/{sent} ({:.2}%)",
        ok as f64 * 100.0 / sent.max(1) as f64
    );
    println!(
        "  keel VmRSS {} -> {} MB, fds {fds_start} -> {fds_end}",
        rss_start / 1024,
        rss_end / 1024
    );
    let by = chaos.stats("p").unwrap().by_outcome;
    println!("  primary outcomes: {by:?}");
    println!(
        "  secondary outcomes: {:?}",
        chaos.stats("s").unwrap().by_outcome
    );
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(ok, total);
    assert!(
        fds_end <= fds_start + 32,
        "fds grew {fds_start} -> {fds_end}"
    );
    assert!(
        rss_end <= rss_start + 64 * 1024,
        "RSS grew {} -> {} MB",
        rss_start / 1024,
        rss_end / 1024
    );
    chaos.shutdown().await;
}
