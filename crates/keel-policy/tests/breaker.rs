//! Breaker state machine with a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_policy::{
    BreakerConfig, BreakerMode, BreakerOpen, BreakerState, BreakerStateKind, CircuitBreaker, Clock,
    FailureClass, ManualClock, Transition,
};

const LAT: Duration = Duration::from_millis(20);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn t(from: BreakerStateKind, to: BreakerStateKind) -> Option<Transition> {
    Some(Transition { from, to })
}

fn consecutive(threshold: u32) -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold },
        ..BreakerConfig::default()
    })
    .unwrap()
}

fn fail(b: &mut CircuitBreaker, clock: &ManualClock) -> Option<Transition> {
    b.try_acquire(clock.now()).unwrap();
    b.on_outcome(clock.now(), Some(FailureClass::ServerError), LAT)
}

#[test]
fn trips_half_opens_and_reopens_with_growing_duration() {
    use BreakerStateKind::*;
    let clock = ManualClock::new();
    let mut b = consecutive(3);
    assert_eq!(fail(&mut b, &clock), None);
    assert_eq!(fail(&mut b, &clock), None);
    assert_eq!(fail(&mut b, &clock), t(Closed, Open));
    assert_eq!(b.trips(), 1);
    let t0 = clock.now();
    assert_eq!(
        b.state(t0),
        BreakerState::Open {
            until: t0 + secs(10)
        }
    );
    clock.advance(secs(4));
    assert_eq!(
        b.try_acquire(clock.now()),
        Err(BreakerOpen {
            retry_after: secs(6)
        })
    );

    // Half-open after 10 s; one probe only.
    clock.advance(secs(6));
    assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
    b.try_acquire(clock.now()).unwrap();
    assert!(b.try_acquire(clock.now()).is_err());
    // The probe fails: open again, for twice as long.
    assert_eq!(
        b.on_outcome(clock.now(), Some(FailureClass::Timeout), LAT),
        t(HalfOpen, Open)
    );
    assert_eq!(
        b.state(clock.now()),
        BreakerState::Open {
            until: clock.now() + secs(20)
        }
    );
    assert_eq!(b.trips(), 2);
    clock.advance(secs(20));
    b.try_acquire(clock.now()).unwrap();
    assert_eq!(
        b.on_outcome(clock.now(), Some(FailureClass::Network), LAT),
        t(HalfOpen, Open)
    );
    assert_eq!(
        b.state(clock.now()),
        BreakerState::Open {
            until: clock.now() + secs(40)
        }
    );

    // A successful probe closes it and resets the growth.
    clock.advance(secs(40));
    b.try_acquire(clock.now()).unwrap();
    assert_eq!(b.on_outcome(clock.now(), None, LAT), t(HalfOpen, Closed));
    assert_eq!(b.state(clock.now()), BreakerState::Closed);
    for _ in 0..2 {
        fail(&mut b, &clock);
    }
    assert_eq!(fail(&mut b, &clock), t(Closed, Open));
    assert_eq!(
        b.state(clock.now()),
        BreakerState::Open {
            until: clock.now() + secs(10)
        }
    );
}

#[test]
fn open_duration_is_capped() {
    let clock = ManualClock::new();
    let mut b = CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold: 1 },
        open_for: secs(10),
        max_open_for: secs(35),
        backoff_factor: 2.0,
        ..BreakerConfig::default()
    })
    .unwrap();
    let mut durations = vec![];
    for _ in 0..5 {
        fail(&mut b, &clock);
        let BreakerState::Open { until } = b.state(clock.now()) else {
            panic!("not open")
        };
        durations.push(until - clock.now());
        clock.advance(until - clock.now());
    }
    assert_eq!(
        durations,
        [secs(10), secs(20), secs(35), secs(35), secs(35)]
    );
}

#[test]
fn success_resets_consecutive_count_and_neutral_classes_do_nothing() {
    let clock = ManualClock::new();
    let mut b = consecutive(2);
    fail(&mut b, &clock);
    b.on_outcome(clock.now(), None, LAT);
    fail(&mut b, &clock);
    assert_eq!(b.state(clock.now()), BreakerState::Closed);
    // 400s, context overflow, rate limits: neutral.
    for class in [
        FailureClass::InvalidRequest,
        FailureClass::ContextOverflow,
        FailureClass::RateLimited,
    ] {
        for _ in 0..10 {
            assert_eq!(b.on_outcome(clock.now(), Some(class), LAT), None);
        }
    }
    // Neutral did not reset the count either: one more failure trips.
    assert!(fail(&mut b, &clock).is_some());
}

