//! The official `openai` Python SDK's Responses API through Keel, against
//! `keel chaos` with faults on the primary deployment. The interpreter comes
//! from `KEEL_TEST_PYTHON` (see tests/sdk.rs). Upstream attempts are counted
//! from the chaos stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use serde_json::Value;

mod support;

const SCENARIO: &str = r#"
[[upstream]]
name = "primary"
kind = "openai"
[[upstream.fault]]
kind = "server_error"
status = 500
every = 3
[[upstream]]
name = "backup"
kind = "openai"
"#;

/// The middle of three turns on `chat3` fails on `first` and goes to the
/// Anthropic deployment `an`.
const STORE_SCENARIO: &str = r#"
[[upstream]]
name = "primary"
kind = "openai"
[[upstream]]
name = "backup"
kind = "openai"
[[upstream]]
name = "first"
kind = "openai"
[[upstream.fault]]
kind = "server_error"
status = 500
sequence = [2]
[[upstream]]
name = "an"
kind = "anthropic"
"#;

/// A deployment per chaos upstream (`(name, kind, model)`), route `gpt`
/// (primary, then backup) and route `chat3` (first, then an) when they exist.
fn config(ch: &ChaosHandle, upstreams: &[(&str, &str, &str)]) -> Config {
    let mut text = String::new();
    for (name, kind, model) in upstreams {
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{}\"\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"{model}\"\n",
            ch.base_url(name)
        ));
    }
    text.push_str("[routes.gpt]\nchain = [\"primary\", \"backup\"]\n");
    if upstreams.len() > 2 {
        text.push_str("[routes.chat3]\nchain = [\"first\", \"an\"]\n");
    }
    text.push_str("[policy]\nmax_attempts = 1\n[breaker]\nconsecutive_failures = 1000\n");
    Config::from_toml_str(&text, "responses.toml", &|_| None).unwrap()
}

