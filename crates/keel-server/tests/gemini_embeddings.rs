//! OpenAI embeddings requests through Keel to Gemini deployments (`kind =
//! "gemini"`, served by `keel chaos` speaking Gemini): the
//! `batchEmbedContents` body Gemini receives, the OpenAI answer the client
//! gets (float or base64, in order, the client's model, usage estimated),
//! Gemini's faults retried or fallen over (to another Gemini deployment,
//! or across kinds inside one embedding space), and the official `openai`
//! SDK's `embeddings.create`. Attempts are counted from chaos's stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use http_body_util::BodyExt;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

mod support;

const MODEL: &str = "gemini-embedding-001";

/// Chaos upstreams: Gemini `g1` (faults `g1_faults`) and `g2`, and an
/// OpenAI `o` serving the same model (its vectors are chaos's same
/// function of the model and the text). Keel routes: `gem` = [g1, g2],
/// `mixed` = [g1, o] (one embedding space across kinds), `ref` = [o].
struct Setup {
    ch: ChaosHandle,
    engine: Engine,
}

async fn setup(g1_faults: &str) -> Setup {
    let scenario = format!(
        "[[upstream]]\nname = \"g1\"\nkind = \"gemini\"\napi_key = \"g-key\"\n{g1_faults}\n\
         [[upstream]]\nname = \"g2\"\nkind = \"gemini\"\napi_key = \"g-key\"\n\
         [[upstream]]\nname = \"o\"\nkind = \"openai\"\nmodels = [\"{MODEL}\"]\n"
    );
    let ch = ChaosServer::start(
        Scenario::from_toml_str(&scenario, "s.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let root = |name: &str| ch.base_url(name).trim_end_matches("/v1").to_owned();
    let config = format!(
        r#"
[providers.g1]
kind = "gemini"
base_url = "{g1}"
api_key = "g-key"
[providers.g2]
kind = "gemini"
base_url = "{g2}"
api_key = "g-key"
[providers.o]
kind = "openai"
base_url = "{o}"
[deployments.g1]
provider = "g1"
model = "{MODEL}"
embedding_space = "gemini-001"
[deployments.g2]
provider = "g2"
model = "models/{MODEL}"
embedding_space = "gemini-001"
[deployments.o]
provider = "o"
model = "{MODEL}"
embedding_space = "gemini-001"
[routes.gem]
chain = ["g1", "g2"]
[routes.mixed]
chain = ["g1", "o"]
[routes.ref]
chain = ["o"]
[policy]
max_attempts = 2
backoff_base = "1ms"
backoff_cap = "2ms"
[breaker]
consecutive_failures = 1000
"#,
        g1 = root("g1"),
        g2 = root("g2"),
        o = ch.base_url("o"),
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&config, "keel.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    Setup { ch, engine }
}

impl Setup {
    async fn embed(&self, body: Value) -> (u16, http::HeaderMap, Value) {
        let req = Request::post("/v1/embeddings")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app(AppState::new(self.engine.clone()))
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    fn bodies(&self, name: &str) -> Vec<Value> {
        self.ch
            .stats(name)
            .unwrap()
            .log
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }

    fn attempts(&self, name: &str) -> u64 {
        self.ch.stats(name).unwrap().attempts
    }
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

/// A string input, a list, `dimensions` and base64: Gemini is sent one
/// `batchEmbedContents` request per input with `outputDimensionality`,
/// and the client gets OpenAI's answer with the vectors chaos made (the
/// same as an OpenAI upstream of the same model answers).
#[tokio::test]
async fn openai_embeddings_requests_reach_gemini_as_batch_embed_contents() {
    let s = setup("").await;
    let (status, headers, one) = s
        .embed(json!({"model": "gem", "input": "hello world"}))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(headers["x-keel-deployment"], "g1");
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "gem");
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    // Gemini reports no tokens: Keel's estimate, a quarter of the bytes + 1.
    assert_eq!(one["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    assert_eq!(
        s.bodies("g1")[0],
        json!({"requests": [{"model": format!("models/{MODEL}"), "content": {"parts": [{"text": "hello world"}]}}]})
    );
    let (_, _, reference) = s
        .embed(json!({"model": "ref", "input": "hello world"}))
        .await;
    let v = floats(&one["data"][0]["embedding"]);
    assert_eq!(v.len(), 3072);
    assert_eq!(v, floats(&reference["data"][0]["embedding"]));

    let list = json!({"model": "gem", "input": ["alpha", "beta", "gamma"], "dimensions": 8, "encoding_format": "base64"});
    let (status, _, many) = s.embed(list).await;
    assert_eq!(status, 200, "{many}");
    let data = many["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let sent = &s.bodies("g1")[1]["requests"];
    assert_eq!(sent.as_array().unwrap().len(), 3);
    assert_eq!(sent[2]["content"]["parts"][0]["text"], "gamma");
    assert_eq!(sent[2]["outputDimensionality"], 8);
    let (_, _, floats_ref) = s
        .embed(json!({"model": "ref", "input": ["alpha", "beta", "gamma"], "dimensions": 8}))
        .await;
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert!(d["embedding"].is_string(), "base64 asked: {d}");
        let got = floats(&d["embedding"]);
        assert_eq!(got.len(), 8);
        assert_eq!(got, floats(&floats_ref["data"][i]["embedding"]));
    }
    assert_eq!(s.attempts("g1"), 2);
    assert_eq!(s.attempts("g2"), 0);
}

/// Gemini's faults, classified by Google's table: a 503 `UNAVAILABLE` is
/// retried on the deployment; a 429 `RESOURCE_EXHAUSTED` on every attempt
/// falls over to the next Gemini deployment; a `batchEmbedContents`
/// answer without vectors is an empty answer, retried.
#[tokio::test]
async fn gemini_embedding_faults_are_retried_or_fallen_over() {
    let s = setup("[[upstream.fault]]\nkind = \"overloaded\"\nsequence = [1]").await;
    let (status, headers, r) = s.embed(json!({"model": "gem", "input": ["a", "b"]})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(headers["x-keel-deployment"], "g1");
    assert_eq!((s.attempts("g1"), s.attempts("g2")), (2, 0));

    let s = setup("[[upstream.fault]]\nkind = \"rate_limit\"\nretry_after = \"1ms\"").await;
    let (status, headers, r) = s.embed(json!({"model": "gem", "input": ["a", "b"]})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(headers["x-keel-deployment"], "g2");
    assert_eq!((s.attempts("g1"), s.attempts("g2")), (2, 1));
    assert_eq!(r["data"].as_array().unwrap().len(), 2);

    let s = setup("[[upstream.fault]]\nkind = \"empty\"\nsequence = [1]").await;
    let (status, _, r) = s.embed(json!({"model": "gem", "input": "a"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!((s.attempts("g1"), s.attempts("g2")), (2, 0));
}

/// One embedding space across kinds: a Gemini deployment whose key is
/// refused (Google's 400 `API_KEY_INVALID`, an auth failure: never
/// retried) falls over to the OpenAI deployment of the same space, and
/// the vectors are the same model's.
#[tokio::test]
async fn an_embeddings_route_falls_over_from_gemini_to_openai_in_one_space() {
    let s = setup("[[upstream.fault]]\nkind = \"auth\"").await;
    let (status, headers, r) = s
        .embed(json!({"model": "mixed", "input": ["x", "y"]}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(headers["x-keel-deployment"], "o");
    assert_eq!((s.attempts("g1"), s.attempts("o")), (1, 1));
    assert_eq!(r["model"], "mixed");
    assert_eq!(floats(&r["data"][1]["embedding"]).len(), 3072);
}

/// Token-id inputs cannot go to Gemini (it embeds text): a route of Gemini
/// deployments refuses them before any upstream call, naming why.
#[tokio::test]
async fn token_ids_are_refused_for_gemini_deployments() {
    let s = setup("").await;
    let (status, _, r) = s.embed(json!({"model": "gem", "input": [[1, 2, 3]]})).await;
    assert_eq!(status, 400, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("embeds text only (Gemini takes no token ids)"),
        "{message}"
    );
    assert_eq!((s.attempts("g1"), s.attempts("g2")), (0, 0));
}

/// Config: a Gemini embedding deployment takes at most 100 inputs per
/// request (Gemini's batch limit), its default; more is a config error.
#[test]
fn gemini_batches_are_at_most_a_hundred_inputs() {
    let text = |n: &str| {
        format!(
            "[providers.g]\nkind = \"gemini\"\napi_key = \"k\"\n\
             [deployments.e]\nprovider = \"g\"\nmodel = \"{MODEL}\"\nembedding_space = \"s\"\n{n}\
             [routes.r]\nchain = [\"e\"]\n"
        )
    };
    let ok = Config::from_toml_str(&text(""), "keel.toml", &|_| None).unwrap();
    assert_eq!(ok.deployments[0].max_batch_inputs, Some(100));
    assert_eq!(ok.deployments[0].context_window, 2048);
    let err = Config::from_toml_str(&text("max_batch_inputs = 250\n"), "keel.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "keel.toml: deployments.e.max_batch_inputs: expected 1..=100 (Gemini's batchEmbedContents takes at most 100 inputs), got 250"
    );
}

/// The official `openai` SDK's `embeddings.create` through `keel serve` to
/// a Gemini deployment: plain (the SDK's default base64, decoded by the
/// SDK), a list, `dimensions`, explicit float; every vector equal to the
/// one the OpenAI upstream of the same model answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_embeds_through_keel_on_gemini() {
    let s = setup("[[upstream.fault]]\nkind = \"overloaded\"\nsequence = [1]").await;
    let addr = keel_server::spawn(s.engine.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    support::sdk_script(
        "sdk/gemini_embeddings_sdk.py",
        vec![format!("http://{addr}")],
        "all gemini embeddings SDK checks passed",
    )
    .await;
    // Four calls to `gem` on g1, the first retried once after its 503.
    assert_eq!(s.attempts("g1"), 5);
    assert_eq!(
        s.ch.stats("g1").unwrap().by_outcome.get("overloaded"),
        Some(&1)
    );
    assert_eq!(s.attempts("g2"), 0);
}
