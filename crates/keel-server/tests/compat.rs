//! The client-compatibility suite: the clients people use, unchanged but for
//! their base URL, through `keel serve` in front of `keel chaos` with faults on
//! each route's primary deployment, so that retries and fallbacks across
//! providers happen while they run.
//!
//! - Node (`tests/compat/suite.mjs`): the official `openai` and
//!   `@anthropic-ai/sdk` SDKs and the Vercel AI SDK (`ai` with
//!   `@ai-sdk/openai` and `@ai-sdk/anthropic`), pinned by
//!   `tests/compat/package-lock.json`. `scripts/test` installs them with
//!   `npm ci` outside the clone and sets `KEEL_NODE_MODULES`.
//! - Python (`tests/compat/langchain_suite.py`): `langchain-openai` and
//!   `langchain-anthropic`, from `scripts/sdk-requirements.txt` in the venv
//!   whose interpreter `scripts/test` sets as `KEEL_TEST_PYTHON`.
//!
//! Each script prints a client x case table (markdown) and a line per case;
//! `cargo test -p keel-server --test compat -- --nocapture` shows them.
//! The answers are checked against what `keel chaos` deterministically says
//! (see `tests/compat/lib.mjs`), not only for the absence of an exception.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;

const COMPAT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat");

/// The Node scripts, copied next to a `node_modules` link (ESM imports resolve
/// from the importing file's directory; the clone itself stays untouched).
const NODE_SCRIPTS: &[&str] = &[
    "suite.mjs",
    "lib.mjs",
    "openai_node.mjs",
    "anthropic_node.mjs",
    "vercel.mjs",
];

/// `keel chaos` with the suite's scenario and `keel serve` in front of it,
/// both in process on loopback ports the OS picks.
struct Stack {
    chaos: ChaosHandle,
    keel: SocketAddr,
}

