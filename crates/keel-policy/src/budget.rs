//! Retry budget (Finagle / Envoy retry budgets, gRPC retry throttling).
//!
//! **Why budgets and not only max attempts?** `max_attempts = 3` bounds one
//! request, not the fleet: during a full outage every request retries twice
//! and the failing upstream sees three times its normal load exactly when it
//! can least take it. A budget bounds the *aggregate*: over a sliding
//! window, retries may add at most `ratio` (default 20%) on top of first
//! attempts, plus a small floor (`min_per_sec`) so low-traffic deployments
//! can still retry at all. When the budget is spent, a failure falls back
//! (or fails) instead of retrying. Hedged requests spend from the same
//! budget.

use std::time::{Duration, Instant};

use crate::error::{check_positive, check_unit_ratio, PolicyError};
use crate::window::SlidingWindow;

/// Retry budget parameters. Validated by [`RetryBudget::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per first attempt in the window, in `0..=1`.
    pub ratio: f64,
    /// Retries per second always allowed, whatever the traffic.
    pub min_per_sec: u32,
    /// Length of the sliding window.
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// The budget is spent: the retry must not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("retry budget exhausted ({retries_in_window} retries for {requests_in_window} requests in window)")]
pub struct BudgetExhausted {
    /// First attempts recorded in the window.
    pub requests_in_window: u64,
    /// Retries granted in the window.
    pub retries_in_window: u64,
}

const REQUESTS: usize = 0;
const RETRIES: usize = 1;

/// A retry budget over a sliding window.
///
/// ```
/// use keel_policy::{BudgetConfig, RetryBudget};
/// use std::time::{Duration, Instant};
///
/// let mut budget = RetryBudget::new(BudgetConfig { ratio: 0.5, min_per_sec: 0, window: Duration::from_secs(10) })?;
/// let now = Instant::now();
/// for _ in 0..4 { budget.record_request(now); }
/// assert!(budget.try_retry(now).is_ok());
/// assert!(budget.try_retry(now).is_ok());
/// assert!(budget.try_retry(now).is_err()); // 2 retries for 4 requests is the limit
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    cfg: BudgetConfig,
    floor: f64,
    counts: SlidingWindow<2>,
}

impl RetryBudget {
    /// Validates `cfg`: `ratio` in `0..=1`, `window > 0`.
    pub fn new(cfg: BudgetConfig) -> Result<Self, PolicyError> {
        check_unit_ratio("budget.ratio", cfg.ratio)?;
        check_positive("budget.window", cfg.window)?;
        Ok(RetryBudget {
            floor: f64::from(cfg.min_per_sec) * cfg.window.as_secs_f64(),
            counts: SlidingWindow::new(cfg.window),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// Records a first attempt (not a retry): it earns `ratio` retries.
    pub fn record_request(&mut self, now: Instant) {
        self.counts.add(now, REQUESTS, 1);
    }

    /// Spends one retry if the budget allows it.
    pub fn try_retry(&mut self, now: Instant) -> Result<(), BudgetExhausted> {
        let [requests, retries] = self.counts.totals(now);
        if (retries as f64) + 1.0 <= self.allowance(requests) {
            self.counts.add(now, RETRIES, 1);
            Ok(())
        } else {
            Err(BudgetExhausted {
                requests_in_window: requests,
                retries_in_window: retries,
            })
        }
    }

    /// Retries still available in the window at `now`.
    pub fn available(&self, now: Instant) -> u64 {
        let [requests, retries] = self.counts.totals(now);
        let left = self.allowance(requests) - retries as f64;
        if left <= 0.0 {
            0
        } else {
            left as u64
        }
    }

    fn allowance(&self, requests: u64) -> f64 {
        // A small epsilon so that 0.2 * 5 counts as one whole retry.
        requests as f64 * self.cfg.ratio + self.floor + 1e-9
    }
}
