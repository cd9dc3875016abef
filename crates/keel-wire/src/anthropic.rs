//! Anthropic Messages API wire types.
//!
//! As for the OpenAI types, every struct keeps the fields it does not model in
//! a flattened `extra` map, and the tagged enums (content blocks, image
//! sources, stream events, deltas) have an `Other` variant that keeps a value
//! of a type this crate does not know verbatim: Anthropic documents that new
//! block and event types may appear, and a gateway must pass them through
//! rather than fail.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::openai::Extra;

/// A `POST /v1/messages` request body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// Model (for Keel: the route) the client asked for.
    pub model: String,
    /// The conversation so far, alternating user and assistant.
    pub messages: Vec<AMessage>,
    /// System prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    /// Output-token limit (required by Anthropic).
    pub max_tokens: u32,
    /// Custom stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Whether the answer is streamed as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ATool>>,
    /// `{"type":"auto"|"any"|"none"}` or `{"type":"tool","name":..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Request metadata (`user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Fields Keel does not model (`thinking`, `service_tier`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl MessagesRequest {
    /// A minimal request: model, messages and the output-token limit.
    pub fn new(model: impl Into<String>, messages: Vec<AMessage>, max_tokens: u32) -> Self {
        Self {
            model: model.into(),
            messages,
            system: None,
            max_tokens,
            stop_sequences: None,
            stream: None,
            temperature: None,
            top_p: None,
            top_k: None,
            tools: None,
            tool_choice: None,
            metadata: None,
            extra: Extra::new(),
        }
    }

    /// Whether the client asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether any message (or tool result) carries an image block.
    pub fn has_images(&self) -> bool {
        fn blocks_have_images(blocks: &[ContentBlock]) -> bool {
            blocks.iter().any(|b| match b {
                ContentBlock::Image { .. } => true,
                ContentBlock::ToolResult {
                    content: Some(AContent::Blocks(inner)),
                    ..
                } => blocks_have_images(inner),
                _ => false,
            })
        }
        self.messages.iter().any(|m| match &m.content {
            AContent::Blocks(blocks) => blocks_have_images(blocks),
            AContent::Text(_) => false,
        })
    }

    /// Whether the request declares at least one tool.
    pub fn has_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Number of characters of text in the prompt, for token estimates.
    ///
    /// Counts the system prompt, text blocks, tool inputs and results, and
    /// tool definitions (name, description and serialised input schema).
    pub fn prompt_text_len(&self) -> usize {
        let system = match &self.system {
            Some(System::Text(s)) => s.chars().count(),
            Some(System::Blocks(b)) => blocks_text_len(b),
            None => 0,
        };
        let messages: usize = self.messages.iter().map(|m| m.content.text_len()).sum();
        let tools: usize = self
            .tools
            .iter()
            .flatten()
            .map(|t| {
                t.name.chars().count()
                    + t.description.as_deref().map_or(0, |d| d.chars().count())
                    + t.input_schema.to_string().chars().count()
            })
            .sum();
        system + messages + tools
    }
}

fn blocks_text_len(blocks: &[ContentBlock]) -> usize {
    blocks
        .iter()
        .map(|b| match b {
            ContentBlock::Text { text, .. } => text.chars().count(),
            ContentBlock::ToolUse { name, input, .. } => {
                name.chars().count() + input.to_string().chars().count()
            }
            ContentBlock::ToolResult { content, .. } => {
                content.as_ref().map_or(0, AContent::text_len)
            }
            ContentBlock::Thinking { thinking, .. } => thinking.chars().count(),
            _ => 0,
        })
        .sum()
}

/// The author of an Anthropic message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ARole {
    /// The end user (and tool results).
    User,
    /// The model.
    Assistant,
}

impl ARole {
    /// The role as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ARole::User => "user",
            ARole::Assistant => "assistant",
        }
    }
}

