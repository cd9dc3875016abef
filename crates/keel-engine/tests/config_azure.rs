//! `kind = "azure"` providers: the address and key header each API version
//! makes, and every config error naming file, key and expectation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_engine::config::{AzureAuth, AzureVersion, Config, ConfigError, ProviderKind};

fn env(k: &str) -> Option<String> {
    match k {
        "AZURE_OPENAI_API_KEY" => Some("az-key-1234567890".into()),
        "AZURE_OPENAI_AD_TOKEN" => Some("eyJ0eXAiOiJKV1Qi.token".into()),
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

/// An Azure provider with `extra` keys, one chat and one embeddings deployment.
fn config(extra: &str) -> String {
    format!(
        r#"
[providers.az]
kind = "azure"
base_url = "https://contoso.openai.azure.com/"
{extra}
[deployments]
chat = {{ provider = "az", model = "gpt4o-prod" }}
emb = {{ provider = "az", model = "emb-small", embedding_space = "small" }}
[routes]
chat = {{ chain = ["chat"] }}
emb = {{ chain = ["emb"] }}
"#
    )
}

#[test]
fn dated_version_names_the_deployment_in_the_path() {
    let c = load(&config(
        "api_key = \"${AZURE_OPENAI_API_KEY}\"\napi_version = \"2024-10-21\"",
    ))
    .unwrap();
    let p = &c.providers["az"];
    assert_eq!(p.kind, ProviderKind::Azure);
    assert_eq!(p.base_url, "https://contoso.openai.azure.com");
    let az = p.azure.as_ref().unwrap();
    assert_eq!(az.version, AzureVersion::Dated("2024-10-21".into()));
    assert_eq!(az.auth, AzureAuth::ApiKey);
    let d = &c.deployments[0];
    assert_eq!(
        d.endpoint.as_ref().unwrap().to_string(),
        "https://contoso.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        az.url(&d.base_url, &c.deployments[1].model, "/embeddings"),
        "https://contoso.openai.azure.com/openai/deployments/emb-small/embeddings?api-version=2024-10-21"
    );
    // The key goes as `api-key`, marked sensitive; no Authorization.
    assert_eq!(d.request_headers["api-key"], "az-key-1234567890");
    assert!(d.request_headers["api-key"].is_sensitive());
    assert!(d.request_headers.get("authorization").is_none());
    // OpenAI's defaults: 128k window, native JSON schema.
    assert_eq!(d.context_window, 128_000);
    assert!(d.capabilities.json_schema);
    assert!(!c.describe().contains("az-key-1234567890"));
}

#[test]
fn v1_and_entra_token() {
    let c = load(&config(
        "azure_ad_token = \"${AZURE_OPENAI_AD_TOKEN}\"\napi_version = \"v1\"",
    ))
    .unwrap();
    let d = &c.deployments[0];
    assert_eq!(
        d.endpoint.as_ref().unwrap().to_string(),
        "https://contoso.openai.azure.com/openai/v1/chat/completions"
    );
    assert_eq!(
        d.request_headers["authorization"],
        "Bearer eyJ0eXAiOiJKV1Qi.token"
    );
    assert!(d.request_headers["authorization"].is_sensitive());
    assert!(d.request_headers.get("api-key").is_none());
    assert_eq!(
        c.providers["az"].azure.as_ref().unwrap().auth,
        AzureAuth::AdToken
    );
    // Preview versions are dated too.
    let c = load(&config(
        "api_key = \"k\"\napi_version = \"2025-04-01-preview\"",
    ))
    .unwrap();
    assert!(c.deployments[0]
        .endpoint
        .as_ref()
        .unwrap()
        .to_string()
        .ends_with("?api-version=2025-04-01-preview"));
}

#[test]
fn errors_name_file_key_and_expectation() {
    let cases: &[(&str, &str)] = &[
        (
            "api_key = \"k\"",
            "keel.toml: providers.az.api_version: expected \"v1\" or a dated version like \"2024-10-21\", got nothing",
        ),
        (
            "api_key = \"k\"\napi_version = \"2024-10\"",
            "keel.toml: providers.az.api_version: expected \"v1\" or a dated version like \"2024-10-21\", got \"2024-10\"",
        ),
        (
            "api_key = \"k\"\napi_version = \"v1\"\nazure_ad_token = \"t\"",
            "keel.toml: providers.az.azure_ad_token: expected either api_key/api_keys or azure_ad_token, not both, got both",
        ),
        (
            "azure_ad_token = \"\"\napi_version = \"v1\"",
            "keel.toml: providers.az.azure_ad_token: expected a Microsoft Entra ID token, got \"\"",
        ),
        (
            "api_key = \"k\"\napi_version = \"v1\"\napi_keys = []",
            "keel.toml: providers.az.api_keys: expected at least one key, got []",
        ),
        (
            "api_key = \"${AZURE_KEY_UNSET}\"\napi_version = \"v1\"",
            "keel.toml: providers.az.api_key: environment variable AZURE_KEY_UNSET is not set",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(&err(&config(extra)), want, "{extra}");
    }
    let no_url = config("api_key = \"k\"\napi_version = \"v1\"")
        .replace("base_url = \"https://contoso.openai.azure.com/\"\n", "");
    assert_eq!(
        err(&no_url),
        "keel.toml: providers.az.base_url: expected the resource endpoint, like \"https://NAME.openai.azure.com\", got nothing"
    );
    let with_path = config("api_key = \"k\"\napi_version = \"v1\"")
        .replace("azure.com/\"", "azure.com/openai/v1\"");
    assert_eq!(
        err(&with_path),
        "keel.toml: providers.az.base_url: expected the resource endpoint without /openai (Keel adds the path), got \"https://contoso.openai.azure.com/openai/v1\""
    );
    let bad_name =
        config("api_key = \"k\"\napi_version = \"v1\"").replace("gpt4o-prod", "gpt 4o/prod");
    assert_eq!(
        err(&bad_name),
        "keel.toml: deployments.chat.model: expected an Azure deployment name (letters, digits, '-', '_', '.'), got \"gpt 4o/prod\""
    );
    // Azure's keys on another kind.
    let openai = "[providers.oa]\nkind = \"openai\"\napi_version = \"2024-10-21\"\n[deployments]\nd = { provider = \"oa\", model = \"m\" }\n[routes]\nr = { chain = [\"d\"] }\n";
    assert_eq!(
        err(openai),
        "keel.toml: providers.oa.api_version: expected no such key (only kind = \"azure\" takes it), got kind = \"openai\""
    );
}
