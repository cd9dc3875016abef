//! Embeddings and token counting through Keel against chaos: the official
//! SDKs (`embeddings.create`, `messages.count_tokens`), faults recovered,
//! fallback only inside one embedding space, large arrays split and
//! reassembled in order, bad input refused before any upstream call. Every
//! expectation about upstream traffic is counted from chaos's stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosHandle, ChaosServer, FaultPlan, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use serde_json::{json, Value};

mod support;

const UPSTREAMS: &str = "[[upstream]]\nname = \"e1\"\nkind = \"openai\"\nmax_inputs = 16\n\
    [[upstream]]\nname = \"e2\"\nkind = \"openai\"\nmax_inputs = 16\n\
    [[upstream]]\nname = \"big\"\nkind = \"openai\"\n\
    [[upstream]]\nname = \"an\"\nkind = \"anthropic\"\n\
    [[upstream]]\nname = \"oa\"\nkind = \"openai\"\n";

async fn chaos() -> ChaosHandle {
    let scenario = Scenario::from_toml_str(UPSTREAMS, "emb.toml").unwrap();
    ChaosServer::start(scenario, 11, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Keel with `emb` (two deployments of space "small", 16 inputs each),
/// `big` (another space), `claude` (Anthropic) and `chat` (OpenAI chat).
async fn keel(ch: &ChaosHandle, extra: &str) -> (String, Engine) {
    let text = format!(
        r#"
[providers.e1]
kind = "openai"
base_url = "{e1}"
[providers.e2]
kind = "openai"
base_url = "{e2}"
[providers.big]
kind = "openai"
base_url = "{big}"
[providers.an]
kind = "anthropic"
base_url = "{an}"
[providers.oa]
kind = "openai"
base_url = "{oa}"
[deployments.e1]
provider = "e1"
model = "text-embedding-3-small"
embedding_space = "small"
max_batch_inputs = 16
[deployments.e2]
provider = "e2"
model = "text-embedding-3-small"
embedding_space = "small"
max_batch_inputs = 16
[deployments.big]
provider = "big"
model = "text-embedding-3-large"
embedding_space = "large"
[deployments.an]
provider = "an"
model = "claude-haiku-4-5"
[deployments.oa]
provider = "oa"
model = "gpt-4o-mini"
[routes.emb]
chain = ["e1", "e2"]
[routes.big]
chain = ["big"]
[routes.claude]
chain = ["an"]
[routes.chat]
chain = ["oa"]
[policy]
backoff_base = "1ms"
backoff_cap = "5ms"
max_attempts = 2
[breaker]
consecutive_failures = 1000
{extra}
"#,
        e1 = ch.base_url("e1"),
        e2 = ch.base_url("e2"),
        big = ch.base_url("big"),
        an = ch.base_url("an"),
        oa = ch.base_url("oa"),
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&text, "emb.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    let addr = keel_server::spawn(engine.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (format!("http://{addr}"), engine)
}

fn faults(json: &str) -> FaultPlan {
    FaultPlan::from_json_str(json).unwrap()
}

async fn post(url: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth("k")
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap())
}

/// Vectors straight from chaos (no Keel), as floats.
async fn direct(ch: &ChaosHandle, body: Value) -> Vec<Value> {
    let (s, _, v) = post(&format!("{}/embeddings", ch.base_url("big")), &body).await;
    assert_eq!(s, 200, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].clone())
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_embed_and_count_tokens_through_keel() {
    let ch = chaos().await;
    // The primary fails its 1st and 4th attempts (retried there) and its
    // 6th and 7th (fallen over to the same space's e2).
    ch.set_faults(
        "e1",
        faults(r#"{"faults":[{"kind":"rate_limit","retry_after":"1ms","sequence":[1]},{"kind":"server_error","sequence":[4,6,7]}]}"#),
    )
    .unwrap();
    ch.set_faults(
        "an",
        faults(r#"{"faults":[{"kind":"overloaded","sequence":[1]}]}"#),
    )
    .unwrap();
    let (base, _) = keel(&ch, "").await;
    let stdout = support::sdk_script("sdk/embeddings_sdk.py", vec![base], "").await;
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // The same vectors as the model answers directly, in the client's order.
    let model = "text-embedding-3-small";
    let want = |input: Value| {
        let ch = &ch;
        async move {
            let (s, _, v) = post(
                &format!("{}/embeddings", ch.base_url("oa")),
                &json!({"model": model, "input": input}),
            )
            .await;
            assert_eq!(s, 200);
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| floats(&d["embedding"]))
                .collect::<Vec<_>>()
        }
    };
    let single: Vec<Vec<f64>> = got["single"]["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(single, want(json!("hello world")).await);
    assert_eq!(got["single"]["model"], "emb");
    let three = want(json!(["alpha", "beta", "gamma"])).await;
    let array: Vec<Vec<f64>> = got["array"]["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(array, three);
    assert_eq!(got["array"]["indexes"], json!([0, 1, 2]));
    // base64 decoded by the SDK: the same floats (f32 on the wire).
    let b64: Vec<Vec<f64>> = got["base64"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    for (a, b) in b64.iter().zip(&three) {
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6));
    }
    let dims: Vec<Vec<f64>> = got["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(dims.len(), 2);
    assert!(dims.iter().all(|v| v.len() == 8), "{dims:?}");
    let (_, _, direct8) = post(
        &format!("{}/embeddings", ch.base_url("oa")),
        &json!({"model": model, "input": [[1, 2, 3], [4, 5]], "dimensions": 8}),
    )
    .await;
    for (a, d) in dims.iter().zip(direct8["data"].as_array().unwrap()) {
        assert!(a
            .iter()
            .zip(floats(&d["embedding"]))
            .all(|(x, y)| (x - y).abs() < 1e-6));
    }
    // Faults on the primary: e1 saw 7 attempts (the single input: rate
    // limited, then retried; the array: at once; the base64 call: failed,
    // then retried; the dimensions call: failed twice, answered by e2 of
    // the same space).
    assert_eq!(ch.stats("e1").unwrap().attempts, 7);
    assert_eq!(ch.stats("e2").unwrap().attempts, 1);
    assert_eq!(ch.stats("big").unwrap().attempts, 0);
    assert_eq!(got["array"]["attempts"], "1");
    assert_eq!(got["array"]["deployment"], "e1");
    assert_eq!(got["chat_route"]["status"], 400);
    assert!(
        got["chat_route"]["message"]
            .as_str()
            .unwrap()
            .contains("`chat` is a chat route"),
        "{got}"
    );
    assert!(
        got["files"]
            .as_str()
            .unwrap()
            .starts_with("Keel does not serve GET /v1/files"),
        "{got}"
    );
    // count_tokens: asked of the Anthropic deployment (after an overload,
    // retried), and estimated by Keel where the route has none.
    assert_eq!(got["count"]["estimated"], Value::Null);
    assert!(got["count"]["tokens"].as_u64().unwrap() > 5, "{got}");
    assert_eq!(ch.stats("an").unwrap().attempts, 2);
    assert_eq!(got["estimate"]["estimated"], "true");
    assert!(got["estimate"]["tokens"].as_u64().unwrap() > 5, "{got}");
    assert_eq!(ch.stats("oa").unwrap().attempts, 3, "the direct calls only");
}

#[tokio::test]
async fn fallback_stays_inside_one_embedding_space() {
    let ch = chaos().await;
    for up in ["e1", "e2"] {
        ch.set_faults(up, faults(r#"{"faults":[{"kind":"server_error"}]}"#))
            .unwrap();
    }
    let (base, engine) = keel(&ch, "").await;
    let (s, h, v) = post(
        &format!("{base}/v1/embeddings"),
        &json!({"model": "emb", "input": "x"}),
    )
    .await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(h["x-keel-attempts"], "4");
    let tried: Vec<&str> = v["error"]["keel"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["deployment"].as_str().unwrap())
        .collect();
    assert_eq!(tried, ["e1", "e1", "e2", "e2"]);
    // The deployment of another space never received a request.
    assert_eq!(ch.stats("e1").unwrap().attempts, 2);
    assert_eq!(ch.stats("e2").unwrap().attempts, 2);
    assert_eq!(ch.stats("big").unwrap().attempts, 0);
    assert!(engine.render_metrics().contains(r#"api="embeddings""#));
}

#[test]
fn a_route_mixing_embedding_spaces_is_a_config_error_naming_both() {
    let base = r#"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[deployments.small]
provider = "p"
model = "text-embedding-3-small"
embedding_space = "small"
[deployments.large]
provider = "p"
model = "text-embedding-3-large"
embedding_space = "large"
[deployments.chat]
provider = "p"
model = "gpt-4o"
"#;
    let err = |route: &str| {
        Config::from_toml_str(&format!("{base}{route}"), "keel.toml", &|_| None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("[routes.r]\nchain = [\"small\", \"large\"]\n"),
        r#"keel.toml: routes.r.chain[1]: expected a deployment of embedding space "small", as deployments.small is, got deployments.large of embedding space "large""#
    );
    assert_eq!(
        err("[routes.r]\nchain = [\"chat\", \"small\"]\n"),
        r#"keel.toml: routes.r.chain[1]: expected a chat deployment, as deployments.chat is, got deployments.small of embedding space "small""#
    );
    assert_eq!(
        err("[routes.r]\nchain = [\"small\"]\nstatic_response = \"sorry\"\n"),
        "keel.toml: routes.r.static_response: expected nothing on an embeddings route (its answers are vectors), got a value"
    );
    assert_eq!(
        err("[deployments.x]\nprovider = \"p\"\nmodel = \"m\"\nmax_batch_inputs = 8\n"),
        "keel.toml: deployments.x.max_batch_inputs: expected an embedding deployment (set embedding_space first), got a chat deployment"
    );
}

#[tokio::test]
async fn a_large_array_is_split_sent_concurrently_and_reassembled_in_order() {
    let ch = chaos().await;
    // One part's first attempt fails: that part alone is retried.
    ch.set_faults(
        "e1",
        faults(r#"{"faults":[{"kind":"server_error","sequence":[3]}]}"#),
    )
    .unwrap();
    let (base, _) = keel(&ch, "").await;
    let inputs: Vec<String> = (0..100).map(|i| format!("document number {i}")).collect();
    let (s, h, v) = post(
        &format!("{base}/v1/embeddings"),
        &json!({"model": "emb", "input": inputs}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // 7 parts of at most 16 (chaos refuses more), one retried.
    assert_eq!(ch.stats("e1").unwrap().attempts, 8);
    assert_eq!(ch.stats("e2").unwrap().attempts, 0);
    assert_eq!(h["x-keel-attempts"], "8");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 100);
    let got: Vec<Value> = data.iter().map(|d| d["embedding"].clone()).collect();
    assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i));
    // The same vectors as one direct call with all 100 inputs.
    let want = direct(
        &ch,
        json!({"model": "text-embedding-3-small", "input": inputs}),
    )
    .await;
    assert_eq!(got, want);
    let direct_usage: u64 = inputs.iter().map(|s| s.len() as u64 / 4 + 1).sum();
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() >= direct_usage / 2,
        "{v}"
    );
    assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);
    assert_eq!(v["model"], "emb");

    // A part that fails for good fails the request; the error lists every
    // part's attempts.
    ch.reset();
    ch.set_faults(
        "e1",
        faults(r#"{"faults":[{"kind":"bad_request","sequence":[2]}]}"#),
    )
    .unwrap();
    let (s, _, v) = post(
        &format!("{base}/v1/embeddings"),
        &json!({"model": "emb", "input": inputs[..40]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(" of 3 (inputs ")
            && msg.contains("2 of 3 parts answered, and no partial answer is returned"),
        "{msg}"
    );
    let attempts = v["error"]["keel"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{v}");
    for (k, a) in attempts.iter().enumerate() {
        assert!(
            a["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("part {}/3", k + 1)),
            "{a}"
        );
    }
    assert!(v.get("data").is_none());
}

#[tokio::test]
async fn bad_input_is_refused_before_any_upstream_call() {
    let ch = chaos().await;
    let (base, _) = keel(&ch, "[deployments.nodims]\nprovider = \"big\"\nmodel = \"text-embedding-ada-002\"\nembedding_space = \"ada\"\ndimensions = false\n[routes.ada]\nchain = [\"nodims\"]\n").await;
    let cases = [
        (json!({"model": "emb", "input": []}), "input: expected at least one input, got an empty array", Some("input")),
        (json!({"model": "emb", "input": ["a", ""]}), "input[1]: expected a non-empty string, got \"\"", Some("input")),
        (json!({"model": "chat", "input": "a"}), "the model `chat` is a chat route: no deployment of its chain declares an embedding_space, so it serves no embeddings", None),
        (json!({"model": "ada", "input": "a", "dimensions": 8}), "no deployment of route 'ada' can serve this request (nodims: does not support dimensions)", None),
        (json!({"model": "emb", "input": ["x".repeat(40_000)]}), "no deployment of route 'emb' can serve this request (e1: an input of ~10001 tokens is over its input limit of 8192 tokens; e2: an input of ~10001 tokens is over its input limit of 8192 tokens)", None),
    ];
    for (body, want, param) in cases {
        let (s, h, v) = post(&format!("{base}/v1/embeddings"), &body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["message"], want, "{body}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"].as_str(), param);
        assert_eq!(h["x-should-retry"], "false");
    }
    // The reverse: chat on an embeddings route, and a token count on one.
    let (s, _, v) = post(
        &format!("{base}/v1/chat/completions"),
        &json!({"model": "emb", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["message"], "the model `emb` is an embeddings route (embedding space \"small\"); send it to POST /v1/embeddings");
    for up in ["e1", "e2", "big", "an", "oa"] {
        assert_eq!(ch.stats(up).unwrap().attempts, 0, "{up}");
    }
}

/// The cache (exact, per tenant), `Idempotency-Key`, the tenant's token
/// limit on input tokens and hedging meet embeddings as they meet chat.
#[tokio::test]
async fn cache_idempotency_tenant_limits_and_hedging_apply_to_embeddings() {
    let ch = chaos().await;
    let text = format!(
        r#"
[providers.e1]
kind = "openai"
base_url = "{e1}"
[providers.e2]
kind = "openai"
base_url = "{e2}"
[deployments.e1]
provider = "e1"
model = "text-embedding-3-small"
embedding_space = "small"
[deployments.e2]
provider = "e2"
model = "text-embedding-3-small"
embedding_space = "small"
[routes.cached]
chain = ["e1"]
cache_ttl = "1m"
[routes.hedged]
chain = ["e1", "e2"]
hedge = true
hedge_after = "30ms"
[[tenants]]
name = "alpha"
token = "tok-alpha"
[[tenants]]
name = "beta"
token = "tok-beta"
tpm = 100
"#,
        e1 = ch.base_url("e1"),
        e2 = ch.base_url("e2"),
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&text, "emb.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    let addr = keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let send = |token: &'static str, body: Value, key: Option<&'static str>| {
        let url = format!("http://{addr}/v1/embeddings");
        async move {
            let mut req = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body);
            if let Some(k) = key {
                req = req.header("idempotency-key", k);
            }
            let resp = req.send().await.unwrap();
            let (s, h) = (resp.status().as_u16(), resp.headers().clone());
            (s, h, resp.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"model": "cached", "input": ["a", "b"]});
    let (s, h, first) = send("tok-alpha", body.clone(), None).await;
    assert_eq!((s, h["x-keel-cache"].to_str().unwrap()), (200, "miss"));
    let (_, h, again) = send("tok-alpha", body.clone(), None).await;
    assert_eq!(h["x-keel-cache"], "hit");
    assert_eq!(again, first);
    assert_eq!(ch.stats("e1").unwrap().attempts, 1);
    // Another tenant never gets alpha's entry; other dimensions are another entry.
    let (_, h, _) = send("tok-beta", body.clone(), None).await;
    assert_eq!(h["x-keel-cache"], "miss");
    let (_, h, _) = send(
        "tok-alpha",
        json!({"model": "cached", "input": ["a", "b"], "dimensions": 4}),
        None,
    )
    .await;
    assert_eq!(h["x-keel-cache"], "miss");
    assert_eq!(ch.stats("e1").unwrap().attempts, 3);

    // One Idempotency-Key, one upstream call; the same key with another body: 422.
    let fresh = json!({"model": "hedged", "input": "idem"});
    let (s1, _, a) = send("tok-alpha", fresh.clone(), Some("k-1")).await;
    let (s2, _, b) = send("tok-alpha", fresh, Some("k-1")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(a, b);
    assert_eq!(ch.stats("e1").unwrap().attempts, 4);
    let (s, _, _) = send(
        "tok-alpha",
        json!({"model": "hedged", "input": "other"}),
        Some("k-1"),
    )
    .await;
    assert_eq!(s, 422);

    // beta's 100 tokens a minute hold ~15-token inputs: 6 is too many.
    let long: Vec<String> = (0..8)
        .map(|i| format!("{i} {}", "word ".repeat(12)))
        .collect();
    let (s, _, v) = send("tok-beta", json!({"model": "hedged", "input": long}), None).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "tenant_rate_limited");
    assert_eq!(ch.stats("e1").unwrap().attempts, 4);

    // A primary slow to answer is raced by a hedge on the same space's e2.
    ch.set_faults(
        "e1",
        faults(r#"{"faults":[{"kind":"slow_first_byte","delay":"3s"}]}"#),
    )
    .unwrap();
    let (s, h, v) = send(
        "tok-alpha",
        json!({"model": "hedged", "input": "race"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h["x-keel-deployment"], "e2");
    assert_eq!(ch.stats("e2").unwrap().attempts, 1);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

/// A deployment's tokens per minute count an embeddings request's input:
/// a second request the limit cannot hold is refused before any call.
#[tokio::test]
async fn the_deployment_limiter_counts_input_tokens() {
    let ch = chaos().await;
    let text = format!(
        r#"
[providers.e1]
kind = "openai"
base_url = "{}"
[deployments.e1]
provider = "e1"
model = "text-embedding-3-small"
embedding_space = "small"
tpm = 1000
[routes.limited]
chain = ["e1"]
[policy]
max_queue_wait = "50ms"
"#,
        ch.base_url("e1")
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&text, "emb.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    let addr = keel_server::spawn(engine, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}/v1/embeddings");
    // ~600 tokens each: the first fits in a minute's 1000, the second not.
    let body = json!({"model": "limited", "input": ["x".repeat(2400)]});
    let (s, _, v) = post(&url, &body).await;
    assert_eq!(s, 200, "{v}");
    let (s, h, v) = post(&url, &body).await;
    assert_eq!(s, 429, "{v}");
    assert!(h.contains_key("retry-after"), "{h:?}");
    assert_eq!(ch.stats("e1").unwrap().attempts, 1);
    // An input alone over the deployment's tpm can never be sent: a 400.
    let (s, _, v) = post(
        &url,
        &json!({"model": "limited", "input": ["y".repeat(8000)]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "input[0] has ~2001 tokens, more than deployment e1's tpm of 1000: it cannot be sent even alone"
    );
    assert_eq!(ch.stats("e1").unwrap().attempts, 1);
}
