//! Adaptive backoff rises with failures and decays with recovery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_policy::{
    AdaptiveBackoff, AdaptiveConfig, Backoff, BackoffConfig, BackoffKind, Clock, Delay, ManualClock,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn rises_and_decays() {
    let clock = ManualClock::new();
    let mut a = AdaptiveBackoff::new(AdaptiveConfig {
        window: Duration::from_secs(10),
        max_scale: 4.0,
    })
    .unwrap();
    assert_eq!(a.scale(clock.now()), 1.0);
    for _ in 0..10 {
        a.record(clock.now(), false);
    }
    assert_eq!(a.scale(clock.now()), 1.0);
    let mut last = 1.0;
    for _ in 0..30 {
        a.record(clock.now(), true);
        let s = a.scale(clock.now());
        assert!(s >= last && s <= 4.0);
        last = s;
    }
    assert_eq!(a.scale(clock.now()), 1.0 + 3.0 * 30.0 / 40.0);
    // Recovery: successes bring it down...
    clock.advance(Duration::from_secs(5));
    for _ in 0..40 {
        a.record(clock.now(), false);
    }
    let recovering = a.scale(clock.now());
    assert!(recovering < last, "{recovering} < {last}");
    // ...and old failures age out entirely.
    clock.advance(Duration::from_secs(6));
    assert_eq!(a.scale(clock.now()), 1.0);
    clock.advance(Duration::from_secs(10));
    assert_eq!(a.failure_ratio(clock.now()), 0.0);
}

#[test]
fn feeds_backoff() {
    let clock = ManualClock::new();
    let mut a = AdaptiveBackoff::new(AdaptiveConfig {
        window: Duration::from_secs(10),
        max_scale: 5.0,
    })
    .unwrap();
    for _ in 0..4 {
        a.record(clock.now(), true);
    }
    let b = Backoff::new(BackoffConfig {
        kind: BackoffKind::Fixed,
        base: Duration::from_millis(100),
        cap: Duration::from_secs(10),
        max_attempts: 5,
    })
    .unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let d = b.next_delay(
        1,
        Duration::ZERO,
        None,
        None,
        a.scale(clock.now()),
        &mut rng,
    );
    assert!(matches!(d, Delay::Wait { delay, .. } if delay == Duration::from_millis(500)));
}
