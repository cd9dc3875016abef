//! Bedrock's Converse wire format, from the Converse and ConverseStream API
//! references: requests Keel writes, answers and stream events it reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use keel_wire::anthropic::{BlockDelta, ContentBlock, StreamEvent};
use keel_wire::bedrock::{
    converse_path, converse_request, read_converse_response, ConverseItem, ConverseStreamReader,
};
use keel_wire::openai::{ChatChunk, ChatRequest};
use keel_wire::translate::{
    anthropic_to_openai_response, json_schema_tool, openai_to_anthropic_request,
    AnthropicToOpenAiStream,
};
use serde_json::{json, Value};

fn converse_of(openai: Value) -> Value {
    let req: ChatRequest = serde_json::from_value(openai).unwrap();
    converse_request(&openai_to_anthropic_request(&req, 4096).unwrap()).unwrap()
}

#[test]
fn model_ids_are_one_encoded_path_segment() {
    let cases = [
        (
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            false,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        ),
        (
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            true,
            "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/x",
            false,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fx/converse",
        ),
    ];
    for (model, stream, path) in cases {
        assert_eq!(converse_path(model, stream), path, "{model}");
    }
}

/// Messages, system prompt, inference parameters, images, tool calls and
/// results, tools and the tool choice, as the Converse reference writes
/// them.
#[test]
fn requests_are_written_as_converse() {
    let body = converse_of(json!({
        "model": "route",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "tooluse_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "tooluse_abc", "content": "21 C"}
        ],
        "max_tokens": 512,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
    }));
    assert_eq!(
        body,
        json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is in this picture, and the weather in Paris?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
                ]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "tooluse_abc", "name": "get_weather", "input": {"city": "Paris"}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_abc", "content": [{"text": "21 C"}], "status": "success"}}
                ]}
            ],
            "system": [{"text": "You are terse."}],
            // `top_p` beside `temperature` is dropped on the way through
            // Messages (Anthropic's models take one of them).
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
                }}],
                "toolChoice": {"tool": {"name": "get_weather"}}
            }
        })
    );
    let any = converse_of(json!({
        "model": "r", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "required"
    }));
    assert_eq!(any["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(any["inferenceConfig"], json!({"maxTokens": 4096}));
    let top_p = converse_of(json!({
        "model": "r", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.9, "max_tokens": 9
    }));
    assert_eq!(
        top_p["inferenceConfig"],
        json!({"maxTokens": 9, "topP": 0.9})
    );
}

#[test]
fn what_converse_cannot_carry_is_named() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "r",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
        ]}]
    }))
    .unwrap();
    let err = converse_request(&openai_to_anthropic_request(&req, 100).unwrap()).unwrap_err();
    assert!(err.contains("image by URL"), "{err}");
}

/// The answer of the Converse reference's example, read as a canonical
/// (OpenAI) answer.
#[test]
fn answers_are_read() {
    let body = br#"{
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello! How can I help?"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
        "metrics": {"latencyMs": 321}
    }"#;
    let r = read_converse_response(body, "m").unwrap();
    let o = anthropic_to_openai_response(&r);
    assert_eq!(
        o.choices[0].message.text().as_deref(),
        Some("Hello! How can I help?")
    );
    assert_eq!(o.choices[0].finish_reason.as_deref(), Some("stop"));
    let u = o.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 7));
    // Ids differ between answers.
    let other = read_converse_response(&body[..body.len() - 1], "m");
    assert!(other.is_err());

    let tool = br#"{
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Let me look."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 400, "outputTokens": 60, "totalTokens": 460}
    }"#;
    let o = anthropic_to_openai_response(&read_converse_response(tool, "m").unwrap());
    let call = &o.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id, "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
    assert_eq!(call.function.name, "top_song");
    assert_eq!(
        serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
        json!({"sign": "WZPZ"})
    );
    assert_eq!(o.choices[0].finish_reason.as_deref(), Some("tool_calls"));
}

/// Every documented stop reason has its canonical finish.
#[test]
fn stop_reasons_map_to_finishes() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ] {
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
            "stopReason": stop,
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}
        });
        let r = read_converse_response(body.to_string().as_bytes(), "m").unwrap();
        let o = anthropic_to_openai_response(&r);
        assert_eq!(
            o.choices[0].finish_reason.as_deref(),
            Some(finish),
            "{stop}"
        );
    }
}

fn frame(kind: &str, name: &str, payload: Value) -> Vec<u8> {
    let (type_header, message_type) = match kind {
        "event" => (":event-type", "event"),
        _ => (":exception-type", "exception"),
    };
    let m = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            type_header,
            HeaderValue::String(name.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.into()),
        ));
    let mut out = Vec::new();
    write_message_to(&m, &mut out).unwrap();
    out
}

