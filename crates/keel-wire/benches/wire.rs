//! Cost of the JSON work Keel does per request, side by side: parsing the
//! client's request, parsing the provider's answer, re-serialising it, and
//! the byte splice that replaces re-serialisation when nothing changed.

#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keel_wire::chunk_view::ChunkView;
use keel_wire::openai::{ChatChunk, ChatRequest, ChatResponse};

/// The request `keel bench overhead` sends.
const REQUEST: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"temperature":0.2,"stream":false}"#;

/// The answer its fixed upstream gives.
const ANSWER: &[u8] = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-upstream","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from the benchmark upstream."},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":12,"total_tokens":24}}"#;

/// A long conversation (40 turns of ~600 characters, ~25 KB): real chat
/// bodies carry their context, and their size is where a scan and a parse
/// part ways.
fn long_request() -> Vec<u8> {
    let turn = "The quarterly report shows revenue up 12% with margins steady; \\\"churn\\\" fell in every region except the north, where two large accounts left. ".repeat(4);
    let messages: Vec<String> = (0..40)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            format!(r#"{{"role":"{role}","content":"{turn}"}}"#)
        })
        .collect();
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{}],"max_tokens":400,"temperature":0.2}}"#,
        messages.join(",")
    )
    .into_bytes()
}

/// A content chunk of the fixed upstream's stream.
const CHUNK: &[u8] = br#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-upstream","choices":[{"index":0,"delta":{"content":"streamed "},"finish_reason":null}]}"#;

fn wire(c: &mut Criterion) {
    // A streamed chunk: the full parse and re-serialisation Keel did per
    // token, against the view it reads now and the splice of `model`.
    c.bench_function("parse_stream_chunk", |b| {
        b.iter(|| serde_json::from_slice::<ChatChunk>(black_box(CHUNK)).expect("chunk"))
    });
    let chunk: ChatChunk = serde_json::from_slice(CHUNK).expect("chunk");
    c.bench_function("serialize_stream_chunk", |b| {
        b.iter(|| serde_json::to_vec(black_box(&chunk)).expect("encode"))
    });
    c.bench_function("view_stream_chunk", |b| {
        b.iter(|| {
            ChunkView::parse(black_box(CHUNK))
                .expect("view")
                .has_payload()
        })
    });
    c.bench_function("view_stream_chunk_and_replace_model", |b| {
        b.iter(|| {
            ChunkView::parse(black_box(CHUNK))
                .expect("view")
                .with_model(r#""gpt-4o-mini""#)
                .expect("model")
        })
    });
    c.bench_function("splice_model_into_stream_chunk", |b| {
        b.iter(|| {
            keel_wire::splice::replace_string(black_box(CHUNK), "model", "gpt-4o-mini")
                .expect("splice")
        })
    });
    c.bench_function("parse_chat_request", |b| {
        b.iter(|| serde_json::from_slice::<ChatRequest>(black_box(REQUEST)).expect("request"))
    });
    c.bench_function("parse_chat_response", |b| {
        b.iter(|| serde_json::from_slice::<ChatResponse>(black_box(ANSWER)).expect("answer"))
    });
    let parsed: ChatResponse = serde_json::from_slice(ANSWER).expect("answer");
    c.bench_function("serialize_chat_response", |b| {
        b.iter(|| serde_json::to_vec(black_box(&parsed)).expect("encode"))
    });
    let long = long_request();
    c.bench_function("parse_long_chat_request_25kb", |b| {
        b.iter(|| serde_json::from_slice::<ChatRequest>(black_box(&long)).expect("request"))
    });
    c.bench_function("splice_model_into_long_request_25kb", |b| {
        b.iter(|| {
            keel_wire::splice::replace_string(black_box(&long), "model", "gpt-4o-mini")
                .expect("splice")
        })
    });
    c.bench_function("splice_model_into_response", |b| {
        b.iter(|| {
            keel_wire::splice::replace_string(black_box(ANSWER), "model", "gpt-4o-mini")
                .expect("splice")
        })
    });
}

criterion_group!(benches, wire);
criterion_main!(benches);
