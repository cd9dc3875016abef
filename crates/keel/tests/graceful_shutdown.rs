//! Graceful shutdown of the real binary: on SIGTERM `keel serve` stops
//! accepting, finishes the requests in flight (a streamed one included) and
//! exits 0; past `[server] drain_timeout` it exits 0 without waiting longer.
//! The upstream is an in-process `keel chaos` with 500 ms of latency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};

async fn chaos() -> ChaosHandle {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\nlatency = \"500ms\"\n",
        "chaos.toml",
    )
    .unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `keel serve` on a fresh port; returns the child and its address.
async fn keel(ch: &ChaosHandle, drain: &str) -> (Child, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let text = format!(
        r#"
[server]
listen = "{addr}"
drain_timeout = "{drain}"
[providers.a]
kind = "openai"
base_url = "{base}"
api_key = "sk-a"
[deployments.a]
provider = "a"
model = "gpt-test"
[policy]
max_attempts = 1
attempt_timeout = "5s"
[routes.r]
chain = ["a"]
"#,
        base = ch.base_url("a")
    );
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(5), "keel did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, addr, dir)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Waits up to `within` for the child to exit; returns its exit code.
async fn exit_code(child: &mut Child, within: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if t.elapsed() > within {
            let _ = child.kill();
            panic!("keel still running {within:?} after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until the port refuses connections.
async fn refused(addr: SocketAddr) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn attempts(ch: &ChaosHandle) -> u64 {
    ch.stats("a").map(|s| s.attempts).unwrap_or(0)
}

async fn wait_attempts(ch: &ChaosHandle, n: u64) {
    let t = Instant::now();
    while attempts(ch) < n {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "requests did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    stream: bool,
) -> tokio::task::JoinHandle<reqwest::Result<(u16, String)>> {
    let body = format!(
        r#"{{"model":"r","stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    );
    let req = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    tokio::spawn(async move {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let ch = chaos().await;
    let (mut child, addr, _dir) = keel(&ch, "30s").await;
    let client = reqwest::Client::new();
    let full = post(&client, addr, false);
    let streamed = post(&client, addr, true);
    wait_attempts(&ch, 2).await;
    let t = Instant::now();
    sigterm(&child);
    refused(addr).await;
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "stopped accepting only after {:?}",
        t.elapsed()
    );

    let (status, body) = full.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    let (status, body) = streamed.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    assert_eq!(exit_code(&mut child, Duration::from_secs(5)).await, Some(0));
    assert_eq!(attempts(&ch), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_timeout_keel_exits_0_without_waiting() {
    let ch = chaos().await;
    let (mut child, addr, _dir) = keel(&ch, "50ms").await;
    let client = reqwest::Client::new();
    let full = post(&client, addr, false);
    wait_attempts(&ch, 1).await;
    let t = Instant::now();
    sigterm(&child);
    assert_eq!(exit_code(&mut child, Duration::from_secs(5)).await, Some(0));
    assert!(
        t.elapsed() < Duration::from_millis(450),
        "exited after {:?}, not at the drain timeout",
        t.elapsed()
    );
    // The request that outlived the drain was cut, not answered.
    assert!(full.await.unwrap().is_err());
}
