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
    /// Which choice this is (0 when an upstream omits it).
    #[serde(default)]
    pub index: u32,
    /// Whether the choice carries log probabilities (`logprobs` present
    /// and not `null`); a reader that needs them reads the chunk in full.
    #[serde(default, deserialize_with = "not_null")]
    pub logprobs: bool,
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

/// Whether a value is there and not `null`, without reading it.
fn not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Option::<serde::de::IgnoredAny>::deserialize(d).map(|v| v.is_some())
}

impl<'a> ChunkView<'a> {
    /// Reads `json`; the error is serde's, naming what did not fit.
    pub fn parse(json: &'a [u8]) -> Result<ChunkView<'a>, serde_json::Error> {
        if let Some(view) = read::chunk(json) {
            return Ok(view);
        }
        let mut view: ChunkView<'a> = serde_json::from_slice(json)?;
        view.source = json;
        Ok(view)
    }

    /// Reads `json` like [`parse`](Self::parse), from text whose UTF-8 has
    /// already been checked (an SSE decoder's data), so it is not checked
    /// again.
    pub fn parse_str(json: &'a str) -> Result<ChunkView<'a>, serde_json::Error> {
        if let Some(view) = read::chunk_str(json) {
            return Ok(view);
        }
        let mut view: ChunkView<'a> = serde_json::from_str(json)?;
        view.source = json.as_bytes();
        Ok(view)
    }

    /// Where `text`, one of this view's strings, lies in the bytes it was
    /// read from (quotes excluded); `None` when it had escapes (it was
    /// unescaped into a string of its own, which is not in those bytes). A
    /// reader that keeps the bytes keeps the string as this range instead
    /// of a copy.
    ///
    /// ```
    /// use keel_wire::chunk_view::ChunkView;
    /// let json = br#"{"id":"c7","model":"m\/1","choices":[]}"#;
    /// let view = ChunkView::parse(json).unwrap();
    /// assert_eq!(&json[view.span(&view.id).unwrap()], b"c7");
    /// assert_eq!(view.span(&view.model), None);
    /// ```
    pub fn span(&self, text: &str) -> Option<std::ops::Range<usize>> {
        let json = self.source;
        let start = (text.as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
        let end = start.checked_add(text.len())?;
        (end <= json.len()).then_some(start..end)
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
        let at = self.model_span()?;
        let json = self.source;
        let mut out = Vec::with_capacity(json.len() + model_json.len());
        out.extend_from_slice(&json[..at.start]);
        out.extend_from_slice(model_json.as_bytes());
        out.extend_from_slice(&json[at.end..]);
        Some(out)
    }

    /// Where the value of `model` lies in the chunk's bytes, quotes
    /// included: what [`with_model`](Self::with_model) replaces, for a
    /// writer that puts the pieces together itself. `None` when the value
    /// had escapes (it was not read in place).
    ///
    /// ```
    /// use keel_wire::chunk_view::ChunkView;
    /// let json = br#"{"id":"c","model":"up-1","choices":[]}"#;
    /// let at = ChunkView::parse(json).unwrap().model_span().unwrap();
    /// assert_eq!(&json[at], br#""up-1""#);
    /// ```
    pub fn model_span(&self) -> Option<std::ops::Range<usize>> {
        let std::ops::Range { start, end } = self.span(&self.model)?;
        let json = self.source;
        // The value's quotes sit right around the text serde borrowed.
        if json.get(start.checked_sub(1)?) != Some(&b'"') || json.get(end) != Some(&b'"') {
            return None;
        }
        Some(start - 1..end + 1)
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

/// Whether `next` is `prev` with one plain string value replaced by
/// another plain string: the same bytes before and after it, and between
/// the new quotes text with no escape and no control character. `text` is
/// where that value's text lies in `prev` (quotes excluded), as
/// [`ChunkView::span`] gives it for a value the view read, such as a
/// delta's `content`; `prev` is a chunk the view accepted. Returns where
/// the new text lies in `next`.
///
/// Such a chunk reads as `prev` reads but for that one string, so a
/// stream of token chunks that differ only in their text (the usual case)
/// is read by two comparisons and one short scan per chunk instead of a
/// parse. `None` only says the shortcut does not apply (the chunk may
/// still be fine: it is then read in full).
///
/// ```
/// use keel_wire::chunk_view::{same_but_text, ChunkView};
/// let prev = r#"{"id":"c","model":"m","choices":[{"delta":{"content":"Hel"}}]}"#;
/// let view = ChunkView::parse_str(prev).unwrap();
/// let at = view.span(view.choices[0].delta.content.as_deref().unwrap()).unwrap();
/// let next = r#"{"id":"c","model":"m","choices":[{"delta":{"content":"lo!"}}]}"#;
/// let new_at = same_but_text(prev.as_bytes(), at.clone(), next).unwrap();
/// assert_eq!(&next[new_at], "lo!");
/// // An escape, or anything else changed, is read in full.
/// assert_eq!(same_but_text(prev.as_bytes(), at.clone(), &next.replace("lo!", "l\\n")), None);
/// assert_eq!(same_but_text(prev.as_bytes(), at, &next.replace("\"c\"", "\"d\"")), None);
/// ```
pub fn same_but_text(
    prev: &[u8],
    text: std::ops::Range<usize>,
    next: &str,
) -> Option<std::ops::Range<usize>> {
    // The value with its quotes: `prev[open..=close]`.
    let (open, close) = (text.start.checked_sub(1)?, text.end);
    if prev.get(open) != Some(&b'"') || prev.get(close) != Some(&b'"') {
        return None;
    }
    let (head, tail) = (prev.get(..=open)?, prev.get(close..)?);
    let n = next.as_bytes();
    if n.len() < head.len() + tail.len() || !n.starts_with(head) || !n.ends_with(tail) {
        return None;
    }
    let at = head.len()..n.len() - tail.len();
    let inner = n.get(at.clone())?;
    (crate::scan::plain_run(inner) == inner.len()).then_some(at)
}

/// The one-pass reading of a chunk ([`crate::scan`]): `None` leaves
/// the chunk to serde.
mod read {
    use super::{ChoiceView, ChunkView, DeltaView};
    use crate::openai::read::usage_at;
    use crate::openai::ToolCallDelta;
    use crate::scan::{count, list, null, object, once, skip, text, text_or_null, typed, ws};

    fn delta(s: &str, i: usize) -> Option<(DeltaView<'_>, usize)> {
        let b = s.as_bytes();
        let (mut role, mut content, mut refusal, mut tools) = (None, None, None, None);
        let end = object(b, i, |key, j| match key {
            b"role" => once(&mut role, text_or_null(s, j)),
            b"content" => once(&mut content, text_or_null(s, j)),
            b"refusal" => once(&mut refusal, text_or_null(s, j)),
            b"tool_calls" => once(&mut tools, typed::<Option<Vec<ToolCallDelta>>>(b, j, 4)),
            _ => skip(b, j, 4),
        })?;
        let view = DeltaView {
            role: role.flatten(),
            content: content.flatten(),
            tool_calls: tools.flatten(),
            refusal: refusal.flatten(),
        };
        Some((view, end))
    }

    fn choice(s: &str, i: usize) -> Option<(ChoiceView<'_>, usize)> {
        let b = s.as_bytes();
        let (mut delta_view, mut finish, mut index, mut logprobs) = (None, None, None, None);
        let end = object(b, i, |key, j| match key {
            b"delta" => once(&mut delta_view, delta(s, j)),
            b"finish_reason" => once(&mut finish, text_or_null(s, j)),
            b"index" => once(&mut index, count(b, j)),
            b"logprobs" => once(
                &mut logprobs,
                null(b, j)
                    .map(|((), end)| (false, end))
                    .or_else(|| Some((true, skip(b, j, 3)?))),
            ),
            _ => skip(b, j, 3),
        })?;
        let view = ChoiceView {
            index: index.unwrap_or(0),
            logprobs: logprobs.unwrap_or(false),
            delta: delta_view?,
            finish_reason: finish.flatten(),
        };
        Some((view, end))
    }

    /// The view of `b`, or `None` to leave it to serde.
    pub(super) fn chunk(b: &[u8]) -> Option<ChunkView<'_>> {
        // One check of the whole chunk makes every string in it text: what
        // is not UTF-8 is serde's to judge.
        chunk_str(simdutf8::basic::from_utf8(b).ok()?)
    }

    /// The view of `s`, or `None` to leave it to serde.
    pub(super) fn chunk_str(s: &str) -> Option<ChunkView<'_>> {
        let b = s.as_bytes();
        let (mut id, mut model, mut choices, mut usage) = (None, None, None, None);
        let start = ws(b, 0);
        let end = object(b, start, |key, j| match key {
            b"id" => once(&mut id, text(s, j)),
            b"model" => once(&mut model, text(s, j)),
            b"choices" => once(&mut choices, list(b, j, 1, |k| choice(s, k))),
            b"usage" => once(&mut usage, usage_at(b, j)),
            _ => skip(b, j, 2),
        })?;
        if ws(b, end) != b.len() {
            return None;
        }
        Some(ChunkView {
            id: id?,
            model: model?,
            choices: choices?,
            usage: usage.flatten(),
            source: b,
        })
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
        assert_eq!(view.has_payload(), full.has_payload());
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

    /// What the pipeline reads of a view, as text to compare.
    fn reading(v: &ChunkView<'_>) -> String {
        let choices: Vec<String> = v
            .choices
            .iter()
            .map(|c| {
                format!(
                    "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
                    c.index,
                    c.logprobs,
                    c.delta.role,
                    c.delta.content,
                    c.delta.tool_calls,
                    c.delta.refusal,
                    c.finish_reason
                )
            })
            .collect();
        format!("{}|{}|{:?}|{choices:?}", v.id, v.model, v.usage)
    }

    #[test]
    fn the_scanner_reads_what_serde_reads() {
        for json in [
            &br#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-upstream","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#[..],
            br#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            br#"{"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            br#" { "id" : "c" , "model" : "m" , "usage" : null , "choices" : [ { "delta" : { "content" : "a\n\"b\"\\ \/" , "refusal" : null , "role" : null } , "logprobs" : null } ] } "#,
            br#"{"id":"c","model":"m","choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
            br#"{"id":"c","model":"m","x":[-1.5,0,0.25,12,true,false,null,{"y":[[]]},{}],"choices":[{"delta":{"refusal":"no"}}]}"#,
            br#"{"id":"c","model":"m","choices":[{"index":2,"delta":{"content":"a"},"logprobs":{"content":[{"token":"a","logprob":-0.5,"top_logprobs":[]}]}},{"index":1,"delta":{},"logprobs":null}]}"#,
        ] {
            let fast = read::chunk(json).unwrap_or_else(|| panic!("not scanned: {}", String::from_utf8_lossy(json)));
            let slow: ChunkView = serde_json::from_slice(json).unwrap();
            assert_eq!(reading(&fast), reading(&slow));
        }
    }

    #[test]
    fn a_usual_request_is_read_in_one_pass() {
        for json in [
            &br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"temperature":0.2,"stream":false}"#[..],
            br#"{"model":"m","messages":[{"role":"user","content":"a\n\"b\"","name":"n","x":1}],"stream":true,"stream_options":{"include_usage":true},"metadata":{"k":"v"},"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}"#,
        ] {
            let (fast, _) = crate::openai::read::request(json).unwrap_or_else(|| panic!("not scanned: {}", String::from_utf8_lossy(json)));
            assert_eq!(fast, serde_json::from_slice::<crate::openai::ChatRequest>(json).unwrap());
        }
    }

    #[test]
    fn the_scanner_leaves_to_serde_what_it_does_not_handle_and_both_reject_bad_json() {
        // Accepted by serde, left by the scanner: an exponent (it may be
        // out of a Value's range), \u escapes, a duplicate field.
        let json = br#"{"id":"c","model":"m","x":[-1.5e3,1E+2],"choices":[]}"#;
        assert!(read::chunk(json).is_none());
        assert!(ChunkView::parse(json).is_ok());
        let json = br#"{"id":"c","model":"m","choices":[{"delta":{"content":"caf\u00e9"}}]}"#;
        assert!(read::chunk(json).is_none());
        assert_eq!(
            ChunkView::parse(json).unwrap().choices[0]
                .delta
                .content
                .as_deref(),
            Some("caf\u{e9}")
        );
        // Rejected by both: bad literals and numbers, control characters,
        // trailing bytes, a wrong type, a missing delta, duplicates.
        for json in [
            &br#"{"id":"c","model":"m","created":tru,"choices":[]}"#[..],
            br#"{"id":"c","model":"m","created":01,"choices":[]}"#,
            br#"{"id":"c","model":"m","created":1.,"choices":[]}"#,
            br#"{"id":"c","model":"m","created":-,"choices":[]}"#,
            br#"{"id":"c","model":"m","created":1e,"choices":[]}"#,
            b"{\"id\":\"c\",\"model\":\"m\",\"x\":\"a\x01b\",\"choices\":[]}",
            br#"{"id":"c","model":"m","x":"\q","choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[]}x"#,
            br#"{"id":"c","model":"m","choices":[],}"#,
            br#"{"id":"c","model":5,"choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[{"index":0}]}"#,
            br#"{"id":"c","id":"d","model":"m","choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            // Found by the chunk_view fuzz target: a key that is not UTF-8.
            b"{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"delta\":{\"cont\xc1nt\":\"a\"}}]}",
        ] {
            let text = String::from_utf8_lossy(json);
            assert!(read::chunk(json).is_none(), "scanned: {text}");
            assert!(ChunkView::parse(json).is_err(), "parsed: {text}");
        }
    }

    #[test]
    fn a_role_only_chunk_has_no_payload() {
        let json =
            br#"{"id":"c","model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        let view = ChunkView::parse(json).unwrap();
        assert!(view.has_role());
        assert!(!view.has_payload());
        assert!(!serde_json::from_slice::<ChatChunk>(json)
            .unwrap()
            .has_payload());
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
