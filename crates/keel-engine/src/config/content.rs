//! A route's content settings: what it does with answers cut off, refused
//! or invalid (the checks themselves are in [`crate::content`]).

use std::sync::Arc;

use serde_json::Value;

/// How a route handles `finish_reason: length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationPolicy {
    /// Ask for the rest and stitch it on (up to `max_continuations` rounds).
    Continue,
    /// Retry once with a larger `max_tokens` (within the deployment's limit).
    Raise,
    /// Return it flagged `x-keel-truncated: true`.
    Accept,
}

/// How a route handles refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalPolicy {
    /// Try the deployments listed for refusals (or the rest of the chain).
    Fallback,
    /// Return the refusal flagged `x-keel-refusal: true`.
    Accept,
}

/// Phrases that, at the start of an answer, mark a refusal (case-insensitive).
pub const DEFAULT_REFUSAL_PHRASES: &[&str] = &[
    "i'm sorry, but i can't",
    "i’m sorry, but i can’t",
    "i am sorry, but i cannot",
    "i'm sorry, but i cannot",
    "i cannot help with",
    "i can't help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to help with",
    "i am unable to help with",
    "i won't be able to help",
    "sorry, i can't help",
];

/// The content settings of a route.
#[derive(Clone, Debug)]
pub struct ContentPolicy {
    /// Truncation handling.
    pub truncation: TruncationPolicy,
    /// Continuation rounds for [`TruncationPolicy::Continue`].
    pub max_continuations: u32,
    /// Continue an answer cut by the client's own `max_tokens` too. Off by
    /// default: an explicit limit is the client's, and only an answer cut
    /// by a limit the client did not set (none given, or the deployment's
    /// own maximum below it) is continued.
    pub continue_past_client_limit: bool,
    /// Repair re-asks for invalid structured output.
    pub max_repairs: u32,
    /// Refusal handling.
    pub refusal: RefusalPolicy,
    /// Lower-cased refusal phrases matched on the start of the answer.
    pub refusal_phrases: Arc<Vec<String>>,
}

impl Default for ContentPolicy {
    fn default() -> Self {
        ContentPolicy {
            truncation: TruncationPolicy::Continue,
            max_continuations: 3,
            continue_past_client_limit: false,
            max_repairs: 2,
            refusal: RefusalPolicy::Fallback,
            refusal_phrases: Arc::new(
                DEFAULT_REFUSAL_PHRASES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        }
    }
}

/// Compiles a JSON Schema, or says why it is not one.
pub(crate) fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}
