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
        let mut pieces = match &self.output {
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
                let mut text = value.to_string();
                if twist == Twist::InvalidJson {
                    text = break_json(&text);
                }
                split_pieces(&text, 4)
            }
        };
        let short = limit_pieces(&mut pieces, self.max_tokens, twist);
        Answer {
            completion_tokens: pieces.len() as u64,
            content: Content::Text(pieces),
            finish: if short { Finish::Length } else { Finish::Stop },
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
