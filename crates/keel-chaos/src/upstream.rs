//! Run-time state of one fake upstream: its fault plan, counters and limits.
//!
//! Nothing here is held across an answer: a request clones the current plan
//! (an `Arc`), bumps an atomic attempt counter, and takes the limiter lock
//! only for the arithmetic of one admission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::generate::{unit, Fnv};
use crate::limits::Limiter;
use crate::scenario::{Fault, FaultPlan, Trigger, UpstreamSpec};
use crate::stats::StatsCell;

/// A fault plan as installed at a given instant, with its own attempt count.
#[derive(Debug)]
pub(crate) struct ActivePlan {
    pub(crate) plan: FaultPlan,
    pub(crate) since: Instant,
    pub(crate) attempts: AtomicU64,
}

impl ActivePlan {
    fn new(plan: FaultPlan) -> Self {
        ActivePlan {
            plan,
            since: Instant::now(),
            attempts: AtomicU64::new(0),
        }
    }

    /// The fault for this attempt, if any: the first matching rule wins.
    pub(crate) fn select(
        &self,
        attempt: u64,
        elapsed: Duration,
        stream: bool,
        seed: u64,
        upstream: usize,
    ) -> Option<&Fault> {
        self.plan.faults.iter().enumerate().find_map(|(i, rule)| {
            if (rule.streaming_only && !stream) || (rule.non_streaming_only && stream) {
                return None;
            }
            if let Some((from, until)) = rule.window {
                if elapsed < from || elapsed >= until {
                    return None;
                }
            }
            let hit = match &rule.when {
                Trigger::Always => true,
                Trigger::Probability(p) => {
                    let mut h = Fnv::new(seed);
                    h.u64(upstream as u64);
                    h.u64(i as u64);
                    h.u64(attempt);
                    unit(h.finish()) < *p
                }
                Trigger::EveryNth(n) => *n > 0 && attempt.is_multiple_of(*n),
                Trigger::Sequence(attempts) => attempts.contains(&attempt),
            };
            hit.then_some(&rule.fault)
        })
    }
}

/// One upstream being served.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) index: usize,
    pub(crate) spec: UpstreamSpec,
    plan: RwLock<Arc<ActivePlan>>,
    pub(crate) stats: StatsCell,
    limiter: Option<Mutex<Limiter>>,
    /// Attempts since start or reset (seeds the ids).
    pub(crate) total: AtomicU64,
    pub(crate) models: Vec<String>,
}

impl Upstream {
    pub(crate) fn new(index: usize, spec: UpstreamSpec) -> Self {
        let plan = RwLock::new(Arc::new(ActivePlan::new(spec.faults.clone())));
        let models = if spec.models.is_empty() {
            crate::dialect::default_models(spec.kind)
                .iter()
                .map(|m| (*m).to_owned())
                .collect()
        } else {
            spec.models.clone()
        };
        Upstream {
            index,
            limiter: Limiter::new(spec.rpm, spec.tpm, Instant::now()).map(Mutex::new),
            spec,
            plan,
            stats: StatsCell::default(),
            total: AtomicU64::new(0),
            models,
        }
    }

    pub(crate) fn plan(&self) -> Arc<ActivePlan> {
        self.plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_plan(&self, plan: FaultPlan) {
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(ActivePlan::new(plan));
    }

    /// Zero counters and stats, restart the plan's clock and refill the limits.
    pub(crate) fn reset(&self) {
        let plan = self.plan().plan.clone();
        self.set_plan(plan);
        self.stats.clear();
        self.total.store(0, Ordering::Relaxed);
        if let Some(l) = &self.limiter {
            if let Some(fresh) = Limiter::new(self.spec.rpm, self.spec.tpm, Instant::now()) {
                *l.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
            }
        }
    }

    pub(crate) fn admit(
        &self,
        tokens: u64,
    ) -> Option<Result<crate::limits::LimitSnapshot, crate::limits::Denied>> {
        let limiter = self.limiter.as_ref()?;
        let mut l = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        Some(l.admit(Instant::now(), tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FaultRule;

    #[test]
    fn windows_include_from_and_exclude_until() {
        let rule = FaultRule::always(Fault::Reset)
            .between(Duration::from_secs(10), Duration::from_secs(30));
        let plan = ActivePlan::new(FaultPlan { faults: vec![rule] });
        let at = |s: u64| {
            plan.select(1, Duration::from_secs(s), false, 0, 0)
                .is_some()
        };
        assert!(!at(9));
        assert!(at(10));
        assert!(at(29));
        assert!(!at(30));
    }

    #[test]
    fn first_matching_rule_wins() {
        let plan = ActivePlan::new(FaultPlan {
            faults: vec![
                FaultRule::new(Fault::Hang, Trigger::Sequence(vec![2])),
                FaultRule::always(Fault::Empty),
            ],
        });
        let pick = |n| plan.select(n, Duration::ZERO, true, 0, 0).map(Fault::name);
        assert_eq!(pick(1), Some("empty"));
        assert_eq!(pick(2), Some("hang"));
    }
}
