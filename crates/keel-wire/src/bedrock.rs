//! AWS Bedrock Runtime's Converse API, both ways, through Anthropic
//! Messages.
//!
//! **Why through Anthropic.** Converse is Messages in other words: the same
//! roles, a system prompt beside the messages, content blocks for text,
//! images, tool use and tool results, the same stop reasons and a stream of
//! block starts, deltas and stops. Keel already turns its canonical
//! (OpenAI-shaped) requests into Messages and Messages answers and streams
//! back, structured output by a forced tool included; a Bedrock deployment
//! goes one step further, Messages to Converse and back, and every rule of
//! that translation (tool indexes, the JSON-schema tool, usage) stays in one
//! place.
//!
//! ConverseStream is not SSE: it is AWS's binary event-stream framing
//! (`application/vnd.amazon.eventstream`), decoded here with
//! `aws-smithy-eventstream` ([`ConverseStreamReader`]).

use std::collections::HashSet;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::anthropic::{
    AContent, ARole, AUsage, BlockDelta, ContentBlock, DeltaUsage, Extra, ImageSource,
    MessageDeltaBody, MessagesRequest, MessagesResponse, StreamEvent, System,
};

/// The path of a Converse call for `model` (`/model/{modelId}/converse` or
/// `/converse-stream`), the model id percent-encoded as one path segment:
/// `anthropic.claude-3-5-sonnet-20240620-v1:0` is sent as
/// `anthropic.claude-3-5-sonnet-20240620-v1%3A0`, and an ARN's `/` as `%2F`.
///
/// ```
/// assert_eq!(
///     keel_wire::bedrock::converse_path("anthropic.claude-3-5-sonnet-20240620-v1:0", true),
///     "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
/// );
/// ```
pub fn converse_path(model: &str, stream: bool) -> String {
    let mut path = String::from("/model/");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path.push_str(if stream {
        "/converse-stream"
    } else {
        "/converse"
    });
    path
}

/// The Converse request body for a Messages request (its `model` and
/// `stream` are not part of the body: the model is in the path, streaming
/// is the other path). An error names what Converse cannot carry.
pub fn converse_request(req: &MessagesRequest) -> Result<Value, String> {
    let mut body = Map::new();
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role {
            ARole::User => "user",
            ARole::Assistant => "assistant",
        };
        messages.push(json!({"role": role, "content": content_blocks(&m.content)?}));
    }
    body.insert("messages".into(), Value::Array(messages));
    match &req.system {
        None => {}
        Some(System::Text(t)) if t.is_empty() => {}
        Some(System::Text(t)) => {
            body.insert("system".into(), json!([{ "text": t }]));
        }
        Some(System::Blocks(blocks)) => {
            let mut system = Vec::new();
            for b in blocks {
                match b {
                    ContentBlock::Text { text, .. } => system.push(json!({ "text": text })),
                    other => {
                        return Err(format!(
                            "a system block of type {:?} (Bedrock takes text)",
                            other.type_name()
                        ))
                    }
                }
            }
            body.insert("system".into(), Value::Array(system));
        }
    }
    let mut inference = Map::new();
    inference.insert("maxTokens".into(), req.max_tokens.into());
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), p.into());
    }
    if let Some(stop) = req.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        inference.insert("stopSequences".into(), json!(stop));
    }
    body.insert("inferenceConfig".into(), Value::Object(inference));
    if let Some(k) = req.top_k {
        // Not a Converse field: the model's own, passed through.
        body.insert("additionalModelRequestFields".into(), json!({ "top_k": k }));
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        let specs: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), t.name.clone().into());
                if let Some(d) = t.description.as_ref().filter(|d| !d.is_empty()) {
                    spec.insert("description".into(), d.clone().into());
                }
                let schema = match &t.input_schema {
                    Value::Null => json!({"type": "object"}),
                    s => s.clone(),
                };
                spec.insert("inputSchema".into(), json!({ "json": schema }));
                json!({ "toolSpec": spec })
            })
            .collect();
        let mut config = Map::new();
        config.insert("tools".into(), Value::Array(specs));
        let choice = req.tool_choice.as_ref();
        match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
            Some("any") => {
                config.insert("toolChoice".into(), json!({"any": {}}));
            }
            Some("tool") => {
                let name = choice
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .ok_or("tool_choice of type tool without a name")?;
                config.insert("toolChoice".into(), json!({"tool": {"name": name}}));
            }
            Some("auto") => {
                config.insert("toolChoice".into(), json!({"auto": {}}));
            }
            // `none` has no Converse form: the tools stay described (a
            // conversation holding tool calls needs them) and the model
            // chooses.
            _ => {}
        }
        body.insert("toolConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(body))
}

