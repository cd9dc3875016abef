//! Healthy answers: shape, determinism, structured output, tools, limits,
//! and the providers' own rejections of malformed requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

async fn openai_json(h: &keel_chaos::ChaosHandle, body: &Value) -> Value {
    let resp = post_openai(h, "o", body).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn anthropic_json(h: &keel_chaos::ChaosHandle, body: &Value) -> Value {
    let resp = post_anthropic(h, "a", body).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Concatenated text of an OpenAI stream, plus the parsed chunks.
fn openai_stream_text(text: &str) -> (String, Vec<Value>) {
    let data = sse_data(text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (content, chunks)
}

#[tokio::test]
async fn openai_completion_shape() {
    let h = start(&both("")).await;
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(choice["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
}

#[tokio::test]
async fn openai_stream_shape_and_equality_with_non_streaming() {
    let h = start(&both("")).await;
    let full = openai_json(&h, &openai_body(false)).await;
    let mut body = openai_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post_openai(&h, "o", &body).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (text, chunks) = openai_stream_text(&resp.text().await.unwrap());
    assert_eq!(
        text,
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"]["completion_tokens"],
        full["usage"]["completion_tokens"]
    );
    // Without include_usage there is no usage chunk and no usage field.
    let (_, chunks) = openai_stream_text(
        &post_openai(&h, "o", &openai_body(true))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn anthropic_message_and_event_sequence() {
    let h = start(&both("")).await;
    let resp = post_anthropic(&h, "a", &anthropic_body(false))
        .await
        .unwrap();
    assert!(resp.headers()["request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        (v["type"].as_str(), v["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(v["stop_reason"], "end_turn");
    let text = v["content"][0]["text"].as_str().unwrap().to_owned();

    let resp = post_anthropic(&h, "a", &anthropic_body(true))
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events[..3],
        ["message_start", "content_block_start", "ping"],
        "{body}"
    );
    assert_eq!(
        events[events.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let streamed: String = sse_data(&body)
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, text);
}

#[tokio::test]
async fn answers_are_deterministic_for_a_seed_and_differ_across_seeds() {
    let toml = both("");
    let a = openai_json(&start_seeded(&toml, 5).await, &openai_body(false)).await;
    let b = openai_json(&start_seeded(&toml, 5).await, &openai_body(false)).await;
    let c = openai_json(&start_seeded(&toml, 6).await, &openai_body(false)).await;
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["id"], b["id"]);
    assert_ne!(a["choices"], c["choices"]);
    // A different conversation gets a different answer.
    let h = start_seeded(&toml, 5).await;
    let mut other = openai_body(false);
    other["messages"][0]["content"] = json!("Something else.");
    assert_ne!(openai_json(&h, &other).await["choices"], a["choices"]);
}

#[tokio::test]
async fn max_tokens_truncates_with_length_reasons() {
    let h = start(&both("")).await;
    let mut body = openai_body(false);
    body["max_completion_tokens"] = json!(4);
    let v = openai_json(&h, &body).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        4
    );
    let mut body = openai_body(false);
    body["max_tokens"] = json!(2);
    assert_eq!(
        openai_json(&h, &body).await["usage"]["completion_tokens"],
        2
    );

    let mut body = anthropic_body(false);
    body["max_tokens"] = json!(3);
    let v = anthropic_json(&h, &body).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 3);
    body["stream"] = json!(true);
    let text = post_anthropic(&h, "a", &body)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"stop_reason\":\"max_tokens\""), "{text}");
}

/// Check `v` against the small schema used below.
fn assert_person(v: &Value) {
    assert!(v["name"].is_string(), "{v}");
    let age = v["age"].as_i64().unwrap();
    assert!((18..=99).contains(&age), "{v}");
    assert!(
        ["red", "green"].contains(&v["colour"].as_str().unwrap()),
        "{v}"
    );
    assert!(
        v["tags"].as_array().unwrap().iter().all(Value::is_string),
        "{v}"
    );
    assert!(v["address"]["zip"].is_string(), "{v}");
    assert!(v["score"].is_number() && v["ok"].is_boolean(), "{v}");
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "colour": {"type": "string", "enum": ["red", "green"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"$ref": "#/$defs/Address"},
            "score": {"type": "number"},
            "ok": {"type": "boolean"}
        },
        "required": ["name", "age", "colour", "tags", "address", "score", "ok"],
        "additionalProperties": false,
        "$defs": {"Address": {"type": "object", "properties": {"zip": {"type": "string"}}, "required": ["zip"]}}
    })
}

#[tokio::test]
async fn json_schema_and_json_object_answers_are_valid() {
    let h = start(&both("")).await;
    for i in 0..5 {
        let mut body = openai_body(false);
        body["messages"][0]["content"] = json!(format!("person {i}"));
        body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "p", "strict": true, "schema": person_schema()}});
        let v = openai_json(&h, &body).await;
        let content: Value =
            serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert_person(&content);
    }
    let mut body = openai_body(true);
    body["response_format"] = json!({"type": "json_object"});
    let (text, _) = openai_stream_text(
        &post_openai(&h, "o", &body)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        serde_json::from_str::<Value>(&text).unwrap().is_object(),
        "{text}"
    );
}

