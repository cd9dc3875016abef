//! Circuit breaker per deployment: closed → open → half-open.
//!
//! Retrying a dead deployment wastes the caller's deadline and the
//! deployment's recovery. The breaker notices (consecutive failures, or a
//! failure ratio over a sliding window once there is enough traffic to
//! judge), stops sending for `open_for`, then lets a few probes through.
//! Probes that succeed close it; a probe that fails re-opens it for longer
//! (`open_for * backoff_factor^n`, capped at `max_open_for`), so a
//! deployment that stays down is probed less and less often.
//!
//! Only classes that say something about the deployment count
//! ([`FailureClass::counts_for_health`] by default): a burst of 400s from
//! one bad client must not take a healthy deployment out of rotation. Other
//! classes are neutral: they neither trip nor reset the breaker.
//!
//! The breaker is a plain state machine (`&mut self`, `now` as argument);
//! the engine wraps it in whatever lock or store it needs.

use std::time::{Duration, Instant};

use crate::class::FailureClass;
use crate::error::{check_at_least_one, check_positive, fmt_duration, PolicyError};
use crate::window::SlidingWindow;

/// When the breaker trips.
#[derive(Clone, Debug, PartialEq)]
pub enum BreakerMode {
    /// After `threshold` counted failures in a row.
    ConsecutiveFailures {
        /// Failures in a row that trip the breaker (>= 1).
        threshold: u32,
    },
    /// When failures / calls over `window` reach `ratio`, once at least
    /// `min_throughput` calls were seen in the window.
    FailureRatio {
        /// Failure ratio that trips, in `(0, 1]`.
        ratio: f64,
        /// Sliding window length.
        window: Duration,
        /// Minimum calls in the window before the ratio is trusted (>= 1).
        min_throughput: u32,
    },
}

/// Breaker parameters. Validated by [`CircuitBreaker::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Trip condition.
    pub mode: BreakerMode,
    /// Open duration after the first trip.
    pub open_for: Duration,
    /// Longest open duration after repeated trips.
    pub max_open_for: Duration,
    /// Growth of the open duration per consecutive trip (>= 1).
    pub backoff_factor: f64,
    /// Probes admitted concurrently in half-open; that many successes close it.
    pub half_open_probes: u32,
    /// Successes slower than this count as failures.
    pub slow_call: Option<Duration>,
    /// Classes that count as failures; others are neutral.
    pub counted: Vec<FailureClass>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            mode: BreakerMode::ConsecutiveFailures { threshold: 5 },
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(300),
            backoff_factor: 2.0,
            half_open_probes: 1,
            slow_call: None,
            counted: FailureClass::ALL
                .into_iter()
                .filter(|c| c.counts_for_health())
                .collect(),
        }
    }
}

/// Observable breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are rejected until `until`.
    Open {
        /// When probing may start.
        until: Instant,
    },
    /// A limited number of probes may run.
    HalfOpen,
}

impl BreakerState {
    /// The state without its data.
    pub fn kind(self) -> BreakerStateKind {
        match self {
            BreakerState::Closed => BreakerStateKind::Closed,
            BreakerState::Open { .. } => BreakerStateKind::Open,
            BreakerState::HalfOpen => BreakerStateKind::HalfOpen,
        }
    }
}

/// [`BreakerState`] without data, for transitions and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerStateKind {
    /// Closed.
    Closed,
    /// Open.
    Open,
    /// Half-open.
    HalfOpen,
}

impl BreakerStateKind {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerStateKind::Closed => "closed",
            BreakerStateKind::Open => "open",
            BreakerStateKind::HalfOpen => "half_open",
        }
    }
}

/// A state change caused by an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerStateKind,
    /// State after.
    pub to: BreakerStateKind,
}

/// The breaker rejects the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open, retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// When trying again may be admitted.
    pub retry_after: Duration,
}

#[derive(Clone, Copy, Debug)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

const SUCCESS: usize = 0;
const FAILURE: usize = 1;

