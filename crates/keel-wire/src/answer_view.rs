//! What a gateway reads of a whole (non-streamed) OpenAI answer, without
//! building a [`ChatResponse`].
//!
//! **Why.** When the client speaks the provider's API, the provider's bytes
//! go back to it as they came (only `model` replaced), so the typed
//! [`ChatResponse`] is only needed when something has to change the answer
//! or translate it. To decide whether the answer is usable, a gateway reads
//! little: the first choice's text, refusal and finish reason, and the
//! usage. Reading only those in one pass over the bytes costs about a third
//! of building the typed response (every string owned, the unknown fields
//! kept as [`serde_json::Value`] maps).
//!
//! **What it accepts.** [`AnswerFacts::read`] accepts a subset of what the
//! typed parse accepts: every field the typed parse reads is checked for the
//! type it reads, unknown fields for JSON that a `Value` holds, and anything
//! else (content parts, tool calls, a `\u` escape, a number with an
//! exponent) gives `None`, leaving the answer to serde. So whoever reads the
//! facts now can still build the typed response from the same bytes later.
//!
//! ```
//! use keel_wire::answer_view::AnswerFacts;
//! let json = br#"{"id":"c1","object":"chat.completion","created":1,"model":"up",
//!   "choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],
//!   "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
//! let facts = AnswerFacts::read(json).unwrap();
//! assert_eq!(facts.text.as_deref(), Some("Hi"));
//! assert_eq!(facts.finish_reason.as_deref(), Some("stop"));
//! assert_eq!(facts.usage.unwrap().total_tokens, 4);
//! // Tool calls are the typed parse's to read.
//! assert!(AnswerFacts::read(br#"{"id":"c","model":"m","choices":[{"message":
//!   {"role":"assistant","tool_calls":[]}}]}"#).is_none());
//! ```
//!
//! [`ChatResponse`]: crate::openai::ChatResponse

use std::ops::Range;

use crate::openai::{ChatResponse, Choice, Content, Message, Role, Usage};

/// What a gateway reads of one `chat.completion` body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerFacts {
    /// Completion id.
    pub id: String,
    /// How many choices the answer has.
    pub choices: usize,
    /// The first choice's text (`None` when its content is `null` or absent).
    pub text: Option<String>,
    /// The first choice's refusal.
    pub refusal: Option<String>,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
    /// Token usage.
    pub usage: Option<Usage>,
    /// Where the value of `model` lies in the bytes, quotes included
    /// (`None` when it had escapes).
    model_at: Option<Range<usize>>,
}

impl AnswerFacts {
    pub(crate) fn new(
        id: String,
        choices: usize,
        text: Option<String>,
        refusal: Option<String>,
        finish_reason: Option<String>,
        usage: Option<Usage>,
        model_at: Option<Range<usize>>,
    ) -> Self {
        AnswerFacts {
            id,
            choices,
            text,
            refusal,
            finish_reason,
            usage,
            model_at,
        }
    }

    /// Reads `json`; `None` leaves it to the typed parse (which accepts it
    /// or names what is wrong).
    pub fn read(json: &[u8]) -> Option<AnswerFacts> {
        read::answer(json)
    }

    /// The bytes the facts were read from, with the value of `model`
    /// replaced by `model` (written as a JSON string) and everything else
    /// byte for byte. `None` when the model had escapes (it was not read in
    /// place).
    ///
    /// ```
    /// use keel_wire::answer_view::AnswerFacts;
    /// let json = br#"{"id":"c","model":"up-1","choices":[]}"#;
    /// let facts = AnswerFacts::read(json).unwrap();
    /// assert_eq!(
    ///     facts.with_model(json, "route").unwrap(),
    ///     br#"{"id":"c","model":"route","choices":[]}"#.to_vec()
    /// );
    /// ```
    pub fn with_model(&self, json: &[u8], model: &str) -> Option<Vec<u8>> {
        let at = self.model_at.clone()?;
        let (head, tail) = (json.get(..at.start)?, json.get(at.end..)?);
        let mut out = Vec::with_capacity(json.len() + model.len() + 2);
        out.extend_from_slice(head);
        // Writing a string into a Vec cannot fail.
        serde_json::to_writer(&mut out, model).ok()?;
        out.extend_from_slice(tail);
        Some(out)
    }

