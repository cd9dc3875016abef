//! OpenAI Responses API wire types (`POST /v1/responses`).
//!
//! Keel serves the Responses API as one more client API over the same
//! chat engine: a request is translated to the canonical Chat Completions
//! request ([`crate::translate::responses_to_chat`]) and the answer back to a
//! [`Response`]. Input items stay raw JSON values here: they are checked
//! (with the path of what is wrong) when translated, and stored as the
//! client sent them, so `input_items` lists exactly what the client wrote.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown JSON fields kept verbatim.
pub type Extra = Map<String, Value>;

/// A `POST /v1/responses` request body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// Model (for Keel: the route).
    pub model: String,
    /// The input: a string (one user message) or a list of items.
    pub input: Input,
    /// A system message put first (not carried over by `previous_response_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Tools the model may call (function tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type":"function","name":..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Whether the model may call several tools at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Output format (`text.format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    /// Output-token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Key-value pairs echoed on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Whether Keel keeps the response (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// The response this one continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether the answer is streamed as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Fields Keel does not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// OpenAI's built-in tool types: served by the provider itself, so only by
/// native Responses deployments that declare them (`builtin_tools`).
pub const BUILTIN_TOOLS: [&str; 10] = [
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "custom",
];

/// Output items of the tool calls a provider makes itself (built-in tools):
/// their results are in the answer that follows them, and their ids name
/// items only the provider that made them knows. A conversation continued
/// on another deployment leaves them out, as it does reasoning items.
pub const PROVIDER_CALL_ITEMS: [&str; 6] = [
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "image_generation_call",
    "mcp_call",
    "mcp_list_tools",
];

/// Request fields only a native Responses deployment can honour, with the
/// value that asks nothing of it (`None`: absent or empty asks nothing).
pub const NATIVE_FIELDS: [(&str, Option<&str>); 3] = [
    ("include", None),
    ("truncation", Some("\"disabled\"")),
    ("background", Some("false")),
];

impl ResponsesRequest {
    /// The built-in tools asked for (`(index in tools, type)`).
    pub fn builtin_tools(&self) -> Vec<(usize, &str)> {
        self.tools
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, t)| {
                let kind = t.get("type").and_then(Value::as_str)?;
                (kind != "function").then_some((i, kind))
            })
            .collect()
    }

    /// The fields of [`NATIVE_FIELDS`] the request sets to something only a
    /// native deployment can honour.
    pub fn native_fields(&self) -> Vec<&'static str> {
        NATIVE_FIELDS
            .iter()
            .filter(|(name, inert)| match self.extra.get(*name) {
                None | Some(Value::Null) => false,
                Some(Value::Array(a)) if a.is_empty() => false,
                Some(v) => {
                    inert.is_none_or(|i| serde_json::from_str::<Value>(i).ok().as_ref() != Some(v))
                }
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// The input as a list of items (a string is one user message).
    pub fn input_items(&self) -> Vec<Value> {
        match &self.input {
            Input::Text(text) => vec![serde_json::json!({
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}],
            })],
            Input::Items(items) => items.clone(),
        }
    }
}

/// The `input` of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One user message.
    Text(String),
    /// Messages, function calls and their outputs.
    Items(Vec<Value>),
}

/// The `text` object of a request or response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// The output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// Fields Keel does not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `text.format`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    /// Free text.
    Text,
    /// Any valid JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON Schema.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Value>,
        /// What the output is, for the model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Whether the output must follow the schema exactly.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// A Response object (`"object": "response"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `resp_…`.
    pub id: String,
    /// Always `"response"`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// `completed` or `incomplete` (`in_progress` while streaming).
    pub status: String,
    /// Always null: a failed call is an HTTP error.
    pub error: Option<Value>,
    /// Why the response is incomplete (`max_output_tokens`, `content_filter`).
    pub incomplete_details: Option<Value>,
    /// The request's instructions.
    pub instructions: Option<String>,
    /// The request's output-token limit.
    pub max_output_tokens: Option<u32>,
    /// The route the client asked for.
    pub model: String,
    /// Messages and function calls the model produced.
    pub output: Vec<Value>,
    /// The request's `parallel_tool_calls` (default true).
    pub parallel_tool_calls: bool,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// Whether Keel keeps the response.
    pub store: bool,
    /// The request's temperature.
    pub temperature: Option<f64>,
    /// The request's `text` settings.
    pub text: Value,
    /// The request's tool choice (default `"auto"`).
    pub tool_choice: Value,
    /// The request's tools.
    pub tools: Vec<Value>,
    /// The request's `top_p`.
    pub top_p: Option<f64>,
    /// Token counts, once complete.
    pub usage: Option<ResponseUsage>,
    /// The request's end-user identifier (`null` when none, as OpenAI
    /// writes it).
    #[serde(default)]
    pub user: Option<String>,
    /// The request's metadata (default `{}`).
    pub metadata: Value,
    /// Fields Keel does not model (a native deployment's `reasoning`,
    /// `truncation`, ...), kept verbatim.
    #[serde(flatten, default)]
    pub extra: Extra,
}

/// Token counts of a response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Input tokens.
    pub input_tokens: u32,
    /// Input-token details (`cached_tokens`).
    #[serde(default)]
    pub input_tokens_details: Value,
    /// Output tokens.
    pub output_tokens: u32,
    /// Output-token details (`reasoning_tokens`).
    #[serde(default)]
    pub output_tokens_details: Value,
    /// Input plus output.
    pub total_tokens: u32,
}
