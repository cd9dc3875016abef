//! Adaptive backoff: the base delay grows with the recent failure ratio.
//!
//! A fixed base is tuned for one situation. When most recent attempts on a
//! deployment fail, retrying at the normal pace mostly adds load; when it
//! recovers, waiting long wastes latency. This policy tracks failures over
//! a sliding window and returns a multiplier for [`crate::Backoff`]'s base:
//! `1 + (max_scale - 1) * failure_ratio`. It rises as failures accumulate
//! and decays on its own as successes come in and failures age out of the
//! window.

use std::time::{Duration, Instant};

use crate::error::{check_positive, PolicyError};
use crate::window::SlidingWindow;

/// Adaptive backoff parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Sliding window over which the failure ratio is measured.
    pub window: Duration,
    /// Scale at a 100% failure ratio (>= 1).
    pub max_scale: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            window: Duration::from_secs(30),
            max_scale: 8.0,
        }
    }
}

const OK: usize = 0;
const FAILED: usize = 1;

/// Failure-ratio-driven backoff scale.
///
/// ```
/// use keel_policy::{AdaptiveBackoff, AdaptiveConfig};
/// use std::time::{Duration, Instant};
///
/// let mut adaptive = AdaptiveBackoff::new(AdaptiveConfig { window: Duration::from_secs(10), max_scale: 5.0 })?;
/// let t0 = Instant::now();
/// assert_eq!(adaptive.scale(t0), 1.0);
/// adaptive.record(t0, true);
/// adaptive.record(t0, false);
/// assert_eq!(adaptive.scale(t0), 3.0); // half the attempts failed
/// assert_eq!(adaptive.scale(t0 + Duration::from_secs(11)), 1.0); // aged out
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct AdaptiveBackoff {
    cfg: AdaptiveConfig,
    counts: SlidingWindow<2>,
}

impl AdaptiveBackoff {
    /// Validates `cfg`: `window > 0`, `max_scale >= 1`.
    pub fn new(cfg: AdaptiveConfig) -> Result<Self, PolicyError> {
        check_positive("adaptive.window", cfg.window)?;
        if !(cfg.max_scale.is_finite() && cfg.max_scale >= 1.0) {
            return Err(PolicyError::invalid(
                "adaptive.max_scale",
                "a number >= 1",
                cfg.max_scale,
            ));
        }
        Ok(AdaptiveBackoff {
            counts: SlidingWindow::new(cfg.window),
            cfg,
        })
    }

    /// Records an attempt's outcome.
    pub fn record(&mut self, now: Instant, failed: bool) {
        self.counts.add(now, if failed { FAILED } else { OK }, 1);
    }

    /// Recent failure ratio, `0.0..=1.0` (0 with no data).
    pub fn failure_ratio(&self, now: Instant) -> f64 {
        let [ok, failed] = self.counts.totals(now);
        let total = ok + failed;
        if total == 0 {
            0.0
        } else {
            failed as f64 / total as f64
        }
    }

    /// The multiplier for the backoff base, `1.0..=max_scale`.
    pub fn scale(&self, now: Instant) -> f64 {
        let scale = 1.0 + (self.cfg.max_scale - 1.0) * self.failure_ratio(now);
        scale.clamp(1.0, self.cfg.max_scale)
    }
}