const OPENAI_PAIR: [(&str, &str, &str); 2] = [
    ("primary", "openai", "gpt-4o-mini"),
    ("backup", "openai", "gpt-4o-mini"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_responses_api_works_through_keel() {
    let scenario = Scenario::from_toml_str(SCENARIO, "responses.toml").unwrap();
    let ch = ChaosServer::start(scenario, 11, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = support::keel(config(&ch, &OPENAI_PAIR)).await;
    let facts =
        support::sdk_facts("responses/responses_sdk.py", vec![format!("http://{addr}")]).await;
    // Every request that reached the chain met the primary once; every
    // third attempt failed there and went to the backup. The rejected
    // inputs (400) reached no upstream.
    let calls = facts["gpt_calls"].as_u64().unwrap();
    let primary = ch.stats("primary").unwrap();
    let backup = ch.stats("backup").unwrap();
    assert_eq!(primary.attempts, calls, "{primary:?}");
    assert_eq!(primary.by_outcome.get("server_error"), Some(&(calls / 3)));
    assert_eq!(backup.attempts, calls / 3, "{backup:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_continue_a_conversation_across_providers() {
    let scenario = Scenario::from_toml_str(STORE_SCENARIO, "responses.toml").unwrap();
    let ch = ChaosServer::start(scenario, 12, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let upstreams = [
        OPENAI_PAIR[0],
        OPENAI_PAIR[1],
        ("first", "openai", "gpt-4o-mini"),
        ("an", "anthropic", "claude-haiku-4-5"),
    ];
    let addr = support::keel(config(&ch, &upstreams)).await;
    let facts = support::sdk_facts(
        "responses/responses_store.py",
        vec![format!("http://{addr}")],
    )
    .await;
    let turns: Vec<String> = serde_json::from_value(facts["turns"].clone()).unwrap();
    // Turn 1 on the primary, turn 2 failed there and went to Anthropic,
    // turn 3 back on the primary.
    let first = ch.stats("first").unwrap();
    let outcomes: Vec<_> = first.log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "server_error", "ok"]);
    let an = ch.stats("an").unwrap();
    assert_eq!(an.attempts, 1, "{an:?}");
    // Each upstream got the whole conversation so far, expanded by Keel.
    let quoted = |t: &str| serde_json::to_string(t).unwrap();
    let turn2 = &an.log[0].body;
    for said in [
        quoted("My name is Ada and I like turtles"),
        quoted(&turns[0]),
    ] {
        assert!(turn2.contains(&said), "{said} not in {turn2}");
    }
    let turn3 = &first.log[2].body;
    for said in [
        "My name is Ada and I like turtles",
        &turns[0],
        "Which animal do I like?",
        &turns[1],
        "And what is my name?",
    ] {
        assert!(turn3.contains(&quoted(said)), "{said} not in {turn3}");
    }
    // 400s and 404s reached no upstream: every gpt request met the primary once.
    let primary = ch.stats("primary").unwrap();
    assert_eq!(primary.attempts, 6, "{primary:?}");
    assert_eq!(ch.stats("backup").unwrap().attempts, 0);
}

/// A stored response belongs to the tenant that made it: for another
/// tenant its id is a 404 in OpenAI's shape on GET, DELETE, `input_items`
/// and as `previous_response_id` (before any upstream call), while it keeps
/// working for its own. An id older than the TTL says it has expired, on
/// every endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_is_its_tenants_alone() {
    let scenario = Scenario::from_toml_str(SCENARIO, "responses.toml").unwrap();
    let ch = ChaosServer::start(scenario, 13, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [deployments.p]\nprovider = \"p\"\nmodel = \"gpt-4o-mini\"\n\
         [routes.gpt]\nchain = [\"p\"]\n\
         [[tenants]]\nname = \"alpha\"\ntoken = \"tok-alpha\"\n\
         [[tenants]]\nname = \"beta\"\ntoken = \"tok-beta\"\n",
        ch.base_url("backup")
    );
    let config = Config::from_toml_str(&text, "tenants.toml", &|_| None).unwrap();
    let addr = support::keel(config).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let create = |token: &'static str, prev: Option<String>| {
        let mut body = serde_json::json!({"model": "gpt", "input": "My name is Ada."});
        if let Some(p) = prev {
            body["previous_response_id"] = p.into();
        }
        call(
            reqwest::Method::POST,
            "/v1/responses".into(),
            token,
            Some(body),
        )
    };
    let (status, made) = create("tok-alpha", None).await;
    assert_eq!(status, 200, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let upstream = || ch.stats("backup").unwrap().attempts;
    assert_eq!(upstream(), 1);

    // Another tenant: not found, in OpenAI's shape, whatever it asks.
    let not_found = |(status, body): (u16, Value), param: &str| {
        assert_eq!(status, 404, "{body}");
        let e = &body["error"];
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert_eq!(e["code"], "not_found", "{body}");
        let want = format!("{param}: no stored response with id \"{id}\"");
        assert!(e["message"].as_str().unwrap().starts_with(&want), "{body}");
    };
    let get = |token: &'static str| {
        call(
            reqwest::Method::GET,
            format!("/v1/responses/{id}"),
            token,
            None,
        )
    };
    let items = |token: &'static str| {
        call(
            reqwest::Method::GET,
            format!("/v1/responses/{id}/input_items"),
            token,
            None,
        )
    };
    let delete = |token: &'static str| {
        call(
            reqwest::Method::DELETE,
            format!("/v1/responses/{id}"),
            token,
            None,
        )
    };
    not_found(get("tok-beta").await, "response_id");
    not_found(items("tok-beta").await, "response_id");
    not_found(delete("tok-beta").await, "response_id");
    not_found(
        create("tok-beta", Some(id.clone())).await,
        "previous_response_id",
    );
    assert_eq!(upstream(), 1, "a 404 reached the upstream");

    // Its own tenant still has it whole (the other's DELETE removed nothing).
    let (status, got) = get("tok-alpha").await;
    assert_eq!((status, &got["id"]), (200, &made["id"]), "{got}");
    assert_eq!(got["output"], made["output"]);
    let (status, list) = items("tok-alpha").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["content"][0]["text"], "My name is Ada.");
    let (status, next) = create("tok-alpha", Some(id.clone())).await;
    assert_eq!(
        (status, &next["previous_response_id"]),
        (200, &made["id"]),
        "{next}"
    );
    assert_eq!(upstream(), 2);
    let (status, gone) = delete("tok-alpha").await;
    assert_eq!(
        (status, &gone["deleted"]),
        (200, &Value::Bool(true)),
        "{gone}"
    );
    not_found(get("tok-alpha").await, "response_id");

    // An id older than the TTL (Keel's ids carry their creation time).
    let old = "resp_00000001keel_x_1";
    let expired = |(status, body): (u16, Value), param: &str| {
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        let want = format!(
            "{param}: the response \"{old}\" has expired: stored responses are kept for 30 days ([responses] ttl)"
        );
        assert_eq!(body["error"]["message"], want.as_str(), "{body}");
    };
    let path = format!("/v1/responses/{old}");
    expired(
        call(reqwest::Method::GET, path.clone(), "tok-alpha", None).await,
        "response_id",
    );
    expired(
        call(reqwest::Method::DELETE, path.clone(), "tok-alpha", None).await,
        "response_id",
    );
    expired(
        call(
            reqwest::Method::GET,
            format!("{path}/input_items"),
            "tok-alpha",
            None,
        )
        .await,
        "response_id",
    );
    expired(
        create("tok-alpha", Some(old.into())).await,
        "previous_response_id",
    );
    assert_eq!(upstream(), 2);
}