/// The Converse blocks of a message's content.
fn content_blocks(content: &AContent) -> Result<Vec<Value>, String> {
    match content {
        AContent::Text(t) => Ok(vec![json!({ "text": t })]),
        AContent::Blocks(blocks) => blocks.iter().map(block).collect(),
    }
}

/// `image/png` -> `png`, the format Converse names.
fn image_block(source: &ImageSource) -> Result<Value, String> {
    match source {
        ImageSource::Base64 { media_type, data } => {
            let format = media_type
                .strip_prefix("image/")
                .map(|f| if f == "jpg" { "jpeg" } else { f })
                .filter(|f| matches!(*f, "png" | "jpeg" | "gif" | "webp"))
                .ok_or_else(|| {
                    format!(
                        "an image of type {media_type:?} (Bedrock takes png, jpeg, gif or webp)"
                    )
                })?;
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        ImageSource::Url { .. } => {
            Err("an image by URL (Bedrock takes images as base64 data, not URLs)".into())
        }
        ImageSource::Other(_) => Err("an image source Bedrock does not take".into()),
    }
}

fn block(b: &ContentBlock) -> Result<Value, String> {
    Ok(match b {
        ContentBlock::Text { text, .. } => json!({ "text": text }),
        ContentBlock::Image { source, .. } => image_block(source)?,
        ContentBlock::ToolUse {
            id, name, input, ..
        } => json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}),
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
            ..
        } => {
            let inner = match content {
                None => vec![json!({"text": ""})],
                Some(AContent::Text(t)) => vec![json!({ "text": t })],
                Some(AContent::Blocks(blocks)) => blocks
                    .iter()
                    .map(|b| match b {
                        ContentBlock::Text { text, .. } => Ok(json!({ "text": text })),
                        ContentBlock::Image { source, .. } => image_block(source),
                        other => Err(format!(
                            "a tool result block of type {:?}",
                            other.type_name()
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            };
            let status = if *is_error == Some(true) {
                "error"
            } else {
                "success"
            };
            json!({"toolResult": {"toolUseId": tool_use_id, "content": inner, "status": status}})
        }
        ContentBlock::Thinking {
            thinking,
            signature,
            ..
        } => {
            let mut text = json!({ "text": thinking });
            if let Some(s) = signature {
                text["signature"] = s.clone().into();
            }
            json!({"reasoningContent": {"reasoningText": text}})
        }
        ContentBlock::RedactedThinking { data, .. } => {
            json!({"reasoningContent": {"redactedContent": data}})
        }
        ContentBlock::Other(v) => {
            return Err(format!(
                "a content block of type {:?} (Bedrock's Converse does not take it)",
                v.get("type").and_then(Value::as_str).unwrap_or("unknown")
            ))
        }
    })
}

/// The Messages stop reason of a Converse `stopReason`: a guardrail or
/// content filter is a refusal (Keel's content-filtered class).
pub fn stop_reason(converse: &str) -> &'static str {
    match converse {
        "max_tokens" => "max_tokens",
        "tool_use" => "tool_use",
        "stop_sequence" => "stop_sequence",
        "guardrail_intervened" | "content_filtered" => "refusal",
        "model_context_window_exceeded" => "model_context_window_exceeded",
        _ => "end_turn",
    }
}

fn u32_of(v: Option<&Value>) -> u32 {
    v.and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn usage_of(usage: Option<&Value>) -> AUsage {
    let get = |k: &str| usage.and_then(|u| u.get(k));
    AUsage {
        input_tokens: u32_of(get("inputTokens")),
        output_tokens: u32_of(get("outputTokens")),
        cache_creation_input_tokens: get("cacheWriteInputTokens").map(|v| u32_of(Some(v))),
        cache_read_input_tokens: get("cacheReadInputTokens").map(|v| u32_of(Some(v))),
        extra: Extra::new(),
    }
}

/// An id for an answer that carries none (Converse names answers by the
/// `x-amzn-RequestId` header only): a hash of its bytes.
fn answer_id(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("msg_bdrk_{h:016x}")
}

/// Reads a Converse answer as a Messages answer for `model`.
pub fn read_converse_response(body: &[u8], model: &str) -> Result<MessagesResponse, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let message = v
        .get("output")
        .and_then(|o| o.get("message"))
        .ok_or("no output.message")?;
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or("no output.message.content")?;
    let mut content = Vec::with_capacity(blocks.len());
    for b in blocks {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            content.push(ContentBlock::text(t));
        } else if let Some(t) = b.get("toolUse") {
            let field = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
            content.push(ContentBlock::tool_use(
                field("toolUseId"),
                field("name"),
                t.get("input").cloned().unwrap_or_else(|| json!({})),
            ));
        } else if let Some(r) = b.get("reasoningContent") {
            if let Some(t) = r.get("reasoningText") {
                content.push(ContentBlock::Thinking {
                    thinking: t
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    signature: t
                        .get("signature")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    extra: Extra::new(),
                });
            }
        }
        // Other blocks (citations, documents) are not part of an answer
        // Keel passes on.
    }
    Ok(MessagesResponse {
        id: answer_id(body),
        r#type: "message".into(),
        role: ARole::Assistant,
        model: model.to_owned(),
        content,
        stop_reason: Some(
            stop_reason(v.get("stopReason").and_then(Value::as_str).unwrap_or("")).to_owned(),
        ),
        stop_sequence: None,
        usage: usage_of(v.get("usage")),
        extra: Extra::new(),
    })
}

