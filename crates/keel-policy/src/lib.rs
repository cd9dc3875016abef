//! Pure resilience policies for LLM API calls (docs/design.md §2-§3).
//!
//! Every type here *decides*; none of them sleeps, calls or records. Time
//! comes in as `now: Instant` (or `SystemTime` for provider dates) and
//! randomness as `&mut impl rand::Rng`, so every policy is deterministic
//! under test and usable on its own from Rust.
//!
//! | concern | module | main types |
//! |---|---|---|
//! | failure taxonomy | [`class`] | [`FailureClass`], [`Action`], [`Classification`] |
//! | classifying outcomes | [`classify`] | [`classify_response`], [`classify_transport`], [`classify_completion`] |
//! | server hints | [`retry_after`] | [`retry_hint`], [`RateLimitHeaders`] |
//! | retry delays | [`backoff`] | [`Backoff`], [`Delay`] |
//! | retry budget | [`budget`] | [`RetryBudget`] |
//! | circuit breaker | [`breaker`] | [`CircuitBreaker`] |
//! | RPM/TPM limiter | [`limiter`] | [`RateLimiter`], [`Reservation`] |
//! | max in flight | [`bulkhead`] | [`Bulkhead`] |
//! | adaptive backoff | [`adaptive`] | [`AdaptiveBackoff`] |
//! | hedging | [`hedge`] | [`HedgePolicy`], [`LatencyTracker`] |
//! | time | [`clock`] | [`Clock`], [`SystemClock`], [`ManualClock`] |

pub mod adaptive;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod class;
pub mod classify;
pub mod classify_azure;
pub mod classify_bedrock;
pub mod classify_gemini;
pub mod clock;
pub mod error;
pub mod hedge;
pub mod limiter;
pub mod retry_after;
mod window;

pub use adaptive::{AdaptiveBackoff, AdaptiveConfig};
pub use backoff::{Backoff, BackoffConfig, BackoffKind, Delay, DelayReason, GiveUpReason};
pub use breaker::{
    BreakerConfig, BreakerMode, BreakerOpen, BreakerState, BreakerStateKind, CircuitBreaker,
    Transition,
};
pub use budget::{BudgetConfig, BudgetExhausted, RetryBudget};
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadPermit};
pub use class::{Action, Classification, FailureClass, UnknownFailureClass};
pub use classify::{
    classify_completion, classify_invalid_output, classify_response, classify_transport,
    TransportError,
};
pub use classify_azure::classify_azure_response;
pub use classify_bedrock::{bedrock_error_type, classify_bedrock};
pub use classify_gemini::classify_gemini_response;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::PolicyError;
pub use hedge::{HedgePolicy, LatencyTracker};
pub use limiter::{Headroom, LimitCause, LimitDenied, LimiterConfig, RateLimiter, Reservation};
pub use retry_after::{
    explicit_retry_hint, parse_go_duration, rate_limit_headers, retry_hint, HintSource,
    RateLimitHeaders, RetryHint, MAX_HINT,
};
