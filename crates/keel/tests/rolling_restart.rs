//! Rolling restart: two `keel serve` replicas on one `keel chaos` upstream,
//! and a client that sends a steady stream of requests (plain and
//! streaming, OpenAI API) spread over both, the way a load balancer does:
//! a connection refused, or a connection closed before any byte of the
//! answer, means "try the other replica". Replica 1 is restarted (SIGTERM,
//! exit 0, started again on the same port, /readyz polled), then replica 2,
//! twice over. Every request must get one complete, successful answer, and
//! the upstream must have seen exactly one attempt per request (none lost,
//! none answered twice).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};

mod support;
use support::free_addr;

/// Concurrent client loops.
const WORKERS: u64 = 4;

struct Replica {
    addr: SocketAddr,
    config: PathBuf,
    child: Option<Child>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write_config(dir: &Path, n: usize, addr: SocketAddr, ch: &ChaosHandle) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "{addr}"
drain_timeout = "20s"
[providers.a]
kind = "openai"
base_url = "{base}"
api_key = "sk-a"
[deployments.a]
provider = "a"
model = "gpt-test"
[policy]
max_attempts = 1
timeout = "20s"
attempt_timeout = "20s"
first_token_timeout = "20s"
[routes.r]
chain = ["a"]
"#,
        base = ch.base_url("a")
    );
    let path = dir.join(format!("keel-{n}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls `/readyz` until it answers 200.
async fn ready(client: &reqwest::Client, addr: SocketAddr) {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{addr} never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGTERM, then waits for the exit and returns its code.
async fn stop(child: &mut Child) -> Option<i32> {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "replica still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a successful answer is complete.
fn complete(stream: bool, text: &str) -> bool {
    if stream {
        text.trim_end().ends_with("data: [DONE]") && !text.contains("\"error\"")
    } else {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(|s| !s.is_empty())
            })
            .unwrap_or(false)
    }
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    /// Answered by replica 0 / 1.
    by_replica: [AtomicU64; 2],
    /// Requests that went to the other replica (refused or closed before any byte).
    rerouted: AtomicU64,
    /// Streams of replica 0 / 1 whose headers have arrived and whose body is still coming.
    streams_open: [AtomicU64; 2],
    failures: Mutex<Vec<String>>,
}

/// Sends request `i` until a replica answers; the answer must be complete.
async fn one(client: &reqwest::Client, addrs: [SocketAddr; 2], i: u64, tally: &Tally) {
    let stream = i % 2 == 1;
    let body = format!(
        r#"{{"model":"r","stream":{stream},"max_tokens":100,"messages":[{{"role":"user","content":"rolling #{i}"}}]}}"#
    );
    let t = Instant::now();
    let mut target = ((i / 2) % 2) as usize;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let sent = client
            .post(format!("http://{}/v1/chat/completions", addrs[target]))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                // No byte of an answer: what a load balancer retries elsewhere.
                if t.elapsed() > Duration::from_secs(15) {
                    tally.failures.lock().unwrap().push(format!(
                        "#{i}: no replica answered after {tries} tries: {e}"
                    ));
                    return;
                }
                if tries == 1 {
                    tally.rerouted.fetch_add(1, Ordering::Relaxed);
                }
                target = 1 - target;
                if tries.is_multiple_of(2) {
                    // Both refused (one restarting, the other between accept calls): pace.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
        };
        let status = resp.status();
        if stream {
            tally.streams_open[target].fetch_add(1, Ordering::SeqCst);
        }
        let text = resp.text().await;
        if stream {
            tally.streams_open[target].fetch_sub(1, Ordering::SeqCst);
        }
        let outcome = match text {
            Ok(text) if status == 200 && complete(stream, &text) => Ok(()),
            Ok(text) => Err(format!("{status}: {}", &text[..text.len().min(300)])),
            Err(e) => Err(format!("{status}: body cut: {e}")),
        };
        match outcome {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                tally.by_replica[target].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("#{i} stream={stream} replica {}: {e}", target + 1)),
        }
        return;
    }
}

/// Waits until `n` more requests have been answered.
async fn answered(tally: &Tally, n: u64) {
    let target = tally.ok.load(Ordering::Relaxed) + n;
    let t = Instant::now();
    while tally.ok.load(Ordering::Relaxed) < target {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "traffic stalled: {} answered",
            tally.ok.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_replicas_loses_no_request() {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\nlatency = \"30ms\"\ntoken_delay = \"5ms\"\n",
        "chaos.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 3, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut replicas: Vec<Replica> = (0..2)
        .map(|n| {
            let addr = free_addr();
            let config = write_config(dir.path(), n, addr, &ch);
            let child = Some(start(&config));
            Replica {
                addr,
                config,
                child,
            }
        })
        .collect();
    for r in &replicas {
        ready(&client, r.addr).await;
    }
    let addrs = [replicas[0].addr, replicas[1].addr];

    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (tally, next, stop_flag) = (tally.clone(), next.clone(), stop_flag.clone());
            let client = reqwest::Client::new();
            tokio::spawn(async move {
                while !stop_flag.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    one(&client, addrs, i, &tally).await;
                }
            })
        })
        .collect();

    let rounds = 2;
    let mut restarts = 0;
    let mut open_at_sigterm = 0;
    answered(&tally, 20).await;
    for _ in 0..rounds {
        for (n, r) in replicas.iter_mut().enumerate() {
            // Restart while a stream is mid-answer on it (plain requests
            // are in flight too).
            let t = Instant::now();
            while tally.streams_open[n].load(Ordering::SeqCst) == 0 {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "no stream on replica {n}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            open_at_sigterm += tally.streams_open[n].load(Ordering::SeqCst);
            let code = stop(r.child.as_mut().unwrap()).await;
            assert_eq!(code, Some(0), "replica {} exit code", r.addr);
            r.child = Some(start(&r.config));
            ready(&client, r.addr).await;
            restarts += 1;
            answered(&tally, 20).await;
        }
    }
    stop_flag.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let sent = tally.sent.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    let upstream = ch.stats("a").unwrap().attempts;
    println!(
        "rolling restart: {restarts} restarts ({open_at_sigterm} streams mid-answer at SIGTERM), {ok}/{sent} answered (replica 1: {}, replica 2: {}), {} sent to the other replica, upstream attempts {upstream}",
        tally.by_replica[0].load(Ordering::Relaxed),
        tally.by_replica[1].load(Ordering::Relaxed),
        tally.rerouted.load(Ordering::Relaxed),
    );
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(ok, sent, "every request answered");
    assert_eq!(
        upstream, sent,
        "one upstream attempt per request: none twice"
    );
    for r in replicas.iter_mut() {
        assert_eq!(stop(r.child.as_mut().unwrap()).await, Some(0));
        r.child = None;
    }
    ch.shutdown().await;
}
