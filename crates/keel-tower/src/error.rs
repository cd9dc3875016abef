//! The one error type of every layer.
//!
//! A rejection is a value with a reason: a layer that refuses a call says
//! which policy refused and, where waiting helps, for how long. Errors of
//! the wrapped service pass through as [`Error::Inner`]; an [`Error`] coming
//! out of an inner Keel layer is passed through as is (never nested), so a
//! stack of layers still yields one flat enum to match on.

use std::time::Duration;

use keel_policy::LimitCause;

/// A boxed error of a wrapped service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a layer did not return the inner service's response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The circuit breaker is open; the inner service was not called.
    #[error("circuit open, retry after {retry_after:?}")]
    BreakerOpen {
        /// When a call may be admitted again.
        retry_after: Duration,
    },
    /// The rate limiter could not admit the call within its maximum wait.
    #[error("rate limited ({}), earliest start in {retry_after:?}", cause.as_str())]
    RateLimited {
        /// Earliest start from now (zero when the request can never fit).
        retry_after: Duration,
        /// The binding limit.
        cause: LimitCause,
    },
    /// The bulkhead is full: `max` calls are already in flight.
    #[error("bulkhead full ({max} in flight)")]
    BulkheadFull {
        /// The configured maximum.
        max: u32,
    },
    /// An attempt timeout or the total deadline passed.
    #[error("timed out after {after:?}")]
    Timeout {
        /// The limit that fired.
        after: Duration,
    },
    /// A retry was needed after an error but the retry budget is spent.
    #[error(transparent)]
    BudgetExhausted(#[from] keel_policy::BudgetExhausted),
    /// The wrapped service failed.
    #[error(transparent)]
    Inner(BoxError),
}

impl Error {
    /// Wraps an inner service's error, unwrapping an [`Error`] of an inner
    /// Keel layer instead of nesting it.
    pub fn from_inner(err: impl Into<BoxError>) -> Error {
        match err.into().downcast::<Error>() {
            Ok(keel) => *keel,
            Err(other) => Error::Inner(other),
        }
    }

    /// How long the caller should wait before trying again, when a policy
    /// said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::BreakerOpen { retry_after } | Error::RateLimited { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}
