//! Translation between the OpenAI and Anthropic dialects.
//!
//! Keel falls over from one deployment to the next, and the next one may
//! speak the other dialect: a client of the OpenAI API may be served by
//! Claude, and a client of the Anthropic API by GPT. Requests, responses and
//! streams are translated here, as pure functions and small state machines,
//! so the engine only chooses *when* to translate.
//!
//! Translation is lossy only where the target has no equivalent, and then it
//! says so: a request that cannot be expressed (an audio part, `n > 1`) is a
//! [`TranslateError`] naming the field, not a silently different request.
//! Parameters that merely have no effect on the other side (`seed`, `top_k`,
//! `stream_options`) are dropped.

mod request;
mod response;
mod responses;
mod responses_native;
mod responses_stream;
mod stream;

pub use request::{
    anthropic_to_openai_request, force_tool_choice, json_schema_tool, native_json_schema,
    openai_to_anthropic_request,
};
pub use response::{
    anthropic_to_openai_response, json_schema_tool_to_text, openai_to_anthropic_response,
};
pub use responses::{
    chat_to_response, finish_status, function_call_item, message_item, response_shell,
    responses_to_chat, usage as responses_usage, InputError,
};
pub use responses_native::{
    native_response, response_to_chat, ResponsesToChatStream, StreamReadError,
};
pub use responses_stream::{ChatToResponsesStream, ResponsesEvent};
pub use stream::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};

use crate::anthropic::{AUsage, DeltaUsage, Extra};
use crate::openai::Usage;
use serde_json::Value;

/// Why a request could not be translated. Each message names the field.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// A message role with no equivalent in the target dialect.
    #[error("messages[{index}].role: role `{role}` has no Anthropic equivalent")]
    UnsupportedRole {
        /// Index of the message in the request.
        index: usize,
        /// The role.
        role: String,
    },
    /// A `tool` message without `tool_call_id`.
    #[error("messages[{index}].tool_call_id: a tool message must name the call it answers")]
    MissingToolCallId {
        /// Index of the message in the request.
        index: usize,
    },
    /// Tool-call arguments that are not a JSON document.
    #[error("{path}: tool call arguments are not valid JSON: {source}")]
    InvalidToolArguments {
        /// Path of the field, e.g. `messages[2].tool_calls[0].function.arguments`.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A content part or block with no equivalent in the target dialect.
    #[error("{path}: content of type `{kind}` cannot be translated")]
    UnsupportedContent {
        /// Path of the part, e.g. `messages[1].content[2]`.
        path: String,
        /// Its type.
        kind: String,
    },
    /// An image URL that cannot be expressed in the target dialect.
    #[error("{path}: {reason}")]
    InvalidImageUrl {
        /// Path of the URL, e.g. `messages[1].content[0].image_url.url`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter value the target dialect cannot honour.
    #[error("{field}: {reason}")]
    UnsupportedParameter {
        /// The parameter.
        field: &'static str,
        /// Why it cannot be translated.
        reason: String,
    },
    /// A tool with no equivalent in the target dialect.
    #[error("tools[{index}]: tool of type `{kind}` has no OpenAI equivalent")]
    UnsupportedTool {
        /// Index of the tool in the request.
        index: usize,
        /// Its type.
        kind: String,
    },
    /// Nothing is left to send once system messages are taken out.
    #[error("messages: the request has no user or assistant message")]
    NoMessages,
}

/// OpenAI `finish_reason` to Anthropic `stop_reason`.
///
/// `stop` → `end_turn`, `length` → `max_tokens`, `tool_calls` (and the
/// legacy `function_call`) → `tool_use`, `content_filter` → `refusal`;
/// anything else → `end_turn`.
pub fn finish_to_stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` to OpenAI `finish_reason`.
///
/// `end_turn`, `stop_sequence` and `pause_turn` → `stop`, `max_tokens` and
/// `model_context_window_exceeded` → `length`, `tool_use` → `tool_calls`,
/// `refusal` → `content_filter`; anything else → `stop`.
pub fn stop_to_finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage from Anthropic counts. OpenAI's `prompt_tokens` includes
/// cached tokens, Anthropic's `input_tokens` does not: cache reads and
/// writes are added in, and cache reads reported as
/// `prompt_tokens_details.cached_tokens`.
fn usage_from_anthropic(
    input: u32,
    cache_creation: Option<u32>,
    cache_read: Option<u32>,
    output: u32,
) -> Usage {
    let prompt = input
        .saturating_add(cache_creation.unwrap_or(0))
        .saturating_add(cache_read.unwrap_or(0));
    let mut usage = Usage::new(prompt, output);
    if let Some(read) = cache_read {
        let mut details = serde_json::Map::new();
        details.insert("cached_tokens".to_owned(), Value::from(read));
        usage
            .extra
            .insert("prompt_tokens_details".to_owned(), Value::Object(details));
    }
    usage
}

/// Cached prompt tokens of an OpenAI usage (`prompt_tokens_details.cached_tokens`).
fn cached_tokens(usage: &Usage) -> Option<u32> {
    usage
        .extra
        .get("prompt_tokens_details")?
        .get("cached_tokens")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// Anthropic usage from OpenAI usage (the inverse of [`usage_from_anthropic`]).
fn ausage_from_openai(usage: &Usage) -> AUsage {
    let cached = cached_tokens(usage).filter(|n| *n > 0);
    AUsage {
        input_tokens: usage.prompt_tokens.saturating_sub(cached.unwrap_or(0)),
        output_tokens: usage.completion_tokens,
        cache_creation_input_tokens: None,
        cache_read_input_tokens: cached,
        extra: Extra::new(),
    }
}

/// `message_delta` usage from OpenAI usage.
fn delta_usage_from_openai(usage: &Usage) -> DeltaUsage {
    let a = ausage_from_openai(usage);
    DeltaUsage {
        output_tokens: a.output_tokens,
        input_tokens: Some(a.input_tokens),
        cache_creation_input_tokens: None,
        cache_read_input_tokens: a.cache_read_input_tokens,
        extra: Extra::new(),
    }
}
