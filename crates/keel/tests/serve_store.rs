//! `keel serve` with `[store] redis`: an unreachable Redis stops a required
//! store at start with the key and the reason; `required = false` starts on
//! local state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &str, required: bool) -> String {
    let listen = dead_port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{listen}\"\n[store]\nredis = \"redis://127.0.0.1:{}/0\"\nrequired = {required}\n[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n",
        dead_port()
    );
    let path = format!("{dir}/keel-{required}.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tmp() -> String {
    let d = std::env::temp_dir().join(format!("keel-serve-store-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

#[test]
fn required_redis_unreachable_exits_with_a_clear_error() {
    let path = write_config(&tmp(), true);
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--config", &path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: [store] redis at redis://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("is unreachable"), "{err}");
    assert!(
        err.contains("(set [store] required = false to start on local state)"),
        "{err}"
    );
}

#[test]
fn optional_redis_unreachable_starts_on_local_state() {
    let path = write_config(&tmp(), false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--config", &path])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let (mut warned, mut serving) = (false, false);
    while Instant::now() < deadline && !(warned && serving) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            warned |= line.contains("redis unreachable at start");
            serving |= line.contains("keel serving");
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned && serving, "{}", seen.join("\n"));
}
