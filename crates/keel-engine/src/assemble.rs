//! Plain answers asked upstream as streams (`stream_upstream`).
//!
//! Why: a provider that hangs on a plain request is found out only when
//! the whole attempt times out (seconds), while a stream says within its
//! first token whether the provider is working. So a plain chat request to
//! a deployment that streams is asked as a stream, under the deployment's
//! adaptive first-token deadline ([`crate::config::FirstTokenDeadline`]),
//! and the whole answer is assembled from the stream as the provider's
//! own non-streaming answer would read (OpenAI's `chat.completion`, or
//! Anthropic's `message`): id, created, model, system fingerprint, usage,
//! finish reasons, tool calls, logprobs. The assembled bytes then go
//! through [`upstream::parse_success`] exactly like a plain answer's, so
//! every later stage (judging, repair, continuation, the client's answer)
//! sees no difference.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use keel_policy::{Classification, TransportError};
use keel_wire::anthropic::{BlockDelta, ContentBlock, MessagesResponse, StreamEvent, TextDelta};
use keel_wire::chunk_view::{same_but_text, ChunkView};
use keel_wire::openai::{ToolCallDelta, Usage};
use keel_wire::splice::Object;
use keel_wire::sse::SseDecoder;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::config::{Deployment, ProviderKind};
use crate::metrics::Metrics;
use crate::outcome::{Cut, Reply};
use crate::transport::{self, HttpClient};
use crate::upstream::{self, transport_failure, Answer};

/// The time limits of a plain answer asked as a stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Until the first token (the adaptive deadline).
    pub first_token: Duration,
    /// Longest silence between two events after it.
    pub inter_token: Duration,
    /// The whole answer (the attempt timeout, within the request's deadline).
    pub total: Duration,
}

/// Sends `body` (a streaming request) to `dep` and assembles the whole
/// answer from the stream ([`Reply::Full`]); a stream that breaks after
/// its first token with text and nothing else in it is [`Reply::Cut`], a
/// failure whose text the next attempt continues. A first-token deadline
/// hit is counted on `metrics` under deployment `di`.
pub(crate) async fn send(
    client: &HttpClient,
    dep: &Deployment,
    body: Vec<u8>,
    limits: Limits,
    schema_tool: Option<&str>,
    (metrics, di): (&Metrics, usize),
) -> Result<Reply, Classification> {
    let sent = Instant::now();
    let deadline = sent + limits.total;
    let first_by = sent + limits.first_token.min(limits.total);
    let missed = |at: Instant| {
        if at < deadline {
            metrics.first_token_deadline_hit(di);
            transport_failure(
                TransportError::FirstByteTimeout,
                &format!(
                    "no first token within {} ms",
                    limits.first_token.as_millis()
                ),
            )
        } else {
            transport_failure(
                TransportError::AttemptTimeout,
                &format!("no answer within {} ms", limits.total.as_millis()),
            )
        }
    };
    let Ok(resp) = tokio::time::timeout_at(first_by, upstream::post(client, dep, body)).await
    else {
        return Err(missed(first_by));
    };
    let mut resp = resp?;
    let status = resp.status().as_u16();
    let headers = std::mem::take(resp.headers_mut());
    let rate_limits = keel_policy::rate_limit_headers(&headers, std::time::SystemTime::now());
    // An error, or a provider that answered with a whole body after all:
    // read as a plain answer.
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !(200..300).contains(&status) || !sse {
        let Ok(body) = tokio::time::timeout_at(deadline, upstream::read_body(resp)).await else {
            return Err(missed(deadline));
        };
        let body = body?;
        if !(200..300).contains(&status) {
            return Err(upstream::classify_error(dep.kind, status, &headers, &body));
        }
        return Ok(Reply::Full(Answer {
            response: upstream::parse_success(dep, body, schema_tool)?,
            rate_limits,
            first_token: None,
        }));
    }
    let mut body = resp.into_body();
    let mut decoder = SseDecoder::new();
    let mut asm = Assembler::new(dep);
    let mut first_token = None;
    let mut read = 0usize;
    let ended = loop {
        let until = match first_token {
            None => first_by,
            Some(_) => (Instant::now() + limits.inter_token).min(deadline),
        };
        let next = match tokio::time::timeout_at(until, transport::next_chunk(&mut body)).await {
            Ok(next) => next,
            Err(_) if first_token.is_none() || until >= deadline => break Err(missed(until)),
            Err(_) => {
                break Err(transport_failure(
                    TransportError::InterTokenTimeout,
                    &format!("no token for {} ms", limits.inter_token.as_millis()),
                ))
            }
        };
        let bytes = match next {
            None if asm.done => break Ok(()),
            None => {
                break Err(transport_failure(
                    TransportError::BodyCut,
                    "stream cut before its end event",
                ))
            }
            Some(Err(e)) => {
                break Err(transport_failure(
                    TransportError::BodyCut,
                    &format!("stream broke: {}", transport::chain(&e)),
                ))
            }
            Some(Ok(bytes)) => bytes,
        };
        read += bytes.len();
        if read > upstream::MAX_UPSTREAM_BODY {
            break Err(transport_failure(
                TransportError::BodyCut,
                "upstream stream larger than 32 MiB",
            ));
        }
        if let Err(e) = decoder.push_with(&bytes, |name, data| asm.on_event(name, data)) {
            break Err(transport_failure(
                TransportError::BodyCut,
                &format!("bad SSE from upstream: {e}"),
            ));
        }
        if let Some(c) = asm.failed.take() {
            break Err(c);
        }
        if first_token.is_none() && asm.token {
            first_token = Some(sent.elapsed());
        }
    };
    if let Err(failure) = ended {
        // Cut after text came: the next attempt continues that text.
        return match (first_token, asm.partial_text()) {
            (Some(_), Some(text)) => Ok(Reply::Cut(Box::new(Cut {
                failure,
                text,
                first_token,
            }))),
            _ => Err(failure),
        };
    }
    let response = upstream::parse_success(dep, asm.finish()?, schema_tool)?;
    metrics.upstream_streamed(di);
    Ok(Reply::Full(Answer {
        response,
        rate_limits,
        first_token,
    }))
}

