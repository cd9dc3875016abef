//! `[store]`, `[cache]` and the per-route cache TTLs: defaults and exact
//! error messages (file, key, what was expected, what was found).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_engine::config::{CachePolicy, Config, ConfigError};

const BASE: &str = r#"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[deployments.d]
provider = "p"
model = "m"
"#;

fn load(extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(&format!("{BASE}{extra}"), "keel.toml", &|_| None)
}

fn err(extra: &str) -> String {
    match load(extra) {
        Ok(_) => panic!("config unexpectedly valid:\n{extra}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn store_defaults_to_memory_and_cache_is_off() {
    let c = load("[routes.r]\nchain = [\"d\"]\n").unwrap();
    assert_eq!(c.store.redis, None);
    assert_eq!(c.store.prefix, "keel:");
    assert!(c.store.required);
    assert_eq!(c.store.timeout, Duration::from_millis(50));
    assert_eq!(c.idempotency_ttl, Duration::from_secs(86_400));
    assert_eq!(c.routes["r"].cache, None);
}

#[test]
fn store_settings_resolve() {
    let c = load(
        "[store]\nredis = \"redis://127.0.0.1:6379/0\"\nprefix = \"fleet:\"\nrequired = false\ntimeout = \"20ms\"\nidempotency_ttl = \"1h\"\n[routes.r]\nchain = [\"d\"]\n",
    )
    .unwrap();
    assert_eq!(
        c.store.redis.as_ref().map(|u| u.expose().to_string()),
        Some("redis://127.0.0.1:6379/0".to_string())
    );
    assert_eq!(c.store.prefix, "fleet:");
    assert!(!c.store.required);
    assert_eq!(c.store.timeout, Duration::from_millis(20));
    assert_eq!(c.idempotency_ttl, Duration::from_secs(3600));
}

#[test]
fn route_ttls_override_cache_defaults() {
    let c = load(
        "[cache]\nttl = \"10m\"\nstale_ttl = \"1h\"\n[routes.a]\nchain = [\"d\"]\n[routes.b]\nchain = [\"d\"]\ncache_ttl = \"30s\"\n[routes.c]\nchain = [\"d\"]\ncache_ttl = \"0s\"\n",
    )
    .unwrap();
    assert_eq!(
        c.routes["a"].cache,
        Some(CachePolicy {
            ttl: Duration::from_secs(600),
            stale_ttl: Duration::from_secs(3600)
        })
    );
    assert_eq!(
        c.routes["b"].cache,
        Some(CachePolicy {
            ttl: Duration::from_secs(30),
            stale_ttl: Duration::from_secs(3600)
        })
    );
    assert_eq!(c.routes["c"].cache, None, "a zero TTL turns the cache off");
}

#[test]
fn malformed_redis_url_names_file_key_and_reason() {
    assert_eq!(
        err("[store]\nredis = \"127.0.0.1:6379\"\n"),
        "keel.toml: store.redis: expected a URL like \"redis://127.0.0.1:6379/0\" (not a URL like redis://host:6379/0 (relative URL without a base)), got \"127.0.0.1:6379\""
    );
    assert_eq!(
        err("[store]\nredis = \"http://127.0.0.1:6379\"\n"),
        "keel.toml: store.redis: expected a URL like \"redis://127.0.0.1:6379/0\" (scheme must be redis://, got http://), got \"http://127.0.0.1:6379\""
    );
    assert_eq!(
        err("[store]\nredis = \"rediss://cache.internal:6380\"\n"),
        "keel.toml: store.redis: expected a URL like \"redis://127.0.0.1:6379/0\" (TLS (rediss://) is not supported by this build; use redis://), got \"rediss://cache.internal:6380\""
    );
    assert_eq!(
        err("[store]\nredis = \"redis://127.0.0.1:6379/zero\"\n"),
        "keel.toml: store.redis: expected a URL like \"redis://127.0.0.1:6379/0\" (the path must be a database number like /0, got /zero), got \"redis://127.0.0.1:6379/zero\""
    );
}

#[test]
fn bad_store_and_cache_values() {
    assert_eq!(
        err("[store]\ntimeout = \"soon\"\n"),
        "keel.toml: store.timeout: expected a duration like \"30s\" or \"250ms\", got \"soon\""
    );
    assert_eq!(
        err("[store]\ntimeout = \"0s\"\n"),
        "keel.toml: store.timeout: expected a positive duration, got 0s"
    );
    assert_eq!(
        err("[store]\nredis_url = \"redis://x\"\n"),
        "keel.toml: store.redis_url: unknown field `redis_url`, expected one of `redis`, `prefix`, `required`, `timeout`, `idempotency_ttl`"
    );
    assert_eq!(
        err("[routes.r]\nchain = [\"d\"]\ncache_ttl = \"ten minutes\"\n"),
        "keel.toml: routes.r.cache_ttl: expected a duration like \"30s\" or \"250ms\", got \"ten minutes\""
    );
    assert_eq!(
        err("[cache]\nttl = \"1x\"\n[routes.r]\nchain = [\"d\"]\n"),
        "keel.toml: cache.ttl: expected a duration like \"30s\" or \"250ms\", got \"1x\""
    );
    assert_eq!(
        err("[routes.r]\nchain = [\"d\"]\nstale_ttl = \"1h\"\n"),
        "keel.toml: routes.r.cache_ttl: expected a cache TTL when stale_ttl is set, got none"
    );
}