/// A ConverseStream with text and a tool call, as the reference shows it
/// (padding `p` fields included).
fn stream_bytes() -> Vec<u8> {
    [
        frame("event", "messageStart", json!({"role": "assistant", "p": "abcd"})),
        frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Let me "}, "p": "ab"})),
        frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "check."}})),
        frame("event", "contentBlockStop", json!({"contentBlockIndex": 0})),
        frame("event", "contentBlockStart", json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}})),
        frame("event", "contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}})),
        frame("event", "contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}})),
        frame("event", "contentBlockStop", json!({"contentBlockIndex": 1})),
        frame("event", "messageStop", json!({"stopReason": "tool_use"})),
        frame("event", "metadata", json!({"usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42}, "metrics": {"latencyMs": 800}})),
    ]
    .concat()
}

fn events(items: Vec<ConverseItem>) -> Vec<StreamEvent> {
    items
        .into_iter()
        .map(|i| match i {
            ConverseItem::Event(e) => *e,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Frames are decoded however the bytes are split; blocks are opened and
/// closed as Messages does; the stop reason comes with the usage, then the
/// end.
#[test]
fn streams_are_read_whatever_the_packet_boundaries() {
    let bytes = stream_bytes();
    let mut whole = ConverseStreamReader::new("m");
    let all = events(whole.push(&bytes).unwrap());
    for size in [1, 7, 64] {
        let mut r = ConverseStreamReader::new("m");
        let mut got = Vec::new();
        for piece in bytes.chunks(size) {
            got.extend(events(r.push(piece).unwrap()));
        }
        assert_eq!(got, all, "split into {size}-byte packets");
    }
    let names: Vec<&str> = all.iter().map(StreamEvent::event_name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(matches!(
        &all[6],
        StreamEvent::ContentBlockDelta { index: 1, delta: BlockDelta::InputJsonDelta { partial_json } } if partial_json == "{\"city\":"
    ));
    assert!(matches!(
        &all[5],
        StreamEvent::ContentBlockStart { index: 1, content_block: ContentBlock::ToolUse { name, .. } } if name == "get_weather"
    ));
    // Through the Anthropic translator: OpenAI chunks.
    let mut conv = AnthropicToOpenAiStream::new("route");
    let chunks: Vec<ChatChunk> = all.iter().flat_map(|e| conv.push(e)).collect();
    let text: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(text, "Let me check.");
    let args: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter_map(|t| t.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let finish = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .find_map(|c| c.finish_reason.clone());
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let usage = chunks.iter().find_map(|c| c.usage.clone()).unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (30, 12));
}

/// Exception events are reported with their type and message; a frame
/// whose checksum is wrong is an error, not an event.
#[test]
fn exceptions_and_broken_frames() {
    let mut r = ConverseStreamReader::new("m");
    let mut bytes = frame("event", "messageStart", json!({"role": "assistant"}));
    bytes.extend(frame(
        "exception",
        "throttlingException",
        json!({"message": "Too many tokens, please wait before trying again."}),
    ));
    let items = r.push(&bytes).unwrap();
    assert_eq!(
        items[1],
        ConverseItem::Exception {
            kind: "throttlingException".into(),
            message: "Too many tokens, please wait before trying again.".into()
        }
    );
    let mut broken = frame(
        "event",
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "x"}}),
    );
    let last = broken.len() - 1;
    broken[last] ^= 0xff;
    assert!(ConverseStreamReader::new("m").push(&broken).is_err());
    let cut_json = {
        let m = Message::new(&b"{\"contentBlockIndex\":0,\"del"[..])
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("contentBlockDelta".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&m, &mut out).unwrap();
        out
    };
    let err = ConverseStreamReader::new("m").push(&cut_json).unwrap_err();
    assert!(err.contains("unreadable"), "{err}");
}

/// Structured output goes to Bedrock as a forced tool (Keel's technique
/// for Anthropic models; Converse has no JSON-schema output every model
/// takes), and its input comes back as the answer's text.
#[test]
fn json_schema_is_a_forced_tool() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "r", "messages": [{"role": "user", "content": "A movie"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "movie", "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}}
    }))
    .unwrap();
    let mut a = openai_to_anthropic_request(&req, 100).unwrap();
    let tool = json_schema_tool(req.response_format.as_ref().unwrap()).unwrap();
    a.tool_choice = Some(keel_wire::translate::force_tool_choice(&tool.name));
    a.tools.get_or_insert_with(Vec::new).push(tool);
    let body = converse_request(&a).unwrap();
    assert_eq!(
        body["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "movie"}})
    );
    assert_eq!(
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["title"],
        json!({"type": "string"})
    );
}