/// Builds a whole answer from a stream's events, in the provider's own
/// non-streaming shape.
pub(crate) struct Assembler {
    kind: Kinds,
    /// A token (text, a tool call, a refusal, a finish) has come.
    pub(crate) token: bool,
    /// The stream's end event has come.
    pub(crate) done: bool,
    /// The first failure (an error event, an unreadable event).
    pub(crate) failed: Option<Classification>,
}

enum Kinds {
    OpenAi(Box<OpenAiSoFar>),
    Anthropic(Box<AnthropicSoFar>),
}

impl Assembler {
    pub(crate) fn new(dep: &Deployment) -> Assembler {
        Assembler {
            kind: match dep.kind {
                ProviderKind::Anthropic => Kinds::Anthropic(Box::default()),
                // OpenAI's wire (see `attempt::streams_upstream`).
                _ => Kinds::OpenAi(Box::default()),
            },
            token: false,
            done: false,
            failed: None,
        }
    }

    /// Takes one SSE event (its name and data).
    pub(crate) fn on_event(&mut self, name: Option<&str>, data: &str) {
        if self.failed.is_some() || self.done {
            return;
        }
        let r = match &mut self.kind {
            Kinds::OpenAi(a) => a.on_event(data),
            Kinds::Anthropic(a) => a.on_event(name, data),
        };
        match r {
            Ok(Event::Token) => self.token = true,
            Ok(Event::End) => self.done = true,
            Ok(Event::Other) => {}
            Err(c) => self.failed = Some(c),
        }
    }

    /// The answer's text so far, when that is all it holds: one choice
    /// (or one text block), no tool call, no refusal. What a continuation
    /// can go on from.
    pub(crate) fn partial_text(&self) -> Option<String> {
        let text = match &self.kind {
            Kinds::OpenAi(a) => match a.choices.as_slice() {
                [c] if c.calls.is_empty() && c.refusal.is_none() => c.text.as_str(),
                _ => return None,
            },
            Kinds::Anthropic(a) => match a.blocks.as_slice() {
                [(ContentBlock::Text { text, .. }, _)] => text.as_str(),
                _ => return None,
            },
        };
        (!text.is_empty()).then(|| text.to_owned())
    }

