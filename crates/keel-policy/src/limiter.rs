//! Requests-per-minute and tokens-per-minute limits, together, as GCRA
//! reservations.
//!
//! **Why GCRA with reservations.** The generic cell rate algorithm keeps one
//! number per limit, the *theoretical arrival time* (TAT): O(1) memory, no
//! timers, and the earliest admissible start is a formula, so a rejection
//! carries its `retry_after` for free. Taking a reservation books capacity
//! at a future instant and moves the TAT forward, so the next caller is
//! placed *behind* it: waiting is FIFO-fair by construction, with no queue
//! object and no wake-up thundering herd. `governor` implements GCRA well
//! but only answers "now or not until"; Keel also needs bookings in the
//! future, two limits advanced together, refunds when the provider's
//! `usage` shows the token estimate was high, and adaptation to the
//! provider's `x-ratelimit-remaining-*` headers, so the algorithm is
//! written out here (about a hundred lines).
//!
//! **Burst.** `burst_fraction` is the share of a minute's allowance that may
//! be spent at once (default 1/6, i.e. 10 seconds' worth). The guarantee,
//! checked by a property test: in any 60 s window, the starts booked by one
//! limiter never exceed `limit * (1 + burst_fraction)` requests or tokens
//! (as long as usage is not corrected upwards after the fact). A request
//! larger than the burst (up to the whole per-minute limit) is admitted once
//! the limiter has been idle long enough to keep that guarantee; anything
//! larger than the per-minute limit can never run and is refused as
//! [`LimitCause::TooLarge`].
//!
//! **Time representation.** Each limit keeps its TAT in "nanoseconds times
//! limit", where one unit costs exactly 60e9: all arithmetic is exact
//! integer arithmetic, and rounding always errs on the cautious side.

use std::time::{Duration, Instant};

use crate::error::{check_at_least_one, PolicyError};
use crate::retry_after::RateLimitHeaders;

const MINUTE_NS: i128 = 60_000_000_000;
const INITIAL_TAT: i128 = i128::MIN / 4;

/// Limiter parameters. Validated by [`RateLimiter::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct LimiterConfig {
    /// Requests per minute (`None`: unlimited).
    pub rpm: Option<u32>,
    /// Tokens per minute (`None`: unlimited).
    pub tpm: Option<u32>,
    /// Share of one minute's allowance that may be spent at once, in
    /// `(0, 1]`. Default `1/6` (ten seconds' worth).
    pub burst_fraction: f64,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            rpm: None,
            tpm: None,
            burst_fraction: 1.0 / 6.0,
        }
    }
}

/// Which limit delayed or refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitCause {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// The provider said its quota is spent until a reset.
    ProviderQuota,
    /// The request needs more tokens than a whole minute allows; it can never run.
    TooLarge,
}

impl LimitCause {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitCause::Rpm => "rpm",
            LimitCause::Tpm => "tpm",
            LimitCause::ProviderQuota => "provider_quota",
            LimitCause::TooLarge => "too_large",
        }
    }
}

/// The request cannot start within `max_wait`; nothing was reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limited ({}), earliest start in {retry_after:?}", cause.as_str())]
pub struct LimitDenied {
    /// Earliest start from now (zero for [`LimitCause::TooLarge`], where
    /// waiting never helps).
    pub retry_after: Duration,
    /// The binding limit.
    pub cause: LimitCause,
}

/// Booked capacity. Pass it back to [`RateLimiter::settle`] or
/// [`RateLimiter::cancel`] exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// When the request may start (`<= now + max_wait`).
    pub ready_at: Instant,
    /// Tokens booked (the estimate).
    pub tokens: u32,
    /// The limit that made it wait, if it waits at all.
    pub waited_for: Option<LimitCause>,
    rpm_cum: u64,
    tpm_cum: u64,
}

