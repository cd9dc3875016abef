//! `[server]` limits: defaults, and the exact message of each invalid value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_engine::config::Config;

const BASE: &str = r#"
[providers.openai]
api_key = "sk-test"
[deployments]
gpt = { provider = "openai", model = "gpt-4o" }
[routes]
r = { chain = ["gpt"] }
"#;

fn load(server: &str) -> Result<Config, String> {
    let text = format!("[server]\n{server}\n{BASE}");
    Config::from_toml_str(&text, "keel.toml", &|_| None).map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let c = load("").unwrap();
    assert_eq!(c.server.max_in_flight.get(), 4096);
    assert_eq!(c.server.max_connections.get(), 16384);
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
}

#[test]
fn given_values() {
    let c = load(
        "max_in_flight = 2\nmax_connections = 10\nheader_read_timeout = \"250ms\"\ndrain_timeout = \"5s\"",
    )
    .unwrap();
    assert_eq!(c.server.max_in_flight.get(), 2);
    assert_eq!(c.server.max_connections.get(), 10);
    assert_eq!(c.server.header_read_timeout, Duration::from_millis(250));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(5));
}

#[test]
fn invalid_values_name_the_key() {
    let cases = [
        (
            "max_in_flight = 0",
            "keel.toml: server.max_in_flight: expected a positive number of requests, got 0",
        ),
        (
            "max_connections = 0",
            "keel.toml: server.max_connections: expected a positive number of connections, got 0",
        ),
        (
            "header_read_timeout = \"0s\"",
            "keel.toml: server.header_read_timeout: expected a positive duration, got \"0s\"",
        ),
        (
            "drain_timeout = \"later\"",
            "keel.toml: server.drain_timeout: expected a duration like \"30s\" or \"250ms\", got \"later\"",
        ),
    ];
    for (server, message) in cases {
        assert_eq!(load(server).err().as_deref(), Some(message), "{server}");
    }
}