    /// The answer's bytes, as the provider's non-streaming answer.
    pub(crate) fn finish(self) -> Result<Bytes, Classification> {
        match self.kind {
            Kinds::OpenAi(a) => a.finish().map(Bytes::from),
            Kinds::Anthropic(a) => {
                let value = a.finish()?;
                serde_json::to_vec(&value)
                    .map(Bytes::from)
                    .map_err(|e| unreadable(&e.to_string()))
            }
        }
    }
}

/// What one event did.
enum Event {
    Token,
    End,
    Other,
}

fn unreadable(why: &str) -> Classification {
    transport_failure(
        TransportError::BodyCut,
        &format!("unreadable stream event: {why}"),
    )
}

/// An OpenAI answer as far as its chunks have come. Chunks are read with
/// the pass-through pump's byte scanner ([`ChunkView`]), and a token chunk
/// that repeats the last one but for its text ([`same_but_text`], the
/// usual case) is not read again: its text is appended as it lies in the
/// bytes. The answer is written from the chunks' own bytes at the end.
#[derive(Default)]
struct OpenAiSoFar {
    /// The first chunk's JSON: the answer takes its top-level members
    /// (id, created, model, system fingerprint, service tier...).
    head: Option<String>,
    choices: Vec<OpenAiChoice>,
    usage: Option<Usage>,
    /// The last chunk that carried only text: its JSON, where the text
    /// lies in it, and its choice's index.
    template: Option<(String, Range<usize>, usize)>,
}

#[derive(Default)]
struct OpenAiChoice {
    text: String,
    refusal: Option<String>,
    calls: Vec<CallSoFar>,
    finish: Option<String>,
    /// Logprobs of the content and of the refusal (`None`: none came).
    logprobs: Option<(Vec<Value>, Vec<Value>)>,
}

#[derive(Default)]
struct CallSoFar {
    id: String,
    kind: Option<String>,
    name: String,
    arguments: String,
}

/// Most choices and tool calls an assembled answer holds (a hostile
/// upstream cannot make Keel allocate for an index of 4 billion).
const MAX_INDEX: usize = 128;

impl OpenAiSoFar {
    fn on_event(&mut self, data: &str) -> Result<Event, Classification> {
        let mut buffer = String::new();
        if let Some((json, text, i)) = self.template.take() {
            if let Some(at) = same_but_text(json.as_bytes(), text, data) {
                let new = &data[at.clone()];
                self.choices[i].text.push_str(new);
                let token = !new.is_empty();
                buffer = json;
                buffer.clear();
                buffer.push_str(data);
                self.template = Some((buffer, at, i));
                return Ok(if token { Event::Token } else { Event::Other });
            }
            buffer = json;
        }
        let trimmed = data.trim();
        if trimmed == "[DONE]" {
            return Ok(Event::End);
        }
        if trimmed.starts_with("{\"error\"") {
            return Err(crate::stream::in_stream_error(500, trimmed));
        }
        let view = ChunkView::parse_str(data).map_err(|e| unreadable(&e.to_string()))?;
        if view.usage.is_some() {
            self.usage.clone_from(&view.usage);
        }
        // The chunk parsed in full, once, when a choice has logprobs.
        let mut whole: Option<Value> = None;
        for (k, c) in view.choices.iter().enumerate() {
            let so_far = self.choice(c.index)?;
            if let Some(t) = &c.delta.content {
                so_far.text.push_str(t);
            }
            if let Some(r) = &c.delta.refusal {
                so_far.refusal.get_or_insert_with(String::new).push_str(r);
            }
            for d in c.delta.tool_calls.iter().flatten() {
                so_far.tool_call(d)?;
            }
            if c.logprobs {
                let v = match &mut whole {
                    Some(v) => v,
                    None => whole.insert(
                        serde_json::from_str(data).map_err(|e| unreadable(&e.to_string()))?,
                    ),
                };
                let lp = &v["choices"][k]["logprobs"];
                let (content, refusal) = so_far.logprobs.get_or_insert_with(Default::default);
                let items = |k: &str| lp.get(k).and_then(Value::as_array).into_iter().flatten();
                content.extend(items("content").cloned());
                refusal.extend(items("refusal").cloned());
            }
            if let Some(f) = &c.finish_reason {
                so_far.finish = Some(f.to_string());
            }
        }
        // A chunk of text only may be the template of the next.
        if let ([only], None) = (view.choices.as_slice(), &view.usage) {
            let d = &only.delta;
            let plain = d.role.is_none()
                && d.tool_calls.is_none()
                && d.refusal.is_none()
                && only.finish_reason.is_none()
                && !only.logprobs;
            if let (true, Some(at)) = (plain, d.content.as_deref().and_then(|t| view.span(t))) {
                buffer.clear();
                buffer.push_str(data);
                self.template = Some((buffer, at, only.index as usize));
            }
        }
        if self.head.is_none() {
            self.head = Some(data.to_owned());
        }
        Ok(if view.has_payload() {
            Event::Token
        } else {
            Event::Other
        })
    }

