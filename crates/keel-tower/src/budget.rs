//! A retry budget shared by the layers that send extra attempts.
//!
//! Retries and hedges are both extra load on a service that may already be
//! failing, so they spend from one [`keel_policy::RetryBudget`]: give the
//! same [`Budget`] to a [`RetryLayer`](crate::RetryLayer) and a
//! [`HedgeLayer`](crate::HedgeLayer) and together they add at most `ratio`
//! on top of first attempts (plus the `min_per_sec` floor).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use keel_policy::{BudgetConfig, BudgetExhausted, PolicyError, RetryBudget};

/// A cheaply cloneable handle on one retry budget.
///
/// ```
/// use keel_policy::BudgetConfig;
/// use keel_tower::Budget;
/// use std::time::{Duration, Instant};
///
/// let budget = Budget::new(BudgetConfig { ratio: 0.5, min_per_sec: 0, window: Duration::from_secs(10) })?;
/// let now = Instant::now();
/// budget.record_request(now);
/// budget.record_request(now);
/// assert!(budget.clone().try_retry(now).is_ok()); // clones share the budget
/// assert!(budget.try_retry(now).is_err());
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Budget {
    /// `None`: unlimited.
    inner: Arc<Mutex<Option<RetryBudget>>>,
}

impl Budget {
    /// A budget with `cfg` (validated by [`RetryBudget::new`]).
    pub fn new(cfg: BudgetConfig) -> Result<Budget, PolicyError> {
        Ok(Budget {
            inner: Arc::new(Mutex::new(Some(RetryBudget::new(cfg)?))),
        })
    }

    /// A budget that never refuses (for tests, or when something else
    /// bounds extra attempts).
    pub fn unlimited() -> Budget {
        Budget {
            inner: Arc::new(Mutex::new(None)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<RetryBudget>> {
        // The budget holds counters only; a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a first attempt (it earns `ratio` retries).
    pub fn record_request(&self, now: Instant) {
        if let Some(b) = self.lock().as_mut() {
            b.record_request(now);
        }
    }

    /// Spends one retry (or hedge) if the budget allows it.
    pub fn try_retry(&self, now: Instant) -> Result<(), BudgetExhausted> {
        match self.lock().as_mut() {
            Some(b) => b.try_retry(now),
            None => Ok(()),
        }
    }

    /// Retries still available at `now` (`u64::MAX` when unlimited).
    pub fn available(&self, now: Instant) -> u64 {
        self.lock().as_ref().map_or(u64::MAX, |b| b.available(now))
    }
}

impl Default for Budget {
    /// [`BudgetConfig::default`]: 20% on top of first attempts, a floor of
    /// 10 per second, over 10 s.
    fn default() -> Self {
        // The default configuration is valid, so the fallback is never taken.
        Budget::new(BudgetConfig::default()).unwrap_or_else(|_| Budget::unlimited())
    }
}
