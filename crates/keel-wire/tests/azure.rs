//! Azure OpenAI's answers, written from its REST reference, read by the
//! OpenAI readers Keel uses for `kind = "azure"`: the fast whole-answer
//! reader, the typed parse, the chunk view and the translation to Anthropic
//! events. Azure adds `prompt_filter_results`, per-choice
//! `content_filter_results` and a first stream event with no choices, id or
//! model; none of it may trip a reader.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{decode_all, fixture_bytes, parse_stream};
use keel_wire::answer_view::AnswerFacts;
use keel_wire::anthropic::StreamEvent;
use keel_wire::chunk_view::ChunkView;
use keel_wire::openai::{ChatChunk, ChatResponse};
use keel_wire::translate::{openai_to_anthropic_response, OpenAiToAnthropicStream};

#[test]
fn an_answer_is_read_by_the_fast_reader_and_the_typed_parse() {
    let body = fixture_bytes("azure/chat_response.json");
    let facts = AnswerFacts::read(&body).expect("the fast reader reads Azure's answer");
    assert_eq!(
        facts.text.as_deref(),
        Some("The capital of France is Paris.")
    );
    assert_eq!(facts.finish_reason.as_deref(), Some("stop"));
    let usage = facts.usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (14, 8));
    // The model is replaced in place; the filter results stay byte for byte.
    let renamed = String::from_utf8(facts.with_model(&body, "route").unwrap()).unwrap();
    assert!(renamed.contains("\"model\": \"route\""));
    assert!(renamed.contains("\"prompt_filter_results\""));

    let typed: ChatResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        typed.choices[0]
            .message
            .content
            .as_ref()
            .map(|c| c.joined_text()),
        Some("The capital of France is Paris.".into())
    );
    let an = openai_to_anthropic_response(&typed);
    assert_eq!(an.stop_reason.as_deref(), Some("end_turn"));
}

#[test]
fn a_filtered_completion_says_content_filter() {
    let body = fixture_bytes("azure/chat_response_content_filter.json");
    let facts = AnswerFacts::read(&body).unwrap();
    assert_eq!(facts.finish_reason.as_deref(), Some("content_filter"));
    assert_eq!(facts.text.as_deref(), Some("The story begins"));
    let typed: ChatResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        typed.choices[0].finish_reason.as_deref(),
        Some("content_filter")
    );
}

#[test]
fn a_stream_opens_with_the_prompt_filter_event() {
    let events = decode_all(&fixture_bytes("azure/chat_stream.sse"));
    assert_eq!(events.len(), 12);
    assert!(events.last().unwrap().is_done());
    let views: Vec<ChunkView<'_>> = events
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| ChunkView::parse_str(&e.data).unwrap())
        .collect();
    // The first event carries nothing a client waits for.
    assert!(views[0].choices.is_empty() && views[0].id.is_empty() && views[0].model.is_empty());
    assert!(!views[0].has_payload() && !views[0].has_role());
    assert!(views[1].has_role());
    let text: String = views
        .iter()
        .flat_map(|v| v.choices.iter())
        .filter_map(|c| c.delta.content.as_deref())
        .collect();
    assert_eq!(text, "The capital of France is Paris.");
    assert!(views[9].finishes_with("stop"));
    assert_eq!(views[10].usage.as_ref().unwrap().completion_tokens, 7);

    // Translated for an Anthropic client: the same text, one message.
    let chunks: Vec<ChatChunk> = parse_stream("azure/chat_stream.sse");
    let mut conv = OpenAiToAnthropicStream::new("route");
    let mut out: Vec<StreamEvent> = chunks.iter().flat_map(|c| conv.push(c)).collect();
    out.extend(conv.finish());
    let json = serde_json::to_string(&out).unwrap();
    assert_eq!(json.matches("\"message_start\"").count(), 1, "{json}");
    assert_eq!(json.matches("\"message_stop\"").count(), 1, "{json}");
    assert!(json.contains("\" Paris\""), "{json}");
    assert!(json.contains("\"end_turn\""), "{json}");
}
