//! A streamed OpenAI chunk read for what a gateway decides on, without
//! building a [`ChatChunk`].
//!
//! **Why.** A streamed answer is tens to thousands of chunks. Parsing each
//! into a [`ChatChunk`] (every string owned, three levels of flattened
//! `extra` maps buffered through serde's content tree) and serialising it
//! again cost more CPU than everything else Keel does to a stream. When
//! the client speaks the provider's own API, the chunk's bytes can go to
//! the client as they came (with only `model` replaced); Keel only has to
//! read what it decides on: the id, the text (for a resume), finish
//! reasons, usage, and whether the chunk carries anything. This view
//! borrows those from the bytes and skips everything else unparsed.
//!
//! The view requires the same shape as [`ChatChunk`] for what it reads
//! (`id` and `model` strings, `choices` an array of objects that each have
//! a `delta` object, a string `role`), so bytes it rejects are bytes the
//! full parse rejects too.
//!
//! ```
//! use keel_wire::chunk_view::ChunkView;
//! let json = br#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
//!   "choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null,"logprobs":null}]}"#;
//! let view = ChunkView::parse(json).unwrap();
//! assert_eq!(view.id, "c1");
//! assert!(view.has_payload());
//! assert_eq!(view.choices[0].delta.content.as_deref(), Some("Hel"));
//! ```
//!
//! [`ChatChunk`]: crate::openai::ChatChunk

use std::borrow::Cow;

use serde::Deserialize;

use crate::openai::{ToolCallDelta, Usage};

/// What a gateway reads of one `chat.completion.chunk`.
#[derive(Debug, Deserialize)]
pub struct ChunkView<'a> {
    /// Completion id (borrowed unless it has escapes).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The model the upstream named.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// Deltas, one per choice (empty on the usage chunk).
    #[serde(borrow)]
    pub choices: Vec<ChoiceView<'a>>,
    /// Token usage, on the last chunk when `include_usage` was asked.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// What a gateway reads of one choice of a chunk.
#[derive(Debug, Deserialize)]
pub struct ChoiceView<'a> {
    /// What was added.
    #[serde(borrow)]
    pub delta: DeltaView<'a>,
    /// Set on the choice's last chunk.
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// What a gateway reads of one delta.
#[derive(Debug, Deserialize)]
pub struct DeltaView<'a> {
    /// Set on the first chunk.
    #[serde(default, borrow)]
    pub role: Option<Cow<'a, str>>,
    /// Text added.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    /// Tool-call fragments added (rare on the hot path, so owned).
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Refusal text added.
    #[serde(default, borrow)]
    pub refusal: Option<Cow<'a, str>>,
}

impl<'a> ChunkView<'a> {
    /// Reads `json`; the error is serde's, naming what did not fit.
    pub fn parse(json: &'a [u8]) -> Result<ChunkView<'a>, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Whether the chunk carries something a client waits for: text, a
    /// tool-call fragment, a refusal or a finish reason (a role-only chunk
    /// does not).
    pub fn has_payload(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.content.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.refusal.as_ref().is_some_and(|t| !t.is_empty())
                || c.finish_reason.is_some()
        })
    }

    /// Whether any choice names a role.
    pub fn has_role(&self) -> bool {
        self.choices.iter().any(|c| c.delta.role.is_some())
    }

    /// Whether any choice ends with `finish_reason` `reason`.
    pub fn finishes_with(&self, reason: &str) -> bool {
        self.choices
            .iter()
            .any(|c| c.finish_reason.as_deref() == Some(reason))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::openai::ChatChunk;

    #[test]
    fn reads_what_the_full_parse_reads_and_borrows_plain_strings() {
        let json = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"gpt-x","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"a\nb"},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let view = ChunkView::parse(json).unwrap();
        let full: ChatChunk = serde_json::from_slice(json).unwrap();
        assert!(matches!(view.id, Cow::Borrowed("chatcmpl-1")));
        assert_eq!(view.model, full.model);
        assert_eq!(
            view.choices[0].delta.content.as_deref(),
            full.choices[0].delta.content.as_deref()
        );
        assert!(view.has_role() && view.has_payload() && view.finishes_with("length"));
        assert_eq!(view.usage, full.usage);
    }

    #[test]
    fn a_role_only_chunk_has_no_payload() {
        let json =
            br#"{"id":"c","model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        let view = ChunkView::parse(json).unwrap();
        assert!(view.has_role());
        assert!(!view.has_payload());
    }

    #[test]
    fn rejects_what_the_full_parse_rejects() {
        for json in [
            &br#"{"model":"m","choices":[]}"#[..],
            br#"{"id":"c","choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[{"index":0}]}"#,
            br#"{"id":"c","model":"m","choices":[{"delta":{"role":5}}]}"#,
            br#"{"id":1,"model":"m","choices":[]}"#,
        ] {
            assert!(
                ChunkView::parse(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
            assert!(serde_json::from_slice::<ChatChunk>(json).is_err());
        }
    }
}
