//! Config validation: every error names the file, the key and what was expected.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_engine::config::{Config, ConfigError, ProviderKind};

fn env(k: &str) -> Option<String> {
    match k {
        "OPENAI_API_KEY" => Some("sk-test-openai-1234567890".into()),
        "ANTHROPIC_API_KEY" => Some("sk-ant-test-0987654321".into()),
        "KEEL_TOKEN_SEARCH" => Some("tok-search-team".into()),
        "KEEL_ADMIN_TOKEN" => Some("admin-token".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "keel.toml", &env)
}

fn err(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The README's ten-line config.
const README: &str = r#"
[providers.openai]
api_key = "${OPENAI_API_KEY}"
[providers.anthropic]
api_key = "${ANTHROPIC_API_KEY}"
[deployments]
gpt-4o = { provider = "openai", model = "gpt-4o" }
sonnet = { provider = "anthropic", model = "claude-sonnet-4-5" }
[routes]
gpt-4o = { chain = ["gpt-4o", "sonnet"] }
"#;

#[test]
fn readme_config_resolves_with_defaults() {
    let c = load(README).unwrap();
    assert_eq!(c.providers["openai"].kind, ProviderKind::OpenAi);
    assert_eq!(c.providers["openai"].base_url, "https://api.openai.com/v1");
    assert_eq!(c.providers["anthropic"].kind, ProviderKind::Anthropic);
    assert_eq!(
        c.providers["anthropic"].api_key.as_ref().unwrap().expose(),
        "sk-ant-test-0987654321"
    );
    let route = &c.routes["gpt-4o"];
    let chain: Vec<&str> = route
        .chain
        .iter()
        .map(|&i| c.deployments[i].name.as_str())
        .collect();
    assert_eq!(chain, ["gpt-4o", "sonnet"]);
    assert_eq!(route.policy.failover_after.as_millis(), 250);
    assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
}

#[test]
fn describe_masks_keys() {
    let c = load(README).unwrap();
    let text = c.describe();
    assert!(!text.contains("sk-test-openai-1234567890"), "{text}");
    assert!(!text.contains("sk-ant-test-0987654321"), "{text}");
    assert!(text.contains("sk-***(25 chars)"), "{text}");
    assert!(!format!("{c:?}").contains("1234567890"));
}

#[test]
fn unknown_key_is_named() {
    let text = README.replace(
        "[providers.openai]\n",
        "[providers.openai]\napi_kyes = \"x\"\n",
    );
    assert_eq!(
        err(&text),
        "keel.toml: providers.openai.api_kyes: unknown field `api_kyes`, expected one of `kind`, `base_url`, `api_key`, `api_keys`, `api_version`, `azure_ad_token`, `region`, `access_key_id`, `secret_access_key`, `session_token`"
    );
}

#[test]
fn missing_env_var_is_named() {
    let text = README.replace("${OPENAI_API_KEY}", "${OPENAI_KEY_MISSING}");
    assert_eq!(
        err(&text),
        "keel.toml: providers.openai.api_key: environment variable OPENAI_KEY_MISSING is not set"
    );
}

#[test]
fn route_naming_unknown_deployment() {
    let text = README.replace(
        "chain = [\"gpt-4o\", \"sonnet\"]",
        "chain = [\"gpt-4o\", \"opus\"]",
    );
    assert_eq!(
        err(&text),
        "keel.toml: routes.gpt-4o.chain[1]: expected one of the deployments (gpt-4o, sonnet), got \"opus\""
    );
}

#[test]
fn invalid_duration() {
    let text = format!("{README}\n[policy]\ntimeout = \"soon\"\n");
    assert_eq!(
        err(&text),
        "keel.toml: policy.timeout: expected a duration like \"30s\" or \"250ms\", got \"soon\""
    );
}

#[test]
fn invalid_provider_kind_and_url() {
    let text = README.replace(
        "[providers.openai]\n",
        "[providers.openai]\nkind = \"cohere\"\n",
    );
    assert_eq!(
        err(&text),
        "keel.toml: providers.openai.kind: expected \"openai\", \"anthropic\", \"azure\", \"gemini\" or \"bedrock\", got \"cohere\""
    );
    let text = README.replace(
        "[providers.openai]\n",
        "[providers.openai]\nbase_url = \"ftp://x\"\n",
    );
    assert_eq!(err(&text), "keel.toml: providers.openai.base_url: expected an http:// or https:// URL, got \"ftp://x\"");
}

#[test]
fn wrong_type_is_named() {
    let text = README.replace(
        "model = \"gpt-4o\" }",
        "model = \"gpt-4o\", rpm = \"many\" }",
    );
    let e = err(&text);
    assert!(
        e.starts_with("keel.toml: deployments.gpt-4o.rpm: invalid type: string \"many\""),
        "{e}"
    );
}

#[test]
fn route_policy_errors_name_the_route() {
    let text = README.replace(
        "gpt-4o = { chain = [\"gpt-4o\", \"sonnet\"] }",
        "gpt-4o = { chain = [\"gpt-4o\", \"sonnet\"], policy = { stream_failure = \"retry\" } }",
    );
    assert_eq!(
        err(&text),
        "keel.toml: routes.gpt-4o.policy.stream_failure: expected \"resume\" or \"fail\", got \"retry\""
    );
}

#[test]
fn syntax_error_names_file() {
    let e = err("[providers\n");
    assert!(e.starts_with("keel.toml: invalid TOML:"), "{e}");
}

#[test]
fn policy_parameters_are_checked() {
    let text = format!("{README}\n[policy]\nmax_attempts = 0\n");
    let e = err(&text);
    assert!(
        e.starts_with("keel.toml: policy.max_attempts: expected "),
        "{e}"
    );
    let text = format!("{README}\n[policy]\nbackoff_base = \"10s\"\nbackoff_cap = \"1s\"\n");
    let e = err(&text);
    assert!(
        e.starts_with("keel.toml: policy.backoff_base: expected "),
        "{e}"
    );
    let text = format!("{README}\n[retry_budget]\nratio = 1.5\n");
    let e = err(&text);
    assert!(
        e.starts_with("keel.toml: retry_budget.ratio: expected "),
        "{e}"
    );
    assert!(e.ends_with("got 1.5"), "{e}");
}

#[test]
fn missing_config_file() {
    let e = Config::load(std::path::Path::new("/nonexistent/keel.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/keel.toml: cannot read:"),
        "{e}"
    );
}

#[test]
fn shipped_examples_are_valid() {
    for name in ["keel.toml", "keel-full.toml"] {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::from_toml_str(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.routes.contains_key("gpt-4o"), "{name}");
    }
}

/// `stream_upstream` is on by default for deployments that stream and
/// whose stream Keel assembles (OpenAI, Azure, Anthropic), off for the
/// others and for a deployment that does not stream; a deployment turns it
/// off. The first-token deadline's keys are checked and it adapts as
/// documented: k x the recent p99, at least the floor, never above the
/// timeout.
#[test]
fn stream_upstream_and_the_first_token_deadline() {
    use std::time::Duration;
    let c = load(&format!(
        "{README}\n[deployments.on]\nprovider = \"openai\"\nmodel = \"m\"\nstream_upstream = true\n\
         [deployments.off]\nprovider = \"openai\"\nmodel = \"m\"\nstream_upstream = false\n\
         [deployments.whole]\nprovider = \"openai\"\nmodel = \"m\"\nstreaming = false\n\
         [providers.g]\nkind = \"gemini\"\napi_key = \"k\"\n\
         [deployments.gem]\nprovider = \"g\"\nmodel = \"gemini-2.5-flash\"\n\
         [policy]\nfirst_token_floor = \"500ms\"\nfirst_token_p99_factor = 3\n"
    ))
    .unwrap();
    let on: Vec<_> = c
        .deployments
        .iter()
        .map(|d| (d.name.as_str(), d.stream_upstream))
        .collect();
    assert_eq!(
        on,
        [
            ("gem", false),
            ("gpt-4o", true),
            ("off", false),
            ("on", true),
            ("sonnet", true),
            ("whole", false)
        ]
    );
    let p = &c.routes["gpt-4o"].policy;
    let ms = Duration::from_millis;
    let timeout = p.first_token_timeout;
    assert_eq!(timeout, Duration::from_secs(15));
    for (p99, want) in [
        (None, ms(500)),
        (Some(ms(100)), ms(500)),
        (Some(ms(400)), ms(1200)),
        (Some(ms(10_000)), timeout),
    ] {
        assert_eq!(p.first_token.deadline(p99, timeout), want, "{p99:?}");
    }
    let d = load(README).unwrap().routes["gpt-4o"].policy.first_token;
    assert_eq!((d.floor, d.factor), (Duration::from_secs(1), 4.0));
    assert_eq!(
        err(&format!("{README}\n[policy]\nfirst_token_p99_factor = 0\n")),
        "keel.toml: policy.first_token_p99_factor: expected a number > 0, got 0"
    );
    assert_eq!(
        err(&format!("{README}\n[policy]\nfirst_token_floor = \"soon\"\n")),
        "keel.toml: policy.first_token_floor: expected a duration like \"30s\" or \"250ms\", got \"soon\""
    );
}
