//! OpenAI Chat Completions wire types.
//!
//! Keel is a pass-through first: a client's request is forwarded to an
//! OpenAI-compatible deployment after Keel has looked at a handful of fields
//! (model, streaming, limits, tools, images). Every struct therefore keeps the
//! fields it does not model in a flattened `extra` map, so a parse followed by
//! a serialise re-emits fields OpenAI adds tomorrow untouched. Optional fields
//! are omitted when `None` rather than written as `null`.

pub(crate) mod read;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown JSON fields kept verbatim for pass-through.
pub type Extra = Map<String, Value>;

/// A `POST /v1/chat/completions` request body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatRequest {
    /// Model (for Keel: the route) the client asked for.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Whether the answer is streamed as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Legacy output-token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output-token limit (including reasoning tokens); supersedes `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Number of choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequence(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Seed for best-effort deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type":"function","function":{"name":..}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Requested output format (plain text, JSON object, JSON schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::de::with_extra! {
    ChatRequest,
    required [model, messages],
    optional [
        stream, stream_options, max_tokens, max_completion_tokens, temperature, top_p, n,
        stop, seed, tools, tool_choice, response_format, user,
    ],
}

impl ChatRequest {
    /// Reads a request body: what `serde_json::from_slice` reads, with the
    /// same errors, faster for the usual shape (text messages and options;
    /// one pass, no serde state machine). Anything else (content parts,
    /// tool calls, a `\u` escape) is read by serde.
    pub fn from_json(body: &[u8]) -> Result<ChatRequest, serde_json::Error> {
        Self::from_json_with_layout(body).map(|(r, _)| r)
    }

    /// [`from_json`](Self::from_json), and where the body's top-level
    /// members lie when the one-pass reader read it: a splice of the same
    /// bytes (the model replaced on their way to the provider) then needs
    /// no scan of its own.
    pub fn from_json_with_layout(
        body: &[u8],
    ) -> Result<(ChatRequest, Option<crate::splice::Layout>), serde_json::Error> {
        match read::request(body) {
            Some((r, layout)) => Ok((r, Some(layout))),
            None => serde_json::from_slice(body).map(|r| (r, None)),
        }
    }

    /// A minimal request: a model and its messages, every option unset.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            stream: None,
            stream_options: None,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: None,
            top_p: None,
            n: None,
            stop: None,
            seed: None,
            tools: None,
            tool_choice: None,
            response_format: None,
            user: None,
            extra: Extra::new(),
        }
    }

    /// The output-token limit in force: `max_completion_tokens`, else `max_tokens`.
    pub fn effective_max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the client asked for a streamed answer.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Whether any message carries an image part (needs a vision deployment).
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| match &m.content {
            Some(Content::Parts(parts)) => parts
                .iter()
                .any(|p| matches!(p, ContentPart::ImageUrl { .. })),
            _ => false,
        })
    }

    /// Whether the request declares at least one tool.
    pub fn has_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// Whether the request asks for output matching a JSON schema.
    pub fn wants_json_schema(&self) -> bool {
        matches!(
            self.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        )
    }

    /// Number of characters of text in the prompt, for token estimates.
    ///
    /// Counts message text and refusals, tool-call names and arguments, and
    /// tool definitions (name, description and the serialised parameters
    /// schema). Images and unknown parts count as nothing.
    pub fn prompt_text_len(&self) -> usize {
        let messages: usize = self.messages.iter().map(Message::text_len).sum();
        let tools: usize = self
            .tools
            .iter()
            .flatten()
            .map(|t| {
                t.function.name.chars().count()
                    + t.function
                        .description
                        .as_deref()
                        .map_or(0, |d| d.chars().count())
                    + t.function
                        .parameters
                        .as_ref()
                        .map_or(0, |p| p.to_string().chars().count())
            })
            .sum();
        messages + tools
    }
}

/// `stream_options` of a streamed request.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage and no choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::de::with_extra! {
    StreamOptions,
    required [],
    optional [include_usage],
}

