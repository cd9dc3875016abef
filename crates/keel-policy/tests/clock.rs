//! The manual clock shipped for tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel_policy::{Clock, ManualClock, SystemClock};

#[test]
fn manual_clock_moves_only_when_told() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    let s0 = clock.system_now();
    assert_eq!(
        s0,
        SystemTime::UNIX_EPOCH + ManualClock::DEFAULT_SYSTEM_START
    );
    assert_eq!(clock.now(), t0);
    let shared = clock.clone();
    shared.advance(Duration::from_millis(1500));
    assert_eq!(clock.now() - t0, Duration::from_millis(1500));
    assert_eq!(
        clock.system_now().duration_since(s0).unwrap(),
        Duration::from_millis(1500)
    );
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    clock.set_system(at);
    assert_eq!(shared.system_now(), at);
    assert_eq!(clock.now() - t0, Duration::from_millis(1500));
}

#[test]
fn clocks_are_usable_as_trait_objects() {
    let manual = ManualClock::new();
    let clocks: Vec<Arc<dyn Clock>> = vec![Arc::new(SystemClock), Arc::new(manual.clone())];
    for c in &clocks {
        let a = c.now();
        assert!(c.now() >= a);
    }
    let arc: Arc<ManualClock> = Arc::new(manual);
    let before = arc.now();
    arc.advance(Duration::from_secs(1));
    assert_eq!(Clock::now(&arc) - before, Duration::from_secs(1));
}