    /// The choice at `index`, made when it is new.
    fn choice(&mut self, index: u32) -> Result<&mut OpenAiChoice, Classification> {
        let i = index as usize;
        if i >= MAX_INDEX {
            return Err(unreadable("choice index out of range"));
        }
        if self.choices.len() <= i {
            self.choices.resize_with(i + 1, Default::default);
        }
        Ok(&mut self.choices[i])
    }

    /// OpenAI's `chat.completion` for what came: the first chunk's
    /// members as they came (its `object` and `choices` replaced, its
    /// `obfuscation` dropped), the choices and the usage.
    fn finish(self) -> Result<Vec<u8>, Classification> {
        let Some(head) = self.head else {
            return Err(unreadable("the stream held no chunk"));
        };
        let text: usize = self.choices.iter().map(|c| c.text.len()).sum();
        let mut out = Vec::with_capacity(head.len() + text + 256 * self.choices.len());
        let members = head_members(&head)?;
        let raw = |key: &[u8]| {
            let mut found = members.iter().filter(|(k, _)| k.as_ref() == key);
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Some(v.as_ref()),
                _ => None,
            }
        };
        let needed = |key| raw(key).ok_or_else(|| unreadable("the first chunk's id or model"));
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(needed(b"id")?);
        out.extend_from_slice(b",\"object\":\"chat.completion\"");
        if let Some(created) = raw(b"created") {
            out.extend_from_slice(b",\"created\":");
            out.extend_from_slice(created);
        }
        out.extend_from_slice(b",\"model\":");
        out.extend_from_slice(needed(b"model")?);
        out.extend_from_slice(b",\"choices\":[");
        for (i, c) in self.choices.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            c.write(i, &mut out)?;
        }
        out.push(b']');
        if let Some(u) = &self.usage {
            out.extend_from_slice(b",\"usage\":");
            write_json(&mut out, u)?;
        }
        // The chunk's other members, which the answer carries too; not a
        // chunk's own (`obfuscation`).
        for (key, value) in &members {
            if !matches!(
                key.as_ref(),
                b"id" | b"object" | b"created" | b"model" | b"choices" | b"usage" | b"obfuscation"
            ) {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(key);
                out.extend_from_slice(b"\":");
                out.extend_from_slice(value);
            }
        }
        out.push(b'}');
        Ok(out)
    }
}

impl OpenAiChoice {
    /// Adds the tool-call fragment `d`.
    fn tool_call(&mut self, d: &ToolCallDelta) -> Result<(), Classification> {
        let j = d.index as usize;
        if j >= MAX_INDEX {
            return Err(unreadable("tool call index out of range"));
        }
        if self.calls.len() <= j {
            self.calls.resize_with(j + 1, Default::default);
        }
        let call = &mut self.calls[j];
        if let Some(id) = &d.id {
            call.id.clone_from(id);
        }
        if d.r#type.is_some() {
            call.kind.clone_from(&d.r#type);
        }
        if let Some(f) = &d.function {
            call.name.push_str(f.name.as_deref().unwrap_or(""));
            call.arguments
                .push_str(f.arguments.as_deref().unwrap_or(""));
        }
        Ok(())
    }