/// What a ConverseStream frame says, as Keel reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConverseItem {
    /// An event, as the Messages stream event it amounts to (boxed: the
    /// events are large, the exceptions small).
    Event(Box<StreamEvent>),
    /// An exception event (`throttlingException`,
    /// `modelStreamErrorException`, ...): the stream failed there.
    Exception {
        /// The event's `:exception-type` (or `:error-code`).
        kind: String,
        /// Its `message`.
        message: String,
    },
}

/// Decodes a ConverseStream body, fed as its bytes come, into Messages
/// stream events: `messageStart` opens the message, `contentBlockStart`
/// (tool use) and a first `contentBlockDelta` (text, reasoning; Converse
/// sends no start for those) open blocks, `contentBlockStop` closes them,
/// and the stop reason of `messageStop` is given with the usage of the
/// `metadata` event that follows it, which ends the stream.
#[derive(Debug)]
pub struct ConverseStreamReader {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    model: String,
    id: String,
    open: HashSet<u64>,
    stop: Option<String>,
}

impl ConverseStreamReader {
    /// A reader whose message names `model`.
    pub fn new(model: &str) -> Self {
        ConverseStreamReader {
            decoder: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            model: model.to_owned(),
            id: String::new(),
            open: HashSet::new(),
            stop: None,
        }
    }

