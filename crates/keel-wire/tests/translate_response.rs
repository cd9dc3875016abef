//! Response translation and stop reasons, against exact expected values.

// Test helpers outside `#[test]` functions unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fixture_json;
use keel_wire::anthropic::MessagesResponse;
use keel_wire::openai::ChatResponse;
use keel_wire::translate::{
    anthropic_to_openai_response, finish_to_stop_reason, json_schema_tool_to_text,
    openai_to_anthropic_response, stop_to_finish_reason,
};
use serde_json::json;

#[test]
fn stop_reason_table() {
    let finish_to_stop = [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
    ];
    for (finish, stop) in finish_to_stop {
        assert_eq!(finish_to_stop_reason(finish), stop, "{finish}");
    }
    let stop_to_finish = [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ];
    for (stop, finish) in stop_to_finish {
        assert_eq!(stop_to_finish_reason(stop), finish, "{stop}");
    }
}

fn anthropic(name: &str) -> MessagesResponse {
    serde_json::from_value(fixture_json(name)).unwrap()
}

fn openai(name: &str) -> ChatResponse {
    serde_json::from_value(fixture_json(name)).unwrap()
}

#[test]
fn anthropic_text_response_to_openai() {
    let out = anthropic_to_openai_response(&anthropic("anthropic/messages_response_text.json"));
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "object": "chat.completion",
            "created": 0,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Yes, pack an umbrella: Paris has light rain at 15°C."},
                "finish_reason": "stop"
            }],
            // Cache reads and writes count as prompt tokens on the OpenAI side.
            "usage": {
                "prompt_tokens": 3895,
                "completion_tokens": 503,
                "total_tokens": 4398,
                "prompt_tokens_details": {"cached_tokens": 1800}
            }
        })
    );
    assert_eq!(
        out.text(),
        Some("Yes, pack an umbrella: Paris has light rain at 15°C.")
    );
}

#[test]
fn anthropic_tool_use_response_to_openai() {
    let out = anthropic_to_openai_response(&anthropic("anthropic/messages_response_tool_use.json"));
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({
            "id": "msg_01Aq9w938a90dw8q",
            "object": "chat.completion",
            "created": 0,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll check the current weather in Paris and Boston.",
                    "tool_calls": [
                        {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                            "name": "get_weather", "arguments": "{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"}},
                        {"id": "toolu_01B5TjWmKx8RfLzUq3Nn7Vp2", "type": "function", "function": {
                            "name": "get_weather", "arguments": "{\"location\":\"Boston, MA\",\"unit\":\"celsius\"}"}}
                    ]
                },
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 384, "completion_tokens": 92, "total_tokens": 476}
        })
    );
}

#[test]
fn openai_text_response_to_anthropic() {
    let out = openai_to_anthropic_response(&openai("openai/chat_response_text.json"));
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o-2024-08-06",
            "content": [{"type": "text", "text": "{\"landmark\":\"Eiffel Tower\",\"city\":\"Paris\",\"temperature_c\":15}"}],
            "stop_reason": "end_turn",
            // 1117 prompt tokens of which 1024 were cached.
            "usage": {"input_tokens": 93, "output_tokens": 46, "cache_read_input_tokens": 1024}
        })
    );
}

#[test]
fn openai_tool_calls_response_to_anthropic() {
    let out = openai_to_anthropic_response(&openai("openai/chat_response_tool_calls.json"));
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({
            "id": "chatcmpl-9pXyZ7tRkQm2cVwJ3aB1dE5fG6hI",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o-mini-2024-07-18",
            "content": [
                {"type": "tool_use", "id": "call_8GnHbKXMa2SmbV0Eyx4qK1Ry", "name": "get_weather", "input": {"city": "Paris, France"}},
                {"type": "tool_use", "id": "call_0qbKPy2ZMKjzqXh6ykmTdE3m", "name": "get_weather", "input": {"city": "Boston, MA"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 82, "output_tokens": 47}
        })
    );
}

#[test]
fn openai_refusal_length_and_bad_arguments_to_anthropic() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "content_filter", "message": {
            "role": "assistant", "content": null, "refusal": "I can't help with that.",
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]
        }}]
    }))
    .unwrap();
    let out = openai_to_anthropic_response(&resp);
    assert_eq!(
        serde_json::to_value(&out.content).unwrap(),
        json!([
            {"type": "text", "text": "I can't help with that."},
            {"type": "tool_use", "id": "x", "name": "f", "input": "{not json"}
        ])
    );
    assert_eq!(out.stop_reason.as_deref(), Some("refusal"));
    assert_eq!(out.usage.input_tokens, 0);
}

#[test]
fn responses_survive_a_round_trip_through_the_other_dialect() {
    let original = anthropic("anthropic/messages_response_tool_use.json");
    let back = openai_to_anthropic_response(&anthropic_to_openai_response(&original));
    assert_eq!(back.content, original.content);
    assert_eq!(back.stop_reason, original.stop_reason);
    assert_eq!(back.usage.input_tokens, original.usage.input_tokens);
    assert_eq!(back.usage.output_tokens, original.usage.output_tokens);

    let original = openai("openai/chat_response_tool_calls.json");
    let back = anthropic_to_openai_response(&openai_to_anthropic_response(&original));
    assert_eq!(back.tool_calls(), original.tool_calls());
    assert_eq!(back.finish_reason(), original.finish_reason());
}

#[test]
fn json_schema_tool_answer_becomes_text() {
    let resp: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "landmark_report",
             "input": {"landmark": "Eiffel Tower", "city": "Paris", "temperature_c": 15}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20}
    }))
    .unwrap();
    let text = json_schema_tool_to_text(&resp, "landmark_report");
    assert_eq!(
        text.text(),
        "{\"landmark\":\"Eiffel Tower\",\"city\":\"Paris\",\"temperature_c\":15}"
    );
    assert_eq!(text.stop_reason.as_deref(), Some("end_turn"));
    let chat = anthropic_to_openai_response(&text);
    assert_eq!(chat.finish_reason(), Some("stop"));
    assert_eq!(
        chat.text(),
        Some("{\"landmark\":\"Eiffel Tower\",\"city\":\"Paris\",\"temperature_c\":15}")
    );
    // Another tool's call is left alone.
    assert_eq!(json_schema_tool_to_text(&resp, "other"), resp);
}
