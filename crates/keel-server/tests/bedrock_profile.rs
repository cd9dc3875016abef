//! A Bedrock provider whose keys are in neither keel.toml nor the
//! environment signs its requests with the keys of AWS's shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE`, profile `AWS_PROFILE`):
//! chaos's Bedrock upstream reads the access key id of each request's
//! SigV4 `Authorization` and refuses any other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use keel_chaos::{ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test]
async fn requests_are_signed_with_the_shared_profiles_keys() {
    let scenario =
        "[[upstream]]\nname = \"br\"\nkind = \"bedrock\"\napi_key = \"AKIDFROMPROFILE\"\n";
    let ch = ChaosServer::start(
        Scenario::from_toml_str(scenario, "s.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("keel-aws-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s0\n\
         [keel-test]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = s1\n",
    )
    .unwrap();
    let config = format!(
        "[providers.br]\nkind = \"bedrock\"\nregion = \"us-east-1\"\nbase_url = \"http://{}/br\"\n\
         [deployments.br]\nprovider = \"br\"\nmodel = \"anthropic.claude-3-5-sonnet-20240620-v1:0\"\n\
         [routes.r]\nchain = [\"br\"]\n[policy]\nmax_attempts = 1\n",
        ch.addr()
    );
    let path = file.display().to_string();
    let load = |profile: &'static str| {
        let path = path.clone();
        let env = move |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
            "AWS_PROFILE" => Some(profile.to_owned()),
            _ => None,
        };
        Engine::with_seed(
            Config::from_toml_str(&config, "keel.toml", &env).unwrap(),
            1,
        )
        .unwrap()
    };
    let ask = |engine: Engine| async move {
        let body = json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]});
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app(AppState::new(engine)).oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let (status, answer) = ask(load("keel-test")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["choices"][0]["message"]["content"].is_string());
    // The default profile's key is another: chaos refuses it.
    let (status, answer) = ask(load("default")).await;
    assert_ne!(status, 200, "{answer}");
    std::fs::remove_dir_all(&dir).unwrap();
    let stats = ch.stats("br").unwrap();
    assert_eq!(stats.attempts, 2);
    assert_eq!(stats.by_outcome.get("ok"), Some(&1));
    assert_eq!(stats.by_outcome.get("auth"), Some(&1));
}
