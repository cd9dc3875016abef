//! Slow start (docs/design.md §7): a deployment whose breaker closes again gets its
//! traffic back gradually over `[breaker] slow_start`, instead of all at
//! once (a provider that just recovered often falls over again under the
//! full load). During the ramp the routing step keeps the deployment as
//! first choice only with probability elapsed / ramp, drawn from the
//! engine's seeded RNG; otherwise it is moved after the next deployment.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::{lock, EngineState};

/// When a deployment's breaker last closed again.
#[derive(Default)]
pub(crate) struct Recovery {
    closed_at: Mutex<Option<Instant>>,
}

impl Recovery {
    /// The breaker closed again at `t`.
    pub(crate) fn mark(&self, t: Instant) {
        *lock(&self.closed_at) = Some(t);
    }

    /// Time since the breaker last closed again, if it ever did.
    fn since(&self, t: Instant) -> Option<Duration> {
        lock(&self.closed_at).map(|c| t.saturating_duration_since(c))
    }
}

/// The chance that a deployment `elapsed` into its ramp is first choice.
pub(crate) fn admit_share(elapsed: Duration, ramp: Duration) -> f64 {
    if ramp.is_zero() || elapsed >= ramp {
        1.0
    } else {
        elapsed.as_secs_f64() / ramp.as_secs_f64()
    }
}

/// Moves the first deployment after the second one unless the draw admits
/// it (`elapsed`: time since its breaker closed again, `None`: never).
pub(crate) fn reorder(
    eligible: &mut [usize],
    elapsed: Option<Duration>,
    ramp: Duration,
    rng: &mut impl Rng,
) {
    let Some(elapsed) = elapsed else { return };
    if eligible.len() < 2 || elapsed >= ramp {
        return;
    }
    let p = admit_share(elapsed, ramp);
    if rng.random::<f64>() >= p {
        eligible.swap(0, 1);
    }
}

/// The routing step: applies the ramp of the first deployment, if any.
pub(crate) fn apply(inner: &EngineState, eligible: &mut [usize], t: Instant) {
    let Some(ramp) = inner.config.slow_start else {
        return;
    };
    let Some(&first) = eligible.first() else {
        return;
    };
    let elapsed = inner.deployments[first].recovery.since(t);
    if elapsed.is_some_and(|e| e < ramp) && eligible.len() > 1 {
        let mut rng = inner.lock_rng();
        reorder(eligible, elapsed, ramp, &mut *rng);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Share of `n` requests whose first choice stays deployment 0.
    fn share(elapsed: Option<Duration>, ramp: Duration, rng: &mut StdRng, n: usize) -> f64 {
        let mut kept = 0;
        for _ in 0..n {
            let mut order = vec![0, 1];
            reorder(&mut order, elapsed, ramp, rng);
            if order[0] == 0 {
                kept += 1;
            }
        }
        kept as f64 / n as f64
    }

    #[test]
    fn the_share_rises_over_the_ramp_not_in_one_step() {
        let ramp = Duration::from_secs(30);
        let mut rng = StdRng::seed_from_u64(7);
        let shares: Vec<f64> = (0..=6)
            .map(|k| share(Some(Duration::from_secs(5 * k)), ramp, &mut rng, 2000))
            .collect();
        // Right after closing: almost nothing; at the end: everything.
        assert!(shares[0] < 0.01, "{shares:?}");
        assert_eq!(shares[6], 1.0, "{shares:?}");
        // In between it climbs, each step about 1/6 of the ramp.
        for k in 1..6 {
            let want = k as f64 / 6.0;
            assert!((shares[k] - want).abs() < 0.05, "{k}: {shares:?}");
            assert!(shares[k] > shares[k - 1], "{shares:?}");
        }
    }

    #[test]
    fn no_ramp_without_a_recovery_or_a_second_deployment() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(share(None, Duration::from_secs(30), &mut rng, 100), 1.0);
        let mut one = vec![3];
        reorder(
            &mut one,
            Some(Duration::ZERO),
            Duration::from_secs(30),
            &mut rng,
        );
        assert_eq!(one, vec![3]);
        assert_eq!(admit_share(Duration::from_secs(1), Duration::ZERO), 1.0);
    }
}
