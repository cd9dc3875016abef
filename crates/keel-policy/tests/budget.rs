//! Retry budget over a sliding window, driven by a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_policy::{BudgetConfig, BudgetExhausted, Clock, HedgePolicy, ManualClock, RetryBudget};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn ratio_of_first_attempts() {
    let clock = ManualClock::new();
    let mut b = RetryBudget::new(BudgetConfig {
        ratio: 0.2,
        min_per_sec: 0,
        window: secs(10),
    })
    .unwrap();
    for _ in 0..50 {
        b.record_request(clock.now());
    }
    for _ in 0..10 {
        assert!(b.try_retry(clock.now()).is_ok());
    }
    assert_eq!(
        b.try_retry(clock.now()),
        Err(BudgetExhausted {
            requests_in_window: 50,
            retries_in_window: 10
        })
    );
    assert_eq!(b.available(clock.now()), 0);
}

#[test]
fn floor_allows_retries_without_traffic() {
    let clock = ManualClock::new();
    let mut b = RetryBudget::new(BudgetConfig {
        ratio: 0.2,
        min_per_sec: 1,
        window: secs(10),
    })
    .unwrap();
    assert_eq!(b.available(clock.now()), 10);
    for _ in 0..10 {
        assert!(b.try_retry(clock.now()).is_ok());
    }
    assert!(b.try_retry(clock.now()).is_err());
}

#[test]
fn window_slides() {
    let clock = ManualClock::new();
    let mut b = RetryBudget::new(BudgetConfig {
        ratio: 0.5,
        min_per_sec: 0,
        window: secs(10),
    })
    .unwrap();
    for _ in 0..4 {
        b.record_request(clock.now());
    }
    assert!(b.try_retry(clock.now()).is_ok());
    assert!(b.try_retry(clock.now()).is_ok());
    assert!(b.try_retry(clock.now()).is_err());
    clock.advance(secs(5));
    // Still inside the window: still spent.
    assert!(b.try_retry(clock.now()).is_err());
    b.record_request(clock.now());
    b.record_request(clock.now());
    assert!(b.try_retry(clock.now()).is_ok());
    assert!(b.try_retry(clock.now()).is_err());
    clock.advance(secs(6));
    // The first four requests and two retries aged out; two requests and one retry remain.
    assert_eq!(b.available(clock.now()), 0);
    b.record_request(clock.now());
    b.record_request(clock.now());
    assert!(b.try_retry(clock.now()).is_ok());
    clock.advance(secs(11));
    assert_eq!(b.available(clock.now()), 0);
    assert!(b.try_retry(clock.now()).is_err());
}

#[test]
fn outage_amplification_is_bounded() {
    // Every attempt fails for a minute at 100 req/s: retries stay at ~20% of requests.
    let clock = ManualClock::new();
    let mut b = RetryBudget::new(BudgetConfig::default()).unwrap();
    let (mut requests, mut retries) = (0u64, 0u64);
    for _ in 0..6000 {
        b.record_request(clock.now());
        requests += 1;
        for _ in 0..2 {
            if b.try_retry(clock.now()).is_ok() {
                retries += 1;
            }
        }
        clock.advance(Duration::from_millis(10));
    }
    let amplification = (requests + retries) as f64 / requests as f64;
    assert!(amplification <= 1.2 + 0.1 + 0.02, "{amplification}"); // ratio + floor(10/s / 100/s)
    assert!(amplification > 1.2);
}

#[test]
fn hedges_spend_the_budget() {
    let clock = ManualClock::new();
    let mut b = RetryBudget::new(BudgetConfig {
        ratio: 0.1,
        min_per_sec: 0,
        window: secs(10),
    })
    .unwrap();
    let hedge = HedgePolicy::default();
    for _ in 0..10 {
        b.record_request(clock.now());
    }
    assert!(hedge.may_hedge(&mut b, clock.now()));
    assert!(!hedge.may_hedge(&mut b, clock.now()));
    assert!(b.try_retry(clock.now()).is_err());
}
