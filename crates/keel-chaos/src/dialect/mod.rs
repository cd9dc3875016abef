//! Provider wire formats: one file per provider behind one trait.
//!
//! A dialect parses its request format into [`ChatRequest`], renders an
//! [`Answer`] as a body or a list of SSE events, and renders every
//! [`Failure`] with that provider's real status, body and headers.

mod anthropic;
mod azure;
pub(crate) mod bedrock;
pub(crate) mod gemini;
pub(crate) mod gemini_signatures;
mod openai;
mod openai_responses;

pub(crate) use azure::{route as azure_route, AzureRoute, Operation as AzureOperation};

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use crate::answer::{Answer, ChatRequest};
use crate::limits::{Denied, LimitSnapshot};
use crate::scenario::{Kind, RetryAfterStyle};

/// Everything that makes an upstream answer with an error.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Injected rate limit.
    RateLimit {
        retry_after: Duration,
        style: RetryAfterStyle,
    },
    /// The upstream's own rpm/tpm limit refused the request.
    LimitExceeded(Denied),
    Quota,
    Overloaded,
    Server(u16),
    Status(u16),
    /// Wrong key (`Some`) or none at all (`None`).
    Auth(Option<String>),
    ContextOverflow {
        tokens: u64,
        limit: u64,
    },
    BadRequest,
    NotFound {
        model: String,
    },
    /// The client's request is malformed.
    InvalidBody {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    UnknownRoute {
        method: String,
        path: String,
    },
}

impl Failure {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::InvalidBody {
            message: message.into(),
            param: None,
            code: None,
        }
    }
}

/// A complete error answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Per-response values that make ids and timestamps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseIds {
    /// Seed of this attempt's ids.
    pub(crate) seed: u64,
    /// Unix seconds.
    pub(crate) created: u64,
}

/// One provider's wire format.
pub(crate) trait Dialect: Send + Sync {
    /// Does the request carry `key` the way this provider expects it?
    /// `Err` carries what was provided, if anything.
    fn check_key(&self, headers: &HeaderMap, key: &str) -> Result<(), Option<String>>;
    /// Parse and validate a chat request.
    fn parse(&self, headers: &HeaderMap, body: &[u8], seed: u64) -> Result<ChatRequest, Failure>;
    /// [`Dialect::parse`] for a request at `path` (a dialect that names
    /// the model or the mode in the path, like Gemini's and Bedrock's,
    /// reads them there).
    fn parse_at(
        &self,
        _path: &str,
        headers: &HeaderMap,
        body: &[u8],
        seed: u64,
    ) -> Result<ChatRequest, Failure> {
        self.parse(headers, body, seed)
    }
    /// A stream event with its payload cut (for `malformed_json`).
    fn break_event(&self, event: &Bytes) -> Bytes {
        break_event(event)
    }
    /// The content type of a streamed answer.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }
    /// The error answer for a failure.
    fn error(&self, failure: &Failure, model: &str) -> Reply;
    /// A non-streaming success body.
    fn complete(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Bytes;
    /// A streaming success, as complete SSE events.
    fn stream(&self, req: &ChatRequest, answer: &Answer, ids: ResponseIds) -> Vec<Bytes>;
    /// The error event a stream ends with when the provider fails mid-way
    /// (`overloaded`).
    fn stream_error(&self) -> Bytes;
    /// `GET /v1/models`.
    fn models(&self, models: &[String], created: u64) -> Bytes;
    /// Rate-limit headers describing the upstream's limits.
    fn limit_headers(&self, snapshot: &LimitSnapshot, headers: &mut HeaderMap);
    /// The request-id header and a fresh value for it.
    fn request_id(&self, seed: u64) -> (HeaderName, HeaderValue);
    /// Headers every answer carries.
    fn common_headers(&self, headers: &mut HeaderMap);
}

/// The dialect of a provider kind.
pub(crate) fn dialect(kind: Kind) -> &'static dyn Dialect {
    match kind {
        Kind::OpenAi => &openai::OpenAi,
        Kind::Anthropic => &anthropic::Anthropic,
        Kind::Azure => &azure::Azure,
        Kind::Gemini => &gemini::Gemini,
        Kind::Bedrock => &bedrock::Bedrock,
    }
}

/// The dialect of OpenAI's Responses API (`POST /v1/responses`).
pub(crate) fn openai_responses() -> &'static dyn Dialect {
    &openai_responses::OpenAiResponses
}

/// Models listed when an upstream does not restrict them.
pub(crate) fn default_models(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::OpenAi => &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini"],
        Kind::Bedrock => &[
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ],
        Kind::Anthropic => &[
            "claude-sonnet-4-5",
            "claude-opus-4-1",
            "claude-3-5-haiku-latest",
        ],
        Kind::Azure => &["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"],
        Kind::Gemini => &[
            "gemini-2.5-flash",
            "gemini-2.5-pro",
            "gemini-2.0-flash",
            "gemini-embedding-001",
            "text-embedding-004",
        ],
    }
}

/// An SSE event whose JSON payload is cut in half (for `malformed_json` on streams).
pub(crate) fn break_event(event: &Bytes) -> Bytes {
    let text = String::from_utf8_lossy(event);
    let trimmed = text.trim_end();
    let keep = crate::generate::cut(trimmed, trimmed.len() * 2 / 3);
    Bytes::from(format!("{keep}\n\n"))
}

pub(crate) fn header(headers: &mut HeaderMap, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// A JSON string literal.
pub(crate) fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

pub(crate) fn fingerprint(seed: u64) -> String {
    format!("fp_{:010x}", crate::generate::mix(seed) & 0xff_ffff_ffff)
}

/// Positive integer field (`max_tokens`): `Ok(None)` when absent.
pub(crate) fn positive_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<u64>, Value> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(v.clone()),
        },
    }
}
