//! AWS Bedrock Runtime's errors: the exception named by the
//! `x-amzn-ErrorType` header (`ThrottlingException:http://internal...`,
//! the part before the colon) or, in a ConverseStream, by an exception
//! event's `:exception-type` (`throttlingException`), and the `message` of
//! the JSON body.
//!
//! Bedrock's statuses say less than its exception names: a
//! `ServiceQuotaExceededException` is a 400 (not a retryable 429), a
//! `ModelNotReadyException` a 429 that means "the model is loading", and a
//! too-long prompt a `ValidationException` like any other bad request but
//! for its message. So the name decides, and the message tells a context
//! overflow from an invalid request. A name this table does not know is
//! not retried (a 5xx one may fall back).

use std::time::SystemTime;

use http::HeaderMap;

use crate::class::{Action, Classification, FailureClass};
use crate::retry_after::{explicit_retry_hint, retry_hint};

/// Messages cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 1024;

/// What a `ValidationException`'s message says when the prompt does not
/// fit the model (Bedrock words it per model family).
const CONTEXT_MARKERS: &[&str] = &[
    "input is too long",
    "too many input tokens",
    "prompt is too long",
    "too many tokens",
    "maximum context length",
    "context window",
    "context length",
    "input length",
];

/// The exception name of a Bedrock error answer: its `x-amzn-ErrorType`
/// header up to the first `:`; `None` when the answer has none.
pub fn bedrock_error_type(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("x-amzn-errortype")?.to_str().ok()?;
    let name = v.split(':').next().unwrap_or(v).trim();
    (!name.is_empty()).then_some(name)
}

/// The class of Bedrock exception `name` (either case of its first
/// letter: the header says `ThrottlingException`, a stream event
/// `throttlingException`) with `message`; `None` for a name not in the
/// table.
fn class_of(name: &str, message: &str) -> Option<(FailureClass, Option<Action>)> {
    let mut chars = name.chars();
    let first = chars.next()?.to_ascii_uppercase();
    let name = format!("{first}{}", chars.as_str());
    let fall_back_only = Some(Action {
        retry_same: false,
        fall_back: true,
    });
    Some(match name.as_str() {
        "ThrottlingException" => (FailureClass::RateLimited, None),
        "ServiceQuotaExceededException" => (FailureClass::QuotaExhausted, None),
        "ServiceUnavailableException" | "ModelNotReadyException" => {
            (FailureClass::Overloaded, None)
        }
        "InternalServerException" | "ModelStreamErrorException" | "ModelErrorException" => {
            (FailureClass::ServerError, None)
        }
        "ModelTimeoutException" => (FailureClass::Timeout, None),
        "ValidationException" => {
            let m = message.to_lowercase();
            if CONTEXT_MARKERS.iter().any(|k| m.contains(k)) {
                (FailureClass::ContextOverflow, None)
            } else {
                (FailureClass::InvalidRequest, None)
            }
        }
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException" => (FailureClass::Auth, None),
        // The model id in the path is the deployment's: another may serve.
        "ResourceNotFoundException" => (FailureClass::InvalidRequest, fall_back_only),
        _ => return None,
    })
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((idx, _)) => format!("{}…", &s[..idx]),
        None => s.to_owned(),
    }
}

/// The `message` of a Bedrock error body (`{"message": "..."}`; some
/// services say `Message`).
fn body_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = v.get("message").or_else(|| v.get("Message"))?.as_str()?;
    Some(m.to_owned())
}

/// Classifies a Bedrock exception: an HTTP answer (`status` set, its
/// headers giving retry hints) or a stream's exception event (`status`
/// `None`).
///
/// ```
/// use keel_policy::{classify_bedrock, FailureClass};
/// let c = classify_bedrock(Some(400), "ValidationException", "Input is too long for requested model.");
/// assert_eq!(c.class, FailureClass::ContextOverflow);
/// let c = classify_bedrock(None, "throttlingException", "Too many requests");
/// assert_eq!(c.class, FailureClass::RateLimited);
/// assert!(!classify_bedrock(Some(418), "TeapotException", "").action.retry_same);
/// ```
pub fn classify_bedrock(status: Option<u16>, name: &str, message: &str) -> Classification {
    let (class, action) = class_of(name, message).unwrap_or_else(|| {
        // Unknown: never retried here; a server-side one may fall back.
        let server = status.is_none_or(|s| s >= 500);
        let class = if server {
            FailureClass::ServerError
        } else {
            FailureClass::InvalidRequest
        };
        let action = Action {
            retry_same: false,
            fall_back: server,
        };
        (class, Some(action))
    });
    Classification {
        class,
        action: action.unwrap_or_else(|| class.default_action()),
        hint: None,
        status,
        message: (!message.is_empty()).then(|| cut(message)),
        provider_code: Some(name.to_owned()),
    }
}

/// Classifies a non-2xx Bedrock answer by its `x-amzn-ErrorType` header;
/// `None` when the answer has no such header (not Bedrock's own).
pub(crate) fn classify_bedrock_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Option<Classification> {
    let name = bedrock_error_type(headers)?;
    let message = body_message(body).unwrap_or_default();
    let mut c = classify_bedrock(Some(status), name, &message);
    c.hint = match c.class {
        FailureClass::RateLimited | FailureClass::QuotaExhausted => retry_hint(headers, now),
        _ => explicit_retry_hint(headers, now),
    };
    Some(c)
}
