//! The embeddings and token-counting endpoints over HTTP: vectors are
//! deterministic per seed, model and input, `dimensions` and base64 are
//! honoured, faults and checks apply as on the chat endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

async fn embed(h: &keel_chaos::ChaosHandle, up: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/embeddings", h.base_url(up)))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        other => panic!("not an embedding: {other}"),
    }
}

const TWO: &str = "[[upstream]]\nname = \"o\"\nkind = \"openai\"\n[[upstream]]\nname = \"p\"\nkind = \"openai\"\nmax_inputs = 4\n[[upstream]]\nname = \"a\"\nkind = \"anthropic\"\n";

#[tokio::test]
async fn vectors_are_a_function_of_seed_model_and_input() {
    let h = start(TWO).await;
    let body = json!({"model": "text-embedding-3-small", "input": ["alpha", "beta", [1, 2, 3]]});
    let (s, a) = embed(&h, "o", body.clone()).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["object"], "list");
    assert_eq!(a["model"], "text-embedding-3-small");
    let data = a["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        let v = floats(&d["embedding"]);
        assert_eq!(v.len(), 1536);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
    assert!(a["usage"]["prompt_tokens"].as_u64().unwrap() >= 5);
    assert_eq!(a["usage"]["prompt_tokens"], a["usage"]["total_tokens"]);
    // Another upstream of the same model: the same vectors; one input
    // alone: the same vector as in the array.
    let (_, b) = embed(&h, "p", body).await;
    assert_eq!(a["data"], b["data"]);
    let (_, one) = embed(
        &h,
        "o",
        json!({"model": "text-embedding-3-small", "input": "beta"}),
    )
    .await;
    assert_eq!(one["data"][0]["embedding"], a["data"][1]["embedding"]);
    assert_eq!(one["data"][0]["index"], 0);
    // Another model, another seed: other vectors.
    let (_, other) = embed(
        &h,
        "o",
        json!({"model": "text-embedding-3-large", "input": "beta"}),
    )
    .await;
    assert_eq!(floats(&other["data"][0]["embedding"]).len(), 3072);
    let h2 = start_seeded(TWO, 8).await;
    let (_, reseeded) = embed(
        &h2,
        "o",
        json!({"model": "text-embedding-3-small", "input": "beta"}),
    )
    .await;
    assert_ne!(
        reseeded["data"][0]["embedding"],
        one["data"][0]["embedding"]
    );
}

