//! The provider-neutral model of a chat request and of the answer to it.
//!
//! Each dialect parses its wire format into [`ChatRequest`] and renders an
//! [`Answer`] back; what the answer says is decided here, once.

use serde_json::{json, Value};

use crate::generate::{self, cut, split_pieces, text_pieces};

/// What shape the client asked the content to have.
#[derive(Debug, Clone)]
pub(crate) enum OutputMode {
    Text,
    JsonObject,
    JsonSchema(Value),
}

/// A tool the answer must call.
#[derive(Debug, Clone)]
pub(crate) struct ToolChoice {
    pub(crate) name: String,
    pub(crate) schema: Value,
}

/// A parsed, valid chat request.
#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) prompt_tokens: u64,
    /// Seed for everything the answer says: server seed + conversation.
    pub(crate) content_seed: u64,
    pub(crate) output: OutputMode,
    pub(crate) tool: Option<ToolChoice>,
    /// When the request asks to continue a partial answer (see
    /// [`continued`]): the content seed of the conversation that answer
    /// belongs to, and the partial text. The answer is what follows it.
    pub(crate) continues: Option<(u64, String)>,
    /// What a Responses request asks beyond its chat reading (the
    /// Responses dialect's; empty for any other).
    pub(crate) responses: ResponsesAsk,
}

/// What a Responses request asks of the answer beyond its chat reading:
/// the output items before the answer's.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponsesAsk {
    /// `reasoning` as the client sent it (echoed on the Response).
    pub(crate) reasoning: Option<serde_json::Value>,
    /// `reasoning.summary` was set: a reasoning item with a summary.
    pub(crate) summary: bool,
    /// `include` asks for `reasoning.encrypted_content`.
    pub(crate) encrypted: bool,
    /// The web search the request's `web_search` tool makes (its query).
    pub(crate) web_search: Option<String>,
}

/// The text of a chat message in either API's shape (a string, or text
/// parts or blocks), `None` when it holds anything but text.
fn message_text(message: &Value) -> Option<String> {
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(
                |p| match (p.get("type")?.as_str()?, p.get("text")?.as_str()) {
                    ("text", Some(t)) => Some(t),
                    _ => None,
                },
            )
            .collect(),
        _ => None,
    }
}

/// Splits a request that asks to continue a partial answer of its own into
/// the conversation that answer belongs to and the partial text: either the
/// partial answer as the assistant's turn followed by a user turn asking to
/// continue (the word "continue" in it), or the partial answer as an
/// Anthropic prefill (the last turn is the assistant's). Any other request
/// is its own conversation.
pub(crate) fn continued(messages: &[Value]) -> (&[Value], Option<String>) {
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let plain = |m: &Value| m.get("tool_calls").is_none();
    let n = messages.len();
    if n >= 2 && role(&messages[n - 1]).as_deref() == Some("assistant") && plain(&messages[n - 1]) {
        if let Some(p) = message_text(&messages[n - 1]).filter(|p| !p.is_empty()) {
            return (&messages[..n - 1], Some(p));
        }
    }
    if n >= 3
        && role(&messages[n - 1]).as_deref() == Some("user")
        && role(&messages[n - 2]).as_deref() == Some("assistant")
        && plain(&messages[n - 2])
        && message_text(&messages[n - 1]).is_some_and(|t| t.to_lowercase().contains("continue"))
    {
        if let Some(p) = message_text(&messages[n - 2]).filter(|p| !p.is_empty()) {
            return (&messages[..n - 2], Some(p));
        }
    }
    (messages, None)
}

/// What follows `prefix` in an answer made of `pieces`: the pieces after it
/// when it ends on a piece boundary, the rest re-split otherwise; `None`
/// when the answer does not start with it or nothing follows.
fn rest_after(pieces: &[String], prefix: &str) -> Option<Vec<String>> {
    let mut len = 0;
    for (k, piece) in pieces.iter().enumerate() {
        if len == prefix.len() {
            return pieces[..k]
                .concat()
                .eq(prefix)
                .then(|| pieces[k..].to_vec());
        }
        len += piece.len();
    }
    let whole = pieces.concat();
    let rest = whole.strip_prefix(prefix).filter(|r| !r.is_empty())?;
    Some(split_pieces(rest, 6))
}

/// The refusal text of the `refusal` fault.
pub(crate) const REFUSAL: &str = "I'm sorry, but I can't help with that.";

/// What an answer contains; text comes pre-split into stream pieces.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    Text(Vec<String>),
    Refusal(String),
    ToolCall {
        /// Random id body; each dialect adds its own prefix.
        id: String,
        name: String,
        arguments: Vec<String>,
    },
    Empty,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolUse,
    Refusal,
    /// Stopped by the provider's content filter.
    ContentFilter,
}