    /// Decodes what `bytes` complete. An error is a frame that cannot be
    /// read (bad length, checksum or payload).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<ConverseItem>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match self
                .decoder
                .decode_frame(&mut self.buf)
                .map_err(|e| format!("bad event-stream frame: {e}"))?
            {
                DecodedFrame::Complete(message) => self.on_message(&message, &mut out)?,
                DecodedFrame::Incomplete => return Ok(out),
            }
        }
    }

    fn on_message(&mut self, m: &Message, out: &mut Vec<ConverseItem>) -> Result<(), String> {
        let header = |name: &str| {
            m.headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str().to_owned()),
                    _ => None,
                })
        };
        let payload = m.payload();
        let json: Value = if payload.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(payload)
                .map_err(|e| format!("unreadable event-stream payload: {e}"))?
        };
        let message_of = |v: &Value| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match header(":message-type").as_deref() {
            Some("exception") => {
                out.push(ConverseItem::Exception {
                    kind: header(":exception-type").unwrap_or_default(),
                    message: message_of(&json),
                });
                return Ok(());
            }
            Some("error") => {
                out.push(ConverseItem::Exception {
                    kind: header(":error-code").unwrap_or_default(),
                    message: header(":error-message").unwrap_or_default(),
                });
                return Ok(());
            }
            _ => {}
        }
        let event = header(":event-type").unwrap_or_default();
        self.on_event(&event, &json, payload, out);
        Ok(())
    }

    fn on_event(&mut self, event: &str, v: &Value, raw: &[u8], out: &mut Vec<ConverseItem>) {
        let index = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let index32 = u32::try_from(index).unwrap_or(u32::MAX);
        let mut push = |e: StreamEvent| out.push(ConverseItem::Event(Box::new(e)));
        match event {
            "messageStart" => {
                self.id = answer_id(raw);
                push(StreamEvent::MessageStart {
                    message: MessagesResponse {
                        id: self.id.clone(),
                        r#type: "message".into(),
                        role: ARole::Assistant,
                        model: self.model.clone(),
                        content: Vec::new(),
                        stop_reason: None,
                        stop_sequence: None,
                        usage: AUsage::default(),
                        extra: Extra::new(),
                    },
                });
            }
            "contentBlockStart" => {
                if let Some(t) = v.get("start").and_then(|s| s.get("toolUse")) {
                    let field = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or_default();
                    self.open.insert(index);
                    push(StreamEvent::ContentBlockStart {
                        index: index32,
                        content_block: ContentBlock::tool_use(
                            field("toolUseId"),
                            field("name"),
                            json!({}),
                        ),
                    });
                }
            }
            "contentBlockDelta" => {
                let Some(delta) = v.get("delta") else { return };
                let (start, delta) = if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    (
                        ContentBlock::text(""),
                        BlockDelta::TextDelta { text: t.to_owned() },
                    )
                } else if let Some(t) = delta.get("toolUse") {
                    let input = t.get("input").and_then(Value::as_str).unwrap_or_default();
                    (
                        ContentBlock::tool_use("", "", json!({})),
                        BlockDelta::InputJsonDelta {
                            partial_json: input.to_owned(),
                        },
                    )
                } else if let Some(r) = delta.get("reasoningContent") {
                    let thinking = ContentBlock::Thinking {
                        thinking: String::new(),
                        signature: None,
                        extra: Extra::new(),
                    };
                    match (
                        r.get("text").and_then(Value::as_str),
                        r.get("signature").and_then(Value::as_str),
                    ) {
                        (Some(t), _) => (
                            thinking,
                            BlockDelta::ThinkingDelta {
                                thinking: t.to_owned(),
                            },
                        ),
                        (None, Some(s)) => (
                            thinking,
                            BlockDelta::SignatureDelta {
                                signature: s.to_owned(),
                            },
                        ),
                        (None, None) => return,
                    }
                } else {
                    return;
                };
                if self.open.insert(index) {
                    push(StreamEvent::ContentBlockStart {
                        index: index32,
                        content_block: start,
                    });
                }
                push(StreamEvent::ContentBlockDelta {
                    index: index32,
                    delta,
                });
            }
            "contentBlockStop" if self.open.remove(&index) => {
                push(StreamEvent::ContentBlockStop { index: index32 });
            }
            "messageStop" => {
                self.stop = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map(|s| stop_reason(s).to_owned());
            }
            "metadata" => {
                let usage = usage_of(v.get("usage"));
                push(StreamEvent::MessageDelta {
                    delta: MessageDeltaBody {
                        stop_reason: Some(self.stop.take().unwrap_or_else(|| "end_turn".into())),
                        stop_sequence: None,
                        extra: Extra::new(),
                    },
                    usage: DeltaUsage {
                        output_tokens: usage.output_tokens,
                        input_tokens: Some(usage.input_tokens),
                        cache_creation_input_tokens: usage.cache_creation_input_tokens,
                        cache_read_input_tokens: usage.cache_read_input_tokens,
                        extra: Extra::new(),
                    },
                });
                push(StreamEvent::MessageStop);
            }
            // Unknown events are skipped, as AWS's SDKs skip them.
            _ => {}
        }
    }
}
