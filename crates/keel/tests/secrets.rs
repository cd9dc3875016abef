//! Secrets over a full chaos run of the real binary: a child `keel serve
//! --log-format json` with `RUST_LOG=debug`, its provider keys, tenant token
//! and admin token given through environment variables, in front of an
//! in-process `keel chaos` injecting several kinds of faults. A mixed
//! workload (OpenAI and Anthropic APIs, streaming and not, retries,
//! fallbacks, a rejected key, an unknown route, a bad body, bad tokens)
//! runs through it; then every output is grepped for the secrets: the
//! child's stdout and stderr, every response status line, header and body,
//! `/metrics`, `/admin/status` and `/admin`.
//!
//! The test would notice a leak of a key it never sent: the chaos upstreams
//! demand their key (`api_key`), and answers served by them are asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_chaos::{ChaosServer, Scenario};

const OA_KEY: &str = "sk-proj-OAIsecret9f3b2c71d4e8a6051";
const AN_KEY: &str = "sk-ant-api03-ANTsecret5c8e1a9b7d2f4063";
/// Keel sends this one, but the upstream expects another key: a 401 whose
/// body quotes the key's last four characters, like OpenAI's.
const BAD_KEY: &str = "sk-proj-REVOKEDsecret3a7d9e1b5c2f8046";
const TENANT_TOKEN: &str = "keel-tenant-TOKENsecret8b4e2d6a1c9f7035";
const ADMIN_TOKEN: &str = "keel-admin-ADMINsecret2e9c7a5b3d1f6048";

/// Every secret, and its distinctive middle (a leak may be partial: the
/// last four characters are allowed, as providers quote them).
fn needles() -> Vec<&'static str> {
    let mut out = Vec::new();
    for s in [OA_KEY, AN_KEY, BAD_KEY, TENANT_TOKEN, ADMIN_TOKEN] {
        out.push(s);
        let start = s.find("secret").unwrap();
        out.push(&s[start..s.len() - 4]);
    }
    out
}

fn assert_no_secret(what: &str, text: &str) {
    for n in needles() {
        assert!(
            !text.contains(n),
            "{what} contains the secret {n:?}:\n{text}"
        );
    }
}