/// A circuit breaker.
///
/// ```
/// use keel_policy::{BreakerConfig, BreakerMode, BreakerState, CircuitBreaker, FailureClass};
/// use std::time::{Duration, Instant};
///
/// let mut b = CircuitBreaker::new(BreakerConfig {
///     mode: BreakerMode::ConsecutiveFailures { threshold: 2 },
///     ..BreakerConfig::default()
/// })?;
/// let t0 = Instant::now();
/// let ms = Duration::from_millis(5);
/// for _ in 0..2 {
///     b.try_acquire(t0).unwrap();
///     b.on_outcome(t0, Some(FailureClass::ServerError), ms);
/// }
/// assert!(b.try_acquire(t0).is_err());
/// // After open_for (10 s), one probe goes through; its success closes the breaker.
/// let t1 = t0 + Duration::from_secs(10);
/// b.try_acquire(t1).unwrap();
/// b.on_outcome(t1, None, ms);
/// assert_eq!(b.state(t1), BreakerState::Closed);
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Inner,
    consecutive_failures: u32,
    window: Option<SlidingWindow<2>>,
    /// Trips since the breaker last closed; drives the open duration.
    level: u32,
    trips: u64,
}

/// How long a caller rejected in half-open (all probe slots taken) should wait.
const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);