    /// Writes the choice, as `choices[i]` of a `chat.completion`.
    fn write(self, i: usize, out: &mut Vec<u8>) -> Result<(), Classification> {
        let calls: Vec<Value> = self
            .calls
            .into_iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "type": t.kind.unwrap_or_else(|| "function".into()),
                    "function": {"name": t.name, "arguments": t.arguments},
                })
            })
            .collect();
        // OpenAI leaves the content null beside a refusal or tool calls.
        let content = match (self.text.is_empty(), &self.refusal, calls.is_empty()) {
            (true, Some(_), _) | (true, _, false) => None,
            _ => Some(&self.text),
        };
        out.extend_from_slice(b"{\"index\":");
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(b",\"message\":{\"role\":\"assistant\",\"content\":");
        write_json(out, &content)?;
        out.extend_from_slice(b",\"refusal\":");
        write_json(out, &self.refusal)?;
        out.extend_from_slice(b",\"annotations\":[]");
        if !calls.is_empty() {
            out.extend_from_slice(b",\"tool_calls\":");
            write_json(out, &calls)?;
        }
        out.extend_from_slice(b"},\"logprobs\":");
        match self.logprobs {
            None => out.extend_from_slice(b"null"),
            Some((content, refusal)) => write_json(
                out,
                &json!({
                    "content": (!content.is_empty()).then_some(content),
                    "refusal": (!refusal.is_empty()).then_some(refusal),
                }),
            )?,
        }
        out.extend_from_slice(b",\"finish_reason\":");
        write_json(out, &self.finish)?;
        out.push(b'}');
        Ok(())
    }
}

/// A member of a JSON object: its key's text and its value's JSON.
type Member<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The top-level members of a chunk's JSON `head`: each key's text as
/// it lies between its quotes, and its value's JSON. Read in place, or
/// (a key with escapes) through serde.
fn head_members(head: &str) -> Result<Vec<Member<'_>>, Classification> {
    if let Some(o) = Object::parse(head.as_bytes()) {
        return Ok(o
            .members()
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect());
    }
    let map: Map<String, Value> =
        serde_json::from_str(head).map_err(|e| unreadable(&e.to_string()))?;
    map.into_iter()
        .map(|(k, v)| {
            let key = serde_json::to_vec(&k).map_err(|e| unreadable(&e.to_string()))?;
            let value = serde_json::to_vec(&v).map_err(|e| unreadable(&e.to_string()))?;
            // The key's JSON without its quotes.
            Ok((
                Cow::Owned(key[1..key.len() - 1].to_vec()),
                Cow::Owned(value),
            ))
        })
        .collect()
}

/// Appends `value`'s JSON to `out`.
fn write_json(out: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), Classification> {
    serde_json::to_writer(out, value).map_err(|e| unreadable(&e.to_string()))
}

/// An Anthropic message as far as its events have come. Text deltas, the
/// bulk of a stream, are read from their bytes ([`TextDelta`]), and one
/// that repeats the last but for its text ([`same_but_text`]) is not read
/// again; other events are read with serde.
#[derive(Default)]
struct AnthropicSoFar {
    message: Option<MessagesResponse>,
    /// The content blocks, with the tool-use input's JSON as it came.
    blocks: Vec<(ContentBlock, String)>,
    /// The last text delta: its JSON, where its text lies, and its block.
    template: Option<(String, Range<usize>, usize)>,
}

