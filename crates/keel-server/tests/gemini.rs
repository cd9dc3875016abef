//! Clients of both APIs through Keel to Gemini deployments (`kind =
//! "gemini"`, served by `keel chaos` speaking Gemini): the translated
//! bodies Gemini receives, the answers and streams clients get back, and
//! Gemini's faults classified as Google's error table says (retried,
//! fallen over, or ending the request), counted from chaos stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

mod support;

const MODEL: &str = "gemini-2.5-flash";

/// A chaos server with a Gemini upstream `g` (key `g-key`, faults
/// `g_faults`), a faultless Gemini `ref` and an OpenAI `o`, and Keel with
/// route `r` = `chain` (deployments `g`, `o`, `ref`).
struct Setup {
    ch: ChaosHandle,
    app: axum::Router,
}

async fn setup(g_faults: &str, chain: &str, keel_key: &str, policy: &str) -> Setup {
    let scenario = format!(
        "[[upstream]]\nname = \"g\"\nkind = \"gemini\"\napi_key = \"g-key\"\n{g_faults}\n\
         [[upstream]]\nname = \"ref\"\nkind = \"gemini\"\n\
         [[upstream]]\nname = \"o\"\nkind = \"openai\"\n"
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
[providers.g]
kind = "gemini"
base_url = "{g}"
api_key = "{keel_key}"
[providers.ref]
kind = "gemini"
base_url = "{reference}"
[providers.o]
kind = "openai"
base_url = "{o}"
[deployments.g]
provider = "g"
model = "{MODEL}"
[deployments.ref]
provider = "ref"
model = "{MODEL}"
[deployments.o]
provider = "o"
model = "gpt-4o-mini"
[routes.r]
chain = {chain}
[policy]
max_attempts = 2
backoff_base = "1ms"
backoff_cap = "2ms"
{policy}
[breaker]
consecutive_failures = 1000
"#,
        g = root("g"),
        reference = root("ref"),
        o = ch.base_url("o"),
    );
    let engine = Engine::with_seed(
        Config::from_toml_str(&config, "keel.toml", &|_| None).unwrap(),
        3,
    )
    .unwrap();
    Setup {
        ch,
        app: app(AppState::new(engine)),
    }
}

/// What a client got: status, headers, the JSON body or the SSE events.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    events: Vec<Value>,
    raw: String,
}

impl Setup {
    async fn call(&self, path: &str, body: Value) -> Reply {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let events = if raw.trim_start().starts_with('{') {
            vec![serde_json::from_str(&raw).unwrap()]
        } else {
            raw.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
                .collect()
        };
        Reply {
            status,
            headers,
            events,
            raw,
        }
    }

    /// Bodies upstream `name` received, in order.
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

impl Reply {
    /// The answer's text, in either API's shape, streamed or not.
    fn text(&self) -> String {
        self.events
            .iter()
            .map(|v| {
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
            })
            .collect()
    }

    /// The last finish reason (OpenAI) or stop reason (Anthropic) said.
    fn finish(&self) -> String {
        self.events
            .iter()
            .rev()
            .find_map(|v| {
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .or(v["stop_reason"].as_str())
                    .or(v["delta"]["stop_reason"].as_str())
            })
            .unwrap_or_default()
            .to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }
}

fn openai(stream: bool) -> Value {
    json!({
        "model": "r",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me a story."}
        ]
    })
}

fn anthropic(stream: bool) -> Value {
    json!({
        "model": "r",
        "max_tokens": 1000,
        "stream": stream,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Tell me a story."}]
    })
}