/// One message of an Anthropic conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AMessage {
    /// Who wrote it.
    pub role: ARole,
    /// Its content.
    pub content: AContent,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl AMessage {
    /// A message with plain-text content.
    pub fn text(role: ARole, text: impl Into<String>) -> Self {
        Self {
            role,
            content: AContent::Text(text.into()),
            extra: Extra::new(),
        }
    }

    /// A message made of blocks.
    pub fn blocks(role: ARole, blocks: Vec<ContentBlock>) -> Self {
        Self {
            role,
            content: AContent::Blocks(blocks),
            extra: Extra::new(),
        }
    }
}

/// Message content: a string or a list of blocks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AContent {
    /// Plain text.
    Text(String),
    /// Typed blocks.
    Blocks(Vec<ContentBlock>),
}

/// By hand, not `#[serde(untagged)]`: see `de::string_or_seq`.
impl<'de> Deserialize<'de> for AContent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::de::string_or_seq(
            d,
            "a string or an array of content blocks",
            AContent::Text,
            AContent::Blocks,
        )
    }
}

impl AContent {
    /// The content as blocks (a string becomes one text block).
    pub fn into_blocks(self) -> Vec<ContentBlock> {
        match self {
            AContent::Text(text) => vec![ContentBlock::text(text)],
            AContent::Blocks(blocks) => blocks,
        }
    }

    /// The text of the content: the string, or the text blocks joined with no separator.
    pub fn joined_text(&self) -> String {
        match self {
            AContent::Text(s) => s.clone(),
            AContent::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }

    fn text_len(&self) -> usize {
        match self {
            AContent::Text(s) => s.chars().count(),
            AContent::Blocks(b) => blocks_text_len(b),
        }
    }
}

/// The system prompt: a string or a list of text blocks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum System {
    /// Plain text.
    Text(String),
    /// Text blocks (which may carry `cache_control`).
    Blocks(Vec<ContentBlock>),
}

/// By hand, not `#[serde(untagged)]`: see `de::string_or_seq`.
impl<'de> Deserialize<'de> for System {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::de::string_or_seq(
            d,
            "a string or an array of text blocks",
            System::Text,
            System::Blocks,
        )
    }
}

