//! Invalid parameters are rejected with exact messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_policy::{
    AdaptiveBackoff, AdaptiveConfig, Backoff, BackoffConfig, BreakerConfig, BreakerMode,
    BudgetConfig, Bulkhead, CircuitBreaker, HedgePolicy, LimiterConfig, PolicyError, RateLimiter,
    RetryBudget,
};

fn msg<T: std::fmt::Debug>(r: Result<T, PolicyError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn backoff() {
    assert_eq!(
        msg(Backoff::new(BackoffConfig {
            base: Duration::from_secs(20),
            ..BackoffConfig::default()
        })),
        "invalid backoff.base: expected <= backoff.cap (10s), got 20s"
    );
    assert_eq!(
        msg(Backoff::new(BackoffConfig {
            max_attempts: 0,
            ..BackoffConfig::default()
        })),
        "invalid backoff.max_attempts: expected >= 1, got 0"
    );
    assert!(Backoff::new(BackoffConfig::default()).is_ok());
}

#[test]
fn budget() {
    assert_eq!(
        msg(RetryBudget::new(BudgetConfig {
            ratio: 1.5,
            ..BudgetConfig::default()
        })),
        "invalid budget.ratio: expected a number in 0..=1, got 1.5"
    );
    assert_eq!(
        msg(RetryBudget::new(BudgetConfig {
            ratio: -0.1,
            ..BudgetConfig::default()
        })),
        "invalid budget.ratio: expected a number in 0..=1, got -0.1"
    );
    assert_eq!(
        msg(RetryBudget::new(BudgetConfig {
            ratio: f64::NAN,
            ..BudgetConfig::default()
        })),
        "invalid budget.ratio: expected a number in 0..=1, got NaN"
    );
    assert_eq!(
        msg(RetryBudget::new(BudgetConfig {
            window: Duration::ZERO,
            ..BudgetConfig::default()
        })),
        "invalid budget.window: expected > 0s, got 0s"
    );
}

#[test]
fn breaker() {
    let with = |f: fn(&mut BreakerConfig)| {
        let mut cfg = BreakerConfig::default();
        f(&mut cfg);
        msg(CircuitBreaker::new(cfg))
    };
    assert_eq!(
        with(|c| c.mode = BreakerMode::ConsecutiveFailures { threshold: 0 }),
        "invalid breaker.threshold: expected >= 1, got 0"
    );
    assert_eq!(
        with(|c| c.mode = BreakerMode::FailureRatio {
            ratio: 0.0,
            window: Duration::from_secs(10),
            min_throughput: 5
        }),
        "invalid breaker.ratio: expected a number in (0, 1], got 0"
    );
    assert_eq!(
        with(|c| c.mode = BreakerMode::FailureRatio {
            ratio: 0.5,
            window: Duration::ZERO,
            min_throughput: 5
        }),
        "invalid breaker.window: expected > 0s, got 0s"
    );
    assert_eq!(
        with(|c| c.mode = BreakerMode::FailureRatio {
            ratio: 0.5,
            window: Duration::from_secs(1),
            min_throughput: 0
        }),
        "invalid breaker.min_throughput: expected >= 1, got 0"
    );
    assert_eq!(
        with(|c| c.open_for = Duration::ZERO),
        "invalid breaker.open_for: expected > 0s, got 0s"
    );
    assert_eq!(
        with(|c| c.max_open_for = Duration::from_secs(5)),
        "invalid breaker.max_open_for: expected >= breaker.open_for (10s), got 5s"
    );
    assert_eq!(
        with(|c| c.backoff_factor = 0.5),
        "invalid breaker.backoff_factor: expected a number >= 1, got 0.5"
    );
    assert_eq!(
        with(|c| c.half_open_probes = 0),
        "invalid breaker.half_open_probes: expected >= 1, got 0"
    );
    assert_eq!(
        with(|c| c.slow_call = Some(Duration::ZERO)),
        "invalid breaker.slow_call: expected > 0s, got 0s"
    );
}

#[test]
fn limiter() {
    assert_eq!(
        msg(RateLimiter::new(LimiterConfig {
            rpm: Some(0),
            ..LimiterConfig::default()
        })),
        "invalid limiter.rpm: expected >= 1, got 0"
    );
    assert_eq!(
        msg(RateLimiter::new(LimiterConfig {
            tpm: Some(0),
            ..LimiterConfig::default()
        })),
        "invalid limiter.tpm: expected >= 1, got 0"
    );
    assert_eq!(
        msg(RateLimiter::new(LimiterConfig {
            burst_fraction: 1.5,
            ..LimiterConfig::default()
        })),
        "invalid limiter.burst_fraction: expected a number in (0, 1], got 1.5"
    );
    assert_eq!(
        msg(RateLimiter::new(LimiterConfig {
            burst_fraction: 0.0,
            ..LimiterConfig::default()
        })),
        "invalid limiter.burst_fraction: expected a number in (0, 1], got 0"
    );
}

#[test]
fn others() {
    assert_eq!(
        msg(Bulkhead::new(0)),
        "invalid bulkhead.max_in_flight: expected >= 1, got 0"
    );
    assert_eq!(
        msg(AdaptiveBackoff::new(AdaptiveConfig {
            window: Duration::ZERO,
            max_scale: 2.0
        })),
        "invalid adaptive.window: expected > 0s, got 0s"
    );
    assert_eq!(
        msg(AdaptiveBackoff::new(AdaptiveConfig {
            window: Duration::from_secs(1),
            max_scale: 0.5
        })),
        "invalid adaptive.max_scale: expected a number >= 1, got 0.5"
    );
    assert_eq!(
        msg(HedgePolicy::new(
            1.5,
            Duration::ZERO,
            Duration::from_secs(1),
            None
        )),
        "invalid hedge.quantile: expected a number in 0..=1, got 1.5"
    );
    assert_eq!(
        msg(HedgePolicy::new(
            0.9,
            Duration::from_secs(2),
            Duration::from_secs(1),
            None
        )),
        "invalid hedge.min_delay: expected <= hedge.max_delay (1s), got 2s"
    );
}

#[test]
fn error_value_is_structured() {
    let err = Bulkhead::new(0).unwrap_err();
    assert_eq!(
        err,
        PolicyError::InvalidParameter {
            name: "bulkhead.max_in_flight",
            expected: ">= 1".into(),
            got: "0".into()
        }
    );
}