/// OpenAI and Anthropic clients, plain and streamed, get the one answer
/// Gemini gives the conversation; Gemini received it in its own shape
/// (system instruction, `user` turn, the key in `x-goog-api-key`, the
/// streaming mode in the path) with the output limit as `maxOutputTokens`.
#[tokio::test]
async fn both_apis_plain_and_streamed_reach_gemini() {
    let s = setup("", r#"["g"]"#, "g-key", "").await;
    let plain = s.call("/v1/chat/completions", openai(false)).await;
    assert_eq!(plain.status, 200, "{}", plain.raw);
    let answer = &plain.events[0];
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let text = plain.text();
    assert!(text.len() > 20, "{text}");

    let streamed = s.call("/v1/chat/completions", openai(true)).await;
    assert_eq!(streamed.status, 200);
    assert!(
        streamed.raw.trim_end().ends_with("data: [DONE]"),
        "{}",
        streamed.raw
    );
    assert_eq!(streamed.text(), text);
    assert_eq!(streamed.finish(), "stop");
    assert!(streamed.events.len() > 3);

    let a_plain = s.call("/v1/messages", anthropic(false)).await;
    assert_eq!(a_plain.status, 200, "{}", a_plain.raw);
    assert_eq!(a_plain.events[0]["type"], "message");
    assert_eq!(a_plain.text(), text);
    assert_eq!(a_plain.finish(), "end_turn");
    let a_stream = s.call("/v1/messages", anthropic(true)).await;
    assert_eq!(a_stream.status, 200);
    assert!(
        a_stream.raw.contains("event: message_stop"),
        "{}",
        a_stream.raw
    );
    assert_eq!(a_stream.text(), text);
    assert_eq!(a_stream.finish(), "end_turn");

    let stats = s.ch.stats("g").unwrap();
    assert_eq!(stats.attempts, 4);
    assert_eq!(
        stats.log.iter().map(|r| r.stream).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    assert!(stats
        .log
        .iter()
        .all(|r| r.model == MODEL && r.status == 200));
    let bodies = s.bodies("g");
    for b in &bodies {
        assert_eq!(
            b["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(
            b["contents"],
            json!([{"role": "user", "parts": [{"text": "Tell me a story."}]}])
        );
        assert!(
            b.get("model").is_none() && b.get("messages").is_none(),
            "{b}"
        );
    }
    assert_eq!(bodies[2]["generationConfig"]["maxOutputTokens"], 1000);
}

fn weather_tool() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "additionalProperties": false,
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]
            }
        }
    }])
}

/// Tools: a Gemini `functionCall` reaches the OpenAI client as a tool call
/// with an id (plain and streamed) and the Anthropic client as `tool_use`;
/// the client's tool result goes back as a `functionResponse` named after
/// the call it answers.
#[tokio::test]
async fn tool_calls_and_results_cross_gemini() {
    let s = setup("", r#"["g"]"#, "g-key", "").await;
    let mut body = openai(false);
    body["tools"] = weather_tool();
    body["tool_choice"] = json!("required");
    let r = s.call("/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let msg = &r.events[0]["choices"][0]["message"];
    assert_eq!(r.events[0]["choices"][0]["finish_reason"], "tool_calls");
    let call = &msg["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string() && args["days"].is_i64(), "{args}");
    let sent = &s.bodies("g")[0];
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    let decl = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    assert!(
        decl["parameters"].get("additionalProperties").is_none(),
        "{decl}"
    );

    body["stream"] = json!(true);
    let streamed = s.call("/v1/chat/completions", body.clone()).await;
    assert_eq!(streamed.finish(), "tool_calls");
    let delta = streamed
        .events
        .iter()
        .find_map(|e| e["choices"][0]["delta"]["tool_calls"].as_array())
        .unwrap();
    assert_eq!(delta[0]["function"]["name"], "get_weather");
    assert_eq!(
        delta[0]["function"]["arguments"],
        call["function"]["arguments"]
    );

    // The result goes back, matched to the function by the call's id.
    let mut follow = openai(false);
    follow["tools"] = weather_tool();
    let messages = follow["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\": 21}"}));
    let answered = s.call("/v1/chat/completions", follow).await;
    assert_eq!(answered.status, 200, "{}", answered.raw);
    assert!(!answered.text().is_empty());
    let sent = s.bodies("g").pop().unwrap();
    let turns = sent["contents"].as_array().unwrap();
    assert_eq!(turns[1]["role"], "model");
    assert_eq!(turns[1]["parts"][0]["functionCall"]["args"], args);
    assert_eq!(
        turns[2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]})
    );

    // An Anthropic client's tools.
    let mut a = anthropic(false);
    a["tools"] = json!([{
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }]);
    a["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    let r = s.call("/v1/messages", a).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.events[0]["stop_reason"], "tool_use");
    let block = &r.events[0]["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert!(block["input"]["city"].is_string(), "{block}");
    assert_eq!(
        s.bodies("g").pop().unwrap()["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
}

/// JSON schema: Gemini gets `responseMimeType` and a `responseSchema`
/// without the keywords it refuses; the client gets a document matching its
/// own schema, plain and streamed.
#[tokio::test]
async fn json_schema_is_gemini_response_schema() {
    let s = setup("", r#"["g"]"#, "g-key", "").await;
    let schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]
    });
    let mut body = openai(false);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}});
    for stream in [false, true] {
        body["stream"] = json!(stream);
        let r = s.call("/v1/chat/completions", body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let doc: Value = serde_json::from_str(&r.text()).unwrap();
        assert!(doc["name"].is_string() && doc["age"].is_i64(), "{doc}");
    }
    let sent = &s.bodies("g")[0];
    assert_eq!(
        sent["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        sent["generationConfig"]["responseSchema"],
        json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"]
        })
    );
}

