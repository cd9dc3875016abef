//! Follow-ups on every body path. For each follow-up Keel makes on its own
//! (the rest of a truncated answer, a stream resumed after a cut, a JSON
//! repair, a raised `max_tokens`, another key after a 429) and each way a
//! body reaches the provider (the client's bytes passed through, with and
//! without `stream_options`; the typed request; a translation either way;
//! both client APIs), the client gets exactly the deterministic answer the
//! chaos provider gives the request, and the provider received exactly the
//! bodies it should: the client's own request first, then Keel's follow-up,
//! never the client's original bytes a second time.
//!
//! `keel chaos` answers a continuation (the partial answer as the
//! assistant's turn, then a user turn asking to continue) with exactly the
//! rest of the answer that conversation gets, so every text check here is an
//! equality.

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

const MODEL: &str = "m-1";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn kind(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Api::OpenAi => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }
}

/// One client request through Keel with a fault on the primary's first
/// attempt(s): what the client got and what each upstream received.
struct Run {
    status: u16,
    /// The answer text the client received (all text deltas joined).
    text: String,
    /// Every SSE `data:` payload (streams), or the one JSON body.
    events: Vec<Value>,
    /// Bodies the primary upstream received, in order.
    primary: Vec<Value>,
    /// The first of them as the primary received it, byte for byte.
    primary_raw: Option<String>,
    /// Bodies the secondary upstream received, in order.
    secondary: Vec<Value>,
    ch: keel_chaos::ChaosHandle,
}

struct Case {
    client: Api,
    provider: Api,
    /// `[[upstream.fault]]` tables of the primary.
    fault: &'static str,
    /// Lines added to the primary provider's table.
    provider_extra: &'static str,
    /// Lines added under `[policy]`.
    policy: &'static str,
    /// The client's body (`model` = the route).
    body: Value,
}

async fn run(case: &Case) -> Run {
    run_with(case, "").await
}

