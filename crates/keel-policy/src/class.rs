//! The failure taxonomy of docs/design.md §2: every failed attempt is exactly one
//! [`FailureClass`], and the class decides what happens next ([`Action`]).
//!
//! Classification lives in exactly one place (this module and
//! [`crate::classify`]) so the retry loop never re-derives meaning from raw
//! status codes. Anything unrecognised is *not* retried by default: retrying
//! an error we do not understand multiplies load for no known benefit.

use std::fmt;
use std::str::FromStr;

use crate::retry_after::RetryHint;

/// Why an attempt failed. See docs/design.md §2 for the full table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// 429 that is not a quota problem: wait for the reset, then retry.
    RateLimited,
    /// 429 `insufficient_quota`, billing errors: this deployment is done for now.
    QuotaExhausted,
    /// 529 `overloaded_error`, 503.
    Overloaded,
    /// 500, 502, 504.
    ServerError,
    /// Attempt timeout, 408, time to first byte exceeded.
    Timeout,
    /// Connect refused/reset, DNS, TLS, body cut off.
    Network,
    /// 413, `context_length_exceeded`, "prompt is too long".
    ContextOverflow,
    /// 400, 404, 422: the request itself is wrong.
    InvalidRequest,
    /// 401, 403.
    Auth,
    /// Content-filter finish reason or refusal.
    ContentFiltered,
    /// `finish_reason: length` / `stop_reason: max_tokens`.
    Truncated,
    /// No content and no tool call.
    Empty,
    /// Structured output failed validation.
    InvalidOutput,
}

impl FailureClass {
    /// Every class, in docs/design.md §2 order.
    pub const ALL: [FailureClass; 13] = [
        FailureClass::RateLimited,
        FailureClass::QuotaExhausted,
        FailureClass::Overloaded,
        FailureClass::ServerError,
        FailureClass::Timeout,
        FailureClass::Network,
        FailureClass::ContextOverflow,
        FailureClass::InvalidRequest,
        FailureClass::Auth,
        FailureClass::ContentFiltered,
        FailureClass::Truncated,
        FailureClass::Empty,
        FailureClass::InvalidOutput,
    ];

    /// The snake_case name used in metrics, logs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::RateLimited => "rate_limited",
            FailureClass::QuotaExhausted => "quota_exhausted",
            FailureClass::Overloaded => "overloaded",
            FailureClass::ServerError => "server_error",
            FailureClass::Timeout => "timeout",
            FailureClass::Network => "network",
            FailureClass::ContextOverflow => "context_overflow",
            FailureClass::InvalidRequest => "invalid_request",
            FailureClass::Auth => "auth",
            FailureClass::ContentFiltered => "content_filtered",
            FailureClass::Truncated => "truncated",
            FailureClass::Empty => "empty",
            FailureClass::InvalidOutput => "invalid_output",
        }
    }

    /// What docs/design.md §2 says to do by default.
    ///
    /// `retry_same` means "another attempt on the same deployment may help"
    /// (bounded by backoff, budget and deadline); `fall_back` means "moving
    /// to the next deployment may help". Content classes (`truncated`,
    /// `invalid_output`) retry the same deployment with a changed request
    /// (continuation, larger `max_tokens`, repair prompt); the engine's
    /// per-route policy decides which.
    pub fn default_action(self) -> Action {
        let (retry_same, fall_back) = match self {
            FailureClass::RateLimited => (true, true),
            FailureClass::QuotaExhausted => (false, true),
            FailureClass::Overloaded => (true, true),
            FailureClass::ServerError => (true, true),
            FailureClass::Timeout => (true, true),
            FailureClass::Network => (true, true),
            FailureClass::ContextOverflow => (false, true),
            FailureClass::InvalidRequest => (false, false),
            FailureClass::Auth => (false, true),
            FailureClass::ContentFiltered => (false, true),
            FailureClass::Truncated => (true, false),
            FailureClass::Empty => (true, true),
            FailureClass::InvalidOutput => (true, true),
        };
        Action {
            retry_same,
            fall_back,
        }
    }

    /// Whether this class says something about the deployment's health
    /// (and so counts for its circuit breaker).
    ///
    /// Request-shaped failures (400s, context overflow, content classes) say
    /// nothing about the deployment. Rate limiting is handled by the limiter
    /// and the provider's reset hints, not by opening the breaker.
    pub fn counts_for_health(self) -> bool {
        matches!(
            self,
            FailureClass::QuotaExhausted
                | FailureClass::Overloaded
                | FailureClass::ServerError
                | FailureClass::Timeout
                | FailureClass::Network
                | FailureClass::Auth
        )
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`FailureClass::from_str`]: the name is not a class.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure class {0:?}")]
pub struct UnknownFailureClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownFailureClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownFailureClass(s.to_owned()))
    }
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    /// Another attempt on the same deployment may succeed.
    pub retry_same: bool,
    /// The next deployment in the chain may succeed.
    pub fall_back: bool,
}

impl Action {
    /// Neither retry nor fall back: fail fast.
    pub const FAIL_FAST: Action = Action {
        retry_same: false,
        fall_back: false,
    };
}

/// The verdict on one failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    /// The failure class.
    pub class: FailureClass,
    /// What to do next (usually `class.default_action()`).
    pub action: Action,
    /// A server-provided delay before retrying, if any.
    pub hint: Option<RetryHint>,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// The provider's human-readable message (bounded in length).
    pub message: Option<String>,
    /// The provider's machine-readable code or type (`insufficient_quota`,
    /// `overloaded_error`).
    pub provider_code: Option<String>,
}

impl Classification {
    /// A classification with the class's default action and nothing else.
    pub fn new(class: FailureClass) -> Self {
        Classification {
            class,
            action: class.default_action(),
            hint: None,
            status: None,
            message: None,
            provider_code: None,
        }
    }
}
