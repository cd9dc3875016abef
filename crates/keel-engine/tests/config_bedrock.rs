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

/// A temp credentials file and the variables that point at it.
struct SharedFile {
    dir: std::path::PathBuf,
}

impl SharedFile {
    fn new(name: &str, text: &str) -> SharedFile {
        let dir = std::env::temp_dir().join(format!("keel-aws-{}-{name}", std::process::id()));
        std::fs::create_dir_all(dir.join(".aws")).unwrap();
        std::fs::write(dir.join(".aws").join("credentials"), text).unwrap();
        SharedFile { dir }
    }

    fn load(&self, text: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let home = self.dir.display().to_string();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.replace("$HOME", &home)))
            .collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_toml_str(text, "keel.toml", &env).map_err(|e| e.to_string())
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CREDENTIALS: &str = "[default]\naws_access_key_id = AKIDDEFAULTPROFILE\naws_secret_access_key = default-secret\n\n\
    [keel]\naws_access_key_id = AKIDKEELPROFILE\naws_secret_access_key = keel-secret\naws_session_token = keel-token\n";

/// Keys neither in the file nor the environment come from AWS's shared
/// credentials file: `$HOME/.aws/credentials` (or
/// `AWS_SHARED_CREDENTIALS_FILE`), profile `default` (or `AWS_PROFILE`).
#[test]
fn credentials_come_from_the_shared_credentials_file_last() {
    let shared = SharedFile::new("read", CREDENTIALS);
    let text = BASE
        .replace("access_key_id = \"AKIDFROMFILE\"\n", "")
        .replace("secret_access_key = \"file-secret-0123456789\"\n", "");
    let auth = |c: &Config| c.deployments[0].bedrock.clone().unwrap();
    let c = shared.load(&text, &[("HOME", "$HOME")]).unwrap();
    assert_eq!(auth(&c).access_key_id.expose(), "AKIDDEFAULTPROFILE");
    assert_eq!(auth(&c).secret_access_key.expose(), "default-secret");
    assert_eq!(auth(&c).session_token, None);
    let c = shared
        .load(
            &text,
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", "$HOME/.aws/credentials"),
                ("AWS_PROFILE", "keel"),
            ],
        )
        .unwrap();
    assert_eq!(auth(&c).access_key_id.expose(), "AKIDKEELPROFILE");
    assert_eq!(
        auth(&c).session_token.as_ref().unwrap().expose(),
        "keel-token"
    );
    // The environment's keys win over the file's.
    let c = shared
        .load(
            &text,
            &[
                ("HOME", "$HOME"),
                ("AWS_ACCESS_KEY_ID", "AKIDFROMENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ],
        )
        .unwrap();
    assert_eq!(auth(&c).access_key_id.expose(), "AKIDFROMENV");
    // Errors name the profile and the file, and why.
    let home = shared.dir.display().to_string();
    let err = shared
        .load(&text, &[("HOME", "$HOME"), ("AWS_PROFILE", "prod")])
        .unwrap_err();
    assert_eq!(
        err,
        format!("keel.toml: providers.aws.access_key_id: expected an AWS access key id (or AWS_ACCESS_KEY_ID in the environment, or aws_access_key_id in profile \"prod\" of {home}/.aws/credentials), got nothing (the file has no profile \"prod\")")
    );
    let err = shared
        .load(&text, &[("AWS_SHARED_CREDENTIALS_FILE", "$HOME/none")])
        .unwrap_err();
    assert_eq!(
        err,
        format!("keel.toml: providers.aws.access_key_id: expected an AWS access key id (or AWS_ACCESS_KEY_ID in the environment, or aws_access_key_id in profile \"default\" of {home}/none), got nothing (the file does not exist)")
    );
}