#[test]
fn half_open_probes_and_cancel() {
    use BreakerStateKind::*;
    let clock = ManualClock::new();
    let mut b = CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold: 1 },
        half_open_probes: 2,
        ..BreakerConfig::default()
    })
    .unwrap();
    fail(&mut b, &clock);
    clock.advance(secs(10));
    b.try_acquire(clock.now()).unwrap();
    b.try_acquire(clock.now()).unwrap();
    assert!(b.try_acquire(clock.now()).is_err());
    // A probe that never reports releases its slot.
    b.on_cancel(clock.now());
    b.try_acquire(clock.now()).unwrap();
    // Two successes are needed to close.
    assert_eq!(b.on_outcome(clock.now(), None, LAT), None);
    assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
    assert_eq!(b.on_outcome(clock.now(), None, LAT), t(HalfOpen, Closed));
}

#[test]
fn late_outcomes_while_open_are_ignored() {
    let clock = ManualClock::new();
    let mut b = consecutive(1);
    b.try_acquire(clock.now()).unwrap();
    b.try_acquire(clock.now()).unwrap();
    b.on_outcome(clock.now(), Some(FailureClass::ServerError), LAT);
    // The second call, admitted before the trip, reports while open.
    assert_eq!(b.on_outcome(clock.now(), None, LAT), None);
    assert!(matches!(b.state(clock.now()), BreakerState::Open { .. }));
    // In half-open with no probe outstanding, stray outcomes are ignored too.
    clock.advance(secs(10));
    assert_eq!(
        b.on_outcome(clock.now(), Some(FailureClass::ServerError), LAT),
        None
    );
    assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
}

#[test]
fn failure_ratio_mode_needs_min_throughput() {
    use BreakerStateKind::*;
    let clock = ManualClock::new();
    let mut b = CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::FailureRatio {
            ratio: 0.5,
            window: secs(10),
            min_throughput: 10,
        },
        ..BreakerConfig::default()
    })
    .unwrap();
    // 5 failures alone: below min throughput.
    for _ in 0..5 {
        assert_eq!(fail(&mut b, &clock), None);
    }
    // 4 successes: 5/9 but still below 10 calls.
    for _ in 0..4 {
        b.on_outcome(clock.now(), None, LAT);
    }
    assert_eq!(b.state(clock.now()), BreakerState::Closed);
    // 10th call fails: 6/10 >= 0.5.
    assert_eq!(fail(&mut b, &clock), t(Closed, Open));
}

#[test]
fn failure_ratio_window_slides() {
    let clock = ManualClock::new();
    let mut b = CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::FailureRatio {
            ratio: 0.5,
            window: secs(10),
            min_throughput: 4,
        },
        ..BreakerConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        fail(&mut b, &clock);
    }
    clock.advance(secs(11));
    // The old failures aged out: 1 failure + 3 successes = 25%.
    for _ in 0..3 {
        b.on_outcome(clock.now(), None, LAT);
    }
    assert_eq!(fail(&mut b, &clock), None);
    assert_eq!(b.state(clock.now()), BreakerState::Closed);
}

#[test]
fn slow_calls_count_as_failures() {
    let clock = ManualClock::new();
    let mut b = CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold: 2 },
        slow_call: Some(secs(5)),
        ..BreakerConfig::default()
    })
    .unwrap();
    b.on_outcome(clock.now(), None, secs(6));
    assert_eq!(b.state(clock.now()), BreakerState::Closed);
    b.on_outcome(clock.now(), None, secs(5));
    assert!(matches!(b.state(clock.now()), BreakerState::Open { .. }));
}

#[test]
fn custom_counted_classes() {
    let clock = ManualClock::new();
    let mut b = CircuitBreaker::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold: 1 },
        counted: vec![FailureClass::RateLimited],
        ..BreakerConfig::default()
    })
    .unwrap();
    assert_eq!(
        b.on_outcome(clock.now(), Some(FailureClass::ServerError), LAT),
        None
    );
    assert!(b
        .on_outcome(clock.now(), Some(FailureClass::RateLimited), LAT)
        .is_some());
}

#[test]
fn force_open_for_quota() {
    use BreakerStateKind::*;
    let clock = ManualClock::new();
    let mut b = consecutive(5);
    assert_eq!(b.force_open(clock.now(), secs(3600)), t(Closed, Open));
    assert_eq!(
        b.try_acquire(clock.now()),
        Err(BreakerOpen {
            retry_after: secs(3600)
        })
    );
    // A shorter force does not shorten it.
    assert_eq!(b.force_open(clock.now(), secs(1)), None);
    assert_eq!(
        b.state(clock.now()),
        BreakerState::Open {
            until: clock.now() + secs(3600)
        }
    );
    assert_eq!(b.trips(), 2);
}

#[test]
fn state_kind_names() {
    assert_eq!(BreakerStateKind::Closed.as_str(), "closed");
    assert_eq!(BreakerStateKind::Open.as_str(), "open");
    assert_eq!(BreakerStateKind::HalfOpen.as_str(), "half_open");
}
