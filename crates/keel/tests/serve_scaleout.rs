//! Two `keel serve` processes share one real `redis-server`: a route limited
//! to 600 RPM is admitted at the global rate across both, not twice it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_chaos::{ChaosServer, Scenario};
use keel_store::testing::RedisServer;

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{base} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_hold_one_global_rate_limit() {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let scenario =
        Scenario::from_toml_str("[[upstream]]\nname = \"a\"\nkind = \"openai\"\n", "t.toml")
            .unwrap();
    let ch = ChaosServer::start(scenario, 5, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    let mut bases = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[store]
redis = "{redis}"
prefix = "keel-scaleout-test"
timeout = "1s"
[providers.a]
kind = "openai"
base_url = "{a}"
[deployments.a]
provider = "a"
model = "gpt-test"
rpm = 600
[routes.r]
chain = ["a"]
[policy]
max_queue_wait = "0s"
"#,
            redis = redis.url(),
            a = ch.base_url("a"),
        );
        let path = dir.path().join(format!("keel-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        replicas.push(Replica(child));
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    for b in &bases {
        wait_ready(&client, b).await;
    }

    // 2,000 requests over about 5 s, alternating between the replicas.
    let n = 2000u32;
    let gap = Duration::from_micros(2500);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        tokio::time::sleep_until(start + gap * i).await;
        let client = client.clone();
        let url = format!("{}/v1/chat/completions", bases[(i % 2) as usize]);
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"model": "r", "messages": [{"role": "user", "content": format!("q{i}")}]});
            client.post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut admitted = 0u64;
    let mut refused = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Burst (1/6 of a minute's allowance) plus 10 requests per second.
    let expected = 100.0 + 10.0 * elapsed;
    println!(
        "admitted {admitted} of {n} in {elapsed:.2} s (expected {expected:.0}), refused {refused}"
    );
    assert!(
        (admitted as f64 - expected).abs() <= 0.1 * expected,
        "admitted {admitted}, expected {expected:.0} (each replica alone would admit about twice that)"
    );
    assert_eq!(
        ch.stats("a").unwrap().attempts,
        admitted,
        "every admitted request reached the upstream once"
    );
}