impl AnthropicSoFar {
    fn on_event(&mut self, name: Option<&str>, data: &str) -> Result<Event, Classification> {
        if matches!(name, None | Some("content_block_delta")) {
            if let Some(event) = self.text_delta(data)? {
                return Ok(event);
            }
        }
        self.template = None;
        if name == Some("error") {
            let status = if data.contains("overloaded_error") {
                529
            } else {
                500
            };
            return Err(crate::stream::in_stream_error(status, data));
        }
        let ev: StreamEvent = serde_json::from_str(data).map_err(|e| unreadable(&e.to_string()))?;
        Ok(match ev {
            StreamEvent::MessageStart { message } => {
                self.message = Some(message);
                Event::Other
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let i = index as usize;
                if i >= MAX_INDEX {
                    return Err(unreadable("content block index out of range"));
                }
                let tool = matches!(content_block, ContentBlock::ToolUse { .. });
                if self.blocks.len() <= i {
                    self.blocks
                        .resize_with(i + 1, || (ContentBlock::text(""), String::new()));
                }
                self.blocks[i] = (content_block, String::new());
                if tool {
                    Event::Token
                } else {
                    Event::Other
                }
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let Some((block, json)) = self.blocks.get_mut(index as usize) else {
                    return Err(unreadable("a delta for a block that never started"));
                };
                match (block, delta) {
                    (ContentBlock::Text { text, .. }, BlockDelta::TextDelta { text: t }) => {
                        text.push_str(&t)
                    }
                    (ContentBlock::ToolUse { .. }, BlockDelta::InputJsonDelta { partial_json }) => {
                        json.push_str(&partial_json)
                    }
                    (
                        ContentBlock::Thinking { thinking, .. },
                        BlockDelta::ThinkingDelta { thinking: t },
                    ) => thinking.push_str(&t),
                    (
                        ContentBlock::Thinking { signature, .. },
                        BlockDelta::SignatureDelta { signature: s },
                    ) => signature.get_or_insert_with(String::new).push_str(&s),
                    _ => {}
                }
                Event::Token
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Other(_) => {
                Event::Other
            }
            StreamEvent::MessageDelta { delta, usage } => {
                let Some(m) = self.message.as_mut() else {
                    return Err(unreadable("message_delta before message_start"));
                };
                if delta.stop_reason.is_some() {
                    m.stop_reason = delta.stop_reason;
                }
                m.stop_sequence = delta.stop_sequence;
                m.usage.output_tokens = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    m.usage.input_tokens = n;
                }
                if usage.cache_creation_input_tokens.is_some() {
                    m.usage.cache_creation_input_tokens = usage.cache_creation_input_tokens;
                }
                if usage.cache_read_input_tokens.is_some() {
                    m.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
                }
                Event::Token
            }
            StreamEvent::MessageStop => Event::End,
            StreamEvent::Error { error } => {
                return Err(crate::stream::in_stream_error(
                    500,
                    &serde_json::to_string(&error).unwrap_or_default(),
                ))
            }
        })
    }

    /// Adds `data` if it is a text delta; `None` when it is another event.
    fn text_delta(&mut self, data: &str) -> Result<Option<Event>, Classification> {
        let mut buffer = String::new();
        if let Some((json, text, i)) = self.template.take() {
            if let Some(at) = same_but_text(json.as_bytes(), text, data) {
                self.push_text(i, &data[at.clone()])?;
                buffer = json;
                buffer.clear();
                buffer.push_str(data);
                self.template = Some((buffer, at, i));
                return Ok(Some(Event::Token));
            }
            buffer = json;
        }
        let Some(delta) = TextDelta::read(data) else {
            return Ok(None);
        };
        let i = delta.index as usize;
        self.push_text(i, &delta.text)?;
        if let Some(at) = delta.span(data) {
            buffer.clear();
            buffer.push_str(data);
            self.template = Some((buffer, at, i));
        }
        Ok(Some(Event::Token))
    }

    /// Appends `text` to block `i`, a text block.
    fn push_text(&mut self, i: usize, text: &str) -> Result<(), Classification> {
        match self.blocks.get_mut(i) {
            Some((ContentBlock::Text { text: t, .. }, _)) => {
                t.push_str(text);
                Ok(())
            }
            // As the full read does: a text delta to another block adds nothing.
            Some(_) => Ok(()),
            None => Err(unreadable("a delta for a block that never started")),
        }
    }