    /// [`with_model`](Self::with_model), and the facts then describe the
    /// new bytes (so the model can be replaced again in them).
    pub fn set_model(&mut self, json: &[u8], model: &str) -> Option<Vec<u8>> {
        let out = self.with_model(json, model)?;
        let start = self.model_at.as_ref()?.start;
        let end = start + (out.len() + self.model_at.as_ref()?.len() - json.len());
        self.model_at = Some(start..end);
        Some(out)
    }

    /// A typed response that says what the facts say (one choice, no
    /// unknown fields): the stand-in for a body the typed parse should
    /// have read but did not.
    pub fn response(&self, model: &str) -> ChatResponse {
        let mut message = Message::new(Role::Assistant, String::new());
        message.content = self.text.clone().map(Content::Text);
        message.refusal = self.refusal.clone();
        ChatResponse {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: 0,
            model: model.into(),
            choices: (self.choices > 0)
                .then(|| Choice {
                    index: 0,
                    message,
                    finish_reason: self.finish_reason.clone(),
                    logprobs: None,
                    extra: Default::default(),
                })
                .into_iter()
                .collect(),
            usage: self.usage.clone(),
            system_fingerprint: None,
            extra: Default::default(),
        }
    }
}

/// The one-pass reading of a whole answer ([`crate::scan`]).
mod read {
    use std::borrow::Cow;

    use super::AnswerFacts;
    use crate::openai::read::usage_at;
    use crate::scan::{array, count, null, object, once, skip, text, text_or_null, ws};

    /// What a whole answer's first message says, or `None` to leave the
    /// message to serde: content other than a string or `null` (parts),
    /// tool calls, or anything the typed parse might refuse.
    type MessageFacts = (Option<String>, Option<String>);

    fn message(s: &str, i: usize) -> Option<(MessageFacts, usize)> {
        let b = s.as_bytes();
        let (mut role, mut content, mut refusal) = (None, None, None);
        let (mut name, mut tools, mut tool_id) = (None, None, None);
        let end = object(b, i, |key, j| match key {
            b"role" => once(&mut role, text(s, j)),
            b"content" => once(&mut content, text_or_null(s, j)),
            b"refusal" => once(&mut refusal, text_or_null(s, j)),
            b"name" => once(&mut name, text_or_null(s, j)),
            b"tool_call_id" => once(&mut tool_id, text_or_null(s, j)),
            b"tool_calls" => once(&mut tools, null(b, j)),
            _ => skip(b, j, 4),
        })?;
        role?;
        let owned = |t: Option<Option<Cow<'_, str>>>| t.flatten().map(Cow::into_owned);
        Some(((owned(content), owned(refusal)), end))
    }

    /// A choice of a whole answer: its message and finish reason.
    fn answer_choice(s: &str, i: usize) -> Option<((MessageFacts, Option<String>), usize)> {
        let b = s.as_bytes();
        let (mut index, mut msg, mut finish, mut logprobs) = (None, None, None, None);
        let end = object(b, i, |key, j| match key {
            b"index" => once(&mut index, count::<u32>(b, j)),
            b"message" => once(&mut msg, message(s, j)),
            b"finish_reason" => once(&mut finish, text_or_null(s, j)),
            b"logprobs" => once(&mut logprobs, skip(b, j, 3).map(|e| ((), e))),
            _ => skip(b, j, 3),
        })?;
        let finish = finish.flatten().map(Cow::into_owned);
        Some(((msg?, finish), end))
    }

