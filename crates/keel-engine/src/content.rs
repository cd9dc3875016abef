//! Content checks: a 200 is not a success when the answer is cut off, empty,
//! a refusal, or JSON that does not match the schema the application needs.
//! This module decides what an answer *is*; the chain decides what to do
//! about it (continue, repair, fall back, return flagged).

use std::borrow::Cow;
use std::sync::Arc;

use crate::call::FullAnswer;
use crate::config::{Deployment, ProviderKind};

use keel_wire::content::extract_json;
use keel_wire::openai::{ChatRequest, ChatResponse, Content, Message, ResponseFormat, Role, Usage};
use serde_json::Value;

pub use crate::config::content::{
    ContentPolicy, RefusalPolicy, TruncationPolicy, DEFAULT_REFUSAL_PHRASES,
};

/// What structured output a request needs.
#[derive(Clone)]
pub(crate) enum JsonMode {
    /// Free text: never validated.
    Off,
    /// Any JSON object.
    Object,
    /// JSON matching a schema.
    Schema(Arc<jsonschema::Validator>, Arc<Value>),
}

impl JsonMode {
    /// The mode of a request: its `response_format`, else the route's schema.
    pub(crate) fn of(
        request: &ChatRequest,
        route_schema: Option<&Value>,
    ) -> Result<JsonMode, String> {
        match &request.response_format {
            Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
                Some(schema) => crate::config::content::compile_schema(schema)
                    .map(|v| JsonMode::Schema(Arc::new(v), Arc::new(schema.clone())))
                    .map_err(|e| {
                        format!(
                            "response_format.json_schema.schema is not a valid JSON Schema: {e}"
                        )
                    }),
                None => Ok(JsonMode::Object),
            },
            Some(ResponseFormat::JsonObject) => Ok(JsonMode::Object),
            _ => match route_schema {
                Some(schema) => crate::config::content::compile_schema(schema)
                    .map(|v| JsonMode::Schema(Arc::new(v), Arc::new(schema.clone())))
                    .map_err(|e| {
                        format!("the route's json_schema is not a valid JSON Schema: {e}")
                    }),
                None => Ok(JsonMode::Off),
            },
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        !matches!(self, JsonMode::Off)
    }

    /// The clean JSON text of `text`, or the validation errors.
    pub(crate) fn validate(&self, text: &str) -> Result<String, Vec<String>> {
        let Some(raw) = extract_json(text) else {
            return Err(vec!["the answer contains no JSON document".into()]);
        };
        let value: Value =
            serde_json::from_str(raw).map_err(|e| vec![format!("invalid JSON: {e}")])?;
        match self {
            JsonMode::Off => Ok(text.to_string()),
            JsonMode::Object => {
                if value.is_object() {
                    Ok(raw.to_string())
                } else {
                    Err(vec!["expected a JSON object".into()])
                }
            }
            JsonMode::Schema(v, _) => {
                let errors: Vec<String> = v
                    .iter_errors(&value)
                    .take(10)
                    .map(|e| {
                        let path = e.instance_path().to_string();
                        if path.is_empty() {
                            e.to_string()
                        } else {
                            format!("at {path}: {e}")
                        }
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(raw.to_string())
                } else {
                    Err(errors)
                }
            }
        }
    }
}

/// The verdict on an answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// A good answer.
    Good,
    /// Cut by `max_tokens`.
    Truncated,
    /// No text and no tool call.
    Empty,
    /// A refusal or a content filter.
    Refusal,
    /// Structured output that failed validation.
    Invalid(Vec<String>),
}

/// The first choice's text.
pub(crate) fn answer_text(resp: &ChatResponse) -> String {
    crate::call::first_text(resp).into_owned()
}

/// Whether `text` starts like a refusal: its first 80 characters,
/// lower-cased, begin with one of `phrases` (lower-cased already).
pub(crate) fn is_refusal_text(text: &str, phrases: &[String]) -> bool {
    let text = text.trim_start();
    let end = text.char_indices().nth(80).map_or(text.len(), |(i, _)| i);
    let head = &text[..end];
    if head.is_ascii() {
        // The common case, without building a lower-cased copy: an ASCII
        // character lower-cases to one ASCII byte.
        let head = head.as_bytes();
        return phrases.iter().any(|p| {
            let p = p.as_bytes();
            p.len() <= head.len()
                && head
                    .iter()
                    .zip(p)
                    .all(|(h, p)| h.to_ascii_lowercase() == *p)
        });
    }
    let head = head.to_lowercase();
    phrases.iter().any(|p| head.starts_with(p.as_str()))
}

/// Judges an answer. Truncation is judged before validity: a cut answer is
/// continued first and validated once whole.
pub(crate) fn judge(answer: &FullAnswer, json: &JsonMode, policy: &ContentPolicy) -> Verdict {
    let choice = answer.first_choice();
    if !choice.present {
        return Verdict::Empty;
    }
    let (text, tools) = (&choice.text, choice.tools);
    let refused = choice.refusal
        || choice.finish_reason == Some("content_filter")
        || (!tools && is_refusal_text(text, &policy.refusal_phrases));
    if refused {
        return Verdict::Refusal;
    }
    if choice.finish_reason == Some("length") {
        return Verdict::Truncated;
    }
    if text.trim().is_empty() && !tools {
        return Verdict::Empty;
    }
    if json.is_on() && !tools {
        if let Err(errors) = json.validate(text) {
            return Verdict::Invalid(errors);
        }
    }
    Verdict::Good
}

