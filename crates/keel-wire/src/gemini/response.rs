//! Gemini answers and stream events to canonical (OpenAI-shaped) ones.

use serde_json::Value;

use super::{Candidate, Extra, GFunctionCall, GenerateContentResponse, UsageMetadata};
use crate::openai::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Content, Delta, FunctionCallDelta, Message, Role,
    ToolCall, ToolCallDelta, Usage,
};

/// Gemini's `finishReason` (or a prompt's `blockReason`) as an OpenAI
/// `finish_reason`: `STOP` → `stop` (`tool_calls` when the answer calls a
/// function), `MAX_TOKENS` → `length`, the safety family (`SAFETY`,
/// `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY`,
/// and any block reason) → `content_filter`; anything else (`OTHER`,
/// `MALFORMED_FUNCTION_CALL`, ...) → `stop`, judged by its content.
pub fn gemini_finish_reason(reason: &str, calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if calls => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI usage from Gemini's counts: thinking tokens are output tokens
/// (as OpenAI counts reasoning), cached prompt tokens are reported as
/// `prompt_tokens_details.cached_tokens`.
fn usage(u: &UsageMetadata) -> Usage {
    let completion = u
        .candidates_token_count
        .saturating_add(u.thoughts_token_count.unwrap_or(0));
    let mut usage = Usage::new(u.prompt_token_count, completion);
    if u.total_token_count > 0 {
        usage.total_tokens = u.total_token_count;
    }
    if let Some(cached) = u.cached_content_token_count {
        usage.extra.insert(
            "prompt_tokens_details".to_owned(),
            serde_json::json!({ "cached_tokens": cached }),
        );
    }
    usage
}

/// An id for a function call, which Gemini does not give (newer models
/// may): stable for the same answer, distinct for each call in it.
fn call_id(response_id: &str, index: u32, call: &GFunctionCall) -> String {
    if let Some(id) = call.id.as_deref().filter(|id| !id.is_empty()) {
        return id.to_owned();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let args = call.args.as_ref().map(Value::to_string).unwrap_or_default();
    for b in response_id
        .bytes()
        .chain(index.to_le_bytes())
        .chain(call.name.bytes())
        .chain(args.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("call_{h:016x}")
}

fn arguments(call: &GFunctionCall) -> String {
    match &call.args {
        Some(v) => v.to_string(),
        None => "{}".to_owned(),
    }
}

/// A function call and the thought signature on its part.
type SignedCall<'a> = (&'a GFunctionCall, Option<&'a str>);

/// An OpenAI tool call's extra members for a call signed with `signature`.
fn signed_extra(signature: Option<&str>) -> Extra {
    let mut extra = Extra::new();
    if let Some(s) = signature {
        extra.insert(
            super::THOUGHT_SIGNATURE_KEY.to_owned(),
            super::thought_signature_extra(s),
        );
    }
    extra
}

/// The text (thought summaries left out) and calls of a candidate.
fn read_candidate(c: Option<&Candidate>) -> (String, Vec<SignedCall<'_>>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in c
        .and_then(|c| c.content.as_ref())
        .map_or(&[][..], |c| &c.parts)
    {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(t) = &part.text {
            text.push_str(t);
        }
        if let Some(call) = &part.function_call {
            calls.push((call, part.thought_signature.as_deref()));
        }
    }
    (text, calls)
}

/// The finish of an answer: its candidate's, or the prompt's block.
fn finish_of(resp: &GenerateContentResponse, calls: bool) -> Option<&'static str> {
    if resp
        .prompt_feedback
        .as_ref()
        .is_some_and(|f| f.block_reason.is_some())
        && resp.candidates.is_empty()
    {
        return Some("content_filter");
    }
    let reason = resp.candidates.first()?.finish_reason.as_deref()?;
    Some(gemini_finish_reason(reason, calls))
}

/// Translates a Gemini answer for an OpenAI client: the first candidate's
/// text parts joined as the content, its `functionCall` parts as
/// `tool_calls` (ids made up, see [`call_id`]; a part's thought signature
/// as the call's `extra_content.google.thought_signature`); a blocked prompt is an
/// empty answer with finish `content_filter`. `created` is 0 (the caller
/// stamps it); `model` is `modelVersion`, else `model`.
pub fn gemini_to_openai_response(resp: &GenerateContentResponse, model: &str) -> ChatResponse {
    let response_id = resp.response_id.clone().unwrap_or_default();
    let (text, calls) = read_candidate(resp.candidates.first());
    let finish = finish_of(resp, !calls.is_empty());
    let mut message = Message::new(Role::Assistant, text);
    if !calls.is_empty() {
        if message.content == Some(Content::Text(String::new())) {
            message.content = None;
        }
        message.tool_calls = Some(
            calls
                .iter()
                .enumerate()
                .map(|(i, (c, signature))| {
                    let id = call_id(&response_id, i as u32, c);
                    let mut call = ToolCall::function(id, c.name.clone(), arguments(c));
                    call.extra = signed_extra(*signature);
                    call
                })
                .collect(),
        );
    }
    ChatResponse {
        id: format!(
            "chatcmpl-{}",
            if response_id.is_empty() {
                "gemini"
            } else {
                &response_id
            }
        ),
        object: "chat.completion".to_owned(),
        created: 0,
        model: resp
            .model_version
            .clone()
            .unwrap_or_else(|| model.to_owned()),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: finish.map(str::to_owned),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: resp.usage_metadata.as_ref().map(usage),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

/// Turns the events of a Gemini stream (each a whole
/// `GenerateContentResponse`) into OpenAI chunks.
///
/// The first event gives the role chunk; text parts become content deltas;
/// each `functionCall` part a whole tool call (Gemini sends a call in one
/// piece); the event with a `finishReason` (or a prompt's `blockReason`)
/// gives the chunk with `finish_reason` and then the usage chunk (no
/// choices), and ends the stream: Gemini sends no end event of its own,
/// so [`GeminiToOpenAiStream::finished`] tells the reader a clean end from
/// a cut.
#[derive(Debug)]
pub struct GeminiToOpenAiStream {
    model: String,
    id: String,
    created: u64,
    started: bool,
    next_tool_index: u32,
    finished: bool,
}

impl GeminiToOpenAiStream {
    /// A translator whose chunks name `model`.
    pub fn new(model: &str) -> Self {
        GeminiToOpenAiStream {
            model: model.to_owned(),
            id: String::new(),
            created: 0,
            started: false,
            next_tool_index: 0,
            finished: false,
        }
    }

    /// Sets the `created` timestamp of every chunk.
    pub fn with_created(mut self, unix_secs: u64) -> Self {
        self.created = unix_secs;
        self
    }

    /// Whether the event that ends the answer has come.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Translates one event.
    pub fn push(&mut self, ev: &GenerateContentResponse) -> Vec<ChatChunk> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            let rid = ev.response_id.as_deref().unwrap_or("gemini");
            self.id = format!("chatcmpl-{rid}");
            out.push(self.chunk(
                Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            ));
        }
        let response_id = ev.response_id.clone().unwrap_or_default();
        let (text, calls) = read_candidate(ev.candidates.first());
        if !text.is_empty() {
            out.push(self.chunk(
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            ));
        }
        for (call, signature) in calls {
            let index = self.next_tool_index;
            self.next_tool_index = index.saturating_add(1);
            out.push(self.chunk(
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index,
                        id: Some(call_id(&response_id, index, call)),
                        r#type: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(call.name.clone()),
                            arguments: Some(arguments(call)),
                            extra: Extra::new(),
                        }),
                        extra: signed_extra(signature),
                    }]),
                    ..Delta::default()
                },
                None,
            ));
        }
        if let Some(finish) = finish_of(ev, self.next_tool_index > 0) {
            self.finished = true;
            out.push(self.chunk(Delta::default(), Some(finish)));
            if let Some(u) = &ev.usage_metadata {
                let mut chunk = self.chunk(Delta::default(), None);
                chunk.choices.clear();
                chunk.usage = Some(usage(u));
                out.push(chunk);
            }
        }
        out
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}
