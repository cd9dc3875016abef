//! Gemini wire fixtures, written from the Gemini API reference
//! (`models.generateContent`, `models.streamGenerateContent`, function
//! calling, structured output): canonical requests to Gemini bodies, and
//! Gemini answers and stream events to canonical ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_wire::gemini::{
    gemini_to_openai_response, generate_path, openai_to_gemini_request, stream_path,
    GeminiToOpenAiStream, GenerateContentRequest, GenerateContentResponse, SKIP_THOUGHT_SIGNATURE,
};
use keel_wire::openai::{ChatChunk, ChatRequest};
use serde_json::{json, Value};

fn request(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn gemini(req: Value) -> Value {
    serde_json::to_value(openai_to_gemini_request(&request(req)).unwrap()).unwrap()
}

#[test]
fn paths_name_the_model_and_the_mode() {
    assert_eq!(
        generate_path("gemini-2.5-flash"),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        stream_path("models/gemini-2.5-pro"),
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
}

/// Messages, system prompt, images and generation parameters.
#[test]
fn a_chat_request_becomes_generate_content() {
    let body = gemini(json!({
        "model": "r",
        "messages": [
            {"role": "system", "content": "You are a cat."},
            {"role": "developer", "content": [{"type": "text", "text": "Your name is Neko."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/photo"}}
            ]},
            {"role": "assistant", "content": "Two cats."},
            {"role": "user", "content": "Which is bigger?"}
        ],
        "max_completion_tokens": 800,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "seed": 42
    }));
    assert_eq!(
        body,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in these pictures?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}
                ]},
                {"role": "model", "parts": [{"text": "Two cats."}]},
                {"role": "user", "parts": [{"text": "Which is bigger?"}]}
            ],
            "systemInstruction": {"parts": [{"text": "You are a cat."}, {"text": "Your name is Neko."}]},
            "generationConfig": {
                "stopSequences": ["\n\n", "END"],
                "maxOutputTokens": 800,
                "temperature": 0.7,
                "topP": 0.9,
                "seed": 42
            }
        })
    );
    // It reads back as the API's own request type.
    let typed: GenerateContentRequest = serde_json::from_value(body).unwrap();
    assert_eq!(typed.contents.len(), 3);
}

/// Tools, tool choice, an assistant's calls and their results (matched to
/// the function by the call's id; parallel results share one turn).
#[test]
fn tools_calls_and_results() {
    let body = gemini(json!({
        "model": "r",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
             "parameters": {"type": "object", "additionalProperties": false,
                            "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
    }));
    assert_eq!(
        body,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                // Calls no Gemini made (no signature): Google's skip signature
                // on the first.
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": "skip_thought_signature_validator"},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}}
                ]}
            ],
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather in a city.",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        })
    );
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        let body = gemini(json!({
            "model": "r",
            "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": choice
        }));
        assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], mode);
    }
}

/// Structured output: `json_schema` and `json_object`.
#[test]
fn response_format_becomes_response_schema() {
    let body = gemini(json!({
        "model": "r",
        "messages": [{"role": "user", "content": "A recipe."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "recipe", "strict": true, "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "additionalProperties": false,
            "properties": {"recipeName": {"type": "string"}, "ingredients": {"type": "array", "items": {"type": "string"}}},
            "required": ["recipeName", "ingredients"]
        }}}
    }));
    assert_eq!(
        body["generationConfig"],
        json!({
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "object",
                "properties": {"recipeName": {"type": "string"}, "ingredients": {"type": "array", "items": {"type": "string"}}},
                "required": ["recipeName", "ingredients"]
            }
        })
    );
    let body = gemini(json!({
        "model": "r",
        "messages": [{"role": "user", "content": "JSON please."}],
        "response_format": {"type": "json_object"}
    }));
    assert_eq!(
        body["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
}

/// What cannot be sent says which field.
#[test]
fn untranslatable_requests_name_the_field() {
    let err = |v: Value| {
        openai_to_gemini_request(&request(v))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(json!({"model": "r", "messages": [{"role": "system", "content": "only"}]})),
        "messages: the request has no user or assistant message"
    );
    assert!(
        err(json!({"model": "r", "n": 2, "messages": [{"role": "user", "content": "x"}]}))
            .starts_with("n: ")
    );
    assert!(err(json!({"model": "r", "messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "call_9", "content": "r"}
    ]}))
    .contains("answers call \"call_9\", which no earlier assistant message made"));
    assert_eq!(
        err(
            json!({"model": "r", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}
            ]}]})
        ),
        "messages[0].content[0].image_url.url: data: URL must be base64-encoded (`;base64,`)"
    );
}