impl Stack {
    async fn start() -> Stack {
        let scenario = Scenario::from_toml_str(
            include_str!("compat/scenario.toml"),
            "tests/compat/scenario.toml",
        )
        .unwrap();
        let chaos = ChaosServer::start(scenario, 9, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let strict = strict_anthropic(chaos.base_url("an")).await;
        let text = include_str!("compat/keel.toml.in")
            .replace("@CHAOS@", &format!("http://{}", chaos.addr()))
            .replace("@STRICT@", &format!("http://{strict}"));
        let config = Config::from_toml_str(&text, "tests/compat/keel.toml.in", &|_| None).unwrap();
        let engine = Engine::with_seed(config, 1).unwrap();
        let keel = keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Stack { chaos, keel }
    }

    fn attempts(&self, upstream: &str) -> u64 {
        self.chaos.stats(upstream).unwrap().attempts
    }

    fn outcomes(&self, upstream: &str, outcome: &str) -> u64 {
        let stats = self.chaos.stats(upstream).unwrap();
        stats.by_outcome.get(outcome).copied().unwrap_or(0)
    }

    /// The flaky primaries failed with both fault kinds, and Keel fell over
    /// from each to the other provider's deployment.
    async fn assert_faults_and_fallbacks(&self) {
        for up in ["flaky-oa", "flaky-an", "oa", "an"] {
            let stats = self.chaos.stats(up).unwrap();
            println!(
                "chaos {up}: {} attempts {:?}",
                stats.attempts, stats.by_outcome
            );
        }
        for flaky in ["flaky-oa", "flaky-an"] {
            assert!(
                self.outcomes(flaky, "server_error") > 0 && self.outcomes(flaky, "rate_limit") > 0,
                "{flaky} never failed: {:?}",
                self.chaos.stats(flaky).unwrap().by_outcome
            );
        }
        let metrics = reqwest::get(format!("http://{}/metrics", self.keel))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for route in ["gpt-4o-mini", "claude-sonnet-4-6"] {
            let fallbacks: f64 = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("keel_fallbacks_total{")
                        && l.contains(&format!("route=\"{route}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(
                fallbacks > 0.0,
                "no fallback on route {route}; keel_fallbacks_total:\n{}",
                metrics
                    .lines()
                    .filter(|l| l.starts_with("keel_fallbacks_total"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// An Anthropic upstream that refuses what current Claude models refuse and
/// `keel chaos` accepts (`temperature` and `top_p` together), and passes every
/// other request to chaos's `an` upstream at `chaos_an`, answering with
/// chaos's own content type (a stream when it was asked for one: Keel asks
/// plain requests as streams, `stream_upstream`).
async fn strict_anthropic(chaos_an: String) -> SocketAddr {
    use axum::response::IntoResponse;
    let forward = move |headers: http::HeaderMap, body: bytes::Bytes| {
        let url = format!("{chaos_an}/messages");
        async move {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if json.get("temperature").is_some() && json.get("top_p").is_some() {
                let error = serde_json::json!({"type": "error", "error": {
                    "type": "invalid_request_error",
                    "message": "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
                }});
                return (http::StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
            }
            let version = headers
                .get("anthropic-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("2023-06-01")
                .to_owned();
            let answer = reqwest::Client::new()
                .post(url)
                .header("anthropic-version", version)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let bytes = answer.bytes().await.unwrap();
            (status, [("content-type", content_type)], bytes).into_response()
        }
    };
    let app = axum::Router::new().route("/v1/messages", axum::routing::post(forward));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn required_env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which installs {what}")
    })
}

/// Run a suite script to its end; its table goes to the test's output.
async fn run(mut command: Command) -> Output {
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("start the suite's interpreter");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    out
}

/// The script's whole output (its table) was printed by [`run`]; the panic names the failures.
fn assert_suite_passed(name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "{name}: {} case(s) failed ({}; the client x case table is in this test's output)\n{}\n--- stderr\n{stderr}",
        failures.len(),
        out.status,
        failures.join("\n"),
    );
}

/// A fresh directory holding the Node scripts and a link to the installed packages.
fn node_workdir(node_modules: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keel-compat-node-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for script in NODE_SCRIPTS {
        std::fs::copy(Path::new(COMPAT_DIR).join(script), dir.join(script)).unwrap();
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(node_modules, dir.join("node_modules")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdks_and_vercel_ai_sdk_work_through_keel() {
    let what = "the compat suite's npm packages (tests/compat/package-lock.json)";
    let node_modules = PathBuf::from(required_env("KEEL_NODE_MODULES", what));
    assert!(
        node_modules.join("openai").is_dir() && node_modules.join("ai").is_dir(),
        "KEEL_NODE_MODULES={} holds no openai or ai package: run scripts/test, which installs {what}",
        node_modules.display()
    );
    let node = std::env::var("KEEL_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
    let stack = Stack::start().await;
    let dir = node_workdir(&node_modules);
    let mut command = Command::new(node);
    command
        .arg(dir.join("suite.mjs"))
        .arg(format!("http://{}", stack.keel))
        .arg(format!("http://{}", stack.chaos.addr()));
    let out = run(command).await;
    let _ = std::fs::remove_dir_all(&dir);
    stack.assert_faults_and_fallbacks().await;
    assert!(
        stack.attempts("an") > 0 && stack.attempts("oa") > 0,
        "the cross-provider deployments were never used"
    );
    assert_suite_passed("node compat suite", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_works_through_keel() {
    let python = required_env(
        "KEEL_TEST_PYTHON",
        "langchain-openai and langchain-anthropic (scripts/sdk-requirements.txt)",
    );
    let stack = Stack::start().await;
    let mut command = Command::new(python);
    command
        .arg(Path::new(COMPAT_DIR).join("langchain_suite.py"))
        .arg(format!("http://{}", stack.keel))
        .arg(format!("http://{}", stack.chaos.addr()));
    let out = run(command).await;
    stack.assert_faults_and_fallbacks().await;
    assert_suite_passed("langchain compat suite", &out);
}