#[tokio::test]
async fn dimensions_and_base64_are_honoured() {
    let h = start(TWO).await;
    let (_, full) = embed(
        &h,
        "o",
        json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    let (s, short) = embed(
        &h,
        "o",
        json!({"model": "text-embedding-3-small", "input": "x", "dimensions": 8, "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(s, 200, "{short}");
    assert!(short["data"][0]["embedding"].is_string());
    let short = floats(&short["data"][0]["embedding"]);
    assert_eq!(short.len(), 8);
    // The full vector's head, normalised again.
    let full = floats(&full["data"][0]["embedding"]);
    let head_norm: f32 = full[..8].iter().map(|x| x * x).sum::<f32>().sqrt();
    for (a, b) in short.iter().zip(&full[..8]) {
        assert!((a - b / head_norm).abs() < 1e-4, "{a} vs {}", b / head_norm);
    }
    // The provider's own refusals.
    let (s, e) = embed(
        &h,
        "o",
        json!({"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("dimensions")),
        "{e}"
    );
    let (s, e) = embed(
        &h,
        "o",
        json!({"model": "text-embedding-3-small", "input": []}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("input")),
        "{e}"
    );
    let (s, e) = embed(
        &h,
        "p",
        json!({"model": "m", "input": ["1", "2", "3", "4", "5"]}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 4 inputs, got 5"),
        "{e}"
    );
    let stats = h.stats("p").unwrap();
    assert_eq!(stats.attempts, 1);
}

#[tokio::test]
async fn faults_apply_to_embeddings_as_to_chat() {
    let toml = "[[upstream]]\nname = \"o\"\nkind = \"openai\"\n[[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1]\n[[upstream.fault]]\nkind = \"server_error\"\nsequence = [2]\n[[upstream.fault]]\nkind = \"empty\"\nsequence = [3]\n";
    let h = start(toml).await;
    let body = json!({"model": "text-embedding-3-small", "input": "x"});
    let (s, e) = embed(&h, "o", body.clone()).await;
    assert_eq!(s, 429, "{e}");
    let (s, _) = embed(&h, "o", body.clone()).await;
    assert_eq!(s, 500);
    let (s, e) = embed(&h, "o", body.clone()).await;
    assert_eq!((s, e["data"].as_array().map(Vec::len)), (200, Some(0)));
    let (s, e) = embed(&h, "o", body).await;
    assert_eq!((s, e["data"].as_array().map(Vec::len)), (200, Some(1)));
    let stats = h.stats("o").unwrap();
    assert_eq!(stats.attempts, 4);
}

#[tokio::test]
async fn anthropic_counts_tokens() {
    let h = start(TWO).await;
    let resp = client()
        .post(format!("{}/messages/count_tokens", h.base_url("a")))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello there, how are you?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    assert!((5..40).contains(&n), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert_eq!(h.stats("a").unwrap().attempts, 1);
    // Not on an OpenAI upstream: its 404.
    let resp = client()
        .post(format!("{}/messages/count_tokens", h.base_url("o")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

async fn gemini_call(
    h: &keel_chaos::ChaosHandle,
    up: &str,
    method: &str,
    body: Value,
) -> (u16, Value) {
    let root = h.base_url(up);
    let root = root.trim_end_matches("/v1");
    let resp = client()
        .post(format!(
            "{root}/v1beta/models/gemini-embedding-001:{method}"
        ))
        .header("x-goog-api-key", "g-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Gemini's `:embedContent` and `:batchEmbedContents`: Gemini's shapes,
/// the same vectors as OpenAI's endpoint for the same model and text,
/// `outputDimensionality` honoured, and faults in Google's error shape.
#[tokio::test]
async fn gemini_embed_methods_answer_in_geminis_shape() {
    let h = start(
        "[[upstream]]\nname = \"g\"\nkind = \"gemini\"\napi_key = \"g-key\"\n\
         [[upstream]]\nname = \"o\"\nkind = \"openai\"\nmodels = [\"gemini-embedding-001\"]\n\
         [[upstream]]\nname = \"g-empty\"\nkind = \"gemini\"\napi_key = \"g-key\"\n[[upstream.fault]]\nkind = \"empty\"\n\
         [[upstream]]\nname = \"g-429\"\nkind = \"gemini\"\napi_key = \"g-key\"\n[[upstream.fault]]\nkind = \"rate_limit\"\nretry_after = \"3s\"\n",
    )
    .await;
    let content = |t: &str| json!({"parts": [{"text": t}]});
    let (s, one) = gemini_call(&h, "g", "embedContent", json!({"content": content("beta")})).await;
    assert_eq!(s, 200, "{one}");
    let v = floats(&one["embedding"]["values"]);
    assert_eq!(v.len(), 3072);
    let m = "models/gemini-embedding-001";
    let batch = json!({"requests": [
        {"model": m, "content": content("alpha"), "outputDimensionality": 16},
        {"model": m, "content": content("beta"), "outputDimensionality": 16},
    ]});
    let (s, b) = gemini_call(&h, "g", "batchEmbedContents", batch.clone()).await;
    assert_eq!(s, 200, "{b}");
    let e = b["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(floats(&e[1]["values"]).len(), 16);
    // OpenAI's endpoint, same model and text: the same vector.
    let (_, o) = embed(
        &h,
        "o",
        json!({"model": "gemini-embedding-001", "input": "beta"}),
    )
    .await;
    assert_eq!(floats(&o["data"][0]["embedding"]), v);
    // The `empty` fault: no vectors.
    let (s, empty) = gemini_call(&h, "g-empty", "batchEmbedContents", batch.clone()).await;
    assert_eq!((s, empty), (200, json!({"embeddings": []})));
    // A fault: Google's 429 with its RetryInfo.
    let (s, err) = gemini_call(&h, "g-429", "batchEmbedContents", batch).await;
    assert_eq!(s, 429);
    assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
    let retry = err["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"].as_str().unwrap().ends_with("RetryInfo"))
        .unwrap();
    assert_eq!(retry["retryDelay"], "3s");
    assert_eq!(h.stats("g").unwrap().attempts, 2);
    assert_eq!(h.stats("g-429").unwrap().attempts, 1);
}