fn answer(v: Value) -> Value {
    let resp: GenerateContentResponse = serde_json::from_value(v).unwrap();
    serde_json::to_value(gemini_to_openai_response(&resp, "gemini-2.5-flash")).unwrap()
}

/// A text answer, as the reference's example shows it.
#[test]
fn a_text_answer() {
    let fixture = json!({
        "candidates": [{
            "content": {"parts": [{"text": "AI learns patterns "}, {"text": "from data."}], "role": "model"},
            "finishReason": "STOP",
            "avgLogprobs": -0.21,
            "index": 0
        }],
        "usageMetadata": {
            "promptTokenCount": 8, "candidatesTokenCount": 12, "totalTokenCount": 20,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]
        },
        "modelVersion": "gemini-2.0-flash",
        "responseId": "mFNHaOS6Ka2m1dkP2NjQ4QI"
    });
    // Nothing is lost on a parse and re-serialise.
    let typed: GenerateContentResponse = serde_json::from_value(fixture.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), fixture);
    assert_eq!(
        answer(fixture),
        json!({
            "id": "chatcmpl-mFNHaOS6Ka2m1dkP2NjQ4QI",
            "object": "chat.completion",
            "created": 0,
            "model": "gemini-2.0-flash",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "AI learns patterns from data."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}
        })
    );
}

/// Thinking: thought summaries are not the answer, thinking tokens are output.
#[test]
fn thoughts_are_left_out_and_counted() {
    let v = answer(json!({
        "candidates": [{"content": {"parts": [
            {"text": "Let me think...", "thought": true},
            {"text": "42."}
        ], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                          "cachedContentTokenCount": 4, "totalTokenCount": 37}
    }));
    assert_eq!(v["choices"][0]["message"]["content"], "42.");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 32, "total_tokens": 37,
               "prompt_tokens_details": {"cached_tokens": 4}})
    );
}

/// A function call, with ids made up (stable for the same answer, distinct per call).
#[test]
fn function_calls_become_tool_calls() {
    let fixture = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 10, "totalTokenCount": 50},
        "responseId": "r1"
    });
    let v = answer(fixture.clone());
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"].get("content").is_none(), "{choice}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        answer(fixture)["choices"][0]["message"]["tool_calls"][0]["id"],
        calls[0]["id"]
    );
    // A call that has its own id keeps it.
    let v = answer(
        json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"id": "fc-7", "name": "f", "args": {}}}
    ]}, "finishReason": "STOP"}]}),
    );
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "fc-7");
}

/// Finish reasons: truncation and the safety family.
#[test]
fn finish_reasons() {
    for (reason, finish) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ] {
        let v = answer(
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]}),
        );
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{reason}");
    }
    // A blocked prompt: no candidate at all.
    let v = answer(json!({
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}
        ]},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}
    }));
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], "");
}

fn stream(events: &[Value]) -> (Vec<ChatChunk>, bool) {
    let mut conv = GeminiToOpenAiStream::new("gemini-2.5-flash").with_created(7);
    let mut out = Vec::new();
    for e in events {
        assert!(!conv.finished(), "an event after the finish");
        out.extend(conv.push(&serde_json::from_value(e.clone()).unwrap()));
    }
    (out, conv.finished())
}

