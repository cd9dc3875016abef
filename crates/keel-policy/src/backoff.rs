//! How long to wait before the next attempt.
//!
//! Six shapes (immediate, fixed, exponential, exponential with full or equal
//! jitter, decorrelated jitter; see the AWS architecture blog "Exponential
//! Backoff and Jitter" for why jitter matters: synchronised retries arrive
//! as a thundering herd). Three rules sit above the formula:
//!
//! 1. **Attempts are bounded** by `max_attempts` (first attempt included).
//! 2. **A server hint wins.** `Retry-After` and friends replace the computed
//!    delay and are not capped by `cap` (the server knows better), but if
//!    the hint does not fit in the time left before the request's deadline
//!    the answer is "give up here and fall over now" rather than waiting
//!    for a retry that could not finish anyway.
//! 3. **The deadline is never overrun.** A computed delay is clamped to the
//!    remaining time.
//!
//! The function is pure: the attempt number, previous delay, deadline and
//! RNG are all arguments.

use std::time::Duration;

use rand::Rng;

use crate::error::{check_at_least_one, fmt_duration, PolicyError};
use crate::retry_after::{HintSource, RetryHint};

/// The shape of the delay sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// No delay.
    Immediate,
    /// Always `base`.
    Fixed,
    /// `base * 2^(attempt-1)`, capped.
    Exponential,
    /// Uniform in `[0, exponential]` (AWS "full jitter"; the default).
    FullJitter,
    /// `exponential/2 + uniform[0, exponential/2]`.
    EqualJitter,
    /// `uniform[base, 3 * previous]`, capped (AWS "decorrelated jitter").
    Decorrelated,
}

/// Backoff parameters. Validated by [`Backoff::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// Delay shape.
    pub kind: BackoffKind,
    /// First delay (and the unit of growth).
    pub base: Duration,
    /// Largest computed delay (hints may exceed it).
    pub cap: Duration,
    /// Total attempts including the first; at least 1.
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            kind: BackoffKind::FullJitter,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            max_attempts: 3,
        }
    }
}

/// The decision after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delay {
    /// Retry after `delay`.
    Wait {
        /// How long to wait.
        delay: Duration,
        /// Why this long.
        reason: DelayReason,
    },
    /// Do not retry this deployment.
    GiveUp(GiveUpReason),
}

/// Where a [`Delay::Wait`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayReason {
    /// The backoff formula.
    Backoff,
    /// A server hint.
    Hint(HintSource),
}

/// Why [`Delay::GiveUp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// `max_attempts` reached.
    AttemptsExhausted,
    /// The server asked for a wait longer than the time left.
    HintExceedsDeadline,
    /// No time left at all.
    DeadlineExhausted,
}

impl GiveUpReason {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::HintExceedsDeadline => "hint_exceeds_deadline",
            GiveUpReason::DeadlineExhausted => "deadline_exhausted",
        }
    }
}

/// A validated backoff policy.
///
/// ```
/// use keel_policy::{Backoff, BackoffConfig, BackoffKind, Delay, DelayReason};
/// use rand::{rngs::StdRng, SeedableRng};
/// use std::time::Duration;
///
/// let backoff = Backoff::new(BackoffConfig {
///     kind: BackoffKind::Exponential,
///     base: Duration::from_millis(100),
///     cap: Duration::from_secs(1),
///     max_attempts: 4,
/// })?;
/// let mut rng = StdRng::seed_from_u64(7);
/// let d = backoff.next_delay(3, Duration::ZERO, None, None, 1.0, &mut rng);
/// assert_eq!(d, Delay::Wait { delay: Duration::from_millis(400), reason: DelayReason::Backoff });
/// // The deadline clamps the delay.
/// let d = backoff.next_delay(3, Duration::ZERO, None, Some(Duration::from_millis(50)), 1.0, &mut rng);
/// assert_eq!(d, Delay::Wait { delay: Duration::from_millis(50), reason: DelayReason::Backoff });
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
}

