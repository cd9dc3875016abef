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
//! full parse rejects too. (The converse does not hold: the view skips
//! fields it does not read, such as `created`, without checking their type.)
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
    /// The bytes the view was read from.
    #[serde(skip)]
    source: &'a [u8],
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
        let mut view: ChunkView<'a> = serde_json::from_slice(json)?;
        view.source = json;
        Ok(view)
    }

    /// The chunk's bytes with the value of `model` replaced by
    /// `model_json` (a JSON string, quotes included), everything else byte
    /// for byte. The view already knows where the value is, so nothing is
    /// scanned again. `None` when the upstream's model string had escapes
    /// (it was not read in place); a caller then re-encodes the chunk.
    ///
    /// ```
    /// use keel_wire::chunk_view::ChunkView;
    /// let json = br#"{"id":"c","model":"up-1","choices":[]}"#;
    /// let view = ChunkView::parse(json).unwrap();
    /// assert_eq!(
    ///     view.with_model(r#""route""#).unwrap(),
    ///     br#"{"id":"c","model":"route","choices":[]}"#.to_vec()
    /// );
    /// ```
    pub fn with_model(&self, model_json: &str) -> Option<Vec<u8>> {
        let Cow::Borrowed(model) = &self.model else {
            return None;
        };
        let json = self.source;
        let start = (model.as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
        let end = start + model.len();
        // The value's quotes sit right around the text serde borrowed.
        if json.get(start.checked_sub(1)?) != Some(&b'"') || json.get(end) != Some(&b'"') {
            return None;
        }
        let mut out = Vec::with_capacity(json.len() + model_json.len());
        out.extend_from_slice(&json[..start - 1]);
        out.extend_from_slice(model_json.as_bytes());
        out.extend_from_slice(&json[end + 1..]);
        Some(out)
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
    fn replaces_the_model_in_place_and_only_the_model() {
        // Spacing, a key that ends in "model", and a model named like a key.
        let json = br#"{ "id" : "c", "x_model":"model", "model" :  "gpt-up" , "choices":[] }"#;
        let view = ChunkView::parse(json).unwrap();
        let out = view.with_model(r#""r\"1""#).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "id" : "c", "x_model":"model", "model" :  "r\"1" , "choices":[] }"#
        );
        // A model with escapes was not read in place: no splice.
        let json = br#"{"id":"c","model":"gpt\u002dup","choices":[]}"#;
        assert_eq!(ChunkView::parse(json).unwrap().with_model(r#""r""#), None);
        // A duplicate model is an error, not a guess at which one to replace.
        assert!(ChunkView::parse(br#"{"id":"c","model":"a","model":"b","choices":[]}"#).is_err());
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