/// `stop`: one sequence or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// The author of a message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the application (older models).
    System,
    /// Instructions from the application (reasoning models).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
    /// The deprecated function-result role.
    Function,
    /// A role this crate does not know, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// By hand: a known name or, verbatim, any other string (the derive of an
/// enum with an untagged variant buffers the value first).
impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Role;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a role")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Role, E> {
                Ok(Role::named(v))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl Role {
    /// The role named `name` on the wire.
    pub(crate) fn named(name: &str) -> Role {
        match name {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "function" => Role::Function,
            other => Role::Other(other.to_owned()),
        }
    }

    /// The role as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
            Role::Other(s) => s,
        }
    }
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its content; absent for an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A refusal by the model, instead of content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::de::with_extra! {
    Message,
    required [role],
    optional [content, name, tool_calls, tool_call_id, refusal],
}

impl Message {
    /// A message with a role and plain-text content.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            extra: Extra::new(),
        }
    }

    /// A `system` message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A `user` message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// An `assistant` message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// The text of the content: the string, or the text parts joined with no separator.
    pub fn text(&self) -> Option<String> {
        self.content.as_ref().map(Content::joined_text)
    }

    fn text_len(&self) -> usize {
        let content = self.content.as_ref().map_or(0, Content::text_len);
        let refusal = self.refusal.as_deref().map_or(0, |r| r.chars().count());
        let calls: usize = self
            .tool_calls
            .iter()
            .flatten()
            .map(|c| c.function.name.chars().count() + c.function.arguments.chars().count())
            .sum();
        content + refusal + calls
    }
}

/// Message content: a string or a list of typed parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, ...).
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of the content: the string, or the text parts joined with no separator.
    pub fn joined_text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }

    fn text_len(&self) -> usize {
        match self {
            Content::Text(s) => s.chars().count(),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text { text, .. } => text.chars().count(),
                    _ => 0,
                })
                .sum(),
        }
    }
}

/// By hand, not `#[serde(untagged)]`: see `de::string_or_seq`.
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::de::string_or_seq(
            d,
            "a string or an array of content parts",
            Content::Text,
            Content::Parts,
        )
    }
}

