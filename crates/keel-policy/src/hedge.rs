//! Hedging: after the usual latency has passed without an answer, send a
//! second attempt elsewhere and take whichever answers first.
//!
//! Tail latency is mostly bad luck on one attempt; a hedge sent at the p95
//! costs about 5% extra load and cuts the tail (Dean & Barroso, "The Tail at
//! Scale"). Two things keep it safe: the delay is derived from recent
//! latencies (bounded by `min_delay..=max_delay`), and every hedge is an
//! extra attempt that must be paid for from the [`RetryBudget`], so hedging
//! cannot amplify load during an outage.

use std::time::{Duration, Instant};

use crate::budget::RetryBudget;
use crate::error::{check_unit_ratio, fmt_duration, PolicyError};

/// Recent latencies in a bounded ring; quantiles by selection on a copy
/// (O(n) per query on a few hundred samples).
///
/// ```
/// use keel_policy::LatencyTracker;
/// use std::time::Duration;
///
/// let mut t = LatencyTracker::new(100);
/// for ms in 1..=100 { t.record(Duration::from_millis(ms)); }
/// assert_eq!(t.quantile(0.95), Some(Duration::from_millis(95)));
/// ```
#[derive(Clone, Debug)]
pub struct LatencyTracker {
    samples: Vec<u64>,
    next: usize,
    capacity: usize,
}

impl LatencyTracker {
    /// Default number of samples kept.
    pub const DEFAULT_CAPACITY: usize = 256;

    /// A tracker keeping the last `capacity` (at least 1) latencies.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        LatencyTracker {
            samples: Vec::with_capacity(capacity),
            next: 0,
            capacity,
        }
    }

    /// Records one latency (microsecond resolution).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if self.samples.len() < self.capacity {
            self.samples.push(micros);
        } else {
            self.samples[self.next] = micros;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True before the first sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The largest held sample; `None` if empty. A scan, without the copy
    /// [`LatencyTracker::quantile`] sorts.
    pub fn max(&self) -> Option<Duration> {
        self.samples.iter().max().map(|v| Duration::from_micros(*v))
    }

    /// The `q`-quantile (nearest rank) of the held samples; `None` if empty
    /// or `q` is not a number. `q` is clamped to `0..=1`.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples.is_empty() || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let n = self.samples.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        let mut scratch = self.samples.clone();
        let (_, v, _) = scratch.select_nth_unstable(rank);
        Some(Duration::from_micros(*v))
    }
}

impl Default for LatencyTracker {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

/// When to hedge.
///
/// ```
/// use keel_policy::{HedgePolicy, LatencyTracker};
/// use std::time::Duration;
///
/// let policy = HedgePolicy::new(0.95, Duration::from_millis(50), Duration::from_secs(2), None)?;
/// let mut tracker = LatencyTracker::default();
/// assert_eq!(policy.hedge_after(&tracker), None); // no data yet
/// for ms in 1..=100 { tracker.record(Duration::from_millis(ms * 10)); }
/// assert_eq!(policy.hedge_after(&tracker), Some(Duration::from_millis(950)));
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HedgePolicy {
    /// Latency quantile after which to hedge (default 0.95).
    pub quantile: f64,
    /// Never hedge earlier than this.
    pub min_delay: Duration,
    /// Never wait longer than this to hedge.
    pub max_delay: Duration,
    /// A fixed delay instead of the quantile.
    pub fixed: Option<Duration>,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        HedgePolicy {
            quantile: 0.95,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(10),
            fixed: None,
        }
    }
}

impl HedgePolicy {
    /// Samples needed before a quantile is trusted.
    pub const MIN_SAMPLES: usize = 20;

    /// Validates: `quantile` in `0..=1`, `min_delay <= max_delay`.
    pub fn new(
        quantile: f64,
        min_delay: Duration,
        max_delay: Duration,
        fixed: Option<Duration>,
    ) -> Result<Self, PolicyError> {
        check_unit_ratio("hedge.quantile", quantile)?;
        if min_delay > max_delay {
            return Err(PolicyError::invalid(
                "hedge.min_delay",
                format!("<= hedge.max_delay ({})", fmt_duration(max_delay)),
                fmt_duration(min_delay),
            ));
        }
        Ok(HedgePolicy {
            quantile,
            min_delay,
            max_delay,
            fixed,
        })
    }

    /// How long to wait for the first attempt before hedging: `fixed` if
    /// set, else the tracker's quantile clamped to `min_delay..=max_delay`;
    /// `None` (do not hedge) with fewer than [`Self::MIN_SAMPLES`] samples.
    pub fn hedge_after(&self, tracker: &LatencyTracker) -> Option<Duration> {
        if let Some(fixed) = self.fixed {
            return Some(fixed);
        }
        if tracker.len() < Self::MIN_SAMPLES {
            return None;
        }
        let q = tracker.quantile(self.quantile)?;
        Some(q.clamp(self.min_delay, self.max_delay.max(self.min_delay)))
    }

    /// A hedge is an extra attempt: it may only be sent if the retry budget
    /// grants one (and then it is spent).
    pub fn may_hedge(&self, budget: &mut RetryBudget, now: Instant) -> bool {
        budget.try_retry(now).is_ok()
    }
}
