//! Request translation, both ways, against exact expected values.

// Test helpers outside `#[test]` functions unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fixture_json;
use keel_wire::anthropic::MessagesRequest;
use keel_wire::openai::{ChatRequest, ResponseFormat};
use keel_wire::translate::{
    anthropic_to_openai_request, force_tool_choice, json_schema_tool, openai_to_anthropic_request,
    TranslateError,
};
use serde_json::{json, Value};

fn openai(name: &str) -> ChatRequest {
    serde_json::from_value(fixture_json(name)).unwrap()
}

fn openai_value(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

#[test]
fn openai_request_with_images_tools_and_options_to_anthropic() {
    let req = openai("openai/chat_request.json");
    let out = openai_to_anthropic_request(&req, 4096).unwrap();
    let expected = json!({
        "model": "gpt-4o-2024-08-06",
        "system": "You are a meticulous assistant for a travel agency. Answer with the requested JSON only.",
        "messages": [{
            "role": "user",
            "content": [
                {"type": "text", "text": "Which landmark is in the first photo, and what is the weather there right now?"},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/wikipedia/commons/thumb/8/85/Tour_Eiffel_Wikimedia_Commons_%28cropped%29.jpg/640px-Tour_Eiffel_Wikimedia_Commons_%28cropped%29.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
            ]
        }],
        "max_tokens": 800,
        "stop_sequences": ["\nEND"],
        "stream": true,
        // OpenAI's 1.4 is past Anthropic's range; top_p (0.9) is dropped beside it.
        "temperature": 1.0,
        "tools": [{
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City and country, e.g. Paris, France"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }
        }],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "user-8f14e45f"}
    });
    assert_eq!(serde_json::to_value(&out).unwrap(), expected);
}

#[test]
fn openai_tool_history_to_anthropic_merges_roles_and_moves_system() {
    let req = openai("openai/chat_request_tool_history.json");
    let out = openai_to_anthropic_request(&req, 4096).unwrap();
    let expected = json!({
        "model": "gpt-4o-mini",
        "system": [
            {"type": "text", "text": "You are a helpful assistant."},
            {"type": "text", "text": "Always use metric units."}
        ],
        "messages": [
            {"role": "user", "content": "What's the weather like in Paris and in Boston today?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_8GnHbKXMa2SmbV0Eyx4qK1Ry", "name": "get_weather", "input": {"city": "Paris, France"}},
                {"type": "tool_use", "id": "call_0qbKPy2ZMKjzqXh6ykmTdE3m", "name": "get_weather", "input": {"city": "Boston, MA"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_8GnHbKXMa2SmbV0Eyx4qK1Ry", "content": "{\"temperature_c\": 15, \"conditions\": \"light rain\"}"},
                {"type": "tool_result", "tool_use_id": "call_0qbKPy2ZMKjzqXh6ykmTdE3m", "content": "{\"temperature_c\": 22, \"conditions\": \"sunny\"}"},
                {"type": "text", "text": "Thanks! Which one is warmer?"},
                {"type": "text", "text": "Answer in one sentence."}
            ]}
        ],
        "max_tokens": 300,
        "stop_sequences": ["\n\n"],
        "tools": [{
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }],
        "tool_choice": {"type": "any"}
    });
    assert_eq!(serde_json::to_value(&out).unwrap(), expected);
}

#[test]
fn openai_defaults_and_small_mappings() {
    let req = openai_value(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "refusal": "I can't help with that."},
            {"role": "user", "content": [{"type": "text", "text": "why?"}]}
        ],
        "tools": [{"type": "function", "function": {"name": "noop"}}],
        "tool_choice": "none",
        "parallel_tool_calls": false,
        "seed": 7,
        "n": 1,
        "stream_options": {"include_usage": true}
    }));
    let out = openai_to_anthropic_request(&req, 2048).unwrap();
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "I can't help with that."},
                {"role": "user", "content": "why?"}
            ],
            "max_tokens": 2048,
            "tools": [{"name": "noop", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "none"}
        })
    );
    // `max_tokens` is used when `max_completion_tokens` is absent, and "auto" maps to auto.
    let req = openai_value(json!({
        "model": "m", "max_tokens": 99, "tool_choice": "auto",
        "messages": [{"role": "user", "content": "hi"}]
    }));
    let out = openai_to_anthropic_request(&req, 2048).unwrap();
    assert_eq!(out.max_tokens, 99);
    assert_eq!(out.tool_choice, Some(json!({"type": "auto"})));
    // Empty tool-call arguments are an empty input.
    let req = openai_value(json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "done"}]}
        ]
    }));
    let out = openai_to_anthropic_request(&req, 10).unwrap();
    assert_eq!(
        serde_json::to_value(&out.messages).unwrap(),
        json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "done"}]}]}
        ])
    );
}

