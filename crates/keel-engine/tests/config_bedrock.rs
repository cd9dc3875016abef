//! `kind = "bedrock"` providers in keel.toml: region, credentials (from
//! the file or the standard AWS variables), the default endpoint, and
//! precise errors naming file, key and expectation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keel_engine::config::{Config, ProviderKind};

const BASE: &str = r#"
[providers.aws]
kind = "bedrock"
region = "eu-west-3"
access_key_id = "AKIDFROMFILE"
secret_access_key = "file-secret-0123456789"
[deployments.sonnet]
provider = "aws"
model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
[routes.claude]
chain = ["sonnet"]
"#;

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn load(text: &str, vars: &'static [(&'static str, &'static str)]) -> Result<Config, String> {
    Config::from_toml_str(text, "keel.toml", &env(vars)).map_err(|e| e.to_string())
}

#[test]
fn a_bedrock_deployment_has_its_region_keys_and_converse_endpoint() {
    let c = load(BASE, &[]).unwrap();
    let d = &c.deployments[0];
    assert_eq!(d.kind, ProviderKind::Bedrock);
    assert_eq!(
        d.base_url,
        "https://bedrock-runtime.eu-west-3.amazonaws.com"
    );
    assert_eq!(
        d.endpoint.as_ref().unwrap().to_string(),
        "https://bedrock-runtime.eu-west-3.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    let auth = d.bedrock.as_ref().unwrap();
    assert_eq!(auth.region, "eu-west-3");
    assert_eq!(auth.access_key_id.expose(), "AKIDFROMFILE");
    assert_eq!(auth.session_token, None);
    assert_eq!(d.context_window, 200_000);
    assert!(
        !d.capabilities.json_schema,
        "structured output by a forced tool"
    );
    // Secrets never print.
    let debug = format!("{c:?}");
    assert!(!debug.contains("file-secret-0123456789"), "{debug}");
    assert!(!debug.contains("AKIDFROMFILE"), "{debug}");
}

#[test]
fn credentials_default_to_the_standard_aws_variables() {
    let text = BASE
        .replace("access_key_id = \"AKIDFROMFILE\"\n", "")
        .replace("secret_access_key = \"file-secret-0123456789\"\n", "");
    let vars = &[
        ("AWS_ACCESS_KEY_ID", "AKIDFROMENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_SESSION_TOKEN", "env-token"),
    ];
    let c = load(&text, vars).unwrap();
    let auth = c.deployments[0].bedrock.as_ref().unwrap();
    assert_eq!(auth.access_key_id.expose(), "AKIDFROMENV");
    assert_eq!(auth.secret_access_key.expose(), "env-secret");
    assert_eq!(auth.session_token.as_ref().unwrap().expose(), "env-token");
    // The file wins over the environment; `${VAR}` works as everywhere.
    let text = BASE.replace("\"AKIDFROMFILE\"", "\"${MY_KEY_ID}\"");
    let c = load(
        &text,
        &[
            ("MY_KEY_ID", "AKIDINTERP"),
            ("AWS_ACCESS_KEY_ID", "AKIDFROMENV"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.deployments[0]
            .bedrock
            .as_ref()
            .unwrap()
            .access_key_id
            .expose(),
        "AKIDINTERP"
    );
}

#[test]
fn errors_name_the_key_and_what_was_expected() {
    let cases: &[(String, &str)] = &[
        (
            BASE.replace("region = \"eu-west-3\"\n", ""),
            "keel.toml: providers.aws.region: expected an AWS region like \"us-east-1\", got nothing",
        ),
        (
            BASE.replace("\"eu-west-3\"", "\"EU West\""),
            "keel.toml: providers.aws.region: expected an AWS region like \"us-east-1\", got \"EU West\"",
        ),
        (
            BASE.replace("access_key_id = \"AKIDFROMFILE\"\n", ""),
            "keel.toml: providers.aws.access_key_id: expected an AWS access key id (or AWS_ACCESS_KEY_ID in the environment), got nothing",
        ),
        (
            BASE.replace("secret_access_key = \"file-secret-0123456789\"\n", ""),
            "keel.toml: providers.aws.secret_access_key: expected an AWS secret access key (or AWS_SECRET_ACCESS_KEY in the environment), got nothing",
        ),
        (
            BASE.replace("region = \"eu-west-3\"\n", "region = \"eu-west-3\"\napi_key = \"sk-x\"\n"),
            "keel.toml: providers.aws.api_key: expected no API key on a bedrock provider (requests are signed with access_key_id and secret_access_key), got a key",
        ),
        (
            BASE.replace("kind = \"bedrock\"", "kind = \"openai\""),
            "keel.toml: providers.aws.region: expected a key of bedrock providers only, got a \"openai\" provider",
        ),
        (
            BASE.replace("model = \"anthropic.claude-3-5-sonnet-20240620-v1:0\"\n", "model = \"amazon.titan-embed-text-v2:0\"\nembedding_space = \"titan\"\n"),
            "keel.toml: deployments.sonnet.embedding_space: expected a deployment of an openai, azure or gemini provider (Keel serves Bedrock's Converse API, not its embeddings), got a bedrock provider",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(load(text, &[]).unwrap_err(), *expected);
    }
}