/// Gemini's faults, each as Google's error table classifies it: a 429
/// `RESOURCE_EXHAUSTED` (its `RetryInfo` the wait) and a 503 `UNAVAILABLE`
/// are retried on Gemini, then fallen over; a daily quota, a bad key (400
/// `API_KEY_INVALID`) and an unknown model fall over at once; a context
/// overflow ("exceeds the maximum number of tokens") is not retried and
/// skips the smaller window after it; a plain 400 ends the request with
/// Gemini's message. Attempts counted by the upstreams.
#[tokio::test]
async fn gemini_faults_retried_or_fallen_over() {
    // (fault, Keel's key, attempts on g, attempts on o, status; the
    // error's text when it fails)
    let cases: &[(&str, &str, u64, u64, u16)] = &[
        (
            "kind = \"rate_limit\"\nretry_after = \"20ms\"\nsequence = [1]",
            "g-key",
            2,
            0,
            200,
        ),
        (
            "kind = \"rate_limit\"\nretry_after = \"20ms\"",
            "g-key",
            2,
            1,
            200,
        ),
        ("kind = \"overloaded\"\nsequence = [1]", "g-key", 2, 0, 200),
        ("kind = \"overloaded\"", "g-key", 2, 1, 200),
        ("kind = \"server_error\"\nstatus = 500", "g-key", 2, 1, 200),
        ("kind = \"server_error\"\nstatus = 504", "g-key", 2, 1, 200),
        ("kind = \"quota_exhausted\"", "g-key", 1, 1, 200),
        ("", "wrong-key", 1, 1, 200),
        ("kind = \"context_overflow\"", "g-key", 1, 0, 400),
        ("kind = \"not_found\"", "g-key", 1, 1, 200),
        ("kind = \"bad_request\"", "g-key", 1, 0, 400),
    ];
    for (fault, key, on_g, on_o, status) in cases {
        let faults = if fault.is_empty() {
            String::new()
        } else {
            format!("[[upstream.fault]]\n{fault}")
        };
        let s = setup(&faults, r#"["g", "o"]"#, key, "").await;
        for stream in [false, true] {
            s.ch.reset();
            let r = s.call("/v1/chat/completions", openai(stream)).await;
            let ctx = format!("{fault} / {key} / stream {stream}: {}", r.raw);
            assert_eq!(r.status, *status, "{ctx}");
            assert_eq!(s.attempts("g"), *on_g, "{ctx}");
            assert_eq!(s.attempts("o"), *on_o, "{ctx}");
            if *status == 200 {
                assert_eq!(
                    r.header("x-keel-attempts"),
                    (on_g + on_o).to_string(),
                    "{ctx}"
                );
                let served_by = if *on_o > 0 { "o" } else { "g" };
                assert_eq!(r.header("x-keel-deployment"), served_by, "{ctx}");
            } else if fault.contains("context") {
                assert_eq!(
                    r.events[0]["error"]["code"], "context_length_exceeded",
                    "{ctx}"
                );
                assert!(
                    r.raw.contains("exceeds the maximum number of tokens"),
                    "{ctx}"
                );
            } else {
                assert!(
                    r.raw.contains("temperature"),
                    "{ctx}: the provider's message"
                );
            }
        }
    }
}

/// A Gemini safety block falls back: a prompt blocked (`promptFeedback.
/// blockReason`, no candidate) and an answer stopped with `finishReason`
/// `SAFETY` are content-filtered, not retried on Gemini, and served by the
/// next deployment, plain and streamed.
#[tokio::test]
async fn gemini_safety_block_falls_back() {
    for fault in ["refusal", "content_filter"] {
        let s = setup(
            &format!("[[upstream.fault]]\nkind = \"{fault}\""),
            r#"["g", "o"]"#,
            "g-key",
            "",
        )
        .await;
        for stream in [false, true] {
            s.ch.reset();
            let r = s.call("/v1/chat/completions", openai(stream)).await;
            let ctx = format!("{fault}, stream {stream}: {}", r.raw);
            assert_eq!(r.status, 200, "{ctx}");
            assert_eq!((s.attempts("g"), s.attempts("o")), (1, 1), "{ctx}");
            assert_eq!(r.header("x-keel-deployment"), "o", "{ctx}");
            assert_eq!(r.finish(), "stop", "{ctx}");
            assert!(!r.text().is_empty(), "{ctx}");
        }
    }
}

/// A `MAX_TOKENS` finish is a truncation: Keel asks Gemini for the rest
/// (the partial answer as the model's turn, then a user turn asking to
/// continue) and the client gets the whole answer, the one a faultless
/// Gemini gives, ending `stop`: plain and streamed, for both APIs.
#[tokio::test]
async fn max_tokens_finish_is_continued() {
    let s = setup(
        "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]",
        r#"["g"]"#,
        "g-key",
        "truncation = \"continue\"",
    )
    .await;
    let reference = {
        let r = setup("", r#"["ref"]"#, "g-key", "").await;
        r.call("/v1/chat/completions", openai(false)).await.text()
    };
    for (path, body) in [
        ("/v1/chat/completions", openai(false)),
        ("/v1/chat/completions", openai(true)),
        ("/v1/messages", anthropic(false)),
        ("/v1/messages", anthropic(true)),
    ] {
        s.ch.reset();
        let r = s.call(path, body.clone()).await;
        let ctx = format!("{path} {}: {}", body["stream"], r.raw);
        assert_eq!(r.status, 200, "{ctx}");
        assert_eq!(s.attempts("g"), 2, "{ctx}");
        assert_eq!(r.text(), reference, "{ctx}");
        assert!(r.finish() == "stop" || r.finish() == "end_turn", "{ctx}");
        let follow_up = s.bodies("g").pop().unwrap();
        let turns = follow_up["contents"].as_array().unwrap();
        assert_eq!(turns.len(), 3, "{follow_up}");
        assert_eq!(turns[1]["role"], "model");
        let partial = turns[1]["parts"][0]["text"].as_str().unwrap();
        assert!(
            !partial.is_empty() && reference.starts_with(partial),
            "{ctx}"
        );
        assert!(
            turns[2]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Continue it exactly where it stopped"),
            "{follow_up}"
        );
    }
}

/// Stream faults on Gemini before the commit: an error event (503
/// `UNAVAILABLE` in a `data:` line) and a cut are retried invisibly; the
/// client gets a clean stream.
#[tokio::test]
async fn gemini_stream_faults_are_retried() {
    for fault in [
        "kind = \"stream_error\"\nafter_chunks = 1\nsequence = [1]",
        "kind = \"cut_stream\"\nafter_chunks = 1\nsequence = [1]",
    ] {
        let s = setup(
            &format!("[[upstream.fault]]\n{fault}"),
            r#"["g"]"#,
            "g-key",
            "",
        )
        .await;
        let r = s.call("/v1/chat/completions", openai(true)).await;
        assert_eq!(r.status, 200, "{fault}: {}", r.raw);
        assert_eq!(s.attempts("g"), 2, "{fault}");
        assert_eq!(r.finish(), "stop", "{fault}: {}", r.raw);
        assert!(r.raw.trim_end().ends_with("data: [DONE]"), "{fault}");
    }
}

/// The official `openai` and `anthropic` Python SDKs through Keel to a
/// Gemini deployment: plain, streamed, tools (calls and results) and JSON
/// schema. The interpreter comes from `KEEL_TEST_PYTHON` (scripts/test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_and_anthropic_sdks_reach_gemini() {
    let scenario = "[[upstream]]\nname = \"g\"\nkind = \"gemini\"\napi_key = \"g-key\"\n";
    let ch = ChaosServer::start(
        Scenario::from_toml_str(scenario, "s.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = format!(
        "[providers.g]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"g-key\"\n\
         [deployments.g]\nprovider = \"g\"\nmodel = \"{MODEL}\"\n\
         [routes.gemini]\nchain = [\"g\"]\n[policy]\nmax_attempts = 1\n",
        ch.base_url("g").trim_end_matches("/v1")
    );
    let addr = support::keel_toml(&config, "keel.toml").await;
    support::sdk_script(
        "sdk/gemini_gateway_sdk.py",
        vec![format!("http://{addr}")],
        "all gemini gateway SDK checks passed",
    )
    .await;
    let stats = ch.stats("g").unwrap();
    // One attempt per SDK call (7 OpenAI, 6 Anthropic), each answered.
    assert_eq!(stats.attempts, 13);
    assert_eq!(stats.by_outcome.get("ok"), Some(&stats.attempts));
}
