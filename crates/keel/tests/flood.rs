//! A flood of slow clients against the real binary: N connections (env
//! `KEEL_FLOOD_CLIENTS`, default 2,000) each send the start of a request
//! head and stall. `keel serve` holds them under `[server] max_connections`
//! (env `KEEL_FLOOD_MAX_CONNECTIONS`, default N + 512) with a header read
//! timeout longer than the test, so the peak is every connection open at
//! once. Its resident memory (VmRSS, /proc/<pid>/status) stays under
//! `RSS_CEILING_MB`, its descriptors under the connection ceiling, and a
//! normal request is still answered while the flood is on.
//!
//! File descriptors: the test does not raise RLIMIT_NOFILE; it checks that
//! N fits under the soft limit it inherited (20,000 here, so 10,000 clients
//! run by hand: the test holds N client sockets, the child N server ones).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_chaos::{ChaosServer, Scenario};

mod support;
use support::{fds, free_addr, rss_kb};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The stated ceiling on the gateway's resident memory under the flood.
const RSS_CEILING_MB: u64 = 200;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soft RLIMIT_NOFILE of this process (children inherit it).
fn nofile_soft() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_flood_keeps_memory_bounded_and_serves() {
    let n = env_usize("KEEL_FLOOD_CLIENTS", 2000);
    let max_conn = env_usize("KEEL_FLOOD_MAX_CONNECTIONS", n + 512);
    let soft = nofile_soft();
    assert!(
        n + 256 < soft,
        "{n} clients do not fit under RLIMIT_NOFILE {soft}: lower KEEL_FLOOD_CLIENTS or raise ulimit -n"
    );
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\n",
        "chaos.toml",
    )
    .unwrap();
    let chaos = ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let text = format!(
        r#"
[server]
listen = "{addr}"
max_connections = {max_conn}
max_in_flight = 64
header_read_timeout = "60s"
drain_timeout = "1s"
[providers.a]
kind = "openai"
base_url = "{base}"
api_key = "sk-a"
[deployments.a]
provider = "a"
model = "gpt-test"
[routes.r]
chain = ["a"]
"#,
        base = chaos.base_url("a")
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
    // Warm: one real request, so the baseline includes the engine's first use.
    let chat = r#"{"model":"r","messages":[{"role":"user","content":"hello"}],"max_tokens":20}"#;
    let r = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rss_before = rss_kb(pid);
    let fds_before = fds(pid);

    // The flood, opened in batches (the listen backlog is 1,024).
    let started = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(n);
    let mut peak = rss_before;
    while held.len() < n {
        let batch = (n - held.len()).min(500);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            set.spawn(async move {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: keel\r\nContent-Ty")
                    .await?;
                Ok::<_, std::io::Error>(s)
            });
        }
        while let Some(r) = set.join_next().await {
            held.push(r.unwrap().unwrap());
        }
        peak = peak.max(rss_kb(pid));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "flood too slow"
        );
    }
    let opened_in = started.elapsed();
    // Poll until the gateway has accepted them all (or the ceiling).
    let expect = n.min(max_conn);
    let t = Instant::now();
    while fds(pid) < fds_before + expect {
        peak = peak.max(rss_kb(pid));
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "keel holds {} fds, expected {} + {expect}",
            fds(pid),
            fds_before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fds_peak = fds(pid);
    peak = peak.max(rss_kb(pid));

    // A normal request while the flood is on.
    let t = Instant::now();
    let r = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(5))
        .body(chat)
        .send()
        .await;
    let normal = t.elapsed();
    let status = r.as_ref().map(|r| r.status().as_u16()).ok();
    peak = peak.max(rss_kb(pid));
    println!(
        "flood: {n} slow clients opened in {opened_in:.1?}; max_connections {max_conn}; \
         keel fds {fds_before} -> {fds_peak}; VmRSS {} MB -> peak {} MB (ceiling {RSS_CEILING_MB} MB); \
         normal request {status:?} in {normal:.1?}",
        rss_before / 1024,
        peak / 1024
    );
    assert!(
        fds_peak <= fds_before + max_conn + 8,
        "{fds_peak} fds past max_connections {max_conn}"
    );
    assert!(
        peak / 1024 < RSS_CEILING_MB,
        "peak RSS {} MB over {RSS_CEILING_MB} MB",
        peak / 1024
    );
    if n < max_conn {
        assert_eq!(status, Some(200), "{r:?}");
        assert!(
            normal < Duration::from_secs(2),
            "normal request took {normal:?}"
        );
    }
    drop(held);
    chaos.shutdown().await;
}
