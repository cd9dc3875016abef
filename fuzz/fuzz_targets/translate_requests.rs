//! OpenAI and Anthropic request parsing and translation, both ways, and the
//! response and stream translators on whatever parses.
#![no_main]

use keel_wire::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use keel_wire::openai::{ChatChunk, ChatRequest, ChatResponse};
use keel_wire::translate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ChatRequest>(data) {
        if let Ok(a) = translate::openai_to_anthropic_request(&req, 4096) {
            let _ = serde_json::to_vec(&a);
        }
        if let Some(f) = &req.response_format {
            let _ = translate::json_schema_tool(f);
        }
    }
    if let Ok(req) = serde_json::from_slice::<MessagesRequest>(data) {
        if let Ok(o) = translate::anthropic_to_openai_request(&req) {
            let _ = serde_json::to_vec(&o);
        }
    }
    if let Ok(resp) = serde_json::from_slice::<MessagesResponse>(data) {
        let _ = translate::anthropic_to_openai_response(&resp);
        let _ = translate::json_schema_tool_to_text(&resp, "out");
    }
    if let Ok(resp) = serde_json::from_slice::<ChatResponse>(data) {
        let _ = translate::openai_to_anthropic_response(&resp);
    }
    // Streams: one event (or chunk) per line.
    let mut a2o = translate::AnthropicToOpenAiStream::new("m").with_json_schema_tool("out");
    let mut o2a = translate::OpenAiToAnthropicStream::new("m");
    for line in data.split(|&b| b == b'\n') {
        if let Ok(ev) = serde_json::from_slice::<StreamEvent>(line) {
            let _ = a2o.push(&ev);
        }
        if let Ok(c) = serde_json::from_slice::<ChatChunk>(line) {
            let _ = o2a.push(&c);
        }
    }
    let _ = o2a.finish();
});