/// Remaining capacity as a share of the burst, `0.0..=1.0` (1.0 when unlimited).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Headroom {
    /// Request headroom.
    pub requests: f64,
    /// Token headroom.
    pub tokens: f64,
}

/// One GCRA limit, in scaled time (ns × limit).
#[derive(Clone, Debug)]
struct Gcra {
    limit: i128,
    tolerance: i128,
    tat: i128,
    /// Units booked (and charged) so far.
    cum: u64,
}

fn ceil_div(x: i128, d: i128) -> i128 {
    if x >= 0 {
        (x + d - 1) / d
    } else {
        -((-x) / d)
    }
}

impl Gcra {
    fn new(limit: u32, burst_fraction: f64) -> Self {
        let limit = i128::from(limit);
        // Floor: a slightly smaller tolerance is the cautious rounding.
        let tolerance = (burst_fraction * limit as f64 * MINUTE_NS as f64) as i128;
        Gcra {
            limit,
            tolerance: tolerance.max(0),
            tat: INITIAL_TAT,
            cum: 0,
        }
    }

    /// Earliest start (ns) for `units` at `now_ns`, ignoring other limits.
    fn ready(&self, now_ns: i128, units: u64) -> i128 {
        let scaled = self.tat + i128::from(units) * MINUTE_NS - self.tolerance;
        ceil_div(scaled, self.limit).max(now_ns)
    }

    fn book(&mut self, start_ns: i128, units: u64) -> u64 {
        self.tat = self.tat.max(start_ns * self.limit) + i128::from(units) * MINUTE_NS;
        self.cum = self.cum.saturating_add(units);
        self.cum
    }

    /// Gives back `units` of the booking whose cumulative count was `booked_cum`.
    ///
    /// Later bookings (all starting at or before `last_start_ns`, FIFO) keep
    /// their place: the TAT never drops below what they alone account for.
    fn refund(&mut self, units: u64, booked_cum: u64, last_start_ns: i128) {
        let later = self.cum.saturating_sub(booked_cum);
        let floor = if later > 0 {
            last_start_ns * self.limit + i128::from(later) * MINUTE_NS
        } else {
            INITIAL_TAT
        };
        let lowered = self.tat.saturating_sub(i128::from(units) * MINUTE_NS);
        self.tat = self.tat.min(lowered.max(floor));
    }

    fn charge(&mut self, units: u64) {
        self.tat += i128::from(units) * MINUTE_NS;
        self.cum = self.cum.saturating_add(units);
    }

    /// The provider says only `remaining` units are left: never believe we have more.
    fn sync_remaining(&mut self, now_ns: i128, remaining: u64) {
        let remaining = i128::from(remaining.min(u64::from(u32::MAX)));
        let target = now_ns * self.limit + self.tolerance - remaining * MINUTE_NS;
        self.tat = self.tat.max(target);
    }

    fn headroom(&self, now_ns: i128) -> f64 {
        if self.tolerance == 0 {
            return if self.tat <= now_ns * self.limit {
                1.0
            } else {
                0.0
            };
        }
        let free = now_ns * self.limit + self.tolerance - self.tat;
        (free as f64 / self.tolerance as f64).clamp(0.0, 1.0)
    }
}

/// RPM + TPM limiter for one deployment (or tenant).
///
/// ```
/// use keel_policy::{LimitCause, LimiterConfig, RateLimiter};
/// use std::time::{Duration, Instant};
///
/// // 60 requests per minute, bursts of 10.
/// let mut limiter = RateLimiter::new(LimiterConfig { rpm: Some(60), tpm: None, burst_fraction: 1.0 / 6.0 })?;
/// let now = Instant::now();
/// for _ in 0..10 {
///     assert_eq!(limiter.reserve(now, 0, Duration::ZERO).unwrap().ready_at, now);
/// }
/// // The 11th waits one second (FIFO), or is refused if it cannot wait.
/// let r = limiter.reserve(now, 0, Duration::from_secs(5)).unwrap();
/// assert_eq!(r.ready_at, now + Duration::from_secs(1));
/// let denied = limiter.reserve(now, 0, Duration::ZERO).unwrap_err();
/// assert_eq!(denied.cause, LimitCause::Rpm);
/// assert_eq!(denied.retry_after, Duration::from_secs(2));
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimiter {
    cfg: LimiterConfig,
    rpm: Option<Gcra>,
    tpm: Option<Gcra>,
    origin: Option<Instant>,
    /// Latest booked start (ns); new bookings never start before it (FIFO).
    last_start: i128,
    last_cause: Option<LimitCause>,
    /// No admissions before this (ns), from provider headers.
    quota_until: i128,
}