/// A generated answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) content: Content,
    pub(crate) finish: Finish,
    pub(crate) completion_tokens: u64,
}

/// A content-level fault applied while composing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Twist {
    None,
    Truncate,
    Empty,
    Refusal,
    InvalidJson,
    /// A few words, then the content filter.
    ContentFilter,
}

/// Break a JSON text so that no parser accepts it.
fn break_json(s: &str) -> String {
    let half = cut(s, s.len() / 2);
    if half.len() < 2 {
        "{\"".to_owned()
    } else {
        half.to_owned()
    }
}

/// Keep at most `limit` pieces; report whether anything was cut.
fn limit_pieces(pieces: &mut Vec<String>, limit: Option<u64>, twist: Twist) -> bool {
    let mut keep = pieces.len();
    if twist == Twist::Truncate {
        keep = (keep / 2).max(1);
    }
    if let Some(max) = limit {
        keep = keep.min(usize::try_from(max).unwrap_or(usize::MAX));
    }
    let cut_short = keep < pieces.len() || twist == Twist::Truncate;
    pieces.truncate(keep);
    cut_short
}

impl ChatRequest {
    /// Compose the answer to this request.
    pub(crate) fn answer(&self, twist: Twist) -> Answer {
        let mut rng = generate::rng(self.content_seed);
        match twist {
            Twist::Empty => {
                return Answer {
                    content: Content::Empty,
                    finish: Finish::Stop,
                    completion_tokens: 0,
                }
            }
            Twist::Refusal => {
                return Answer {
                    content: Content::Refusal(REFUSAL.to_owned()),
                    finish: Finish::Refusal,
                    completion_tokens: 10,
                }
            }
            _ => {}
        }
        if let Some(tool) = &self.tool {
            let value = generate::instance(&tool.schema, &tool.schema, &mut rng);
            let mut args = value.to_string();
            if twist == Twist::InvalidJson {
                args = break_json(&args);
            }
            let mut pieces = split_pieces(&args, 4);
            let short = limit_pieces(&mut pieces, self.max_tokens, twist);
            return Answer {
                completion_tokens: pieces.len() as u64,
                content: Content::ToolCall {
                    id: generate::id(&mut rng, "", 24),
                    name: tool.name.clone(),
                    arguments: pieces,
                },
                finish: if short {
                    Finish::Length
                } else {
                    Finish::ToolUse
                },
            };
        }
        // A continuation gets what follows the partial answer it holds;
        // one that does not continue this conversation's answer is answered
        // as a conversation of its own.
        let mut pieces = self
            .continues
            .as_ref()
            .and_then(|(seed, partial)| rest_after(&self.text_pieces(*seed), partial))
            .unwrap_or_else(|| self.text_pieces(self.content_seed));
        if twist == Twist::InvalidJson && !matches!(self.output, OutputMode::Text) {
            pieces = split_pieces(&break_json(&pieces.concat()), 4);
        }
        if twist == Twist::ContentFilter {
            pieces.truncate(2);
            return Answer {
                completion_tokens: pieces.len() as u64,
                content: Content::Text(pieces),
                finish: Finish::ContentFilter,
            };
        }
        let short = limit_pieces(&mut pieces, self.max_tokens, twist);
        Answer {
            completion_tokens: pieces.len() as u64,
            content: Content::Text(pieces),
            finish: if short { Finish::Length } else { Finish::Stop },
        }
    }
}

impl ChatRequest {
    /// The text answer (or JSON document) `seed` makes, in stream pieces.
    fn text_pieces(&self, seed: u64) -> Vec<String> {
        let mut rng = generate::rng(seed);
        match &self.output {
            OutputMode::Text => {
                let n = rng.random_words();
                text_pieces(&mut rng, n)
            }
            OutputMode::JsonObject | OutputMode::JsonSchema(_) => {
                let value = match &self.output {
                    OutputMode::JsonSchema(schema) => generate::instance(schema, schema, &mut rng),
                    _ => {
                        let n = rng.random_words();
                        json!({"answer": text_pieces(&mut rng, n).concat(), "confidence": 0.9})
                    }
                };
                split_pieces(&value.to_string(), 4)
            }
        }
    }
}

trait WordCount {
    fn random_words(&mut self) -> usize;
}

impl WordCount for rand::rngs::SmallRng {
    fn random_words(&mut self) -> usize {
        rand::Rng::random_range(self, 12..=48)
    }
}
