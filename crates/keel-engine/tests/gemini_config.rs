//! `kind = "gemini"` providers: defaults, endpoints, the key's header, and
//! the errors `keel check-config` gives (file, key, expectation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_engine::config::{Config, ProviderKind};

fn env(k: &str) -> Option<String> {
    (k == "GEMINI_API_KEY").then(|| "AIza-test-key-123".to_owned())
}

const GEMINI: &str = r#"
[providers.google]
kind = "gemini"
api_key = "${GEMINI_API_KEY}"
[deployments.flash]
provider = "google"
model = "gemini-2.5-flash"
[routes.fast]
chain = ["flash"]
"#;

#[test]
fn a_gemini_provider_and_its_defaults() {
    let c = Config::from_toml_str(GEMINI, "keel.toml", &env).unwrap();
    let d = &c.deployments[0];
    assert_eq!(d.kind, ProviderKind::Gemini);
    assert_eq!(d.kind.as_str(), "gemini");
    assert_eq!(d.base_url, "https://generativelanguage.googleapis.com");
    assert_eq!(
        d.endpoint.as_ref().unwrap().to_string(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        d.stream_endpoint.as_ref().unwrap().to_string(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(d.context_window, 1_048_576);
    assert!(d.capabilities.json_schema && d.capabilities.tools && d.capabilities.vision);
    let key = &d.request_headers["x-goog-api-key"];
    assert_eq!(key.to_str().unwrap(), "AIza-test-key-123");
    assert!(key.is_sensitive());
    assert!(d.request_headers.get("authorization").is_none());
    assert!(!format!("{d:?}").contains("AIza-test-key-123"));
}

#[test]
fn a_base_url_of_its_own() {
    let text = GEMINI.replace(
        "kind = \"gemini\"\n",
        "kind = \"gemini\"\nbase_url = \"http://127.0.0.1:9/proxy/\"\n",
    );
    let c = Config::from_toml_str(&text, "keel.toml", &env).unwrap();
    let d = &c.deployments[0];
    assert_eq!(
        d.endpoint.as_ref().unwrap().to_string(),
        "http://127.0.0.1:9/proxy/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(d.request_headers["host"], "127.0.0.1:9");
}

#[test]
fn gemini_config_errors_name_the_key() {
    let err = |text: &str| {
        Config::from_toml_str(text, "keel.toml", &env)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&GEMINI.replace("kind = \"gemini\"\n", "kind = \"gemini\"\nbase_url = \"generativelanguage.googleapis.com\"\n")),
        "keel.toml: providers.google.base_url: expected an http:// or https:// URL, got \"generativelanguage.googleapis.com\""
    );
    assert_eq!(
        err(&GEMINI.replace("model = \"gemini-2.5-flash\"\n", "model = \"text-embedding-004\"\nembedding_space = \"g\"\nmax_batch_inputs = 101\n")),
        "keel.toml: deployments.flash.max_batch_inputs: expected 1..=100 (Gemini's batchEmbedContents takes at most 100 inputs), got 101"
    );
}
