//! RPM/TPM limiter: FIFO waits, settle/refund, cancel, provider headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_policy::{
    Clock, Headroom, LimitCause, LimitDenied, LimiterConfig, ManualClock, RateLimitHeaders,
    RateLimiter,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn limiter(rpm: Option<u32>, tpm: Option<u32>) -> RateLimiter {
    RateLimiter::new(LimiterConfig {
        rpm,
        tpm,
        burst_fraction: 1.0 / 6.0,
    })
    .unwrap()
}

const FOREVER: Duration = Duration::from_secs(3600);

#[test]
fn rpm_burst_then_fifo_queue() {
    let clock = ManualClock::new();
    let now = clock.now();
    let mut l = limiter(Some(60), None);
    for _ in 0..10 {
        let r = l.reserve(now, 0, Duration::ZERO).unwrap();
        assert_eq!(r.ready_at, now);
        assert_eq!(r.waited_for, None);
    }
    let starts: Vec<Instant> = (0..5)
        .map(|_| l.reserve(now, 0, FOREVER).unwrap().ready_at)
        .collect();
    assert_eq!(starts, (1..=5).map(|i| now + secs(i)).collect::<Vec<_>>());
    let r = l.reserve(now, 0, FOREVER).unwrap();
    assert_eq!(r.waited_for, Some(LimitCause::Rpm));
    // Time passes: the queue drains at one per second.
    clock.advance(secs(6));
    assert_eq!(
        l.reserve(clock.now(), 0, FOREVER).unwrap().ready_at,
        clock.now() + secs(1)
    );
}

#[test]
fn denial_takes_nothing() {
    let clock = ManualClock::new();
    let now = clock.now();
    let mut l = limiter(Some(6), None); // one every 10 s, burst of one
    l.reserve(now, 0, Duration::ZERO).unwrap();
    for _ in 0..5 {
        assert_eq!(
            l.reserve(now, 0, secs(9)),
            Err(LimitDenied {
                retry_after: secs(10),
                cause: LimitCause::Rpm
            })
        );
    }
    assert_eq!(
        l.reserve(now, 0, secs(10)).unwrap().ready_at,
        now + secs(10)
    );
}

#[test]
fn tpm_binds_and_later_callers_queue_behind() {
    let clock = ManualClock::new();
    let now = clock.now();
    // 6000 TPM: 10 ms per token, burst 1000 tokens.
    let mut l = limiter(Some(1000), Some(6000));
    let a = l.reserve(now, 800, FOREVER).unwrap();
    assert_eq!(a.ready_at, now);
    let b = l.reserve(now, 800, FOREVER).unwrap();
    assert_eq!(b.ready_at, now + secs(6));
    assert_eq!(b.waited_for, Some(LimitCause::Tpm));
    // A tiny request does not jump the queue.
    let c = l.reserve(now, 1, FOREVER).unwrap();
    assert!(c.ready_at >= b.ready_at);
    let denied = l.reserve(now, 800, secs(1)).unwrap_err();
    assert_eq!(denied.cause, LimitCause::Tpm);
}

#[test]
fn too_large_is_refused_outright() {
    let clock = ManualClock::new();
    let mut l = limiter(None, Some(6000));
    assert_eq!(
        l.reserve(clock.now(), 6001, FOREVER),
        Err(LimitDenied {
            retry_after: Duration::ZERO,
            cause: LimitCause::TooLarge
        })
    );
    // The whole minute's allowance is fine on an idle limiter.
    assert_eq!(
        l.reserve(clock.now(), 6000, Duration::ZERO)
            .unwrap()
            .ready_at,
        clock.now()
    );
}

#[test]
fn settle_refunds_overestimates() {
    let clock = ManualClock::new();
    let now = clock.now();
    let mut l = limiter(None, Some(6000));
    let a = l.reserve(now, 1000, FOREVER).unwrap();
    assert_eq!(
        l.reserve(now, 1000, Duration::ZERO)
            .unwrap_err()
            .retry_after,
        secs(10)
    );
    l.settle(now, &a, 200);
    assert_eq!(
        l.reserve(now, 1000, FOREVER).unwrap().ready_at,
        now + secs(2)
    );
}

#[test]
fn settle_charges_underestimates() {
    let clock = ManualClock::new();
    let now = clock.now();
    let mut l = limiter(None, Some(6000));
    let a = l.reserve(now, 100, FOREVER).unwrap();
    l.settle(now, &a, 1100);
    // 1100 tokens used: 1 s over the 10 s burst, plus the next request's own cost.
    assert_eq!(
        l.reserve(now, 100, FOREVER).unwrap().ready_at,
        now + secs(2)
    );
}