/// One typed part of a message's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// A text part.
    Text {
        /// The text.
        text: String,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// An image, by URL or `data:` URL.
    ImageUrl {
        /// Where the image is.
        image_url: ImageUrl,
        /// Fields Keel does not model, kept verbatim.
        #[serde(flatten)]
        extra: Extra,
    },
    /// A part of a type this crate does not model (audio, files, ...), kept verbatim.
    #[serde(untagged)]
    Other(Value),
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart::Text {
            text: text.into(),
            extra: Extra::new(),
        }
    }

    /// An image part from a URL (`https:` or `data:`).
    pub fn image_url(url: impl Into<String>) -> Self {
        ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail: None,
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// The `image_url` object of an image part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// `https:` URL or `data:<media type>;base64,<data>` URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `"function"` today.
    #[serde(rename = "type", default = "default_function_type")]
    pub r#type: String,
    /// The function's definition.
    pub function: FunctionDef,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Tool {
    /// A function tool.
    pub fn function(
        name: impl Into<String>,
        description: Option<String>,
        parameters: Option<Value>,
    ) -> Self {
        Self {
            r#type: "function".to_owned(),
            function: FunctionDef {
                name: name.into(),
                description,
                parameters,
                strict: None,
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// A function's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether arguments must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A call the model made to a tool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed by the tool result.
    pub id: String,
    /// Always `"function"` today (filled in when an upstream omits it).
    #[serde(rename = "type", default = "default_function_type")]
    pub r#type: String,
    /// Function name and arguments.
    pub function: FunctionCall,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ToolCall {
    /// A function call.
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            r#type: "function".to_owned(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// Function name and arguments of a tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function called.
    pub name: String,
    /// Its arguments: a JSON document serialised as a string.
    pub arguments: String,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `response_format` of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any valid JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// The `json_schema` object of a `json_schema` response format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: String,
    /// What the output is, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Whether the output must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A non-streamed `chat.completion` response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatResponse {
    /// Completion id.
    pub id: String,
    /// Always `"chat.completion"` (filled in when an upstream omits it).
    #[serde(default = "default_completion_object")]
    pub object: String,
    /// Unix time of creation, in seconds (0 when an upstream omits it).
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The generated choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::de::with_extra! {
    ChatResponse,
    required [id, model, choices],
    optional [object = default_completion_object(), created, usage, system_fingerprint],
}

impl ChatResponse {
    /// The text of the first choice, if it is a string (or the first text part).
    pub fn text(&self) -> Option<&str> {
        match self.choices.first()?.message.content.as_ref()? {
            Content::Text(s) => Some(s),
            Content::Parts(parts) => parts.iter().find_map(|p| match p {
                ContentPart::Text { text, .. } => Some(text.as_str()),
                _ => None,
            }),
        }
    }

    /// The finish reason of the first choice.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.first()?.finish_reason.as_deref()
    }

    /// The tool calls of the first choice (empty when there are none).
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.choices
            .first()
            .and_then(|c| c.message.tool_calls.as_deref())
            .unwrap_or(&[])
    }
}

/// One choice of a response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// Position among the choices (0 when an upstream omits it).
    #[serde(default)]
    pub index: u32,
    /// The generated message.
    pub message: Message,
    /// `stop`, `length`, `tool_calls`, `content_filter`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Log probabilities, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::de::with_extra! {
    Choice,
    required [message],
    optional [index, finish_reason, logprobs],
}

/// Token usage of a response or of the final stream chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Sum of the two.
    #[serde(default)]
    pub total_tokens: u32,
    /// Fields Keel does not model (token details), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

crate::de::with_extra! {
    Usage,
    required [],
    optional [prompt_tokens, completion_tokens, total_tokens],
}

impl Usage {
    /// Usage with the total computed.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            extra: Extra::new(),
        }
    }
}

/// One `chat.completion.chunk` of a streamed response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Completion id, the same on every chunk.
    pub id: String,
    /// Always `"chat.completion.chunk"` (filled in when an upstream omits it).
    #[serde(default = "default_chunk_object")]
    pub object: String,
    /// Unix time of creation, in seconds (0 when an upstream omits it).
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// Deltas, one per choice (empty on the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Token usage, on the last chunk when `include_usage` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The delta of one choice in a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends (0 when an upstream omits it).
    #[serde(default)]
    pub index: u32,
    /// What was added.
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Log probabilities, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The part of a message added by one chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Text added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Refusal text added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A fragment of a tool call in a stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the choice this fragment extends (0 when an
    /// upstream omits it, as some OpenAI-compatible servers do).
    #[serde(default)]
    pub index: u32,
    /// Call id, on the call's first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"`, on the call's first fragment.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Name and argument fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Name and argument fragment of a streamed tool call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// Function name, on the call's first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the arguments string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An OpenAI error body: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ErrorBody {
    /// An error body with a message, a type and an optional code.
    pub fn new(message: impl Into<String>, r#type: impl Into<String>, code: Option<&str>) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                r#type: r#type.into(),
                param: None,
                code: code.map(|c| Value::String(c.to_owned())),
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }

    /// The code as a string, when it is one.
    pub fn code_str(&self) -> Option<&str> {
        self.error.code.as_ref().and_then(Value::as_str)
    }
}

/// The `error` object of an OpenAI error body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// `invalid_request_error`, `requests`, `insufficient_quota`, `server_error`, ...
    #[serde(default, rename = "type")]
    pub r#type: String,
    /// The offending parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Value>,
    /// Machine-readable code (`rate_limit_exceeded`, `context_length_exceeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
    /// Fields Keel does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

fn default_completion_object() -> String {
    "chat.completion".to_owned()
}

impl ChatChunk {
    /// Whether the chunk carries something a client waits for: text, a
    /// tool-call fragment, a refusal or a finish reason (a role-only chunk
    /// does not). The same rule as [`crate::chunk_view::ChunkView::has_payload`].
    pub fn has_payload(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.content.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.refusal.as_ref().is_some_and(|t| !t.is_empty())
                || c.finish_reason.is_some()
        })
    }
}

fn default_chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

fn default_function_type() -> String {
    "function".to_owned()
}
