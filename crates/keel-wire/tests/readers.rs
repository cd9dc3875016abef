//! The hand-written readers of the request and answer types read what
//! serde's derive with `#[serde(flatten)] extra` read: the same values, the
//! same defaults, the same unknown fields, and an error wherever the derive
//! gave one, with the same message (the position may differ: the derive
//! reports it at the end of the buffered object).
//!
//! The `Derived*` types below are the types as they were before the readers
//! were written by hand, derive and all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use keel_wire::openai::{
    ChatRequest, ChatResponse, Choice, Content, Extra, Message, ResponseFormat, Stop, Tool,
    ToolCall, Usage,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
struct DerivedChatRequest {
    model: String,
    messages: Vec<DerivedMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream_options: Option<DerivedStreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Serialize, Deserialize)]
struct DerivedStreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    include_usage: Option<bool>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DerivedRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
    #[serde(untagged)]
    Other(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct DerivedMessage {
    role: DerivedRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refusal: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

fn completion() -> String {
    "chat.completion".into()
}

#[derive(Debug, Serialize, Deserialize)]
struct DerivedChatResponse {
    id: String,
    #[serde(default = "completion")]
    object: String,
    #[serde(default)]
    created: u64,
    model: String,
    choices: Vec<DerivedChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<DerivedUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Serialize, Deserialize)]
struct DerivedChoice {
    #[serde(default)]
    index: u32,
    message: DerivedMessage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logprobs: Option<Value>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Debug, Serialize, Deserialize)]
struct DerivedUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: u32,
    #[serde(flatten)]
    extra: Extra,
}

/// serde_json's message without its position, the test types' names as
/// the real ones. The derive said only "data did not match any variant of
/// untagged enum Role" of a role that is not a string; the reader names
/// what it got, as serde does elsewhere.
fn message(e: &serde_json::Error) -> String {
    let s = e.to_string().replace("struct Derived", "struct ");
    let s = match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    if s == "data did not match any variant of untagged enum DerivedRole" {
        return "a role that is not a string".into();
    }
    match s.strip_prefix("invalid type: ") {
        Some(rest) if rest.ends_with(", expected a role") => "a role that is not a string".into(),
        _ => s,
    }
}

/// Both readings of `json` as `A` (hand-written) and `B` (derived): equal
/// values, or errors with equal messages.
fn same_reading<A, B>(json: &str) -> Result<(), String>
where
    A: DeserializeOwned + Serialize,
    B: DeserializeOwned + Serialize,
{
    let a = serde_json::from_str::<A>(json);
    let b = serde_json::from_str::<B>(json);
    match (a, b) {
        (Ok(a), Ok(b)) => {
            let (a, b) = (
                serde_json::to_value(a).unwrap(),
                serde_json::to_value(b).unwrap(),
            );
            if a == b {
                Ok(())
            } else {
                Err(format!("{json}\n  by hand: {a}\n  derived: {b}"))
            }
        }
        (Err(a), Err(b)) if message(&a) == message(&b) => Ok(()),
        (a, b) => Err(format!(
            "{json}\n  by hand: {:?}\n  derived: {:?}",
            a.map(|v| serde_json::to_value(v).unwrap())
                .map_err(|e| e.to_string()),
            b.map(|v| serde_json::to_value(v).unwrap())
                .map_err(|e| e.to_string()),
        )),
    }
}