/// A text stream, as `streamGenerateContent?alt=sse` sends it: each event
/// a whole response, usage on every one, the finish on the last.
#[test]
fn a_text_stream() {
    let ev = |text: &str, finish: Option<&str>, out: u32| {
        let mut c = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        json!({"candidates": [c], "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": out, "totalTokenCount": 6 + out},
               "modelVersion": "gemini-2.5-flash", "responseId": "s1"})
    };
    let (chunks, done) = stream(&[
        ev("The", None, 1),
        ev(" quick fox", None, 3),
        ev(".", Some("STOP"), 4),
    ]);
    assert!(done);
    let v: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(
        v[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = v
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "The quick fox.");
    let finish = &v[v.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let last = &v[v.len() - 1];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10})
    );
    assert!(v.iter().all(|c| c["id"] == "chatcmpl-s1"
        && c["created"] == 7
        && c["object"] == "chat.completion.chunk"));
    // Cut before the finish: not finished.
    let (_, done) = stream(&[ev("The", None, 1)]);
    assert!(!done);
}

/// A streamed call, a truncated stream and a blocked prompt.
#[test]
fn streamed_calls_truncation_and_blocks() {
    let (chunks, done) = stream(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    ]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8}}),
    ]);
    assert!(done);
    let call = chunks[1].choices[0].delta.tool_calls.as_ref().unwrap()[0].clone();
    assert_eq!(call.index, 0);
    let f = call.function.unwrap();
    assert_eq!(
        (f.name.as_deref(), f.arguments.as_deref()),
        (Some("get_weather"), Some("{\"city\":\"Paris\"}"))
    );
    assert_eq!(
        chunks[2].choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );

    let (chunks, _) = stream(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS"}]}),
    ]);
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason.as_deref(),
        Some("length")
    );

    let (chunks, done) =
        stream(&[json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})]);
    assert!(done);
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
}

/// Thought signatures, both ways: a signed `functionCall` part (plain or
/// streamed) gives a tool call carrying `extra_content.google.
/// thought_signature`, as Google's OpenAI-compatible endpoint shapes it;
/// sent back, the signature goes on the same call's part again; a turn
/// whose calls carry none (another model's) gets Google's skip signature
/// on its first call only.
#[test]
fn thought_signatures_go_out_on_tool_calls_and_come_back_on_their_parts() {
    let fixture = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
        ]}, "finishReason": "STOP"}],
        "responseId": "r2"
    });
    let v = answer(fixture.clone());
    let calls = v["choices"][0]["message"]["tool_calls"].clone();
    assert_eq!(
        calls[0]["extra_content"],
        json!({"google": {"thought_signature": "c2lnLTE="}})
    );
    assert!(calls[1].get("extra_content").is_none(), "{calls}");
    let (chunks, _) = stream(&[fixture]);
    let streamed: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c.choices.first()?.delta.tool_calls.clone())
        .flatten()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    assert_eq!(streamed.len(), 2);
    assert_eq!(streamed[0]["extra_content"], calls[0]["extra_content"]);
    assert!(streamed[1].get("extra_content").is_none());

    let body = gemini(json!({
        "model": "r",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "21"},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "25"},
            {"role": "assistant", "tool_calls": [
                {"id": "x", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                {"id": "y", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "x", "content": "noon"},
            {"role": "tool", "tool_call_id": "y", "content": "noon"}
        ]
    }));
    let signatures = |turn: usize| -> Vec<Value> {
        body["contents"][turn]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.get("thoughtSignature").cloned().unwrap_or(Value::Null))
            .collect()
    };
    assert_eq!(signatures(1), [json!("c2lnLTE="), Value::Null]);
    assert_eq!(signatures(3), [json!(SKIP_THOUGHT_SIGNATURE), Value::Null]);
    // Text and results carry none.
    assert_eq!(signatures(0), [Value::Null]);
    assert_eq!(signatures(2), [Value::Null, Value::Null]);
}