/// Judges a stream on what it said before its commit: a refusal (by field,
/// a `content_filter` finish or the route's phrases at the start of its
/// text), an end with no text and no tool call (empty), else good. What
/// comes after the commit is the pump's.
pub(crate) fn judge_prefix(p: &crate::stream::Prefix, policy: &ContentPolicy) -> Verdict {
    if p.refusal || p.filtered || (!p.tools && is_refusal_text(&p.text, &policy.refusal_phrases)) {
        return Verdict::Refusal;
    }
    if p.ended && !p.tools && p.text.trim().is_empty() {
        return Verdict::Empty;
    }
    Verdict::Good
}

/// Replaces the first choice's text.
pub(crate) fn set_text(resp: &mut ChatResponse, text: String) {
    if let Some(c) = resp.choices.first_mut() {
        c.message.content = Some(Content::Text(text));
    }
}

/// Replaces a valid structured answer's text by its clean JSON (fences and
/// prose around it removed); the answer is left untouched, its provider
/// bytes included, when the text already is exactly that JSON.
pub(crate) fn clean_json(resp: &mut crate::call::FullAnswer, json: &JsonMode) {
    let text = answer_text(resp.get());
    if let Ok(clean) = json.validate(&text) {
        if clean != text {
            set_text(resp.edit(), clean);
        }
    }
}

/// Whether a `length` finish came from the client's own limit: it asked
/// for one (`asked`), the deployment was sent it unclamped (`sent`), and the
/// answer used all of it (or did not say how much it used). A limit the
/// client did not set (none asked, or the deployment's maximum below it),
/// or an answer cut short of it, was not the client's.
pub(crate) fn cut_by_client_limit(
    asked: Option<u32>,
    sent: Option<u32>,
    completion_tokens: Option<u32>,
) -> bool {
    match (asked, sent) {
        (Some(asked), Some(sent)) if sent >= asked => {
            completion_tokens.is_none_or(|used| used >= asked)
        }
        _ => false,
    }
}

/// Adds `b`'s usage to `a`.
pub(crate) fn add_usage(a: &mut Option<Usage>, b: Option<&Usage>) {
    match (a.as_mut(), b) {
        (Some(a), Some(b)) => {
            a.prompt_tokens += b.prompt_tokens;
            a.completion_tokens += b.completion_tokens;
            a.total_tokens += b.total_tokens;
        }
        (None, Some(b)) => *a = Some(b.clone()),
        _ => {}
    }
}

/// The request that asks for the rest of a partial answer. The partial text
/// goes in as the assistant's turn (Anthropic continues it as a prefill) and
/// a user turn asks to go on without repeating.
pub(crate) fn continuation(request: &ChatRequest, partial: &str) -> ChatRequest {
    let mut r = request.clone();
    if !partial.is_empty() {
        r.messages.push(Message::assistant(partial));
        r.messages.push(Message::new(
            Role::User,
            "Your previous answer was cut off. Continue it exactly where it stopped, without repeating anything.",
        ));
    }
    r
}

/// The request that asks the model to fix invalid structured output.
pub(crate) fn repair(request: &ChatRequest, bad_answer: &str, errors: &[String]) -> ChatRequest {
    let mut r = request.clone();
    r.messages.push(Message::assistant(bad_answer));
    r.messages.push(Message::new(
        Role::User,
        format!(
            "Your answer is not valid: {}. Reply with only the corrected JSON document, nothing else.",
            errors.join("; ")
        ),
    ));
    r
}

fn with_system(request: &ChatRequest, instruction: String) -> ChatRequest {
    let mut r = request.clone();
    r.messages.insert(0, Message::system(instruction));
    r
}