impl System {
    /// The text of the system prompt, blocks joined with a blank line.
    pub fn joined_text(&self) -> String {
        match self {
            System::Text(s) => s.clone(),
            System::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

/// A content block, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Fields Keel does not model (`cache_control`, `citations`), kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// An image.
    Image {
        /// Where the image comes from.
        source: ImageSource,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// A tool call by the model.
    ToolUse {
        /// Call id, echoed by the tool result.
        id: String,
        /// The tool called.
        name: String,
        /// Its input, a JSON object.
        input: Value,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// The result of a tool call, sent by the user.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// The result: a string or blocks (text, images).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<AContent>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// Extended thinking.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Signature to send the block back unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// Thinking redacted by safety systems.
    RedactedThinking {
        /// Encrypted thinking.
        data: String,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// A block of a type this crate does not model (documents, server tools, ...), kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text {
            text: text.into(),
            extra: Extra::new(),
        }
    }

    /// A tool-use block.
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        ContentBlock::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
            extra: Extra::new(),
        }
    }

    /// The `type` of the block as it appears on the wire.
    pub fn type_name(&self) -> &str {
        match self {
            ContentBlock::Text { .. } => "text",
            ContentBlock::Image { .. } => "image",
            ContentBlock::ToolUse { .. } => "tool_use",
            ContentBlock::ToolResult { .. } => "tool_result",
            ContentBlock::Thinking { .. } => "thinking",
            ContentBlock::RedactedThinking { .. } => "redacted_thinking",
            ContentBlock::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }
}

/// Where an image block's bytes come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline base64 data.
    Base64 {
        /// `image/jpeg`, `image/png`, `image/gif` or `image/webp`.
        media_type: String,
        /// The base64-encoded bytes.
        data: String,
    },
    /// A URL Anthropic fetches.
    Url {
        /// The image's URL.
        url: String,
    },
    /// A source of a type this crate does not model (files API, ...), kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

/// A tool the model may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ATool {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its input. Absent for Anthropic-defined tools, whose
    /// `type` is then kept in `extra`; such tools re-serialise with `{}` here
    /// only if it was given.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input_schema: Value,
    /// Fields Keel does not model (`cache_control`, `type`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A non-streamed Messages API response (also the `message` of `message_start`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// Message id.
    pub id: String,
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// Always `assistant`.
    pub role: ARole,
    /// The model that answered.
    pub model: String,
    /// The generated blocks.
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The stop sequence that matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    /// Token usage.
    #[serde(default)]
    pub usage: AUsage,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl MessagesResponse {
    /// The text blocks joined with no separator.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Token usage of an Anthropic response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AUsage {
    /// Input tokens not read from or written to the cache.
    #[serde(default)]
    pub input_tokens: u32,
    /// Tokens generated.
    #[serde(default)]
    pub output_tokens: u32,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u32>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u32>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl AUsage {
    /// All input tokens: uncached plus cache writes plus cache reads.
    pub fn total_input_tokens(&self) -> u32 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
    }
}

/// One event of a streamed Messages API response, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The message, with empty content.
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A content block opens.
    ContentBlockStart {
        /// Position of the block.
        index: u32,
        /// The block with empty text or input.
        content_block: ContentBlock,
    },
    /// A content block grows.
    ContentBlockDelta {
        /// Position of the block.
        index: u32,
        /// What was added.
        delta: BlockDelta,
    },
    /// A content block closes.
    ContentBlockStop {
        /// Position of the block.
        index: u32,
    },
    /// Top-level changes: stop reason and cumulative usage.
    MessageDelta {
        /// Stop reason and stop sequence.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        #[serde(default)]
        usage: DeltaUsage,
    },
    /// The stream ends.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// An error in the middle of the stream (e.g. `overloaded_error`).
    Error {
        /// The error.
        error: AErrorDetail,
    },
    /// An event of a type this crate does not model, kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

impl StreamEvent {
    /// The SSE `event:` name of this event (its `type`).
    ///
    /// For [`StreamEvent::Other`] it is the value's `type`, or `"unknown"`.
    pub fn event_name(&self) -> &str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }
}

/// What a `content_block_delta` adds, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// Text added to a text block.
    TextDelta {
        /// The text.
        text: String,
    },
    /// A piece of a tool-use block's input, as partial JSON.
    InputJsonDelta {
        /// The JSON fragment.
        partial_json: String,
    },
    /// Reasoning added to a thinking block.
    ThinkingDelta {
        /// The reasoning text.
        thinking: String,
    },
    /// The signature of a thinking block.
    SignatureDelta {
        /// The signature.
        signature: String,
    },
    /// A delta of a type this crate does not model (citations, ...), kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

/// The `delta` of a `message_delta` event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The stop sequence that matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The `usage` of a `message_delta` event (cumulative counts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaUsage {
    /// Tokens generated so far.
    #[serde(default)]
    pub output_tokens: u32,
    /// Input tokens, when the API repeats them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u32>,
    /// Input tokens written to the prompt cache, when repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u32>,
    /// Input tokens read from the prompt cache, when repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u32>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An Anthropic error body: `{"type":"error","error":{...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AErrorBody {
    /// Always `"error"`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// The error.
    pub error: AErrorDetail,
    /// Fields Keel does not model (`request_id`), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl AErrorBody {
    /// An error body with an error type and a message.
    pub fn new(r#type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            r#type: "error".to_owned(),
            error: AErrorDetail {
                r#type: r#type.into(),
                message: message.into(),
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// The `error` object of an Anthropic error body or error event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AErrorDetail {
    /// `invalid_request_error`, `rate_limit_error`, `overloaded_error`, ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `content_block_delta` event that adds text to a text block, read
/// from its bytes in one pass, its text borrowed unless it has escapes:
/// the bulk of an Anthropic stream, read without a [`StreamEvent`].
///
/// ```
/// use keel_wire::anthropic::TextDelta;
/// let data = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#;
/// let d = TextDelta::read(data).unwrap();
/// assert_eq!((d.index, d.text.as_ref()), (0, "Hel"));
/// assert_eq!(&data[d.span(data).unwrap()], "Hel");
/// // Any other event is not one (a caller reads it in full).
/// assert!(TextDelta::read(r#"{"type":"message_stop"}"#).is_none());
/// ```
#[derive(Debug, PartialEq)]
pub struct TextDelta<'a> {
    /// The block the text goes to.
    pub index: u32,
    /// The text added.
    pub text: std::borrow::Cow<'a, str>,
}

impl<'a> TextDelta<'a> {
    /// The event in `data`, if it is a text delta with nothing else in it
    /// (`type`, `index`, `delta` of `type` and `text`, each once); `None`
    /// for any other event, and for one this reader leaves to serde (an
    /// escape in a key, a member it does not know).
    pub fn read(data: &'a str) -> Option<TextDelta<'a>> {
        use crate::scan::{count, object, once, text, ws};
        let b = data.as_bytes();
        let (mut kind, mut index, mut delta) = (None, None, None);
        let end = object(b, ws(b, 0), |key, j| match key {
            b"type" => once(&mut kind, text(data, j)),
            b"index" => once(&mut index, count(b, j)),
            b"delta" => once(&mut delta, delta_text(data, j)),
            _ => None,
        })?;
        if ws(b, end) != b.len() || kind? != "content_block_delta" {
            return None;
        }
        Some(TextDelta {
            index: index?,
            text: delta?,
        })
    }

    /// Where the text lies in `data`, the bytes it was read from (quotes
    /// excluded); `None` when it had escapes (it was unescaped into a
    /// string of its own).
    pub fn span(&self, data: &str) -> Option<std::ops::Range<usize>> {
        let std::borrow::Cow::Borrowed(t) = &self.text else {
            return None;
        };
        let start = (t.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let end = start.checked_add(t.len())?;
        (end <= data.len()).then_some(start..end)
    }
}

/// A `text_delta` object at `s[i]`: its text and where it ends.
fn delta_text(s: &str, i: usize) -> Option<(std::borrow::Cow<'_, str>, usize)> {
    use crate::scan::{object, once, text};
    let (mut kind, mut t) = (None, None);
    let end = object(s.as_bytes(), i, |key, j| match key {
        b"type" => once(&mut kind, text(s, j)),
        b"text" => once(&mut t, text(s, j)),
        _ => None,
    })?;
    (kind? == "text_delta").then_some(())?;
    Some((t?, end))
}

#[cfg(test)]
mod text_delta_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What the reader accepts reads as serde reads it; what it leaves is
    /// another event, or one serde reads in full.
    #[test]
    fn reads_text_deltas_as_serde_does_and_leaves_the_rest() {
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            r#" { "index" : 3 , "delta" : { "text" : "a\n\"b\"" , "type" : "text_delta" } , "type" : "content_block_delta" } "#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":""}}"#,
        ] {
            let fast = TextDelta::read(data).unwrap();
            let StreamEvent::ContentBlockDelta { index, delta } =
                serde_json::from_str(data).unwrap()
            else {
                panic!("{data}");
            };
            assert_eq!(
                delta,
                BlockDelta::TextDelta {
                    text: fast.text.to_string()
                }
            );
            assert_eq!(index, fast.index);
        }
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a","citation":1}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":1}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a","text":"b"}}"#,
            r#"{"type":"content_block_delta","index":-1,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_start","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}} x"#,
            r#"{"type": "ping"}"#,
        ] {
            assert!(TextDelta::read(data).is_none(), "{data}");
        }
        // Escapes are read (unescaped) but have no place in the bytes; a
        // `\u` escape is left to serde.
        let data = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\n"}}"#;
        let d = TextDelta::read(data).unwrap();
        assert_eq!((d.text.as_ref(), d.span(data)), ("a\n", None));
        let data = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\u00e9"}}"#;
        assert!(TextDelta::read(data).is_none());
    }
}