#[test]
fn openai_to_anthropic_errors_name_the_field() {
    let cases = [
        (
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
            "n: Anthropic generates one choice per request, 2 were asked",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "listen"},
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}
            ]}]}),
            "messages[0].content[1]: content of type `input_audio` cannot be translated",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}]}),
            "messages[1].tool_call_id: a tool message must name the call it answers",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{\"x\": "}}
            ]}]}),
            "messages[1].tool_calls[1].function.arguments: tool call arguments are not valid JSON: EOF while parsing a value at line 1 column 6",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}
            ]}]}),
            "messages[0].content[0].image_url.url: data: URL must be base64-encoded (`;base64,`)",
        ),
        (
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "1"}]}),
            "messages[0].role: role `function` has no Anthropic equivalent",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "be nice"}]}),
            "messages: the request has no user or assistant message",
        ),
        (
            json!({"model": "m", "tool_choice": "sometimes", "messages": [{"role": "user", "content": "hi"}]}),
            "tool_choice: unknown value `sometimes`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
            ]}, {"role": "user", "content": "hi"}]}),
            "messages[0].content[0]: content of type `image_url in a system message` cannot be translated",
        ),
    ];
    for (req, message) in cases {
        let err = openai_to_anthropic_request(&openai_value(req), 100).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    let err = openai_to_anthropic_request(
        &openai_value(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3}),
        ),
        1,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TranslateError::UnsupportedParameter { field: "n", .. }
    ));
}

#[test]
fn json_schema_tool_builds_the_tool_use_technique() {
    let req = openai("openai/chat_request.json");
    let format = req.response_format.as_ref().unwrap();
    let tool = json_schema_tool(format).unwrap();
    assert_eq!(
        serde_json::to_value(&tool).unwrap(),
        json!({
            "name": "landmark_report",
            "description": "The landmark and its weather.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "landmark": {"type": "string"},
                    "city": {"type": "string"},
                    "temperature_c": {"type": ["number", "null"]}
                },
                "required": ["landmark", "city", "temperature_c"],
                "additionalProperties": false
            }
        })
    );
    assert_eq!(
        force_tool_choice(&tool.name),
        json!({"type": "tool", "name": "landmark_report"})
    );
    assert_eq!(json_schema_tool(&ResponseFormat::JsonObject), None);
    assert_eq!(json_schema_tool(&ResponseFormat::Text), None);
}

#[test]
fn anthropic_request_to_openai() {
    let req: MessagesRequest =
        serde_json::from_value(fixture_json("anthropic/messages_request.json")).unwrap();
    let out = anthropic_to_openai_request(&req).unwrap();
    let expected = json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are a travel assistant for Contoso Travel.\n\nPolicy: never book without explicit confirmation. Prices are in EUR."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
                {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
                {"type": "text", "text": "Where were these taken? Also, what's the weather in Paris?"}
            ]},
            {"role": "assistant", "content": "I'll check the current weather in Paris.", "tool_calls": [
                {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"
                }}
            ]},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees, light rain"},
            {"role": "user", "content": "Thanks. Should I pack an umbrella?"}
        ],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_completion_tokens": 1024,
        "temperature": 0.5,
        "top_p": 0.95,
        "stop": ["\n\nHuman:"],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and country, e.g. Paris, France"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["location"]
            }
        }}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"
    });
    assert_eq!(serde_json::to_value(&out).unwrap(), expected);
}