/// The request as `dep` should see it for structured output: native
/// `json_schema` where the deployment declares it, the tool-use technique on
/// Anthropic (added in the body builder), JSON mode plus the schema in the
/// prompt on OpenAI-compatible servers without native support, and the
/// route's own schema as an instruction.
pub(crate) fn adapt_for<'a>(
    dep: &Deployment,
    request: &'a ChatRequest,
    json: &JsonMode,
) -> Cow<'a, ChatRequest> {
    match (&request.response_format, dep.kind) {
        (Some(ResponseFormat::JsonSchema { .. }), ProviderKind::Anthropic) => Cow::Borrowed(request),
        (
            Some(ResponseFormat::JsonSchema { json_schema }),
            ProviderKind::OpenAi | ProviderKind::Azure,
        ) => {
            if dep.capabilities.json_schema {
                return Cow::Borrowed(request);
            }
            let schema = json_schema.schema.clone().unwrap_or(Value::Null);
            let mut r = with_system(
                request,
                format!("Respond with only a JSON document that matches this JSON Schema, and nothing else: {schema}"),
            );
            r.response_format = Some(ResponseFormat::JsonObject);
            Cow::Owned(r)
        }
        (Some(ResponseFormat::JsonObject), ProviderKind::Anthropic | ProviderKind::Bedrock) => {
            let mut r = with_system(request, "Respond with only a JSON object, and nothing else.".into());
            r.response_format = None;
            Cow::Owned(r)
        }
        (None | Some(ResponseFormat::Text), _) => match json {
            JsonMode::Schema(_, schema) => Cow::Owned(with_system(
                request,
                format!("Respond with only a JSON document that matches this JSON Schema, and nothing else: {schema}"),
            )),
            _ => Cow::Borrowed(request),
        },
        _ => Cow::Borrowed(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema_mode() -> JsonMode {
        let schema =
            json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}});
        JsonMode::of(&ChatRequest::new("r", vec![]), Some(&schema)).unwrap()
    }

    #[test]
    fn json_in_a_code_fence_is_accepted_and_returned_clean() {
        let text = "Here you go:\n```json\n{\"a\": 1}\n```\nAnything else?";
        assert_eq!(schema_mode().validate(text), Ok("{\"a\": 1}".to_string()));
        assert_eq!(
            schema_mode().validate("Sure! {\"a\": 2} Hope it helps"),
            Ok("{\"a\": 2}".to_string())
        );
    }

    #[test]
    fn schema_errors_name_the_path() {
        let errors = schema_mode().validate("{\"a\": \"one\"}").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("at /a:"), "{errors:?}");
        let errors = schema_mode().validate("no json here").unwrap_err();
        assert_eq!(errors, ["the answer contains no JSON document"]);
    }

    #[test]
    fn a_stream_prefix_is_judged_on_what_it_said_before_its_commit() {
        use crate::stream::Prefix;
        let policy = ContentPolicy::default();
        let prefix = |text: &str, tools, refusal, filtered, ended| Prefix {
            text: text.into(),
            chars: text.chars().count(),
            tools,
            refusal,
            filtered,
            ended,
        };
        let rows = [
            // (text, tools, refusal field, content_filter, ended) -> verdict
            (
                prefix("Rivers carve valleys over", false, false, false, false),
                Verdict::Good,
            ),
            (prefix("Rivers.", false, false, false, true), Verdict::Good),
            (prefix("", false, true, false, false), Verdict::Refusal),
            (
                prefix("Rivers carve", false, false, true, true),
                Verdict::Refusal,
            ),
            (
                prefix("I'm sorry, but I can't help", false, false, false, false),
                Verdict::Refusal,
            ),
            // A tool call that starts like a refusal is not one.
            (
                prefix("I'm sorry, but I can't help", true, false, false, false),
                Verdict::Good,
            ),
            (prefix("", false, false, false, true), Verdict::Empty),
            (prefix(" \n ", false, false, false, true), Verdict::Empty),
            (prefix("", true, false, false, true), Verdict::Good),
            // No text yet and not ended (the window's time ran out): sent.
            (prefix("", false, false, false, false), Verdict::Good),
        ];
        for (p, want) in rows {
            assert_eq!(judge_prefix(&p, &policy), want, "{p:?}");
        }
    }

    #[test]
    fn refusal_phrases_match_the_start_case_insensitively() {
        let p = ContentPolicy::default();
        assert!(is_refusal_text(
            "  I'm sorry, but I can't help with that.",
            &p.refusal_phrases
        ));
        assert!(is_refusal_text(
            "I CANNOT HELP WITH this request",
            &p.refusal_phrases
        ));
        assert!(!is_refusal_text(
            "Here is why I'm sorry, but I can't stop",
            &p.refusal_phrases
        ));
    }

    /// The matcher as first written: lower-case a copy of the first 80
    /// characters, then compare.
    fn refusal_by_copy(text: &str, phrases: &[String]) -> bool {
        let start: String = text
            .trim_start()
            .chars()
            .take(80)
            .collect::<String>()
            .to_lowercase();
        phrases.iter().any(|p| start.starts_with(p.as_str()))
    }

    proptest! {
        #[test]
        fn the_refusal_matcher_agrees_with_the_copying_one(
            text in "[ \n]{0,3}(I'M SORRY|i can|I Cannot|As an AI|Σ|İ|é)?[a-zA-Z ',.Σİé]{0,90}",
            extra in proptest::collection::vec("[a-zA-Z' σi̇é]{1,90}", 0..3),
        ) {
            let mut phrases: Vec<String> = ContentPolicy::default().refusal_phrases.to_vec();
            phrases.extend(extra);
            prop_assert_eq!(is_refusal_text(&text, &phrases), refusal_by_copy(&text, &phrases));
        }

        #[test]
        fn validation_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = schema_mode().validate(&text);
            let _ = JsonMode::Object.validate(&text);
            let _ = is_refusal_text(&text, &ContentPolicy::default().refusal_phrases);
        }

        #[test]
        fn validation_never_panics_on_bracket_soup(text in "[\\[\\]{}\"\\\\:,a0 ]{0,300}") {
            let _ = schema_mode().validate(&text);
        }
    }
}
