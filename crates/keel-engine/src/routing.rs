//! Route strategies: the order in which a request visits the deployments
//! of its route (docs/design.md §7). The order is decided once per request, after the
//! route plan removed what cannot serve it; the fallback loop then walks it
//! exactly as it walks a priority chain, so retries, breakers, budgets and
//! static fallbacks behave the same whatever the strategy.
//!
//! Why several strategies: a priority chain sends everything to the first
//! deployment until it fails, which is right for a primary with a backup and
//! wrong for two equivalent ones. `least-latency` and `least-busy` spread
//! load by what is happening now; `cost` and `rules` by what the request
//! needs; `learned` by what has worked, trading success, latency and price
//! with weights the operator chooses. Observations fade with time (`decay`),
//! so a deployment that was slow or failing is tried again once it had time
//! to recover, instead of being starved forever by its old numbers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_policy::LatencyTracker;
use rand::Rng;

use crate::call::ChatCall;
use crate::config::{LearnedConfig, Route, RouteStrategy, Rule};
use crate::requirements::Requirements;
use crate::{cost, lock, now, EngineState};

/// Weight of a new latency observation below the current peak EWMA.
const EWMA_ALPHA: f64 = 0.3;
/// Fade time constant before any route read the signals.
const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Per-observation discount of the learned counts (memory of ~50 attempts).
const DISCOUNT: f64 = 0.98;

/// What an attempt's latency measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timing {
    /// Sent to whole answer (non-streaming).
    Answer,
    /// Sent to first token (a stream opened).
    FirstToken,
    /// The whole life of a stream: its health counts, its length says
    /// nothing about the deployment's latency (that is the first token).
    StreamEnd,
}

/// What routing has observed about one deployment.
#[derive(Default)]
pub(crate) struct DeploymentSignals {
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    /// Peak-EWMA latency in milliseconds (0 before the first answer).
    ewma_ms: f64,
    /// When the last observation arrived.
    last: Option<Instant>,
    /// Discounted counts of successful and failed attempts.
    ok: f64,
    failed: f64,
    /// Discounted sum of the latencies of successful attempts (ms).
    ok_latency_ms: f64,
    /// Recent latencies of successful whole answers, for hedging at the p95.
    latencies: LatencyTracker,
    /// Recent times to first token of successful streams (a stream's hedge
    /// races for the first token, so its delay is learned from these).
    first_tokens: LatencyTracker,
    /// The fade time constant of the route that last read these signals
    /// (an observation first fades the old estimate the same way).
    decay: Option<Duration>,
}