#[tokio::test]
async fn tool_calls_have_arguments_valid_for_the_schema() {
    let h = start(&both("")).await;
    let tool = json!({"type": "function", "function": {"name": "save_person", "parameters": person_schema()}});
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "save_person"}}),
    ] {
        let mut body = openai_body(false);
        body["tools"] = json!([{"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}, tool]);
        if choice == "required" {
            body["tools"] = json!([tool]);
        }
        body["tool_choice"] = choice;
        let v = openai_json(&h, &body).await;
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert!(choice["message"]["content"].is_null());
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["function"]["name"], "save_person");
        assert_person(
            &serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        );
    }
    // auto: a tool is called when the last user message names it; otherwise text.
    let mut body = openai_body(false);
    body["tools"] = json!([tool]);
    assert_eq!(
        openai_json(&h, &body).await["choices"][0]["finish_reason"],
        "stop"
    );
    body["messages"][0]["content"] = json!("please call save_person");
    assert_eq!(
        openai_json(&h, &body).await["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // Streaming: the arguments arrive in pieces that concatenate to valid JSON.
    let mut body = openai_body(true);
    body["tools"] = json!([tool]);
    body["tool_choice"] = json!("required");
    let text = post_openai(&h, "o", &body)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, chunks) = openai_stream_text(&text);
    let args: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_person(&serde_json::from_str(&args).unwrap());
    assert!(text.contains("\"finish_reason\":\"tool_calls\""));

    // Anthropic: tool_choice any / tool, input is an object; streamed as input_json_delta.
    let a_tool =
        json!({"name": "save_person", "description": "Save", "input_schema": person_schema()});
    for choice in [
        json!({"type": "any"}),
        json!({"type": "tool", "name": "save_person"}),
    ] {
        let mut body = anthropic_body(false);
        body["tools"] = json!([a_tool]);
        body["tool_choice"] = choice;
        let v = anthropic_json(&h, &body).await;
        assert_eq!(v["stop_reason"], "tool_use");
        let block = &v["content"][0];
        assert_eq!(block["type"], "tool_use");
        assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
        assert_person(&block["input"]);
    }
    let mut body = anthropic_body(true);
    body["tools"] = json!([a_tool]);
    body["tool_choice"] = json!({"type": "any"});
    let text = post_anthropic(&h, "a", &body)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let partial: String = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_person(&serde_json::from_str(&partial).unwrap());
}

#[tokio::test]
async fn continuation_requests_produce_text() {
    let h = start(&both("")).await;
    let mut body = openai_body(false);
    body["messages"] = json!([{"role": "user", "content": "Tell a story."}, {"role": "assistant", "content": "Once upon a"}]);
    assert!(
        !openai_json(&h, &body).await["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let mut body = anthropic_body(false);
    body["messages"] = json!([{"role": "user", "content": "Tell a story."}, {"role": "assistant", "content": "Once upon a"}]);
    assert!(!anthropic_json(&h, &body).await["content"][0]["text"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn malformed_requests_get_the_providers_own_400() {
    let h = start(&both("")).await;
    let c = client();
    let o_url = format!("{}/chat/completions", h.base_url("o"));
    let cases: &[(&str, &str)] = &[
        (
            "{not json",
            "We could not parse the JSON body of your request.",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            "you must provide a model parameter",
        ),
        (
            r#"{"model":"gpt-4o"}"#,
            "Missing required parameter: 'messages'.",
        ),
        (
            r#"{"model":"gpt-4o","messages":[]}"#,
            "Invalid 'messages': empty array.",
        ),
        (
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "Invalid 'max_tokens': integer below minimum value.",
        ),
    ];
    for (body, message) in cases {
        let resp = c.post(&o_url).body(*body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(message),
            "{v}"
        );
    }
    let a_url = format!("{}/messages", h.base_url("a"));
    let cases: &[(&str, &str)] = &[
        (
            r#"{"model":"c","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens: Field required",
        ),
        (
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            "model: Field required",
        ),
        (
            r#"{"model":"c","max_tokens":5}"#,
            "messages: Field required",
        ),
        (
            "{not json",
            "There was an issue with the JSON in the request body",
        ),
    ];
    for (body, message) in cases {
        let resp = c
            .post(&a_url)
            .header("anthropic-version", "2023-06-01")
            .body(*body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(message),
            "{v}"
        );
    }
    let resp = c
        .post(&a_url)
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "anthropic-version: header is required"
    );
    assert_eq!(
        h.stats("o").unwrap().by_outcome.get("invalid_request"),
        Some(&5)
    );
}

#[tokio::test]
async fn api_keys_are_checked_like_the_providers() {
    let h = start(
        "[[upstream]]\nname = \"o\"\nkind = \"openai\"\napi_key = \"sk-good\"\n[[upstream]]\nname = \"a\"\nkind = \"anthropic\"\napi_key = \"sk-ant-good\"\n",
    )
    .await;
    let c = client();
    let url = format!("{}/chat/completions", h.base_url("o"));
    let resp = c.post(&url).json(&openai_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("You didn't provide an API key."));
    let resp = c
        .post(&url)
        .bearer_auth("sk-bad1234")
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sk-...1234"));
    let resp = c
        .post(&url)
        .bearer_auth("sk-good")
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Models need the key too.
    let resp = c
        .get(format!("{}/models", h.base_url("o")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let url = format!("{}/messages", h.base_url("a"));
    let send = |key: Option<&'static str>| {
        let mut r = c
            .post(&url)
            .header("anthropic-version", "2023-06-01")
            .json(&anthropic_body(false));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    let v: Value = send(None).await.unwrap().json().await.unwrap();
    assert_eq!(
        v["error"],
        json!({"type": "authentication_error", "message": "x-api-key header is required"})
    );
    let resp = send(Some("nope")).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(send(Some("sk-ant-good")).await.unwrap().status(), 200);
    assert_eq!(h.stats("o").unwrap().by_outcome.get("auth"), Some(&2));
}

#[tokio::test]
async fn routes_models_and_natural_rejections() {
    let h = start(
        "[[upstream]]\nname = \"o\"\nkind = \"openai\"\nmodels = [\"gpt-4o-mini\"]\ncontext_window = 50\n[[upstream]]\nname = \"a\"\nkind = \"anthropic\"\n",
    )
    .await;
    let c = client();
    // Each kind serves only its own API; the other gets a 404 in its provider's shape.
    let resp = c
        .post(format!("{}/messages", h.base_url("o")))
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid URL (POST /o/v1/messages)");
    let resp = c
        .post(format!("{}/chat/completions", h.base_url("a")))
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    let resp = c
        .get(format!("http://{}/nobody/v1/models", h.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let v: Value = c
        .get(format!("{}/models", h.base_url("o")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "gpt-4o-mini");
    let v: Value = c
        .get(format!("{}/models", h.base_url("a")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);

    let mut body = openai_body(false);
    body["model"] = json!("gpt-5-imaginary");
    let resp = post_openai(&h, "o", &body).await.unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    let mut body = openai_body(false);
    body["messages"][0]["content"] = json!("word ".repeat(100));
    let resp = post_openai(&h, "o", &body).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let stats = h.stats("o").unwrap();
    assert_eq!(stats.by_outcome.get("not_found"), Some(&1));
    assert_eq!(stats.by_outcome.get("context_overflow"), Some(&1));
}
