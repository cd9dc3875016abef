//! Two `keel serve` processes share one real `redis-server`: a route limited
//! to 600 RPM is admitted at the global rate across both, not twice it, and
//! a tenant's monthly budget spent through one replica, or its RPM, is
//! refused by the other, with no upstream attempt.

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
    let (_dir, _replicas, bases) = replicas(
        &redis,
        "keel-scaleout-test",
        &format!(
            r#"
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
            a = ch.base_url("a"),
        ),
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

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

/// Two `keel serve` processes on `redis` under key `prefix` with `config`
/// (everything but `[server]` and `[store]`), ready; the directory holds
/// their config files.
async fn replicas(
    redis: &RedisServer,
    prefix: &str,
    config: &str,
) -> (tempfile::TempDir, Vec<Replica>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    let mut bases = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nredis = \"{redis}\"\nprefix = \"{prefix}\"\ntimeout = \"1s\"\n{config}",
            redis = redis.url(),
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
    let client = reqwest::Client::new();
    for b in &bases {
        wait_ready(&client, b).await;
    }
    (dir, replicas, bases)
}

/// `GET /_chaos/stats`: attempts upstream `name` has seen.
async fn chaos_attempts(client: &reqwest::Client, chaos: std::net::SocketAddr, name: &str) -> u64 {
    let stats: serde_json::Value = client
        .get(format!("http://{chaos}/_chaos/stats?log=false"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["upstreams"][name]["attempts"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_budget_spent_on_one_replica_is_refused_by_the_other() {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let scenario =
        Scenario::from_toml_str("[[upstream]]\nname = \"a\"\nkind = \"openai\"\n", "t.toml")
            .unwrap();
    let ch = ChaosServer::start(scenario, 11, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (input_price, output_price, budget) = (2.0, 6.0, 0.001);
    let (_dir, _replicas, bases) = replicas(
        &redis,
        "keel-tenant-test:",
        &format!(
            r#"
[providers.a]
kind = "openai"
base_url = "{a}"
[deployments.a]
provider = "a"
model = "gpt-test"
input_price = {input_price:?}
output_price = {output_price:?}
[routes.r]
chain = ["a"]
[[tenants]]
name = "small"
token = "tok-small"
monthly_budget_usd = {budget:?}
"#,
            a = ch.base_url("a"),
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let (a, b) = (&bases[0], &bases[1]);
    let chat = |base: &str, stream: bool| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", "Bearer tok-small")
            .json(&serde_json::json!({
                "model": "r", "max_tokens": 40, "stream": stream,
                "messages": [{"role": "user", "content": "Spend a little."}]
            }))
            .send()
    };

    // Spend through A until A itself refuses.
    let mut answered = 0u64;
    let mut from_usage = 0.0;
    let refusal = loop {
        assert!(answered < 100, "a budget of ${budget} never ran out");
        let resp = chat(a, false).await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        if status == 429 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        answered += 1;
        let u = &body["usage"];
        from_usage += (u["prompt_tokens"].as_f64().unwrap() * input_price
            + u["completion_tokens"].as_f64().unwrap() * output_price)
            / 1e6;
    };
    assert_eq!(refusal["error"]["code"], "budget_exceeded", "{refusal}");
    assert!(answered >= 2, "spent over several requests: {answered}");
    assert!(from_usage >= budget);
    let upstream = chaos_attempts(&client, ch.addr(), "a").await;
    assert_eq!(upstream, answered, "A's refusal made no upstream attempt");

    // B has served nothing, yet refuses: the budget is the fleet's.
    let resp = chat(b, false).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("tenant 'small' has spent $") && msg.contains("monthly budget of $0.00"),
        "{msg}"
    );
    assert_eq!(chat(b, true).await.unwrap().status(), 429, "streams too");
    let resp = client
        .post(format!("{b}/v1/messages"))
        .header("x-api-key", "tok-small")
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model": "r", "max_tokens": 40,
            "messages": [{"role": "user", "content": "Spend a little."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        chaos_attempts(&client, ch.addr(), "a").await,
        answered,
        "B's refusals made no upstream attempt"
    );

    // Both replicas report the same spend: the chaos usage times the price.
    let mut reports = Vec::new();
    for base in [a, b] {
        let status: serde_json::Value = client
            .get(format!("{base}/admin/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reports.push(status["spend"].clone());
    }
    assert_eq!(reports[0], reports[1]);
    let tenant = reports[0]["tenants"]["small"].as_f64().unwrap();
    let deployment = reports[0]["deployments"]["a"].as_f64().unwrap();
    assert!(
        (tenant - from_usage).abs() < 1e-9,
        "{tenant} vs {from_usage}"
    );
    assert!((deployment - from_usage).abs() < 1e-9);
    println!(
        "budget ${budget}: {answered} answers through A (${tenant:.6} spent, chaos usage x price ${from_usage:.6}), then 429 on A and B with {upstream} upstream attempts in all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_rate_limit_is_held_across_replicas() {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let scenario =
        Scenario::from_toml_str("[[upstream]]\nname = \"a\"\nkind = \"openai\"\n", "t.toml")
            .unwrap();
    let ch = ChaosServer::start(scenario, 12, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // rpm = 6: a burst of one request, then one every 10 s.
    let (_dir, _replicas, bases) = replicas(
        &redis,
        "keel-tenant-test:",
        &format!(
            "[providers.a]\nkind = \"openai\"\nbase_url = \"{a}\"\n[deployments.a]\nprovider = \"a\"\nmodel = \"m\"\n[routes.r]\nchain = [\"a\"]\n[[tenants]]\nname = \"slow\"\ntoken = \"tok-slow\"\nrpm = 6\n",
            a = ch.base_url("a"),
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for base in &bases {
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", "Bearer tok-slow")
            .json(
                &serde_json::json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        statuses.push((status, body["error"]["code"].clone()));
    }
    assert_eq!(statuses[0].0, 200, "{statuses:?}");
    assert_eq!(statuses[1].0, 429, "B sees the burst A used: {statuses:?}");
    assert_eq!(statuses[1].1, "tenant_rate_limited");
    assert_eq!(chaos_attempts(&client, ch.addr(), "a").await, 1);
}