#[test]
fn the_readers_agree_with_the_derive_on_chosen_cases() {
    let requests = [
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true,"x":1},"max_tokens":3,"temperature":0.5,"future":{"a":[1,2]}}"#,
        r#"{"model":"m","messages":[{"role":"critic","content":[{"type":"text","text":"a"}],"name":"n","weight":2}]}"#,
        r#"{"model":"m","messages":[],"stream":null,"user":null}"#,
        r#"{"messages":[]}"#,
        r#"{"model":"m"}"#,
        r#"{"model":"m","messages":[{"content":"no role"}]}"#,
        r#"{"model":"m","messages":[{"role":5}]}"#,
        r#"{"model":"m","messages":[{"role":null}]}"#,
        r#"{"model":"m","messages":[],"stream":"yes"}"#,
        r#"{"model":"m","messages":[],"max_tokens":-1}"#,
        r#"{"model":"m","messages":[],"model":"n"}"#,
        r#"{"model":"m","messages":[],"x":1,"x":2}"#,
        r#"{"model":"m","messages":[],"stream":true,"stream":false}"#,
        r#"{"model":"m","messages":[],"mod\u0065l":"escaped key"}"#,
        r#"{"model":7,"messages":[]}"#,
        r#"[]"#,
        r#"["m",[]]"#,
        r#""text""#,
        r#"null"#,
        r#"{"model":"m","messages":{}}"#,
        r#"{"model":"m","messages":[],"stop":["a","b"],"seed":-3,"n":2,"top_p":1}"#,
    ];
    for json in requests {
        same_reading::<ChatRequest, DerivedChatRequest>(json).unwrap();
    }
    let responses = [
        r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":0}}}"#,
        r#"{"id":"c","model":"m","choices":[{"message":{"role":"assistant","content":null,"refusal":"no"}}]}"#,
        r#"{"id":"c","model":"m","choices":[],"service_tier":"default","usage":null}"#,
        r#"{"id":"c","model":"m","choices":[{"message":{"role":"assistant"},"index":1,"index":2}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0}]}"#,
        r#"{"id":"c","model":"m"}"#,
        r#"{"model":"m","choices":[]}"#,
        r#"{"id":"c","model":"m","choices":[],"created":-1}"#,
        r#"{"id":"c","model":"m","choices":[],"usage":{"total_tokens":"many"}}"#,
        r#"{"id":"c","model":"m","choices":[],"object":null}"#,
        r#"{"id":"c","model":"m","choices":[{"message":{"role":"assistant","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
    ];
    for json in responses {
        same_reading::<ChatResponse, DerivedChatResponse>(json).unwrap();
    }
    same_reading::<Choice, DerivedChoice>(r#"{"message":{"role":"tool"},"extra":true}"#).unwrap();
    same_reading::<Usage, DerivedUsage>(r#"{}"#).unwrap();
    same_reading::<Message, DerivedMessage>(r#"{"role":"developer","content":"x"}"#).unwrap();
}

/// A JSON value of any type, small.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("3".to_string()),
        Just("2.5".to_string()),
        "[a-z\"\\\\]{0,6}".prop_map(|s| Value::from(s).to_string()),
        Just("[]".to_string()),
        Just("[\"a\",1]".to_string()),
        Just("{}".to_string()),
        Just(r#"{"role":"user","content":"hi"}"#.to_string()),
        Just(r#"[{"role":"assistant","content":"x","k":1}]"#.to_string()),
        Just(r#"[{"index":0,"message":{"role":"assistant","content":"x"}}]"#.to_string()),
        Just(r#"{"prompt_tokens":1,"total_tokens":2}"#.to_string()),
        Just(r#"{"include_usage":true}"#.to_string()),
    ]
}

/// An object whose members are drawn from `keys` (known fields, repeats,
/// unknown and escaped keys) with values of any type.
fn object(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(keys), any_value()), 0..8).prop_map(
        |members| {
            let parts: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", parts.join(","))
        },
    )
}

const REQUEST_KEYS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "temperature",
    "n",
    "stop",
    "seed",
    "tool_choice",
    "user",
    "unknown",
    "mod\\u0065l",
    "metadata",
];
const RESPONSE_KEYS: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "choices",
    "usage",
    "system_fingerprint",
    "service_tier",
    "i\\u0064",
];
const CHOICE_KEYS: &[&str] = &["index", "message", "finish_reason", "logprobs", "other"];
const MESSAGE_KEYS: &[&str] = &[
    "role",
    "content",
    "name",
    "tool_call_id",
    "refusal",
    "audio",
    "r\\u006fle",
];
const USAGE_KEYS: &[&str] = &[
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "details",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_read_as_the_derive_read_them(json in object(REQUEST_KEYS)) {
        same_reading::<ChatRequest, DerivedChatRequest>(&json).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn responses_read_as_the_derive_read_them(json in object(RESPONSE_KEYS)) {
        same_reading::<ChatResponse, DerivedChatResponse>(&json).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn choices_messages_and_usage_read_as_the_derive_read_them(
        choice in object(CHOICE_KEYS),
        message in object(MESSAGE_KEYS),
        usage in object(USAGE_KEYS),
    ) {
        same_reading::<Choice, DerivedChoice>(&choice).map_err(TestCaseError::fail)?;
        same_reading::<Message, DerivedMessage>(&message).map_err(TestCaseError::fail)?;
        same_reading::<Usage, DerivedUsage>(&usage).map_err(TestCaseError::fail)?;
    }
}