#[test]
fn refunds_never_release_capacity_later_bookings_rely_on() {
    let clock = ManualClock::new();
    let now = clock.now();
    let mut l = limiter(None, Some(6000));
    let a = l.reserve(now, 1000, FOREVER).unwrap();
    let b = l.reserve(now, 1000, FOREVER).unwrap();
    assert_eq!(b.ready_at, now + secs(10));
    l.settle(now, &a, 0);
    // B keeps its slot and its 1000 tokens still count from t+10 s.
    assert_eq!(
        l.reserve(now, 100, FOREVER).unwrap().ready_at,
        now + secs(11)
    );
}

#[test]
fn cancel_gives_back_the_slot() {
    let clock = ManualClock::new();
    let now = clock.now();
    let mut l = limiter(Some(6), Some(6000));
    let a = l.reserve(now, 500, FOREVER).unwrap();
    assert_eq!(
        l.reserve(now, 0, Duration::ZERO).unwrap_err().retry_after,
        secs(10)
    );
    l.cancel(now, &a);
    assert_eq!(l.reserve(now, 1000, Duration::ZERO).unwrap().ready_at, now);
}

#[test]
fn provider_quota_blocks_until_reset() {
    let clock = ManualClock::new();
    let mut l = limiter(Some(600), Some(100_000));
    l.observe(
        clock.now(),
        &RateLimitHeaders {
            remaining_requests: Some(0),
            reset_requests: Some(secs(30)),
            ..RateLimitHeaders::default()
        },
    );
    assert_eq!(
        l.headroom(clock.now()),
        Headroom {
            requests: 0.0,
            tokens: 0.0
        }
    );
    assert_eq!(
        l.reserve(clock.now(), 10, secs(5)),
        Err(LimitDenied {
            retry_after: secs(30),
            cause: LimitCause::ProviderQuota
        })
    );
    let r = l.reserve(clock.now(), 10, secs(30)).unwrap();
    assert_eq!(r.ready_at, clock.now() + secs(30));
    assert_eq!(r.waited_for, Some(LimitCause::ProviderQuota));
    clock.advance(secs(31));
    assert!(l.reserve(clock.now(), 10, Duration::ZERO).is_ok());
}

#[test]
fn low_remaining_slows_down() {
    let clock = ManualClock::new();
    // 60000 TPM: 1 ms per token, burst 10000.
    let mut l = limiter(None, Some(60_000));
    assert_eq!(l.headroom(clock.now()).tokens, 1.0);
    l.observe(
        clock.now(),
        &RateLimitHeaders {
            remaining_tokens: Some(1000),
            ..RateLimitHeaders::default()
        },
    );
    assert!((l.headroom(clock.now()).tokens - 0.1).abs() < 1e-9);
    assert_eq!(
        l.reserve(clock.now(), 2000, FOREVER).unwrap().ready_at,
        clock.now() + secs(1)
    );
    // Plenty remaining never adds capacity.
    let mut fresh = limiter(None, Some(60_000));
    fresh.reserve(clock.now(), 10_000, FOREVER).unwrap();
    fresh.observe(
        clock.now(),
        &RateLimitHeaders {
            remaining_tokens: Some(1_000_000),
            ..RateLimitHeaders::default()
        },
    );
    assert_eq!(
        fresh.reserve(clock.now(), 1000, FOREVER).unwrap().ready_at,
        clock.now() + secs(1)
    );
}

#[test]
fn headroom_tracks_usage() {
    let clock = ManualClock::new();
    let mut l = limiter(Some(60), Some(6000));
    assert_eq!(
        l.headroom(clock.now()),
        Headroom {
            requests: 1.0,
            tokens: 1.0
        }
    );
    for _ in 0..5 {
        l.reserve(clock.now(), 100, FOREVER).unwrap();
    }
    let h = l.headroom(clock.now());
    assert!((h.requests - 0.5).abs() < 1e-9, "{h:?}");
    assert!((h.tokens - 0.5).abs() < 1e-9, "{h:?}");
    clock.advance(secs(5));
    assert_eq!(
        l.headroom(clock.now()),
        Headroom {
            requests: 1.0,
            tokens: 1.0
        }
    );
    let unlimited = limiter(None, None);
    assert_eq!(
        unlimited.headroom(clock.now()),
        Headroom {
            requests: 1.0,
            tokens: 1.0
        }
    );
}

#[test]
fn sustained_rate_matches_limit() {
    // Saturate an RPM limiter for ten simulated minutes.
    let clock = ManualClock::new();
    let start = clock.now();
    let mut l = limiter(Some(120), None);
    let mut admitted = 0;
    while clock.now() < start + secs(600) {
        while l.reserve(clock.now(), 0, Duration::ZERO).is_ok() {
            admitted += 1;
        }
        clock.advance(ms(100));
    }
    // 120/min for 10 min, plus the initial burst of 20.
    assert!((1200..=1221).contains(&admitted), "{admitted}");
}