fn scenario() -> Scenario {
    let text = format!(
        r#"
[[upstream]]
name = "oa"
kind = "openai"
api_key = "{OA_KEY}"
latency = "5ms"

[[upstream.fault]]
kind = "rate_limit"
retry_after = "50ms"
every = 5

[[upstream.fault]]
kind = "server_error"
status = 502
every = 7

[[upstream.fault]]
kind = "reset"
every = 11

[[upstream.fault]]
kind = "cut_stream"
after_chunks = 2
every = 3
streaming_only = true

[[upstream.fault]]
kind = "malformed_json"
every = 13
non_streaming_only = true

[[upstream]]
name = "an"
kind = "anthropic"
api_key = "{AN_KEY}"
latency = "5ms"

[[upstream.fault]]
kind = "overloaded"
every = 4

[[upstream]]
name = "bad"
kind = "openai"
api_key = "sk-proj-the-key-keel-does-not-have"
"#
    );
    Scenario::from_toml_str(&text, "chaos.toml").unwrap()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(addr: SocketAddr, oa: &str, an: &str, bad: &str) -> String {
    format!(
        r#"
[server]
listen = "{addr}"
admin_token = "${{KEEL_T_ADMIN}}"
drain_timeout = "2s"

[providers.oa]
kind = "openai"
base_url = "{oa}"
api_key = "${{KEEL_T_OA}}"

[providers.an]
kind = "anthropic"
base_url = "{an}"
api_key = "${{KEEL_T_AN}}"

[providers.bad]
kind = "openai"
base_url = "{bad}"
api_key = "${{KEEL_T_BAD}}"

[deployments.oa]
provider = "oa"
model = "gpt-4o-mini"

[deployments.an]
provider = "an"
model = "claude-haiku-4-5"

[deployments.bad]
provider = "bad"
model = "gpt-4o-mini"

[routes.r]
chain = ["oa", "an"]

[routes.fb]
chain = ["bad", "an"]

[routes.broken]
chain = ["bad"]

[policy]
max_attempts = 3
backoff = "full_jitter"
backoff_base = "10ms"
backoff_cap = "100ms"
attempt_timeout = "2s"
first_token_timeout = "2s"
inter_token_timeout = "2s"
failover_after = "250ms"

[breaker]
consecutive_failures = 50

[[tenants]]
name = "team"
token = "${{KEEL_T_TENANT}}"
"#
    )
}

/// Everything one response showed the client.
struct Seen {
    status: u16,
    text: String,
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<String>,
) -> Seen {
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.timeout(Duration::from_secs(15)).send().await.unwrap();
    let status = resp.status().as_u16();
    let mut text = format!("{status}\n");
    for (k, v) in resp.headers() {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    text.push('\n');
    text.push_str(&resp.text().await.unwrap_or_default());
    Seen { status, text }
}

fn chat(model: &str, stream: bool, i: usize) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"max_tokens":100,"messages":[{{"role":"user","content":"secret test #{i}"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_of_a_chaos_run() {
    let chaos = ChaosServer::start(scenario(), 3, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let path = dir.path().join("keel.toml");
    std::fs::write(
        &path,
        config(
            addr,
            &chaos.base_url("oa"),
            &chaos.base_url("an"),
            &chaos.base_url("bad"),
        ),
    )
    .unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .env("KEEL_T_OA", OA_KEY)
        .env("KEEL_T_AN", AN_KEY)
        .env("KEEL_T_BAD", BAD_KEY)
        .env("KEEL_T_TENANT", TENANT_TOKEN)
        .env("KEEL_T_ADMIN", ADMIN_TOKEN)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "keel exited {s}: {}",
                std::fs::read_to_string(&err_path).unwrap()
            );
        }
        assert!(t.elapsed() < Duration::from_secs(10), "keel did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut seen: Vec<(String, Seen)> = Vec::new();
    let oa = format!("{base}/v1/chat/completions");
    let an = format!("{base}/v1/messages");
    let tok = Some(TENANT_TOKEN);
    // The main route, both APIs, streaming and not: faults on both upstreams.
    for i in 0..24 {
        let stream = i % 2 == 1;
        let url = if i % 4 < 2 { &oa } else { &an };
        let s = send(&client, "POST", url, tok, Some(chat("r", stream, i))).await;
        seen.push((format!("r #{i} {url} stream={stream}"), s));
    }
    // A rejected key then the fallback; a rejected key alone.
    for (i, model) in ["fb", "fb", "broken", "broken"].iter().enumerate() {
        for url in [&oa, &an] {
            let s = send(&client, "POST", url, tok, Some(chat(model, i % 2 == 0, i))).await;
            seen.push((format!("{model} #{i} {url}"), s));
        }
    }
    // Unknown route, bad body, no token, a wrong token, unknown path.
    let s = send(
        &client,
        "POST",
        &oa,
        tok,
        Some(chat("no-such-route", false, 0)),
    )
    .await;
    seen.push(("unknown route".into(), s));
    let s = send(&client, "POST", &an, tok, Some("{nope".into())).await;
    seen.push(("bad body".into(), s));
    let s = send(&client, "POST", &oa, None, Some(chat("r", false, 0))).await;
    seen.push(("no token".into(), s));
    let wrong = format!("{}x", &TENANT_TOKEN[..TENANT_TOKEN.len() - 1]);
    let s = send(
        &client,
        "POST",
        &oa,
        Some(&wrong),
        Some(chat("r", false, 0)),
    )
    .await;
    seen.push(("wrong token".into(), s));
    let s = send(&client, "GET", &format!("{base}/v1/nothing"), tok, None).await;
    seen.push(("unknown path".into(), s));
    let s = send(&client, "GET", &format!("{base}/v1/models"), tok, None).await;
    seen.push(("models".into(), s));
    let s = send(&client, "GET", &format!("{base}/admin/status"), tok, None).await;
    seen.push(("admin without the admin token".into(), s));
    let metrics = send(&client, "GET", &format!("{base}/metrics"), None, None).await;
    let status = send(
        &client,
        "GET",
        &format!("{base}/admin/status"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    let page = send(
        &client,
        "GET",
        &format!("{base}/admin"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(page.status, 200);

    // Drain and exit, so the logs are complete.
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let t = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("keel did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(code, Some(0));
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();

    // The grep.
    for (what, s) in &seen {
        assert_no_secret(what, &s.text);
    }
    assert_no_secret("/metrics", &metrics.text);
    assert_no_secret("/admin/status", &status.text);
    assert_no_secret("/admin", &page.text);
    assert_no_secret("keel stdout", &stdout);
    assert_no_secret("keel stderr", &stderr);

    // The run was the one described: the keys reached the upstreams (they
    // answer only with their key), faults were injected and absorbed,
    // fallbacks happened, the logs are debug-level JSON.
    let by = |name: &str| chaos.stats(name).unwrap().by_outcome;
    let (oa_s, an_s, bad_s) = (by("oa"), by("an"), by("bad"));
    assert!(oa_s.get("ok").copied().unwrap_or(0) >= 5, "{oa_s:?}");
    assert!(an_s.get("ok").copied().unwrap_or(0) >= 5, "{an_s:?}");
    assert!(!oa_s.contains_key("auth") && !an_s.contains_key("auth"));
    for k in ["rate_limit", "server_error", "reset", "cut_stream"] {
        assert!(oa_s.contains_key(k), "no {k} fault in {oa_s:?}");
    }
    assert!(an_s.contains_key("overloaded"), "{an_s:?}");
    assert!(bad_s.get("auth").copied().unwrap_or(0) >= 4, "{bad_s:?}");
    let served_by = |d: &str| {
        seen.iter()
            .filter(|(_, s)| {
                s.status == 200 && s.text.contains(&format!("x-keel-deployment: {d}\n"))
            })
            .count()
    };
    assert!(served_by("oa") >= 5, "oa served {}", served_by("oa"));
    assert!(served_by("an") >= 5, "an served {}", served_by("an"));
    let main_ok = seen[..24].iter().filter(|(_, s)| s.status == 200).count();
    assert_eq!(main_ok, 24, "the main route absorbs every fault");
    let code_of = |what: &str| seen.iter().find(|(w, _)| w == what).unwrap().1.status;
    assert_eq!(code_of("unknown route"), 404);
    assert_eq!(code_of("bad body"), 400);
    assert_eq!(code_of("no token"), 401);
    assert_eq!(code_of("wrong token"), 401);
    assert_eq!(code_of("admin without the admin token"), 401);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .chain(stdout.lines())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() > 50, "{} JSON log lines", lines.len());
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "no debug line: RUST_LOG=debug was not in effect"
    );
    chaos.shutdown().await;
}
