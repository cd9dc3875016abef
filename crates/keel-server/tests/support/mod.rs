//! Shared by the tests that drive Keel with the official SDKs: the Python
//! that has them, Keel serving a config on a loopback port, and an SDK
//! script run against it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;

use keel_engine::config::Config;
use keel_engine::Engine;

/// The Python with the official SDKs (`KEEL_TEST_PYTHON`, which the
/// README's test command sets).
pub fn python() -> String {
    std::env::var("KEEL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("KEEL_TEST_PYTHON is not set: run the tests with scripts/test, which installs the official SDKs")
    })
}

/// Keel serving `config` (seed 1) on an ephemeral loopback port.
pub async fn keel(config: Config) -> SocketAddr {
    let engine = Engine::with_seed(config, 1).unwrap();
    keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Keel serving the TOML `text` (named `name` in its errors).
pub async fn keel_toml(text: &str, name: &str) -> SocketAddr {
    keel(Config::from_toml_str(text, name, &|_| None).unwrap()).await
}

/// Runs `tests/{script}` under [`python`] with `args` (`tests/` on its
/// `PYTHONPATH`, loopback kept off any proxy), and checks that it exited 0 and printed `done`. Its
/// standard output.
pub async fn sdk_script(script: &str, args: Vec<String>, done: &str) -> String {
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let path = format!("{tests}/{script}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(path)
            .args(args)
            // `checks.py`, which the scripts import.
            .env("PYTHONPATH", tests)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .output()
    })
    .await
    .unwrap()
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains(done), "{stdout}");
    stdout
}

/// Runs `script` as [`sdk_script`] does; its `FACTS {json}` line, parsed.
pub async fn sdk_facts(script: &str, args: Vec<String>) -> serde_json::Value {
    let stdout = sdk_script(script, args, "FACTS ").await;
    let facts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FACTS "))
        .unwrap_or_else(|| panic!("no FACTS line\n{stdout}"));
    serde_json::from_str(facts).unwrap()
}