    /// Anthropic's `message` for what came.
    fn finish(self) -> Result<Value, Classification> {
        let Some(mut m) = self.message else {
            return Err(unreadable("the stream held no message_start"));
        };
        m.content = self
            .blocks
            .into_iter()
            .map(|(mut block, json)| {
                if let ContentBlock::ToolUse { input, .. } = &mut block {
                    // As a non-streaming answer carries it: parsed (an
                    // empty input is `{}`).
                    *input = match json.trim() {
                        "" => json!({}),
                        text => serde_json::from_str(text).unwrap_or_else(|_| json!({})),
                    };
                }
                block
            })
            .collect();
        let mut v = serde_json::to_value(m).map_err(|e| unreadable(&e.to_string()))?;
        if let Value::Object(o) = &mut v {
            o.entry("stop_sequence").or_insert(Value::Null);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn assemble(kind: &str, events: &[(Option<&str>, &str)]) -> Value {
        let text = format!(
            "[providers.p]\nkind = \"{kind}\"\nbase_url = \"http://x/v1\"\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n"
        );
        let config = crate::config::Config::from_toml_str(&text, "t.toml", &|_| None).unwrap();
        let mut a = Assembler::new(&config.deployments[0]);
        for (name, data) in events {
            a.on_event(*name, data);
        }
        assert!(a.failed.is_none() && a.done && a.token);
        serde_json::from_slice(&a.finish().unwrap()).unwrap()
    }

    /// An OpenAI stream assembles into the `chat.completion` OpenAI sends
    /// for the same answer: text, tool calls (arguments joined), the
    /// refusal and content as OpenAI sets them, logprobs joined, usage and
    /// the chunk's top-level fields.
    #[test]
    fn openai_chunks_assemble_into_the_plain_answer() {
        let head = r#""id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt","service_tier":"default","system_fingerprint":"fp","obfuscation":"x""#;
        let chunk = |rest: &str| format!("{{{head},{rest}}}");
        let events = [
            chunk(
                r#""choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":{"content":[{"token":"","logprob":0}],"refusal":null},"finish_reason":null}]"#,
            ),
            chunk(
                r#""choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-1}]},"finish_reason":null}]"#,
            ),
            chunk(
                r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]"#,
            ),
            chunk(
                r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]"#,
            ),
            chunk(
                r#""choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":null}]"#,
            ),
            chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#),
            chunk(
                r#""choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}"#,
            ),
            "[DONE]".to_string(),
        ];
        let events: Vec<_> = events.iter().map(|e| (None, e.as_str())).collect();
        let v = assemble("openai", &events);
        assert_eq!(
            v,
            json!({
                "id": "c1", "object": "chat.completion", "created": 7, "model": "gpt",
                "service_tier": "default", "system_fingerprint": "fp",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant", "content": "Hi", "refusal": null, "annotations": [],
                        "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\":1}"}}]
                    },
                    "logprobs": {"content": [{"token":"","logprob":0},{"token":"Hi","logprob":-1}], "refusal": null},
                    "finish_reason": "tool_calls"
                }],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            })
        );
        // A refusal leaves the content null.
        let refusal = [
            chunk(
                r#""choices":[{"index":0,"delta":{"role":"assistant","refusal":"No."},"finish_reason":null}]"#,
            ),
            chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]"#),
            "[DONE]".to_string(),
        ];
        let events: Vec<_> = refusal.iter().map(|e| (None, e.as_str())).collect();
        let v = assemble("openai", &events);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["message"]["refusal"], "No.");
        assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    }

    /// Token chunks that repeat the last one but for their text are
    /// appended without being read again; a chunk that differs otherwise
    /// (an escape in its text, another id, a finish) is read in full, and
    /// the text comes out the same either way. Members of the first chunk
    /// the answer does not set pass as they came, escaped keys included.
    #[test]
    fn repeated_token_chunks_join_to_the_same_text() {
        let chunk = |id: &str, text: &str| {
            format!(
                r#"{{"id":"{id}","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]}}"#,
                serde_json::to_string(text).unwrap()
            )
        };
        let events = [
            r#"{"id":"c","object":"chat.completion.chunk","model":"m","x\"y":{"z":[1]},"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#.to_string(),
            chunk("c", "Hel"),
            chunk("c", "lo"),
            chunk("c", ", \"w\"\n"),
            chunk("c", "é!"),
            chunk("c", ""),
            chunk("d", " more"),
            chunk("d", " text"),
            r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_string(),
            "[DONE]".to_string(),
        ];
        let events: Vec<_> = events.iter().map(|e| (None, e.as_str())).collect();
        let v = assemble("openai", &events);
        assert_eq!(
            v,
            json!({
                "id": "c", "object": "chat.completion", "model": "m", "x\"y": {"z": [1]},
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello, \"w\"\né! more text",
                        "refusal": null, "annotations": []},
                    "logprobs": null,
                    "finish_reason": "stop"
                }]
            })
        );
    }

    /// The shortcut is taken: after a text chunk, the next one that
    /// differs only in its text is appended from where its text lies, and
    /// an escape in it makes the chunk be read in full instead.
    #[test]
    fn a_text_chunk_is_the_template_of_the_next() {
        let text = "[providers.p]\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n";
        let config = crate::config::Config::from_toml_str(text, "t.toml", &|_| None).unwrap();
        let mut a = Assembler::new(&config.deployments[0]);
        let chunk = |t: &str| {
            format!(r#"{{"id":"c","model":"m","choices":[{{"delta":{{"content":"{t}"}}}}]}}"#)
        };
        let template = |a: &Assembler| match &a.kind {
            Kinds::OpenAi(o) => o
                .template
                .as_ref()
                .map(|(json, at, _)| json[at.clone()].to_string()),
            Kinds::Anthropic(_) => None,
        };
        a.on_event(None, &chunk("a"));
        assert_eq!(template(&a).as_deref(), Some("a"));
        a.on_event(None, &chunk("bc"));
        assert_eq!(template(&a).as_deref(), Some("bc"));
        a.on_event(None, &chunk("d\\n"));
        assert_eq!(template(&a), None);
        a.on_event(None, &chunk("e"));
        assert_eq!(template(&a).as_deref(), Some("e"));
        match &a.kind {
            Kinds::OpenAi(o) => assert_eq!(o.choices[0].text, "abcd\ne"),
            Kinds::Anthropic(_) => panic!("an OpenAI deployment"),
        }
    }

    /// An Anthropic stream assembles into the `message` Anthropic sends:
    /// blocks with their text and parsed tool input, the stop reason and
    /// sequence, and usage with the output tokens of `message_delta`.
    #[test]
    fn anthropic_events_assemble_into_the_plain_message() {
        let events = [
            (
                Some("message_start"),
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}"#,
            ),
            (
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (Some("ping"), r#"{"type": "ping"}"#),
            (
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            ),
            (
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
            ),
            (
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
            ),
            (
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": "}}"#,
            ),
            (
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
            ),
            (
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                Some("message_delta"),
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}"#,
            ),
            (Some("message_stop"), r#"{"type":"message_stop"}"#),
        ];
        let v = assemble("anthropic", &events);
        assert_eq!(
            v,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 4, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0, "output_tokens": 9, "service_tier": "standard"}
            })
        );
    }

    /// Anthropic text deltas are read from their bytes, and one that
    /// repeats the last but for its text is appended without a read; an
    /// escape is read in full and comes out the same.
    #[test]
    fn anthropic_text_deltas_take_the_shortcut() {
        let text = "[providers.p]\nkind = \"anthropic\"\nbase_url = \"http://x/v1\"\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n";
        let config = crate::config::Config::from_toml_str(text, "t.toml", &|_| None).unwrap();
        let mut a = Assembler::new(&config.deployments[0]);
        a.on_event(
            Some("message_start"),
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"c","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}"#,
        );
        a.on_event(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        );
        let delta = |t: &str| {
            format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                serde_json::to_string(t).unwrap()
            )
        };
        let template = |a: &Assembler| match &a.kind {
            Kinds::Anthropic(o) => o
                .template
                .as_ref()
                .map(|(json, at, _)| json[at.clone()].to_string()),
            Kinds::OpenAi(_) => None,
        };
        for (t, then) in [
            ("a", Some("a")),
            ("bc", Some("bc")),
            ("d\n", None),
            ("é", Some("é")),
        ] {
            a.on_event(Some("content_block_delta"), &delta(t));
            assert_eq!(template(&a).as_deref(), then, "{t}");
        }
        // A delta to a block that never started is a failure, as in the full read.
        a.on_event(
            Some("content_block_delta"),
            r#"{"type":"content_block_delta","index":5,"delta":{"type":"text_delta","text":"x"}}"#,
        );
        assert!(a.failed.is_some());
        match &a.kind {
            Kinds::Anthropic(o) => assert!(
                matches!(&o.blocks[0].0, ContentBlock::Text { text, .. } if text == "abcd\né")
            ),
            Kinds::OpenAi(_) => panic!("an Anthropic deployment"),
        }
    }

    /// An error event fails the attempt; a stream with no chunk is no answer.
    #[test]
    fn error_events_and_empty_streams_are_failures() {
        let text = "[providers.p]\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n[deployments.d]\nprovider = \"p\"\nmodel = \"m\"\n[routes.r]\nchain = [\"d\"]\n";
        let config = crate::config::Config::from_toml_str(text, "t.toml", &|_| None).unwrap();
        let mut a = Assembler::new(&config.deployments[0]);
        a.on_event(
            None,
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        );
        assert!(a.failed.is_some());
        let mut a = Assembler::new(&config.deployments[0]);
        a.on_event(None, "[DONE]");
        assert!(a.done && !a.token);
        assert!(a.finish().is_err());
    }
}
