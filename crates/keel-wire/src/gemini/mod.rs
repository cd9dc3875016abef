//! Google Gemini API (`generativelanguage.googleapis.com`) wire types and
//! their translation to and from Keel's canonical (OpenAI-shaped) chat.
//!
//! Gemini differs from the two dialects Keel speaks natively in ways that
//! matter to a gateway: the model and the streaming mode live in the URL
//! (`/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`),
//! roles are `user` and `model`, tool calls carry no ids (results are matched
//! by function name), a stream has no end event (its last chunk carries the
//! finish reason) and a blocked prompt answers 200 with no candidate at all
//! (`promptFeedback.blockReason`). The types here keep the fields Keel reads
//! or writes; every struct keeps the rest in `extra` so nothing is lost on a
//! parse and re-serialise. Field names are Gemini's camelCase.

mod embed;
mod request;
mod response;
mod schema;

pub use embed::{
    batch_embed_path, batch_embed_request, batch_embed_to_openai, encode_f32s, EmbedAnswerError,
};
pub use request::openai_to_gemini_request;
pub use response::{gemini_finish_reason, gemini_to_openai_response, GeminiToOpenAiStream};
pub use schema::response_schema;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown JSON fields kept verbatim.
pub type Extra = Map<String, Value>;

/// Where an OpenAI tool call carries a Gemini thought signature:
/// `extra_content.google.thought_signature`, the shape Google's own
/// OpenAI-compatible endpoint uses, so clients written for it send the
/// signature back unchanged.
pub const THOUGHT_SIGNATURE_KEY: &str = "extra_content";

/// The signature Google documents for function calls Gemini did not make
/// (history from another model, or made up by the client): it tells the
/// API to skip the validation a Gemini 3 model would otherwise fail with a
/// 400 (<https://ai.google.dev/gemini-api/docs/thought-signatures>).
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// The `extra_content` member of an OpenAI tool call carrying `signature`.
pub fn thought_signature_extra(signature: &str) -> Value {
    serde_json::json!({ "google": { "thought_signature": signature } })
}

/// The thought signature an OpenAI tool call's extra members carry, if any.
pub fn thought_signature_of(extra: &Extra) -> Option<&str> {
    extra
        .get(THOUGHT_SIGNATURE_KEY)?
        .get("google")?
        .get("thought_signature")?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Where the Gemini API is served.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The context window of current Gemini models (2.x, 2.5: 1,048,576
/// input tokens), for deployments that name none.
pub const DEFAULT_CONTEXT_WINDOW: u32 = 1_048_576;

/// The path of a non-streamed call to `model`, after the base URL.
pub fn generate_path(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("/v1beta/models/{model}:generateContent")
}

/// The path of a streamed call to `model` (server-sent events), after the base URL.
pub fn stream_path(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
}

/// A `generateContent` / `streamGenerateContent` request body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// The conversation, oldest first.
    #[serde(default)]
    pub contents: Vec<GContent>,
    /// The system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<GContent>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<GTool>>,
    /// How the model may call them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    /// Sampling, limits and output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    /// Fields Keel does not model (`safetySettings`, `cachedContent`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One turn of the conversation (or the system instruction).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GContent {
    /// `user` or `model` (absent on the system instruction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Its parts, in order.
    #[serde(default)]
    pub parts: Vec<Part>,
    /// Fields Keel does not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One part of a turn: exactly one of its data fields is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Inline bytes (base64), e.g. an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    /// Data by URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    /// A call the model makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<GFunctionCall>,
    /// The result of a call, sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<GFunctionResponse>,
    /// A thought summary (thinking models): not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// The model's encrypted reasoning state (thinking models), to be sent
    /// back on the same part; Keel carries the ones on `functionCall`
    /// parts (see [`THOUGHT_SIGNATURE_KEY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    /// Fields Keel does not model.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }
}

/// Inline bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// Media type (`image/png`).
    pub mime_type: String,
    /// Base64 data.
    pub data: String,
}

/// Data by URI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    /// Media type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Where the data is.
    pub file_uri: String,
}

/// A function call the model makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GFunctionCall {
    /// Call id (newer models; usually absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function.
    pub name: String,
    /// Its arguments, a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// A function's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GFunctionResponse {
    /// The call it answers, when the call had an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The function that was called.
    pub name: String,
    /// The result, a JSON object.
    pub response: Value,
}

/// A tool: Keel uses function declarations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GTool {
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
    /// Other tools (`googleSearch`, `codeExecution`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its arguments' schema (Gemini's OpenAPI subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Fields Keel does not model (`parametersJsonSchema`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `toolConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    /// How functions may be called.
    pub function_calling_config: FunctionCallingConfig,
}

/// `toolConfig.functionCallingConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// `AUTO`, `ANY` (must call), `NONE`.
    pub mode: String,
    /// With `ANY`: the functions it may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

/// `generationConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// `application/json` for JSON output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// The output's schema (Gemini's OpenAPI subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    /// Number of candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    /// Output-token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Fields Keel does not model (`topK`, `thinkingConfig`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `generateContent` answer, or one event of a stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// The answers (none when the prompt was blocked).
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    /// Why the prompt was blocked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The answer's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// Fields Keel does not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// What it says (absent when blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<GContent>,
    /// Why it ended: `STOP`, `MAX_TOKENS`, `SAFETY`, `RECITATION`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Its index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Fields Keel does not model (`safetyRatings`, `finishMessage`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `promptFeedback`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `OTHER`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    /// Fields Keel does not model (`safetyRatings`).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `usageMetadata`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Prompt tokens (cached ones included).
    #[serde(default)]
    pub prompt_token_count: u32,
    /// Tokens of the candidates.
    #[serde(default)]
    pub candidates_token_count: u32,
    /// Tokens of thinking (thinking models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u32>,
    /// Prompt tokens served from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u32>,
    /// The total.
    #[serde(default)]
    pub total_token_count: u32,
    /// Fields Keel does not model (per-modality details).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Google's error body: `{"error":{"code","message","status","details"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoogleErrorBody {
    /// The error.
    pub error: GoogleError,
}

/// The `error` of a [`GoogleErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoogleError {
    /// The HTTP status.
    pub code: u16,
    /// What went wrong.
    pub message: String,
    /// The `google.rpc.Code` name: `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, ...
    pub status: String,
    /// Typed details (`google.rpc.RetryInfo`, `ErrorInfo`, `QuotaFailure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

impl GoogleErrorBody {
    /// An error body.
    pub fn new(code: u16, status: &str, message: impl Into<String>) -> Self {
        GoogleErrorBody {
            error: GoogleError {
                code,
                message: message.into(),
                status: status.to_owned(),
                details: Vec::new(),
            },
        }
    }
}
