//! Hedge delay from recent latencies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_policy::{HedgePolicy, LatencyTracker};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn quantiles() {
    let mut t = LatencyTracker::new(1000);
    assert!(t.is_empty());
    assert_eq!(t.quantile(0.5), None);
    for i in (1..=1000).rev() {
        t.record(ms(i));
    }
    assert_eq!(t.len(), 1000);
    assert_eq!(t.quantile(0.5), Some(ms(500)));
    assert_eq!(t.quantile(0.95), Some(ms(950)));
    assert_eq!(t.quantile(0.0), Some(ms(1)));
    assert_eq!(t.quantile(1.0), Some(ms(1000)));
    assert_eq!(t.quantile(7.0), Some(ms(1000)));
    assert_eq!(t.quantile(f64::NAN), None);
}

#[test]
fn ring_keeps_recent_samples() {
    let mut t = LatencyTracker::new(10);
    for _ in 0..10 {
        t.record(ms(1000));
    }
    for _ in 0..10 {
        t.record(ms(10));
    }
    assert_eq!(t.len(), 10);
    assert_eq!(t.quantile(1.0), Some(ms(10)));
}

#[test]
fn hedge_delay() {
    let p = HedgePolicy::new(0.95, ms(100), ms(2000), None).unwrap();
    let mut t = LatencyTracker::default();
    for _ in 0..HedgePolicy::MIN_SAMPLES - 1 {
        t.record(ms(500));
    }
    assert_eq!(p.hedge_after(&t), None, "too few samples");
    t.record(ms(500));
    assert_eq!(p.hedge_after(&t), Some(ms(500)));
    // Clamped to the bounds.
    let mut fast = LatencyTracker::default();
    let mut slow = LatencyTracker::default();
    for _ in 0..50 {
        fast.record(ms(5));
        slow.record(Duration::from_secs(30));
    }
    assert_eq!(p.hedge_after(&fast), Some(ms(100)));
    assert_eq!(p.hedge_after(&slow), Some(ms(2000)));
    // Fixed wins.
    let fixed = HedgePolicy::new(0.95, ms(100), ms(2000), Some(ms(750))).unwrap();
    assert_eq!(fixed.hedge_after(&LatencyTracker::default()), Some(ms(750)));
}
