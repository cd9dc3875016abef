//! Cost of the per-attempt decisions on the hot path.

#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use keel_policy::{
    classify_response, rate_limit_headers, Backoff, BackoffConfig, BreakerConfig, CircuitBreaker,
    FailureClass, LimiterConfig, RateLimiter,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;

const BODY_429: &[u8] = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 1200. Please try again in 1.4s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;

fn headers_429() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-requests", "9998"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "1.4s"),
    ] {
        h.insert(k, v.parse().expect("header"));
    }
    h
}

fn decisions(c: &mut Criterion) {
    let headers = headers_429();
    let now = SystemTime::now();
    c.bench_function("classify_429_with_headers_and_body", |b| {
        b.iter(|| {
            classify_response(
                black_box(429),
                black_box(&headers),
                black_box(BODY_429),
                now,
            )
        })
    });

    c.bench_function("rate_limit_headers_openai", |b| {
        b.iter(|| rate_limit_headers(black_box(&headers), now))
    });

    let backoff = Backoff::new(BackoffConfig::default()).expect("backoff");
    let mut rng = SmallRng::seed_from_u64(1);
    c.bench_function("backoff_next_delay_full_jitter", |b| {
        b.iter(|| {
            backoff.next_delay(
                black_box(2),
                Duration::ZERO,
                None,
                Some(Duration::from_secs(30)),
                1.0,
                &mut rng,
            )
        })
    });

    let mut limiter = RateLimiter::new(LimiterConfig {
        rpm: Some(1_000_000),
        tpm: Some(u32::MAX),
        ..LimiterConfig::default()
    })
    .expect("limiter");
    let mut t = Instant::now();
    c.bench_function("limiter_reserve_settle", |b| {
        b.iter(|| {
            t += Duration::from_micros(100);
            if let Ok(r) = limiter.reserve(t, black_box(1_200), Duration::from_secs(1)) {
                limiter.settle(t, &r, black_box(900));
            }
        })
    });

    let mut breaker = CircuitBreaker::new(BreakerConfig::default()).expect("breaker");
    let t0 = Instant::now();
    c.bench_function("breaker_acquire_outcome", |b| {
        b.iter(|| {
            if breaker.try_acquire(t0).is_ok() {
                breaker.on_outcome(
                    t0,
                    black_box(None::<FailureClass>),
                    Duration::from_millis(20),
                );
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = decisions
}
criterion_main!(benches);
