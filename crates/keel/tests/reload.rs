#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Config reload without a restart: the engine's state carried over per
//! deployment identity (in process), and `keel serve` reloaded twenty
//! times by SIGHUP and `POST /admin/reload` under four client loops, a
//! broken file refused while the old config serves.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_chaos::{
    ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Kind, Scenario, UpstreamSpec,
};
use keel_engine::config::Config;
use keel_engine::{CacheStatus, ChatCall, Engine, LiveEngine, ReloadError};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keel");
const TOKEN: &str = "admin-secret-token";

async fn chaos(upstreams: Vec<UpstreamSpec>) -> ChaosHandle {
    ChaosServer::start(Scenario { upstreams }, 7, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn request(model: &str) -> keel_wire::openai::ChatRequest {
    serde_json::from_value(json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello"}]
    }))
    .unwrap()
}

fn stats_of<'a>(e: &'a keel_engine::EngineStats, name: &str) -> &'a keel_engine::DeploymentStats {
    e.deployments.iter().find(|d| d.name == name).unwrap()
}

/// Deployment `da` on upstream `a`, `db` on `b_upstream`, route `r`
/// (`da` then `db`) and `extra` routes.
fn engine_config(ch: &ChaosHandle, b_upstream: &str, a_key: &str, extra: &str) -> String {
    format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "{a_key}"
[providers.b]
kind = "openai"
base_url = "{b}"
api_key = "sk-b"
[deployments.da]
provider = "a"
model = "gpt-a"
[deployments.db]
provider = "b"
model = "gpt-b"
[routes.r]
chain = ["da", "db"]
[policy]
max_attempts = 1
[breaker]
consecutive_failures = 2
open_for = "1h"
max_open_for = "1h"
{extra}
"#,
        a = ch.base_url("a"),
        b = ch.base_url(b_upstream),
    )
}