impl DeploymentSignals {
    /// Records one attempt: `healthy` is false for failures that count
    /// against the deployment's health; `timing` says what `latency` measured.
    pub(crate) fn observe(&self, t: Instant, healthy: bool, latency: Duration, timing: Timing) {
        if healthy && timing == Timing::StreamEnd {
            // Counted, with its latency, when its first token came.
            return;
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let mut s = lock(&self.state);
        let faded = s.ewma_ms * fade(s.last, t, s.decay.unwrap_or(DEFAULT_DECAY));
        s.ewma_ms = faded;
        if healthy {
            s.ewma_ms = if ms > s.ewma_ms || s.last.is_none() {
                ms
            } else {
                s.ewma_ms + EWMA_ALPHA * (ms - s.ewma_ms)
            };
            match timing {
                Timing::FirstToken => s.first_tokens.record(latency),
                _ => s.latencies.record(latency),
            }
        } else {
            // A failure is as bad as the slowest answer seen (peak), so
            // least-latency steers away from a failing deployment too.
            s.ewma_ms = s.ewma_ms.max(ms);
        }
        s.ok *= DISCOUNT;
        s.failed *= DISCOUNT;
        s.ok_latency_ms *= DISCOUNT;
        if healthy {
            s.ok += 1.0;
            s.ok_latency_ms += ms;
        } else {
            s.failed += 1.0;
        }
        s.last = Some(t);
    }

    /// Records the time to first token of a whole answer asked as a stream
    /// (its attempt is observed with the answer's latency).
    pub(crate) fn first_token(&self, latency: Duration) {
        lock(&self.state).first_tokens.record(latency);
    }

    /// Whether recent attempts here mostly succeeded: at least 3
    /// (discounted) answers and under 10% failures. A deployment never
    /// tried is not known to be healthy.
    pub(crate) fn healthy(&self) -> bool {
        let s = lock(&self.state);
        s.ok >= 3.0 && s.failed <= 0.1 * (s.ok + s.failed)
    }

    /// The recent p99 time to first token where it can exceed `bound`:
    /// when even the slowest recent first token is at most `bound`, that
    /// one (the p99 is no more), without copying and sorting the window.
    /// `None`: nothing seen yet.
    pub(crate) fn first_token_p99_above(&self, bound: Duration) -> Option<Duration> {
        let s = lock(&self.state);
        let max = s.first_tokens.max()?;
        if max <= bound {
            return Some(max);
        }
        s.first_tokens.quantile(0.99)
    }

    /// `read` of the latency tracker of whole answers (`Timing::Answer`)
    /// or of first tokens (for [`keel_policy::HedgePolicy::hedge_after`]),
    /// under the lock: nothing is copied.
    pub(crate) fn with_latencies<R>(
        &self,
        timing: Timing,
        read: impl FnOnce(&LatencyTracker) -> R,
    ) -> R {
        let s = lock(&self.state);
        match timing {
            Timing::FirstToken => read(&s.first_tokens),
            _ => read(&s.latencies),
        }
    }

    /// Peak EWMA faded by idle time: an idle deployment's estimate tends to
    /// zero, so it is probed again after a few `decay`s.
    fn latency_ms(&self, t: Instant, decay: Duration) -> f64 {
        let mut s = lock(&self.state);
        s.decay = Some(decay);
        s.ewma_ms * fade(s.last, t, decay)
    }

    /// `(ok, failed, mean ok latency ms)`, faded by idle time.
    fn learned(&self, t: Instant, decay: Duration) -> (f64, f64, Option<f64>) {
        let s = lock(&self.state);
        let f = fade(s.last, t, decay);
        let mean = (s.ok > 0.0).then(|| s.ok_latency_ms / s.ok);
        (s.ok * f, s.failed * f, mean)
    }
}

fn fade(last: Option<Instant>, t: Instant, decay: Duration) -> f64 {
    match last {
        None => 1.0,
        Some(l) => {
            let idle = t.saturating_duration_since(l).as_secs_f64();
            (-idle / decay.as_secs_f64().max(1e-9)).exp()
        }
    }
}

/// Orders `eligible` (deployment indices that can serve the request) by the
/// route's strategy. A `rules` route replaces it with the matching rule's
/// sub-chain (capability-filtered; the route chain stays if nothing of the
/// sub-chain can serve). With `x-keel-max-cost-usd`, deployments whose
/// estimated cost exceeds it are removed, each added to `reasons` with why.
pub(crate) fn order(
    inner: &EngineState,
    route: &Route,
    call: &ChatCall,
    needs: &Requirements,
    exclude: Option<usize>,
    eligible: &mut Vec<usize>,
    reasons: &mut Vec<(usize, String)>,
) {
    if let Some(max) = call.options.max_cost_usd {
        eligible.retain(|&i| {
            let dep = &inner.deployments[i].spec;
            let est = cost::estimate(dep, needs);
            let fits = est <= max;
            if !fits {
                reasons.push((
                    i,
                    format!("estimated cost ${est:.6} exceeds x-keel-max-cost-usd {max}"),
                ));
            }
            fits
        });
    }
    if eligible.len() < 2 && !matches!(route.routing.strategy, RouteStrategy::Rules(_)) {
        return;
    }
    let t = now();
    let decay = route.routing.decay;
    match &route.routing.strategy {
        RouteStrategy::Priority => {}
        RouteStrategy::Weighted(weights) => {
            let mut rng = inner.lock_rng();
            weighted_order(eligible, weights, &mut *rng);
        }
        RouteStrategy::LeastBusy => {
            let mut rng = inner.lock_rng();
            let mut keyed: Vec<(u32, u32, usize)> = eligible
                .iter()
                .map(|&i| (inner.deployments[i].bulkhead.in_flight(), rng.random(), i))
                .collect();
            keyed.sort_unstable();
            *eligible = keyed.into_iter().map(|(_, _, i)| i).collect();
        }
        RouteStrategy::LeastLatency => {
            let load = |i: usize| {
                let d = &inner.deployments[i];
                d.signals.latency_ms(t, decay) * f64::from(d.bulkhead.in_flight() + 1)
            };
            let mut rng = inner.lock_rng();
            least_latency_order(eligible, load, &mut *rng);
        }
        RouteStrategy::Cost => {
            let mut keyed: Vec<(f64, usize)> = eligible
                .iter()
                .map(|&i| (cost::estimate(&inner.deployments[i].spec, needs), i))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            *eligible = keyed.into_iter().map(|(_, i)| i).collect();
        }
        RouteStrategy::Rules(rules) => {
            if let Some(rule) = rules.iter().find(|r| matches(r, call, needs)) {
                let sub: Vec<usize> = rule
                    .chain
                    .iter()
                    .copied()
                    .filter(|&i| {
                        (Some(i) != exclude || rule.chain.len() == 1)
                            && needs.mismatch(&inner.deployments[i].spec).is_none()
                            && call.options.max_cost_usd.is_none_or(|m| {
                                cost::estimate(&inner.deployments[i].spec, needs) <= m
                            })
                    })
                    .collect();
                if !sub.is_empty() {
                    *eligible = sub;
                }
            }
        }
        RouteStrategy::Learned(cfg) => {
            let mut rng = inner.lock_rng();
            learned_order(inner, eligible, cfg, needs, t, decay, &mut *rng);
        }
    }
    crate::slowstart::apply(inner, eligible, t);
}

fn matches(rule: &Rule, call: &ChatCall, needs: &Requirements) -> bool {
    let w = &rule.when;
    let header = || {
        w.header.as_ref().is_none_or(|name| {
            call.options.headers.iter().any(|(k, v)| {
                k == name && w.header_value.as_ref().is_none_or(|want| v.trim() == want)
            })
        })
    };
    w.min_prompt_tokens.is_none_or(|m| needs.prompt_tokens >= m)
        && w.max_prompt_tokens.is_none_or(|m| needs.prompt_tokens <= m)
        && w.tools.is_none_or(|b| needs.tools == b)
        && w.images.is_none_or(|b| needs.images == b)
        && w.response_format
            .is_none_or(|b| call.request().response_format.is_some() == b)
        && header()
}

/// Draws an order without replacement, each pick proportional to weight;
/// weight-0 deployments come last in chain order.
fn weighted_order(eligible: &mut Vec<usize>, weights: &[(usize, f64)], rng: &mut impl Rng) {
    let weight = |i: usize| {
        weights
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(1.0, |(_, w)| *w)
    };
    let mut pool: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| weight(i) > 0.0)
        .collect();
    let zero: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| weight(i) <= 0.0)
        .collect();
    let mut out = Vec::with_capacity(eligible.len());
    while !pool.is_empty() {
        let total: f64 = pool.iter().map(|&i| weight(i)).sum();
        let mut x = rng.random::<f64>() * total;
        let mut pick = pool.len() - 1;
        for (k, &i) in pool.iter().enumerate() {
            x -= weight(i);
            if x < 0.0 {
                pick = k;
                break;
            }
        }
        out.push(pool.remove(pick));
    }
    out.extend(zero);
    *eligible = out;
}

