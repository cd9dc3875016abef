//! Every path under `/v1/` gets a real answer over HTTP: a path Keel does
//! not serve gets a 404 JSON error in its API's shape that names the path
//! and lists what Keel serves; a served path with the wrong method gets a
//! 405 with `Allow`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_engine::config::Config;
use keel_engine::Engine;
use serde_json::Value;

async fn keel() -> String {
    let text = r#"
[providers.a]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[deployments.a]
provider = "a"
model = "m"
[routes.r]
chain = ["a"]
"#;
    let engine =
        Engine::with_seed(Config::from_toml_str(text, "t.toml", &|_| None).unwrap(), 1).unwrap();
    let addr = keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    format!("http://{addr}")
}

async fn call(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body("{}").send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    (status, headers, v)
}

const SERVED: &str = "it serves POST /v1/chat/completions, POST /v1/embeddings, POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/responses, GET /v1/responses/{id}, DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items, GET /v1/models, GET /healthz, GET /readyz, GET /metrics, GET /admin, GET /admin/status, POST /admin/reload";

fn openai_error(v: &Value) -> &str {
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(v.get("type").is_none(), "not OpenAI's shape: {v}");
    v["error"]["message"].as_str().unwrap()
}

fn anthropic_error(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "not Anthropic's shape: {v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    v["error"]["message"].as_str().unwrap()
}

#[tokio::test]
async fn an_unserved_path_gets_a_404_in_its_apis_shape_naming_the_path() {
    let base = keel().await;
    for path in [
        "/v1/files",
        "/v1/audio/speech",
        "/v1/images/generations",
        "/v1/chat/completions/x",
    ] {
        let (status, h, v) = call(reqwest::Method::POST, &format!("{base}{path}"), &[]).await;
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(h["x-should-retry"], "false");
        assert!(h.get("allow").is_none());
        assert_eq!(
            openai_error(&v),
            format!("Keel does not serve POST {path}; {SERVED}"),
        );
        assert_eq!(v["error"]["code"], "not_found");
    }
    // Anthropic's shape for its paths, and for a client naming its version.
    for (path, headers) in [
        ("/v1/complete", &[][..]),
        ("/v1/messages/batches", &[][..]),
        ("/v1/files", &[("anthropic-version", "2023-06-01")][..]),
    ] {
        let (status, _, v) = call(reqwest::Method::POST, &format!("{base}{path}"), headers).await;
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(
            anthropic_error(&v),
            format!("Keel does not serve POST {path}; {SERVED}")
        );
        assert_eq!(v["error"]["type"], "not_found_error");
    }
}

#[tokio::test]
async fn a_served_path_with_the_wrong_method_gets_a_405_with_allow() {
    let base = keel().await;
    let cases = [
        (reqwest::Method::GET, "/v1/chat/completions", "POST", false),
        (reqwest::Method::GET, "/v1/embeddings", "POST", false),
        (
            reqwest::Method::PUT,
            "/v1/responses/resp_1",
            "GET, DELETE",
            false,
        ),
        (reqwest::Method::POST, "/v1/models", "GET", false),
        (reqwest::Method::GET, "/v1/messages", "POST", true),
        (
            reqwest::Method::DELETE,
            "/v1/messages/count_tokens",
            "POST",
            true,
        ),
    ];
    for (method, path, allow, anthropic) in cases {
        let (status, h, v) = call(method.clone(), &format!("{base}{path}"), &[]).await;
        assert_eq!(status, 405, "{method} {path}: {v}");
        assert_eq!(h["allow"], allow, "{method} {path}");
        let msg = if anthropic {
            assert_eq!(v["error"]["type"], "invalid_request_error");
            anthropic_error(&v)
        } else {
            assert_eq!(v["error"]["code"], "method_not_allowed");
            openai_error(&v)
        };
        assert_eq!(msg, format!("{path} does not accept {method}; {SERVED}"));
    }
}
