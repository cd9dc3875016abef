//! The `/admin` status page in a real browser: headless Chromium loads it
//! from a running gateway during an outage of deployment `a`, the rendered
//! DOM must show `a`'s breaker open, and a screenshot is saved for a person
//! to look at.
//!
//! Chromium is found through `KEEL_CHROMIUM` (set by `scripts/test`, which
//! installs Debian's `chromium` when it is missing) or `chromium` on PATH.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_chaos::{ChaosServer, Fault, FaultPlan, FaultRule, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine};
use keel_wire::openai::{ChatRequest, Message};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "headless Chromium not found: run scripts/test (it installs Debian's `chromium`), \
         or set KEEL_CHROMIUM to a Chromium binary"
    );
}

fn browser(bin: &Path, profile: &Path, extra: &[String], url: &str) -> std::process::Output {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    cmd.output().expect("run chromium")
}

fn workspace_target() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_open_breaker_during_an_outage() {
    let bin = chromium();
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n[[upstream]]\nname = \"b\"\nkind = \"anthropic\"\n",
        "t.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
[providers.b]
kind = "anthropic"
base_url = "{b}"
[deployments.primary]
provider = "a"
model = "gpt-4o"
[deployments.fallback]
provider = "b"
model = "claude-sonnet"
input_price = 3.0
output_price = 15.0
[routes.gpt-4o]
chain = ["primary", "fallback"]
[policy]
backoff_base = "5ms"
backoff_cap = "20ms"
[breaker]
consecutive_failures = 3
open_for = "5m"
max_open_for = "5m"
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    let call = || {
        let mut r = ChatRequest::new("gpt-4o", vec![Message::user("hello")]);
        r.max_tokens = Some(200);
        ChatCall::openai(r)
    };
    // Healthy traffic first, so the sparkline has a history.
    for _ in 0..8 {
        engine.chat(call()).await.unwrap();
    }
    // The outage: `primary` answers 503 until its breaker opens.
    ch.set_faults(
        "a",
        FaultPlan {
            faults: vec![FaultRule::always(Fault::ServerError { status: 503 })],
        },
    )
    .unwrap();
    let mut n = 0;
    let breaker = |e: &Engine| {
        let s = e.status();
        let d = s
            .deployments
            .iter()
            .find(|d| d.stats.name == "primary")
            .unwrap();
        d.stats.breaker
    };
    while breaker(&engine) != "open" {
        n += 1;
        assert!(n <= 10, "the breaker did not open: {:?}", engine.status());
        engine.chat(call()).await.unwrap();
    }
    for _ in 0..4 {
        engine.chat(call()).await.unwrap(); // answered by the fallback
    }

    let addr = keel_server::spawn(engine.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}/admin");
    let profile = std::env::temp_dir().join(format!("keel-chromium-{}", std::process::id()));
    let target = workspace_target();
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("keel-admin-status.png");
    let _ = std::fs::remove_file(&shot);

    let (dom, shot_out) = tokio::task::spawn_blocking({
        let (bin, profile, url, shot) = (bin.clone(), profile.clone(), url.clone(), shot.clone());
        move || {
            let dom = browser(&bin, &profile, &["--dump-dom".into()], &url);
            let shot_out = browser(
                &bin,
                &profile,
                &[
                    format!("--screenshot={}", shot.display()),
                    "--window-size=1200,800".into(),
                ],
                &url,
            );
            (dom, shot_out)
        }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&profile);

    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    // The page rendered the status (not only its static shell)...
    assert!(html.contains("data-deployment=\"primary\""), "{html}");
    // ...with the primary's breaker open, in red, and the fallback's closed.
    assert!(
        html.contains("data-deployment=\"primary\" data-breaker=\"open\""),
        "{html}"
    );
    assert!(html.contains("breaker breaker-open"), "{html}");
    assert!(
        html.contains("data-deployment=\"fallback\" data-breaker=\"closed\""),
        "{html}"
    );
    assert!(html.contains("health-down"), "{html}");
    assert!(html.contains("overloaded 3"), "error mix missing: {html}"); // 503s
    assert!(html.contains("<polyline"), "sparkline missing: {html}");
    assert!(html.contains("data-route=\"gpt-4o\""), "{html}");
    assert!(
        html.contains("data-spend=\"fallback\""),
        "spend missing: {html}"
    );
    // The running config's hash (what a reload changes).
    assert!(
        html.contains(&format!("config {} · loaded", engine.config().hash)),
        "config hash missing: {html}"
    );

    assert!(
        shot_out.status.success() && shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot_out.stderr)
    );
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 10_000, "screenshot is only {size} bytes");
    println!("status page screenshot: {}", shot.display());
    eprintln!("status page screenshot: {}", shot.display());
}