/// Power of two choices on a load score: two distinct candidates drawn at
/// random, the lower score goes first; the rest follow by score. With two
/// deployments this is "the lower first", ties broken at random.
fn least_latency_order(eligible: &mut Vec<usize>, load: impl Fn(usize) -> f64, rng: &mut impl Rng) {
    let n = eligible.len();
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    let (la, lb) = (load(eligible[a]), load(eligible[b]));
    let first = if la < lb || (la == lb && rng.random::<bool>()) {
        eligible[a]
    } else {
        eligible[b]
    };
    let mut rest: Vec<(f64, usize)> = eligible
        .iter()
        .copied()
        .filter(|&i| i != first)
        .map(|i| (load(i), i))
        .collect();
    rest.sort_by(|x, y| x.0.total_cmp(&y.0));
    *eligible = std::iter::once(first)
        .chain(rest.into_iter().map(|(_, i)| i))
        .collect();
}

/// Thompson sampling: for each deployment, draw a success rate from its
/// Beta posterior and a latency from around its mean, combine them with
/// the (known) price into a reward, and order by the draws. With
/// probability `exploration` the first place goes to a uniform pick.
fn learned_order(
    inner: &EngineState,
    eligible: &mut Vec<usize>,
    cfg: &LearnedConfig,
    needs: &Requirements,
    t: Instant,
    decay: Duration,
    rng: &mut impl Rng,
) {
    let costs: Vec<f64> = eligible
        .iter()
        .map(|&i| cost::estimate(&inner.deployments[i].spec, needs))
        .collect();
    let cheapest = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let target_ms = cfg.latency_target.as_secs_f64() * 1000.0;
    let mut scored: Vec<(f64, usize)> = Vec::with_capacity(eligible.len());
    for (k, &i) in eligible.iter().enumerate() {
        let (ok, failed, mean) = inner.deployments[i].signals.learned(t, decay);
        let success = sample_beta(1.0 + ok, 1.0 + failed, rng);
        let latency_score = match mean {
            None => rng.random::<f64>(), // never answered: anything is possible
            Some(m) => {
                // Uncertainty shrinks with the number of answers.
                let spread = 1.0 / (1.0 + ok).sqrt();
                let draw = m * (1.0 + spread * standard_normal(rng)).max(0.05);
                target_ms / (target_ms + draw)
            }
        };
        let cost_score = if costs[k] <= 0.0 || !cheapest.is_finite() {
            1.0
        } else {
            cheapest / costs[k]
        };
        let reward = cfg.success_weight * success
            + cfg.latency_weight * latency_score
            + cfg.cost_weight * cost_score;
        scored.push((reward, i));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    *eligible = scored.into_iter().map(|(_, i)| i).collect();
    if cfg.exploration > 0.0 && rng.random::<f64>() < cfg.exploration {
        let k = rng.random_range(0..eligible.len());
        let pick = eligible.remove(k);
        eligible.insert(0, pick);
    }
}

fn standard_normal(rng: &mut impl Rng) -> f64 {
    // Box-Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 boosted).
fn sample_gamma(shape: f64, rng: &mut impl Rng) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn sample_beta(a: f64, b: f64, rng: &mut impl Rng) -> f64 {
    let x = sample_gamma(a, rng);
    let y = sample_gamma(b, rng);
    if x + y <= 0.0 {
        0.5
    } else {
        x / (x + y)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_first_token_deadline_is_the_same_without_the_sort() {
        use crate::config::FirstTokenDeadline;
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(11);
        let cap = Duration::from_secs(15);
        for round in 0..200 {
            let ft = FirstTokenDeadline {
                floor: Duration::from_millis(rng.random_range(1..2000)),
                factor: rng.random_range(0.0..8.0),
            };
            let s = DeploymentSignals::default();
            for _ in 0..rng.random_range(0..300) {
                // Mostly fast first tokens, now and then a slow one.
                let ms = match rng.random_range(0..20) {
                    0 => rng.random_range(200..3000),
                    _ => rng.random_range(5..60),
                };
                s.first_token(Duration::from_millis(ms));
            }
            let bound = Duration::try_from_secs_f64(ft.floor.as_secs_f64() / ft.factor)
                .unwrap_or(Duration::MAX);
            let sorted = s.with_latencies(Timing::FirstToken, |l| l.quantile(0.99));
            assert_eq!(
                ft.deadline(s.first_token_p99_above(bound), cap),
                ft.deadline(sorted, cap),
                "round {round}"
            );
        }
    }

    #[test]
    fn weighted_order_follows_weights() {
        let mut rng = StdRng::seed_from_u64(7);
        let weights = [(0, 3.0), (1, 1.0), (2, 0.0)];
        let mut first = [0u32; 3];
        for _ in 0..4000 {
            let mut e = vec![0, 1, 2];
            weighted_order(&mut e, &weights, &mut rng);
            assert_eq!(e[2], 2, "weight 0 goes last");
            first[e[0]] += 1;
        }
        assert!((2800..3200).contains(&first[0]), "{first:?}");
        assert_eq!(first[2], 0);
    }

    #[test]
    fn least_latency_puts_the_lower_load_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let load = |i: usize| [50.0, 5.0, 20.0][i];
        for _ in 0..100 {
            let mut e = vec![0, 1, 2];
            least_latency_order(&mut e, load, &mut rng);
            assert_eq!(e.len(), 3);
            // The worst never goes first (it loses every pair).
            assert_ne!(e[0], 0);
        }
    }

    #[test]
    fn beta_samples_have_the_right_mean() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| sample_beta(8.0, 2.0, &mut rng)).sum::<f64>() / n as f64;
        assert!((mean - 0.8).abs() < 0.01, "{mean}");
        let small: f64 = (0..n).map(|_| sample_beta(0.5, 0.5, &mut rng)).sum::<f64>() / n as f64;
        assert!((small - 0.5).abs() < 0.02, "{small}");
    }

    #[test]
    fn peak_ewma_jumps_up_decays_down_and_fades_when_idle() {
        let s = DeploymentSignals::default();
        let t0 = Instant::now();
        s.observe(t0, true, Duration::from_millis(10), Timing::Answer);
        s.observe(t0, true, Duration::from_millis(100), Timing::Answer);
        assert!((s.latency_ms(t0, Duration::from_secs(1)) - 100.0).abs() < 1e-6);
        s.observe(t0, true, Duration::from_millis(10), Timing::Answer);
        let after = s.latency_ms(t0, Duration::from_secs(1));
        assert!(after < 100.0 && after > 10.0, "{after}");
        let later = s.latency_ms(t0 + Duration::from_secs(3), Duration::from_secs(1));
        assert!(later < after * 0.06, "{later}");
    }

    #[test]
    fn a_stream_is_timed_by_its_first_token_and_counted_once() {
        let s = DeploymentSignals::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            s.observe(t0, true, Duration::from_millis(500), Timing::Answer);
            s.observe(t0, true, Duration::from_millis(8), Timing::FirstToken);
            s.observe(t0, true, Duration::from_secs(9), Timing::StreamEnd);
        }
        let q = |t| s.with_latencies(t, |l| l.quantile(0.95)).unwrap();
        assert_eq!(q(Timing::Answer), Duration::from_millis(500));
        assert_eq!(q(Timing::FirstToken), Duration::from_millis(8));
        assert_eq!(s.with_latencies(Timing::FirstToken, |l| l.len()), 20);
        let (ok, failed, mean) = s.learned(t0, Duration::from_secs(10));
        // 40 discounted observations (~27.7); the stream ends are not counted again (~35.2).
        assert!((ok - 27.7).abs() < 0.1 && failed == 0.0, "{ok} {failed}");
        let mean = mean.unwrap();
        assert!(mean < 500.0, "a stream's end adds no latency: {mean}");
        // A stream that breaks still counts against the deployment.
        s.observe(t0, false, Duration::from_secs(9), Timing::StreamEnd);
        assert!(s.learned(t0, Duration::from_secs(10)).1 > 0.9);
    }
}