/// [`run`] with `deployment_extra` added to both deployments' tables.
async fn run_with(case: &Case, deployment_extra: &str) -> Run {
    let kind = case.provider.kind();
    let scenario = format!(
        "[[upstream]]\nname = \"p\"\nkind = \"{kind}\"\n{fault}\n\
         [[upstream]]\nname = \"q\"\nkind = \"{kind}\"\n\
         [[upstream]]\nname = \"ref\"\nkind = \"{kind}\"\n",
        fault = case.fault
    );
    let ch = ChaosServer::start(
        Scenario::from_toml_str(&scenario, "s.toml").unwrap(),
        7,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = format!(
        r#"
[providers.p]
kind = "{kind}"
base_url = "{p}"
{extra}
[providers.q]
kind = "{kind}"
base_url = "{q}"
[deployments.p]
provider = "p"
model = "{MODEL}"
{deployment_extra}
[deployments.q]
provider = "q"
model = "{MODEL}"
{deployment_extra}
[routes.r]
chain = ["p", "q"]
[policy]
max_attempts = 3
backoff_base = "1ms"
backoff_cap = "2ms"
{policy}
[breaker]
consecutive_failures = 1000
"#,
        p = ch.base_url("p"),
        q = ch.base_url("q"),
        extra = case.provider_extra,
        policy = case.policy,
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&config, "keel.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    let req = Request::post(case.client.path())
        .header("content-type", "application/json")
        .body(Body::from(case.body.to_string()))
        .unwrap();
    let resp = app(AppState::new(engine)).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let events: Vec<Value> = if raw.trim_start().starts_with('{') {
        vec![serde_json::from_str(&raw).unwrap()]
    } else {
        raw.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    };
    let text = events.iter().map(text_of).collect();
    let bodies = |name: &str| -> Vec<Value> {
        ch.stats(name)
            .unwrap()
            .log
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    };
    Run {
        status,
        text,
        events,
        primary: bodies("p"),
        primary_raw: ch.stats("p").unwrap().log.first().map(|r| r.body.clone()),
        secondary: bodies("q"),
        ch,
    }
}

/// The text an event or a whole answer carries, in either API's shape.
fn text_of(v: &Value) -> String {
    if let Some(choices) = v["choices"].as_array() {
        return choices
            .iter()
            .filter_map(|c| {
                c["delta"]["content"]
                    .as_str()
                    .or(c["message"]["content"].as_str())
            })
            .collect();
    }
    if v["type"] == "content_block_delta" {
        return v["delta"]["text"].as_str().unwrap_or("").to_owned();
    }
    if v["type"] == "message" {
        return v["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect();
    }
    String::new()
}

impl Run {
    /// The answer the chaos provider gives `body` without faults (asked of
    /// the `ref` upstream, which shares the primary's seed and model).
    async fn reference(&self, provider: Api, body: &Value) -> String {
        let mut body = body.clone();
        body["stream"] = json!(false);
        if let Some(o) = body.as_object_mut() {
            o.remove("stream_options");
        }
        let url = format!(
            "{}{}",
            self.ch.base_url("ref"),
            match provider {
                Api::OpenAi => "/chat/completions",
                Api::Anthropic => "/messages",
            }
        );
        let v: Value = reqwest::Client::new()
            .post(url)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v.get("error").is_none(), "{v}");
        text_of(&v)
    }
}

/// `body` with `model` replaced, as the pass-through sends it.
fn with_model(body: &Value, model: &str) -> Value {
    let mut b = body.clone();
    b["model"] = json!(model);
    b
}

fn openai_body(stream: bool, stream_options: bool) -> Value {
    let mut b = json!({
        "model": "r",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me a story."}
        ],
    });
    if stream {
        b["stream"] = json!(true);
    }
    if stream_options {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

fn anthropic_body(stream: bool) -> Value {
    let mut b = json!({
        "model": "r",
        "max_tokens": 1000,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Tell me a story."}],
    });
    if stream {
        b["stream"] = json!(true);
    }
    b
}

fn body_for(client: Api, stream: bool, stream_options: bool) -> Value {
    match client {
        Api::OpenAi => openai_body(stream, stream_options),
        Api::Anthropic => anthropic_body(stream),
    }
}

/// The messages of a provider body as (role, text) pairs, in either API's
/// shape (an Anthropic `system` first, as a system turn).
fn turns(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match &body["system"] {
        Value::String(s) => out.push(("system".to_owned(), s.clone())),
        Value::Array(blocks) => out.push((
            "system".to_owned(),
            blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        )),
        _ => {}
    }
    for m in body["messages"].as_array().unwrap() {
        let text = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        };
        out.push((m["role"].as_str().unwrap().to_owned(), text));
    }
    out
}

/// Asserts that `follow_up` asks for the rest of `partial`: the first
/// request's conversation, then the partial answer as the assistant's turn
/// and a user turn asking to continue, in the provider's own shape.
fn assert_continuation(first: &Value, follow_up: &Value, partial: &str, ctx: &str) {
    let mut expected = turns(first);
    assert!(!partial.is_empty(), "{ctx}: nothing before the follow-up");
    expected.push(("assistant".to_owned(), partial.to_owned()));
    let got = turns(follow_up);
    assert_eq!(got.len(), expected.len() + 1, "{ctx}: {follow_up}");
    assert_eq!(got[..expected.len()], expected[..], "{ctx}: {follow_up}");
    let (role, ask) = &got[expected.len()];
    assert_eq!(role, "user", "{ctx}");
    assert!(
        ask.contains("Continue it exactly where it stopped"),
        "{ctx}: {ask}"
    );
    assert_eq!(follow_up["model"], MODEL, "{ctx}");
}

/// What the provider must receive first: the client's own bytes (model
/// replaced; a plain request asked as a stream, `stream_upstream` being on
/// by default; for an OpenAI stream the usage chunk asked for) on a
/// pass-through; a body of the provider's own shape otherwise.
fn assert_first_body(case: &Case, run: &Run, ctx: &str) {
    let first = &run.primary[0];
    if case.client == case.provider {
        let stream_options = case.body.get("stream_options").is_some();
        let mut expected = with_model(&case.body, MODEL);
        expected["stream"] = json!(true);
        if case.client == Api::OpenAi {
            expected["stream_options"] = json!({"include_usage": true});
        }
        assert_eq!(
            first, &expected,
            "{ctx}: the client's request, model replaced, asked as a stream"
        );
        // Byte for byte: the client's bytes, then exactly the members a
        // stream needs (a typed re-serialisation would differ).
        if !stream_options {
            let client = case.body.to_string();
            let mut want = client.replace(r#""model":"r""#, &format!(r#""model":"{MODEL}""#));
            let added = match (case.client, case.body.get("stream").is_some()) {
                (Api::OpenAi, false) => r#","stream":true,"stream_options":{"include_usage":true}"#,
                (Api::OpenAi, true) => r#","stream_options":{"include_usage":true}"#,
                (Api::Anthropic, false) => r#","stream":true"#,
                (Api::Anthropic, true) => "",
            };
            want.insert_str(want.len() - 1, added);
            assert_eq!(run.primary_raw.as_deref(), Some(want.as_str()), "{ctx}");
        }
    } else {
        assert_eq!(first["model"], MODEL, "{ctx}");
        match case.provider {
            Api::OpenAi => assert!(first.get("system").is_none(), "{ctx}: {first}"),
            Api::Anthropic => assert!(first.get("max_tokens").is_some(), "{ctx}: {first}"),
        }
        assert_eq!(turns(first), turns(&case.body), "{ctx}");
    }
}

/// Checks that an OpenAI client's stream carries a usage-only chunk
/// exactly when it asked for one.
fn assert_usage_chunks(case: &Case, run: &Run, ctx: &str) {
    if case.client != Api::OpenAi || case.body["stream"] != json!(true) {
        return;
    }
    let asked = case.body["stream_options"]["include_usage"] == json!(true);
    let usage_only = run
        .events
        .iter()
        .filter(|e| e["choices"].as_array().is_some_and(Vec::is_empty))
        .count();
    assert_eq!(usage_only, usize::from(asked), "{ctx}: usage-only chunks");
    for e in &run.events {
        assert!(
            !e["choices"].as_array().unwrap().is_empty() || asked,
            "{ctx}: {e}"
        );
    }
}

const PATHS: &[(Api, Api, bool)] = &[
    // (client, provider, stream_options)
    (Api::OpenAi, Api::OpenAi, false),
    (Api::OpenAi, Api::OpenAi, true),
    (Api::Anthropic, Api::Anthropic, false),
    (Api::Anthropic, Api::OpenAi, false),
    (Api::OpenAi, Api::Anthropic, false),
    (Api::OpenAi, Api::Anthropic, true),
];

#[tokio::test]
async fn a_truncated_answer_is_continued_with_a_request_for_the_rest_on_every_body_path() {
    for &(client, provider, stream_options) in PATHS {
        for stream in [false, true] {
            if stream_options && !stream {
                continue;
            }
            let ctx = format!("{client:?} client, {provider:?} provider, stream {stream}, stream_options {stream_options}");
            let case = Case {
                client,
                provider,
                fault: "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]\n",
                provider_extra: "",
                policy: "",
                body: body_for(client, stream, stream_options),
            };
            let r = run(&case).await;
            assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
            assert_eq!(
                r.primary.len(),
                2,
                "{ctx}: the request, then the continuation"
            );
            assert!(r.secondary.is_empty(), "{ctx}");
            assert_first_body(&case, &r, &ctx);
            let whole = r.reference(provider, &r.primary[0]).await;
            assert_eq!(
                r.text, whole,
                "{ctx}: the client gets the whole answer once"
            );
            let partial_len = whole.len() - r.reference(provider, &r.primary[1]).await.len();
            assert_continuation(&r.primary[0], &r.primary[1], &whole[..partial_len], &ctx);
            assert_usage_chunks(&case, &r, &ctx);
        }
    }
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_resumed_elsewhere_with_a_request_for_the_rest_on_every_body_path(
) {
    for &(client, provider, stream_options) in PATHS {
        let ctx =
            format!("{client:?} client, {provider:?} provider, stream_options {stream_options}");
        let case = Case {
            client,
            provider,
            fault: "[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 4\nsequence = [1]\n",
            provider_extra: "",
            // The cut comes after the commit (a one-character window).
            policy: "stream_commit_chars = 1\n",
            body: body_for(client, true, stream_options),
        };
        let r = run(&case).await;
        assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
        assert_eq!(r.primary.len(), 1, "{ctx}");
        assert_eq!(
            r.secondary.len(),
            1,
            "{ctx}: the resume goes to the next deployment"
        );
        assert_first_body(&case, &r, &ctx);
        let whole = r.reference(provider, &r.primary[0]).await;
        assert_eq!(
            r.text, whole,
            "{ctx}: the client gets the whole answer once"
        );
        let partial_len = whole.len() - r.reference(provider, &r.secondary[0]).await.len();
        assert_continuation(&r.primary[0], &r.secondary[0], &whole[..partial_len], &ctx);
        assert_usage_chunks(&case, &r, &ctx);
    }
}

#[tokio::test]
async fn a_key_switch_sends_the_clients_request_again_unchanged() {
    for &(client, provider, stream_options) in PATHS {
        for stream in [false, true] {
            if stream_options && !stream {
                continue;
            }
            let ctx = format!("{client:?} client, {provider:?} provider, stream {stream}");
            let case = Case {
                client,
                provider,
                fault: "[[upstream.fault]]\nkind = \"rate_limit\"\nretry_after = \"5s\"\nsequence = [1]\n",
                provider_extra: "api_keys = [\"sk-one\", \"sk-two\"]",
                policy: "",
                body: body_for(client, stream, stream_options),
            };
            let r = run(&case).await;
            assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
            assert_eq!(r.primary.len(), 2, "{ctx}: a 429, then the other key");
            assert_eq!(r.primary[0], r.primary[1], "{ctx}: the same request");
            assert_first_body(&case, &r, &ctx);
            let whole = r.reference(provider, &r.primary[0]).await;
            assert_eq!(r.text, whole, "{ctx}");
            assert_usage_chunks(&case, &r, &ctx);
        }
    }
}

#[tokio::test]
async fn invalid_json_is_repaired_with_keels_own_request() {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    for (client, provider) in [(Api::OpenAi, Api::OpenAi), (Api::OpenAi, Api::Anthropic)] {
        let ctx = format!("{client:?} client, {provider:?} provider");
        let mut body = openai_body(false, false);
        body["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema}});
        let case = Case {
            client,
            provider,
            fault: "[[upstream.fault]]\nkind = \"invalid_json\"\nsequence = [1]\n",
            provider_extra: "",
            policy: "",
            body,
        };
        let r = run(&case).await;
        assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
        assert_eq!(r.primary.len(), 2, "{ctx}: the request, then the repair");
        let first = turns(&r.primary[0]);
        let repair = turns(&r.primary[1]);
        assert_eq!(repair.len(), first.len() + 2, "{ctx}: {}", r.primary[1]);
        assert_eq!(repair[..first.len()], first[..], "{ctx}");
        assert!(
            repair[first.len() + 1]
                .1
                .starts_with("Your answer is not valid"),
            "{ctx}"
        );
        let answer: Value = serde_json::from_str(&r.text).unwrap();
        assert!(answer["name"].is_string(), "{ctx}: {answer}");
    }
}

#[tokio::test]
async fn a_raised_limit_is_keels_own_request() {
    for &(client, provider, _) in &PATHS[..5] {
        let ctx = format!("{client:?} client, {provider:?} provider");
        let mut body = body_for(client, false, false);
        body["max_tokens"] = json!(100);
        let case = Case {
            client,
            provider,
            fault: "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]\n",
            provider_extra: "",
            policy: "truncation = \"raise\"",
            body,
        };
        let r = run(&case).await;
        assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
        assert_eq!(
            r.primary.len(),
            2,
            "{ctx}: the request, then a larger limit"
        );
        let limit = |b: &Value| {
            b.get("max_completion_tokens")
                .or(b.get("max_tokens"))
                .and_then(Value::as_u64)
        };
        assert_eq!(limit(&r.primary[0]), Some(100), "{ctx}: {}", r.primary[0]);
        assert_eq!(limit(&r.primary[1]), Some(200), "{ctx}: {}", r.primary[1]);
        assert_eq!(turns(&r.primary[0]), turns(&r.primary[1]), "{ctx}");
        let whole = r.reference(provider, &r.primary[1]).await;
        assert_eq!(r.text, whole, "{ctx}");
    }
}

/// An answer cut by the client's own `max_tokens` is the client's answer:
/// it ends there (flagged `length`), one upstream call, on every path. A
/// route may opt in to continuing past it.
#[tokio::test]
async fn an_answer_cut_by_the_clients_own_limit_is_not_continued() {
    for &(client, provider, stream_options) in PATHS {
        for stream in [false, true] {
            if stream_options && !stream {
                continue;
            }
            for opt_in in [false, true] {
                let ctx = format!(
                    "{client:?} client, {provider:?} provider, stream {stream}, opt in {opt_in}"
                );
                let mut body = body_for(client, stream, stream_options);
                body["max_tokens"] = json!(5);
                let case = Case {
                    client,
                    provider,
                    fault: "",
                    provider_extra: "",
                    policy: if opt_in {
                        "continue_past_client_limit = true"
                    } else {
                        ""
                    },
                    body,
                };
                let r = run(&case).await;
                assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
                if opt_in {
                    assert!(r.primary.len() > 1, "{ctx}: continued");
                    continue;
                }
                assert_eq!(
                    r.primary.len(),
                    1,
                    "{ctx}: the client's limit, not continued"
                );
                let whole = r.reference(provider, &r.primary[0]).await;
                assert_eq!(r.text, whole, "{ctx}");
                let finish: Vec<String> = r
                    .events
                    .iter()
                    .filter_map(|e| {
                        e["choices"][0]["finish_reason"]
                            .as_str()
                            .or(e["delta"]["stop_reason"].as_str())
                            .or(e["stop_reason"].as_str())
                            .map(str::to_owned)
                    })
                    .collect();
                let cut = match client {
                    Api::OpenAi => "length",
                    Api::Anthropic => "max_tokens",
                };
                assert_eq!(finish, [cut], "{ctx}");
            }
        }
    }
}

/// A deployment's own maximum below the client's limit is not the client's:
/// the cut answer is continued.
#[tokio::test]
async fn an_answer_cut_by_the_deployments_maximum_is_continued() {
    for stream in [false, true] {
        let ctx = format!("stream {stream}");
        let case = Case {
            client: Api::Anthropic,
            provider: Api::Anthropic,
            fault: "",
            provider_extra: "",
            policy: "max_continuations = 10",
            body: body_for(Api::Anthropic, stream, false),
        };
        // The deployments' maximum (5) is below the client's 1000.
        let r = run_with(&case, "max_output_tokens = 5").await;
        assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
        assert!(r.primary.len() > 1, "{ctx}: continued");
        assert_eq!(r.primary[0]["max_tokens"], 5, "{ctx}: clamped");
        let whole = r
            .reference(Api::Anthropic, &with_model(&case.body, MODEL))
            .await;
        assert!(whole.starts_with(&r.text), "{ctx}: {} / {whole}", r.text);
        assert!(r.text.len() > 5 * 4, "{ctx}: {}", r.text);
    }
}

/// A limit larger than a deployment can produce is clamped where Keel
/// clamps it (Anthropic deployments; a translated Anthropic request), before
/// the capacity check: SDKs send a model's largest `max_tokens`.
#[tokio::test]
async fn a_large_limit_is_clamped_not_refused() {
    for (client, provider) in [
        (Api::Anthropic, Api::Anthropic),
        (Api::OpenAi, Api::Anthropic),
        (Api::Anthropic, Api::OpenAi),
    ] {
        for stream in [false, true] {
            let ctx = format!("{client:?} client, {provider:?} provider, stream {stream}");
            let mut body = body_for(client, stream, false);
            body["max_tokens"] = json!(128_000);
            let case = Case {
                client,
                provider,
                fault: "",
                provider_extra: "",
                policy: "",
                body,
            };
            let r = run(&case).await;
            assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
            assert_eq!(r.primary.len(), 1, "{ctx}");
            let sent = r.primary[0]
                .get("max_completion_tokens")
                .or(r.primary[0].get("max_tokens"))
                .cloned();
            assert_eq!(sent, Some(json!(16_384)), "{ctx}: {}", r.primary[0]);
        }
    }
}

/// `n: 2` cannot be served by an Anthropic deployment: it is skipped for the
/// next deployment that can, never sent.
#[tokio::test]
async fn several_choices_skip_a_deployment_that_makes_one() {
    let scenario = "[[upstream]]\nname = \"an\"\nkind = \"anthropic\"\n[[upstream]]\nname = \"oa\"\nkind = \"openai\"\n";
    let ch = ChaosServer::start(
        Scenario::from_toml_str(scenario, "s.toml").unwrap(),
        7,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = format!(
        "[providers.an]\nkind = \"anthropic\"\nbase_url = \"{}\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [deployments.an]\nprovider = \"an\"\nmodel = \"claude\"\n[deployments.oa]\nprovider = \"oa\"\nmodel = \"gpt\"\n\
         [routes.r]\nchain = [\"an\", \"oa\"]\n",
        ch.base_url("an"),
        ch.base_url("oa")
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&config, "keel.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    let mut body = openai_body(false, false);
    body["n"] = json!(2);
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app(AppState::new(engine)).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-keel-deployment"], "oa");
    assert_eq!(ch.stats("an").unwrap().attempts, 0);
    assert_eq!(ch.stats("oa").unwrap().attempts, 1);
}

/// `stream_upstream = false`: a plain request reaches the provider exactly
/// as the client sent it, only the model replaced, and is answered plain.
#[tokio::test]
async fn without_stream_upstream_a_plain_request_passes_through_byte_for_byte() {
    for api in [Api::OpenAi, Api::Anthropic] {
        let ctx = format!("{api:?}");
        let case = Case {
            client: api,
            provider: api,
            fault: "",
            provider_extra: "",
            policy: "",
            body: body_for(api, false, false),
        };
        let r = run_with(&case, "stream_upstream = false").await;
        assert_eq!(r.status, 200, "{ctx}: {:?}", r.events);
        assert_eq!(r.primary.len(), 1, "{ctx}");
        let want = case
            .body
            .to_string()
            .replace(r#""model":"r""#, &format!(r#""model":"{MODEL}""#));
        assert_eq!(r.primary_raw.as_deref(), Some(want.as_str()), "{ctx}");
        assert!(!r.ch.stats("p").unwrap().log[0].stream, "{ctx}");
        let whole = r.reference(api, &r.primary[0]).await;
        assert_eq!(r.text, whole, "{ctx}");
    }
}