/// Largest `base_scale` honoured (guards against absurd inputs).
const MAX_SCALE: f64 = 1_000.0;

impl Backoff {
    /// Validates `cfg`: `base <= cap`, `max_attempts >= 1`.
    pub fn new(cfg: BackoffConfig) -> Result<Self, PolicyError> {
        if cfg.base > cfg.cap {
            return Err(PolicyError::invalid(
                "backoff.base",
                format!("<= backoff.cap ({})", fmt_duration(cfg.cap)),
                fmt_duration(cfg.base),
            ));
        }
        check_at_least_one("backoff.max_attempts", cfg.max_attempts)?;
        Ok(Backoff { cfg })
    }

    /// Total attempts allowed, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.cfg.max_attempts
    }

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.cfg
    }

    /// Decides whether and how long to wait after a failed attempt.
    ///
    /// * `attempt`: 1-based number of the attempt that just failed.
    /// * `prev`: the previous delay (used by decorrelated jitter; pass zero
    ///   after the first attempt).
    /// * `hint`: the server's hint, which overrides the computed delay.
    /// * `remaining`: time left before the request's total deadline (`None`:
    ///   no deadline).
    /// * `base_scale`: multiplier `>= 1.0` on `base` from
    ///   [`crate::AdaptiveBackoff`] (values below 1 or not finite count as 1).
    pub fn next_delay(
        &self,
        attempt: u32,
        prev: Duration,
        hint: Option<RetryHint>,
        remaining: Option<Duration>,
        base_scale: f64,
        rng: &mut impl Rng,
    ) -> Delay {
        if attempt.max(1) >= self.cfg.max_attempts {
            return Delay::GiveUp(GiveUpReason::AttemptsExhausted);
        }
        if remaining.is_some_and(|r| r.is_zero()) {
            return Delay::GiveUp(GiveUpReason::DeadlineExhausted);
        }
        if let Some(hint) = hint {
            if remaining.is_some_and(|r| hint.after >= r) {
                return Delay::GiveUp(GiveUpReason::HintExceedsDeadline);
            }
            return Delay::Wait {
                delay: hint.after,
                reason: DelayReason::Hint(hint.source),
            };
        }
        let mut delay = self.computed(attempt.max(1), prev, base_scale, rng);
        if let Some(r) = remaining {
            delay = delay.min(r);
        }
        Delay::Wait {
            delay,
            reason: DelayReason::Backoff,
        }
    }

    fn computed(
        &self,
        attempt: u32,
        prev: Duration,
        base_scale: f64,
        rng: &mut impl Rng,
    ) -> Duration {
        let scale = if base_scale.is_finite() {
            base_scale.clamp(1.0, MAX_SCALE)
        } else {
            1.0
        };
        // Integer nanoseconds keep the deterministic shapes exact.
        let cap = nanos(self.cfg.cap);
        let base = if scale == 1.0 {
            nanos(self.cfg.base)
        } else {
            // Saturating float-to-int conversion; NaN cannot occur here.
            ((nanos(self.cfg.base) as f64) * scale) as u64
        }
        .min(cap);
        let exp = || {
            let shift = attempt.saturating_sub(1);
            if shift >= 63 {
                cap
            } else {
                base.saturating_mul(1u64 << shift).min(cap)
            }
        };
        let ns = match self.cfg.kind {
            BackoffKind::Immediate => 0,
            BackoffKind::Fixed => base,
            BackoffKind::Exponential => exp(),
            BackoffKind::FullJitter => rng.random_range(0..=exp()),
            BackoffKind::EqualJitter => {
                let e = exp();
                e / 2 + rng.random_range(0..=e - e / 2)
            }
            BackoffKind::Decorrelated => {
                let upper = nanos(prev).max(base).saturating_mul(3).min(cap);
                if upper <= base {
                    base
                } else {
                    rng.random_range(base..=upper)
                }
            }
        };
        Duration::from_nanos(ns.min(cap))
    }
}

/// Nanoseconds, saturating at `u64::MAX` (about 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