#[test]
fn anthropic_tool_choices_and_errors() {
    let base = |extra: Value| -> MessagesRequest {
        let mut v =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    };
    let choice = |c: Value| {
        anthropic_to_openai_request(&base(json!({"tool_choice": c}))).map(|r| r.tool_choice)
    };
    assert_eq!(
        choice(json!({"type": "any"})).unwrap(),
        Some(json!("required"))
    );
    assert_eq!(
        choice(json!({"type": "none"})).unwrap(),
        Some(json!("none"))
    );
    assert_eq!(
        choice(json!({"type": "tool", "name": "f"})).unwrap(),
        Some(json!({"type": "function", "function": {"name": "f"}}))
    );
    assert_eq!(
        choice(json!({"type": "tool"})).unwrap_err().to_string(),
        "tool_choice.name: a `tool` choice must name the tool"
    );

    let err = anthropic_to_openai_request(&base(json!({
        "tools": [{"type": "bash_20250124", "name": "bash"}]
    })))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tools[0]: tool of type `bash_20250124` has no OpenAI equivalent"
    );

    let err = anthropic_to_openai_request(&base(json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "read this"},
            {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}}
        ]}]
    })))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "messages[0].content[1]: content of type `document` cannot be translated"
    );

    let err = anthropic_to_openai_request(&base(json!({
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "text", "text": "see"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
            ]}
        ]}]
    })))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "messages[0].content[0].content[1]: content of type `image in a tool_result` cannot be translated"
    );

    // Thinking blocks in the history are dropped; a failed tool result keeps its text.
    let req = base(json!({
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": true, "content": "boom"}]}
        ]
    }));
    let out = anthropic_to_openai_request(&req).unwrap();
    assert_eq!(
        serde_json::to_value(&out.messages).unwrap(),
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "boom"}
        ])
    );
    assert_eq!(out.max_completion_tokens, Some(5));
    assert_eq!(out.stream_options, None);
}

#[test]
fn translating_there_and_back_keeps_the_conversation() {
    let req = openai("openai/chat_request_tool_history.json");
    let there = openai_to_anthropic_request(&req, 100).unwrap();
    let back = anthropic_to_openai_request(&there).unwrap();
    // System and developer messages are joined; the two trailing user messages merged.
    let roles: Vec<&str> = back.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool", "user"]
    );
    assert_eq!(
        back.messages[0].text().as_deref(),
        Some("You are a helpful assistant.\n\nAlways use metric units.")
    );
    assert_eq!(
        back.messages[2].tool_calls,
        req.messages[3].tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    // Arguments are re-serialised compactly.
                    let v: Value = serde_json::from_str(&c.function.arguments).unwrap();
                    c.function.arguments = v.to_string();
                    c
                })
                .collect()
        })
    );
    assert_eq!(
        back.messages[5].text().as_deref(),
        Some("Thanks! Which one is warmer?Answer in one sentence.")
    );
}

#[test]
fn temperature_and_top_p_together_keep_only_the_temperature_for_anthropic() {
    // Anthropic takes one of the two; recent Claude models refuse both.
    let both = openai_value(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 1.4, "top_p": 0.9
    }));
    let out = serde_json::to_value(openai_to_anthropic_request(&both, 100).unwrap()).unwrap();
    assert_eq!(out["temperature"], json!(1.0));
    assert!(out.get("top_p").is_none(), "{out}");
    // top_p alone goes through.
    let top_p = openai_value(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.9
    }));
    let out = serde_json::to_value(openai_to_anthropic_request(&top_p, 100).unwrap()).unwrap();
    assert_eq!(out["top_p"], json!(0.9));
    assert!(out.get("temperature").is_none(), "{out}");
}

#[test]
fn anthropic_structured_output_becomes_an_openai_json_schema() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    for (field, value) in [
        (
            "output_config",
            json!({"format": {"type": "json_schema", "schema": schema}}),
        ),
        (
            "output_format",
            json!({"type": "json_schema", "schema": schema}),
        ),
    ] {
        let mut body = json!({
            "model": "m", "max_tokens": 100,
            "messages": [{"role": "user", "content": "The weather, as JSON."}]
        });
        body[field] = value;
        let req: MessagesRequest = serde_json::from_value(body).unwrap();
        let out = anthropic_to_openai_request(&req).unwrap();
        assert_eq!(
            serde_json::to_value(&out.response_format).unwrap(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}),
            "{field}"
        );
    }
    // Any other format (or none) asks for nothing.
    let req: MessagesRequest = serde_json::from_value(json!({
        "model": "m", "max_tokens": 100, "output_config": {"effort": "low"},
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    assert!(anthropic_to_openai_request(&req)
        .unwrap()
        .response_format
        .is_none());
}