impl CircuitBreaker {
    /// Validates `cfg`.
    pub fn new(cfg: BreakerConfig) -> Result<Self, PolicyError> {
        let window = match cfg.mode {
            BreakerMode::ConsecutiveFailures { threshold } => {
                check_at_least_one("breaker.threshold", threshold)?;
                None
            }
            BreakerMode::FailureRatio {
                ratio,
                window,
                min_throughput,
            } => {
                if !(ratio.is_finite() && ratio > 0.0 && ratio <= 1.0) {
                    return Err(PolicyError::invalid(
                        "breaker.ratio",
                        "a number in (0, 1]",
                        ratio,
                    ));
                }
                check_positive("breaker.window", window)?;
                check_at_least_one("breaker.min_throughput", min_throughput)?;
                Some(SlidingWindow::new(window))
            }
        };
        check_positive("breaker.open_for", cfg.open_for)?;
        if cfg.max_open_for < cfg.open_for {
            return Err(PolicyError::invalid(
                "breaker.max_open_for",
                format!(">= breaker.open_for ({})", fmt_duration(cfg.open_for)),
                fmt_duration(cfg.max_open_for),
            ));
        }
        if !(cfg.backoff_factor.is_finite() && cfg.backoff_factor >= 1.0) {
            return Err(PolicyError::invalid(
                "breaker.backoff_factor",
                "a number >= 1",
                cfg.backoff_factor,
            ));
        }
        check_at_least_one("breaker.half_open_probes", cfg.half_open_probes)?;
        if let Some(slow) = cfg.slow_call {
            check_positive("breaker.slow_call", slow)?;
        }
        Ok(CircuitBreaker {
            cfg,
            inner: Inner::Closed,
            consecutive_failures: 0,
            window,
            level: 0,
            trips: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Asks to send a call. Closed: yes. Open: no, with the time left. Once
    /// the open period has passed the breaker is half-open and admits up to
    /// `half_open_probes` concurrent probes; every admitted probe must be
    /// answered by [`on_outcome`](Self::on_outcome) or
    /// [`on_cancel`](Self::on_cancel).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), BreakerOpen> {
        self.advance(now);
        match &mut self.inner {
            Inner::Closed => Ok(()),
            Inner::Open { until } => Err(BreakerOpen {
                retry_after: until.saturating_duration_since(now),
            }),
            Inner::HalfOpen { in_flight, .. } => {
                if *in_flight < self.cfg.half_open_probes {
                    *in_flight += 1;
                    Ok(())
                } else {
                    Err(BreakerOpen {
                        retry_after: HALF_OPEN_RETRY.min(self.cfg.open_for),
                    })
                }
            }
        }
    }

    /// Reports the outcome of an admitted call: `failure = None` is a
    /// success (a failure if slower than `slow_call`). Returns the state
    /// change it caused, if any.
    ///
    /// Outcomes of calls admitted before the breaker opened are ignored while
    /// it is open; in half-open an outcome is taken as a probe's only while a
    /// probe is outstanding.
    pub fn on_outcome(
        &mut self,
        now: Instant,
        failure: Option<FailureClass>,
        latency: Duration,
    ) -> Option<Transition> {
        self.advance(now);
        let verdict = match failure {
            Some(class) if self.cfg.counted.contains(&class) => Verdict::Failure,
            Some(_) => Verdict::Neutral,
            None if self.cfg.slow_call.is_some_and(|slow| latency >= slow) => Verdict::Failure,
            None => Verdict::Success,
        };
        match self.inner {
            Inner::Closed => self.closed_outcome(now, verdict),
            Inner::Open { .. } => None,
            Inner::HalfOpen {
                in_flight,
                successes,
            } => {
                if in_flight == 0 {
                    return None;
                }
                let in_flight = in_flight - 1;
                match verdict {
                    Verdict::Failure => Some(self.trip(now, BreakerStateKind::HalfOpen)),
                    Verdict::Neutral => {
                        self.inner = Inner::HalfOpen {
                            in_flight,
                            successes,
                        };
                        None
                    }
                    Verdict::Success if successes + 1 >= self.cfg.half_open_probes => {
                        self.close();
                        Some(Transition {
                            from: BreakerStateKind::HalfOpen,
                            to: BreakerStateKind::Closed,
                        })
                    }
                    Verdict::Success => {
                        self.inner = Inner::HalfOpen {
                            in_flight,
                            successes: successes + 1,
                        };
                        None
                    }
                }
            }
        }
    }

    /// Releases the slot of an admitted call that will never report (the
    /// client went away, a hedge won). Only matters in half-open.
    pub fn on_cancel(&mut self, now: Instant) {
        self.advance(now);
        if let Inner::HalfOpen { in_flight, .. } = &mut self.inner {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Opens the breaker now for at least `duration` (for example until a
    /// quota reset, or after an auth failure), whatever its state. Counts as
    /// a trip. Returns the transition if the state changed.
    pub fn force_open(&mut self, now: Instant, duration: Duration) -> Option<Transition> {
        self.advance(now);
        let from = self.state(now).kind();
        let until = now.checked_add(duration).unwrap_or(now);
        let until = match self.inner {
            Inner::Open { until: current } => current.max(until),
            _ => until,
        };
        self.inner = Inner::Open { until };
        self.trips += 1;
        self.level = self.level.saturating_add(1);
        (from != BreakerStateKind::Open).then_some(Transition {
            from,
            to: BreakerStateKind::Open,
        })
    }

    /// The state at `now` (an expired open period reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open { until },
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Times the breaker has opened since it was created.
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// The open duration the next trip would use.
    pub fn next_open_for(&self) -> Duration {
        let factor = self
            .cfg
            .backoff_factor
            .powi(i32::try_from(self.level).unwrap_or(i32::MAX));
        let secs = self.cfg.open_for.as_secs_f64() * factor;
        let max = self.cfg.max_open_for;
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            max
        } else {
            Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
        }
    }

    fn advance(&mut self, now: Instant) {
        if let Inner::Open { until } = self.inner {
            if now >= until {
                self.inner = Inner::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                };
            }
        }
    }

    fn closed_outcome(&mut self, now: Instant, verdict: Verdict) -> Option<Transition> {
        match (&self.cfg.mode, &mut self.window) {
            (BreakerMode::ConsecutiveFailures { threshold }, _) => match verdict {
                Verdict::Success => {
                    self.consecutive_failures = 0;
                    None
                }
                Verdict::Neutral => None,
                Verdict::Failure => {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    (self.consecutive_failures >= *threshold)
                        .then(|| self.trip(now, BreakerStateKind::Closed))
                }
            },
            (
                BreakerMode::FailureRatio {
                    ratio,
                    min_throughput,
                    ..
                },
                Some(window),
            ) => {
                let (ratio, min_throughput) = (*ratio, *min_throughput);
                match verdict {
                    Verdict::Neutral => None,
                    Verdict::Success => {
                        window.add(now, SUCCESS, 1);
                        None
                    }
                    Verdict::Failure => {
                        window.add(now, FAILURE, 1);
                        let [ok, failed] = window.totals(now);
                        let total = ok + failed;
                        let trips = total >= u64::from(min_throughput)
                            && failed as f64 >= ratio * total as f64;
                        trips.then(|| self.trip(now, BreakerStateKind::Closed))
                    }
                }
            }
            (BreakerMode::FailureRatio { .. }, None) => None,
        }
    }

    fn trip(&mut self, now: Instant, from: BreakerStateKind) -> Transition {
        let open_for = self.next_open_for();
        self.inner = Inner::Open {
            until: now.checked_add(open_for).unwrap_or(now),
        };
        self.level = self.level.saturating_add(1);
        self.trips += 1;
        self.consecutive_failures = 0;
        if let Some(w) = &mut self.window {
            w.clear();
        }
        Transition {
            from,
            to: BreakerStateKind::Open,
        }
    }

    fn close(&mut self) {
        self.inner = Inner::Closed;
        self.level = 0;
        self.consecutive_failures = 0;
        if let Some(w) = &mut self.window {
            w.clear();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure,
    Neutral,
}