/// A reload keeps the breaker and counters of a deployment whose identity
/// is unchanged, starts one whose base URL or key changed afresh, leaves
/// engines taken before it on their config, and refuses a broken file with
/// the error `keel check-config` gives, the running config untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_per_deployment_identity_and_a_broken_file_is_refused() {
    let mut a = UpstreamSpec::new("a", Kind::OpenAi);
    a.faults = FaultPlan {
        faults: vec![FaultRule::always(Fault::ServerError { status: 500 })],
    };
    let ch = chaos(vec![
        a,
        UpstreamSpec::new("b", Kind::OpenAi),
        UpstreamSpec::new("c", Kind::OpenAi),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, engine_config(&ch, "b", "sk-a", "")).unwrap();
    let engine = Engine::with_seed(Config::load(&path).unwrap(), 3).unwrap();
    let live = LiveEngine::new(engine, Some(path.clone()));

    // `da` fails twice: its breaker opens; `db` answers both.
    let first = live.engine();
    for _ in 0..2 {
        first.chat(ChatCall::openai(request("r"))).await.unwrap();
    }
    let before = first.stats();
    assert_eq!(stats_of(&before, "da").breaker, "open");
    assert_eq!(stats_of(&before, "da").attempts, 2);
    assert_eq!(stats_of(&before, "db").attempts, 2);

    // `db` moves to another upstream; a route is added.
    std::fs::write(
        &path,
        engine_config(&ch, "c", "sk-a", "[routes.added]\nchain = [\"db\"]"),
    )
    .unwrap();
    let r = live.reload().unwrap();
    assert_eq!(r.kept, ["da"]);
    assert_eq!(r.fresh, ["db"]);
    assert!(r.removed.is_empty());
    let second = live.engine();
    let after = second.stats();
    assert_eq!(stats_of(&after, "da").breaker, "open", "breaker kept");
    assert_eq!(stats_of(&after, "da").breaker_trips, 1);
    assert_eq!(stats_of(&after, "da").attempts, 2, "counters kept");
    assert_eq!(
        stats_of(&after, "db").attempts,
        0,
        "a new upstream starts afresh"
    );
    let recent = |e: &Engine, name: &str| {
        e.status()
            .deployments
            .iter()
            .find(|d| d.stats.name == name)
            .map(|d| d.recent_classes.len())
            .unwrap()
    };
    assert_eq!(
        recent(&second, "da"),
        2,
        "the status page's recent attempts kept"
    );
    assert_eq!(recent(&second, "db"), 0);
    // The open breaker skips `da`: the new route and the old one answer
    // from `c` without an attempt on `a`.
    second
        .chat(ChatCall::openai(request("added")))
        .await
        .unwrap();
    second.chat(ChatCall::openai(request("r"))).await.unwrap();
    assert_eq!(ch.stats("a").unwrap().attempts, 2);
    assert_eq!(ch.stats("c").unwrap().attempts, 2);
    // An engine taken before the reload keeps its config.
    assert!(!first.config().routes.contains_key("added"));
    let e = first
        .chat(ChatCall::openai(request("added")))
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);

    // A broken file: the same error as `keel check-config`, nothing swapped.
    let running_hash = second.config().hash.clone();
    std::fs::write(
        &path,
        engine_config(&ch, "c", "sk-a", "")
            .replace(r#"chain = ["da", "db"]"#, r#"chain = ["da", "nope"]"#),
    )
    .unwrap();
    let expected = Config::load(&path).unwrap_err().to_string();
    match live.reload() {
        Err(e @ ReloadError::Invalid(_)) => assert_eq!(e.to_string(), expected),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        expected.starts_with(&format!("{}: routes.r.chain", path.display())),
        "{expected}"
    );
    assert!(expected.contains("expected"), "{expected}");
    assert_eq!(live.engine().config().hash, running_hash);
    let status = live.engine().status();
    assert_eq!(
        (status.config.reloads_ok, status.config.reloads_rejected),
        (1, 1)
    );
    assert_eq!(status.config.hash, running_hash);

    // `da`'s key changes: a different identity, a closed breaker.
    std::fs::write(&path, engine_config(&ch, "c", "sk-a2", "")).unwrap();
    let r = live.reload().unwrap();
    assert_eq!(r.fresh, ["da"]);
    assert_eq!(r.kept, ["db"]);
    let third = live.engine().stats();
    assert_eq!(stats_of(&third, "da").breaker, "closed");
    assert_eq!(stats_of(&third, "da").attempts, 0);
    assert_eq!(
        stats_of(&third, "db").attempts,
        2,
        "db kept since the last reload"
    );

    // `db` removed: its gauges leave /metrics (no alert for what is gone).
    assert!(live
        .engine()
        .render_metrics()
        .contains(r#"keel_breaker_state{deployment="db"}"#));
    let text = engine_config(&ch, "c", "sk-a2", "")
        .replace(
            "[deployments.db]\nprovider = \"b\"\nmodel = \"gpt-b\"\n",
            "",
        )
        .replace(r#"chain = ["da", "db"]"#, r#"chain = ["da"]"#);
    std::fs::write(&path, text).unwrap();
    let r = live.reload().unwrap();
    assert_eq!(
        (r.kept.as_slice(), r.removed.as_slice()),
        (&["da".to_string()][..], &["db".to_string()][..])
    );
    let metrics = live.engine().render_metrics();
    assert!(
        !metrics.contains(r#"keel_breaker_state{deployment="db"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"keel_breaker_state{deployment="da"}"#));
    assert!(
        metrics.contains(r#"keel_config_reloads_total{result="ok"} 3"#),
        "{metrics}"
    );
    ch.shutdown().await;
}

/// The cache follows the chain's identities: an answer cached before a
/// reload that leaves the chain's upstreams alone is still served; once the
/// deployment points at another upstream, it is asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_survive_a_reload_only_while_the_chain_is_the_same() {
    let ch = chaos(vec![
        UpstreamSpec::new("a", Kind::OpenAi),
        UpstreamSpec::new("b", Kind::OpenAi),
        UpstreamSpec::new("c", Kind::OpenAi),
    ])
    .await;
    let cached = |b_upstream: &str, extra: &str| {
        engine_config(&ch, b_upstream, "sk-a", extra).replace(
            r#"chain = ["da", "db"]"#,
            "chain = [\"db\"]\ncache_ttl = \"10m\"",
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, cached("b", "")).unwrap();
    let live = LiveEngine::new(
        Engine::with_seed(Config::load(&path).unwrap(), 5).unwrap(),
        Some(path.clone()),
    );
    let ask = |live: &LiveEngine| {
        let e = live.engine();
        async move {
            e.chat(ChatCall::openai(request("r")))
                .await
                .unwrap()
                .meta
                .cache
        }
    };
    assert_eq!(ask(&live).await, CacheStatus::Miss);
    assert_eq!(ask(&live).await, CacheStatus::Hit);

    std::fs::write(&path, cached("b", "[routes.other]\nchain = [\"da\"]")).unwrap();
    assert_eq!(live.reload().unwrap().kept, ["da", "db"]);
    assert_eq!(ask(&live).await, CacheStatus::Hit);
    assert_eq!(ch.stats("b").unwrap().attempts, 1);

    std::fs::write(&path, cached("c", "")).unwrap();
    assert_eq!(live.reload().unwrap().fresh, ["db"]);
    assert_eq!(ask(&live).await, CacheStatus::Miss);
    assert_eq!(ask(&live).await, CacheStatus::Hit);
    assert_eq!(ch.stats("b").unwrap().attempts, 1);
    assert_eq!(ch.stats("c").unwrap().attempts, 1);
    ch.shutdown().await;
}

// ------------------------------------------------------------------ `keel serve` under load

/// The gateway's config: `r` over `a` and `b` in the order of `flip`, and
/// the `added` route once `added` is set.
fn serve_config(addr: std::net::SocketAddr, ch: &ChaosHandle, flip: bool, added: bool) -> String {
    let chain = if flip {
        r#"["b", "a"]"#
    } else {
        r#"["a", "b"]"#
    };
    let added = if added {
        "[routes.added]\nchain = [\"b\"]\n"
    } else {
        ""
    };
    format!(
        r#"
[server]
listen = "{addr}"
admin_token = "{TOKEN}"
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "sk-a"
[providers.b]
kind = "anthropic"
base_url = "{b}"
api_key = "sk-ant-b"
[deployments.a]
provider = "a"
model = "gpt-a"
[deployments.b]
provider = "b"
model = "claude-b"
[routes.r]
chain = {chain}
{added}"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    )
}

struct Gateway {
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn status(&self) -> Value {
        self.http
            .get(format!("{}/admin/status", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn reloads(&self) -> (u64, u64) {
        let s = self.status().await;
        let c = &s["config"];
        (
            c["reloads_ok"].as_u64().unwrap(),
            c["reloads_rejected"].as_u64().unwrap(),
        )
    }

    /// Polls `/admin/status` until the reload counts are `want`.
    async fn wait_reloads(&self, want: (u64, u64)) {
        let t = Instant::now();
        while self.reloads().await != want {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no reload: want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn post_reload(&self) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/admin/reload", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// One chat request; `Err` says why it failed.
    async fn chat(&self, model: &str, stream: bool) -> Result<(), String> {
        let body = json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]
        });
        let r = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        let complete = if stream {
            text.trim_end().ends_with("data: [DONE]")
        } else {
            serde_json::from_str::<Value>(&text)
                .is_ok_and(|v| v["choices"][0]["message"].is_object())
        };
        if status == 200 && complete {
            Ok(())
        } else {
            Err(format!("{status}: {text}"))
        }
    }
}

fn sighup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Four client loops (two plain, two streamed) run while the config is
/// rewritten and reloaded twenty times, alternately by SIGHUP and by
/// `POST /admin/reload`, with the chain's order flipped each time: no
/// request fails, a route added by a reload is served, a broken file is
/// refused both ways (logged with its file and key) while the old config
/// serves, and the deployments' counters run on across every reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let mut a = UpstreamSpec::new("a", Kind::OpenAi);
    a.latency = Duration::from_millis(10);
    let mut b = UpstreamSpec::new("b", Kind::Anthropic);
    b.latency = Duration::from_millis(10);
    let ch = chaos(vec![a, b]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    let addr = support::free_addr();
    std::fs::write(&path, serve_config(addr, &ch, false, false)).unwrap();
    let log_path = dir.path().join("keel.log");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let gw = Arc::new(Gateway {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    });
    let t = Instant::now();
    while gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(10), "keel did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for i in 0..4 {
        let (gw, stop, done) = (gw.clone(), stop.clone(), done.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = gw.chat("r", i % 2 == 1).await {
                    failures.push(e);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    // Each reload waits for a few requests after the previous one, so the
    // loops are always running across a swap.
    let some_requests = |from: u64| {
        let done = done.clone();
        async move {
            while done.load(Ordering::Relaxed) < from + 8 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };

    const RELOADS: u64 = 20;
    let (mut ok, mut rejected) = (0, 0);
    let mut added_served = false;
    for i in 0..RELOADS {
        some_requests(done.load(Ordering::Relaxed)).await;
        let added = i >= 4;
        let broken = i == 10 || i == 11;
        let text = serve_config(addr, &ch, i % 2 == 0, added);
        let text = if broken {
            text.replace("[routes.r]\n", "[routes.r]\nstrategy = \"fastest\"\n")
        } else {
            text
        };
        std::fs::write(&path, &text).unwrap();
        let hash_before = gw.status().await["config"]["hash"].clone();
        if i % 2 == 0 {
            sighup(child.id());
        } else {
            let (status, body) = gw.post_reload().await;
            if broken {
                assert_eq!(status, 422, "{body}");
                let expected = Config::load(&path).unwrap_err().to_string();
                assert_eq!(body["error"], expected.as_str());
                assert!(expected.contains("routes.r.strategy"), "{expected}");
            } else {
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["reload"]["kept"], json!(["a", "b"]));
            }
        }
        if broken {
            rejected += 1;
        } else {
            ok += 1;
        }
        gw.wait_reloads((ok, rejected)).await;
        let hash_after = gw.status().await["config"]["hash"].clone();
        if broken {
            assert_eq!(hash_after, hash_before, "a refused file changes nothing");
            // The old config keeps serving, the added route included.
            gw.chat("added", false).await.unwrap();
        } else {
            assert_ne!(hash_after, hash_before);
        }
        if added && !added_served {
            gw.chat("added", false).await.unwrap();
            gw.chat("added", true).await.unwrap();
            added_served = true;
        }
    }
    some_requests(done.load(Ordering::Relaxed)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for l in loops {
        failures.extend(l.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(done.load(Ordering::Relaxed) >= 8 * (RELOADS + 1));

    // Counters were carried over every reload: Keel's attempt counts are
    // the upstreams'.
    let status = gw.status().await;
    for (name, upstream) in [("a", "a"), ("b", "b")] {
        let d = status["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap();
        assert_eq!(
            d["attempts"].as_u64().unwrap(),
            ch.stats(upstream).unwrap().attempts,
            "{name}"
        );
    }
    let metrics = gw
        .http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&metrics, r#"keel_config_reloads_total{result="ok"}"#),
        RELOADS - 2
    );
    assert_eq!(
        metric(&metrics, r#"keel_config_reloads_total{result="rejected"}"#),
        2
    );

    // Reloads without the admin token are refused.
    let r = gw
        .http
        .post(format!("{}/admin/reload", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config reload rejected"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    for l in refused {
        assert!(
            l.contains(&path.display().to_string()) && l.contains("routes.r.strategy"),
            "{l}"
        );
    }
    // Neither key (`sk-a`, `sk-ant-b`) nor the admin token is logged.
    assert!(
        !log.contains("sk-a") && !log.contains(TOKEN),
        "a secret reached the log"
    );
    ch.shutdown().await;
}