impl RateLimiter {
    /// Validates `cfg`: limits `>= 1`, `burst_fraction` in `(0, 1]`.
    pub fn new(cfg: LimiterConfig) -> Result<Self, PolicyError> {
        if let Some(rpm) = cfg.rpm {
            check_at_least_one("limiter.rpm", rpm)?;
        }
        if let Some(tpm) = cfg.tpm {
            check_at_least_one("limiter.tpm", tpm)?;
        }
        let b = cfg.burst_fraction;
        if !(b.is_finite() && b > 0.0 && b <= 1.0) {
            return Err(PolicyError::invalid(
                "limiter.burst_fraction",
                "a number in (0, 1]",
                b,
            ));
        }
        Ok(RateLimiter {
            rpm: cfg.rpm.map(|l| Gcra::new(l, b)),
            tpm: cfg.tpm.map(|l| Gcra::new(l, b)),
            cfg,
            origin: None,
            last_start: i128::MIN,
            last_cause: None,
            quota_until: i128::MIN,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LimiterConfig {
        &self.cfg
    }

    fn ns(&mut self, now: Instant) -> i128 {
        let origin = *self.origin.get_or_insert(now);
        signed_ns(origin, now)
    }

    fn peek_ns(&self, now: Instant) -> i128 {
        self.origin.map_or(0, |origin| signed_ns(origin, now))
    }

    /// Reserves one request and `tokens` tokens.
    ///
    /// If the request can start within `max_wait`, capacity is booked at
    /// `ready_at` (later callers queue behind it) and the caller should
    /// start then. Otherwise nothing is booked and the denial gives the
    /// earliest start and the binding limit.
    pub fn reserve(
        &mut self,
        now: Instant,
        tokens: u32,
        max_wait: Duration,
    ) -> Result<Reservation, LimitDenied> {
        if self.cfg.tpm.is_some_and(|tpm| tokens > tpm) {
            return Err(LimitDenied {
                retry_after: Duration::ZERO,
                cause: LimitCause::TooLarge,
            });
        }
        let now_ns = self.ns(now);
        let mut ready = now_ns;
        let mut cause = None;
        let mut consider = |at: i128, why: LimitCause| {
            if at > ready {
                ready = at;
                cause = Some(why);
            }
        };
        if let Some(rpm) = &self.rpm {
            consider(rpm.ready(now_ns, 1), LimitCause::Rpm);
        }
        if let (Some(tpm), true) = (&self.tpm, tokens > 0) {
            consider(tpm.ready(now_ns, u64::from(tokens)), LimitCause::Tpm);
        }
        consider(self.quota_until, LimitCause::ProviderQuota);
        if self.last_start > ready {
            ready = self.last_start;
            cause = cause.or(self.last_cause);
        }
        let wait = ns_duration(ready - now_ns);
        if wait > max_wait {
            return Err(LimitDenied {
                retry_after: wait,
                cause: cause.unwrap_or(LimitCause::Rpm),
            });
        }
        let rpm_cum = self.rpm.as_mut().map_or(0, |g| g.book(ready, 1));
        let tpm_cum = self
            .tpm
            .as_mut()
            .map_or(0, |g| g.book(ready, u64::from(tokens)));
        if ready > self.last_start {
            self.last_start = ready;
            self.last_cause = cause;
        }
        Ok(Reservation {
            ready_at: now.checked_add(wait).unwrap_or(now),
            tokens,
            waited_for: if wait.is_zero() { None } else { cause },
            rpm_cum,
            tpm_cum,
        })
    }

    /// Corrects a reservation's token estimate with the actual usage:
    /// refunds the difference if it was high (capacity later bookings
    /// already rely on is never given back twice), charges it if low.
    pub fn settle(&mut self, now: Instant, reservation: &Reservation, actual_tokens: u32) {
        let _ = self.ns(now);
        let last_start = self.last_start;
        if let Some(tpm) = &mut self.tpm {
            if actual_tokens < reservation.tokens {
                let refund = u64::from(reservation.tokens - actual_tokens);
                tpm.refund(refund, reservation.tpm_cum, last_start);
            } else {
                tpm.charge(u64::from(actual_tokens - reservation.tokens));
            }
        }
    }

    /// Gives back an unused reservation (the request was never sent), as
    /// far as later bookings allow.
    pub fn cancel(&mut self, now: Instant, reservation: &Reservation) {
        let _ = self.ns(now);
        let last_start = self.last_start;
        if let Some(rpm) = &mut self.rpm {
            rpm.refund(1, reservation.rpm_cum, last_start);
        }
        if let Some(tpm) = &mut self.tpm {
            tpm.refund(
                u64::from(reservation.tokens),
                reservation.tpm_cum,
                last_start,
            );
        }
    }

    /// Quota awareness: adapts to the provider's rate-limit headers.
    ///
    /// * `remaining == 0` with a known reset: no admissions before the reset
    ///   ([`LimitCause::ProviderQuota`]).
    /// * Remaining below the local burst: local capacity is lowered to match,
    ///   so the limiter slows down before the provider starts refusing.
    ///
    /// The provider's view only ever *reduces* local capacity (it may count
    /// traffic from other clients of the same key).
    pub fn observe(&mut self, now: Instant, headers: &RateLimitHeaders) {
        let now_ns = self.ns(now);
        let mut block = |remaining: Option<u64>, reset: Option<Duration>| {
            if let (Some(0), Some(reset)) = (remaining, reset) {
                let until = now_ns.saturating_add(reset.as_nanos() as i128);
                self.quota_until = self.quota_until.max(until);
            }
        };
        block(headers.remaining_requests, headers.reset_requests);
        block(headers.remaining_tokens, headers.reset_tokens);
        if let (Some(rpm), Some(left)) = (&mut self.rpm, headers.remaining_requests) {
            rpm.sync_remaining(now_ns, left);
        }
        if let (Some(tpm), Some(left)) = (&mut self.tpm, headers.remaining_tokens) {
            tpm.sync_remaining(now_ns, left);
        }
    }

    /// Capacity available now, as a share of the burst.
    pub fn headroom(&self, now: Instant) -> Headroom {
        let now_ns = self.peek_ns(now);
        if self.quota_until > now_ns {
            return Headroom {
                requests: 0.0,
                tokens: 0.0,
            };
        }
        Headroom {
            requests: self.rpm.as_ref().map_or(1.0, |g| g.headroom(now_ns)),
            tokens: self.tpm.as_ref().map_or(1.0, |g| g.headroom(now_ns)),
        }
    }
}

fn signed_ns(origin: Instant, now: Instant) -> i128 {
    match now.checked_duration_since(origin) {
        Some(d) => d.as_nanos() as i128,
        None => -(origin.duration_since(now).as_nanos() as i128),
    }
}

fn ns_duration(ns: i128) -> Duration {
    if ns <= 0 {
        Duration::ZERO
    } else {
        let ns = u128::try_from(ns).unwrap_or(0);
        Duration::new(
            u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX),
            (ns % 1_000_000_000) as u32,
        )
    }
}
