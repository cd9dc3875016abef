//! Shared by the observability tests: a chaos upstream whose keys are
//! distinctive strings, a config that reads them from the environment, and
//! a one-shot HTTP caller.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use serde_json::Value;
use tower::ServiceExt;

pub const OPENAI_KEY: &str = "sk-obs-CANARY-7f3a9c1e5b2d8a4f";
pub const ANTHROPIC_KEY: &str = "sk-ant-obs-CANARY-4e8b2a6c0d1f9e3b";
pub const BROKEN_KEY: &str = "sk-obs-CANARY-broken-0a9b8c7d6e5f";
pub const ADMIN_TOKEN: &str = "adm-CANARY-9d2c7e4a1b3f5a7c";
pub const SECRETS: [&str; 4] = [OPENAI_KEY, ANTHROPIC_KEY, BROKEN_KEY, ADMIN_TOKEN];

/// A log sink shared with the test.
#[derive(Clone, Default)]
pub struct Buffer(pub Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn chaos() -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"{OPENAI_KEY}\"\n\
         [[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\nsequence = [1]\n\
         [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\napi_key = \"{ANTHROPIC_KEY}\"\n\
         [[upstream]]\nname = \"c\"\nkind = \"openai\"\napi_key = \"{BROKEN_KEY}\"\n\
         [[upstream.fault]]\nkind = \"auth\"\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "t.toml").unwrap();
    ChaosServer::start(scenario, 3, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn config(ch: &ChaosHandle, admin_token: bool) -> Config {
    let text = format!(
        r#"
[server]
{token}
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "${{OPENAI_KEY}}"
[providers.b]
kind = "anthropic"
base_url = "{b}"
api_key = "${{ANTHROPIC_KEY}}"
[providers.c]
kind = "openai"
base_url = "{c}"
api_key = "${{BROKEN_KEY}}"
[deployments.a]
provider = "a"
model = "gpt-test"
[deployments.b]
provider = "b"
model = "claude-test"
[deployments.c]
provider = "c"
model = "gpt-broken"
[routes.r]
chain = ["a", "b"]
[routes.broken]
chain = ["c"]
[policy]
backoff_base = "5ms"
backoff_cap = "20ms"
[breaker]
consecutive_failures = 2
"#,
        token = if admin_token {
            "admin_token = \"${KEEL_ADMIN_TOKEN}\""
        } else {
            ""
        },
        a = ch.base_url("a"),
        b = ch.base_url("b"),
        c = ch.base_url("c"),
    );
    let env = |k: &str| match k {
        "OPENAI_KEY" => Some(OPENAI_KEY.to_string()),
        "ANTHROPIC_KEY" => Some(ANTHROPIC_KEY.to_string()),
        "BROKEN_KEY" => Some(BROKEN_KEY.to_string()),
        "KEEL_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_string()),
        _ => None,
    };
    Config::from_toml_str(&text, "t.toml", &env).unwrap()
}

pub async fn call(
    e: &Engine,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(AppState::new(e.clone()))
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

pub fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} contains the secret {s}:\n{text}");
    }
}

/// The string fields of an event (tracing's JSON puts them under "fields").
pub fn field<'a>(ev: &'a Value, name: &str) -> Option<&'a Value> {
    ev.get("fields").and_then(|f| f.get(name))
}