    /// The facts of a whole `chat.completion`, or `None` to leave it to
    /// serde. Every field the typed parse reads is checked for the type it
    /// reads (so what this accepts, it accepts); what the facts keep is the
    /// first choice's.
    pub(crate) fn answer(b: &[u8]) -> Option<AnswerFacts> {
        // One check of the whole body makes every string in it text.
        let s = simdutf8::basic::from_utf8(b).ok()?;
        let (mut id, mut object_name, mut created, mut model) = (None, None, None, None);
        let (mut choices, mut usage, mut fingerprint) = (None, None, None);
        let mut first = None;
        let mut n = 0usize;
        let start = ws(b, 0);
        let end = object(b, start, |key, j| match key {
            b"id" => once(&mut id, text(s, j)),
            b"object" => once(&mut object_name, text(s, j)),
            b"created" => once(&mut created, count::<u64>(b, j)),
            b"model" => once(&mut model, text(s, j).map(|(t, end)| ((t, j..end), end))),
            b"choices" => {
                let read = array(b, j, |k| {
                    let (facts, end) = answer_choice(s, k)?;
                    if n == 0 {
                        first = Some(facts);
                    }
                    n += 1;
                    Some(end)
                });
                once(&mut choices, read.map(|end| ((), end)))
            }
            b"usage" => once(&mut usage, usage_at(b, j)),
            b"system_fingerprint" => once(&mut fingerprint, text_or_null(s, j)),
            _ => skip(b, j, 2),
        })?;
        if ws(b, end) != b.len() {
            return None;
        }
        choices?;
        let (model, model_at) = model?;
        // The value's span, quotes included, when it was read in place.
        let model_at = matches!(model, Cow::Borrowed(_)).then_some(model_at);
        let ((text, refusal), finish_reason) = first.unwrap_or_default();
        Some(AnswerFacts::new(
            id?.into_owned(),
            n,
            text,
            refusal,
            finish_reason,
            usage.flatten(),
            model_at,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"you\"\n","refusal":null,"annotations":[]},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_1","service_tier":"default"}"#;

    #[test]
    fn reads_what_the_typed_parse_reads() {
        let facts = AnswerFacts::read(ANSWER.as_bytes()).unwrap();
        let full: ChatResponse = serde_json::from_str(ANSWER).unwrap();
        assert_eq!(facts.id, full.id);
        assert_eq!(facts.choices, 1);
        assert_eq!(facts.text.as_deref(), full.text());
        assert_eq!(facts.text.as_deref(), Some("Hello \"you\"\n"));
        assert_eq!(facts.refusal, None);
        assert_eq!(facts.finish_reason.as_deref(), full.finish_reason());
        assert_eq!(facts.usage, full.usage);
        assert_eq!(facts.response("gpt-up").text(), full.text());
    }

    #[test]
    fn leaves_to_serde_what_it_does_not_read_itself() {
        let cases = [
            // Content parts, tool calls, a \u escape, an exponent.
            ANSWER.replace(
                r#""content":"Hello \"you\"\n""#,
                r#""content":[{"type":"text","text":"x"}]"#,
            ),
            ANSWER.replace(r#""refusal":null"#, r#""tool_calls":[]"#),
            ANSWER.replace("gpt-up", "gpt\\u002dup"),
            ANSWER.replace(r#""service_tier":"default""#, r#""score":1e3"#),
            // Types the typed parse refuses.
            ANSWER.replace("1700000000", "\"1700000000\""),
            ANSWER.replace(r#""index":0"#, r#""index":-1"#),
            ANSWER.replace(r#""role":"assistant""#, r#""role":null"#),
            ANSWER.replace(r#""object":"chat.completion""#, r#""object":null"#),
            // A field read twice, a missing required field, trailing bytes.
            ANSWER.replace(r#""created""#, r#""id":"x","created""#),
            ANSWER.replace(r#""role":"assistant","#, ""),
            ANSWER.replace(r#""id":"chatcmpl-1","#, ""),
            format!("{ANSWER} x"),
        ];
        for case in &cases {
            assert!(AnswerFacts::read(case.as_bytes()).is_none(), "read {case}");
        }
        // Null where the typed parse allows it, and no choices at all.
        let sparse =
            r#"{"id":"c","model":"m","choices":[],"usage":null,"system_fingerprint":null}"#;
        let facts = AnswerFacts::read(sparse.as_bytes()).unwrap();
        assert_eq!((facts.choices, facts.text, facts.usage), (0, None, None));
        assert!(serde_json::from_str::<ChatResponse>(sparse).is_ok());
    }

    #[test]
    fn replaces_the_model_in_place_and_only_the_model() {
        let facts = AnswerFacts::read(ANSWER.as_bytes()).unwrap();
        let out = facts.with_model(ANSWER.as_bytes(), "r\"1").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ANSWER.replace(r#""model":"gpt-up""#, r#""model":"r\"1""#)
        );
        // Again, in the new bytes.
        let mut facts = facts;
        let once = facts.set_model(ANSWER.as_bytes(), "r\"1").unwrap();
        let twice = facts.set_model(&once, "route").unwrap();
        assert_eq!(
            String::from_utf8(twice).unwrap(),
            ANSWER.replace(r#""model":"gpt-up""#, r#""model":"route""#)
        );
        let escaped = ANSWER.replace("gpt-up", "gpt\\/up");
        let facts = AnswerFacts::read(escaped.as_bytes()).unwrap();
        assert_eq!(facts.with_model(escaped.as_bytes(), "r"), None);
    }
}
