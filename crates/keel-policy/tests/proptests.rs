//! Properties: backoff bounds, the limiter's 60 s window guarantee, legal
//! breaker transitions, and total (never panicking) parsers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use keel_policy::{
    classify_response, parse_go_duration, rate_limit_headers, retry_hint, Backoff, BackoffConfig,
    BackoffKind, BreakerConfig, BreakerMode, BreakerState, BreakerStateKind, CircuitBreaker, Delay,
    DelayReason, FailureClass, GiveUpReason, HintSource, LimiterConfig, RateLimitHeaders,
    RateLimiter, RetryHint,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn kind() -> impl Strategy<Value = BackoffKind> {
    prop_oneof![
        Just(BackoffKind::Immediate),
        Just(BackoffKind::Fixed),
        Just(BackoffKind::Exponential),
        Just(BackoffKind::FullJitter),
        Just(BackoffKind::EqualJitter),
        Just(BackoffKind::Decorrelated),
    ]
}

proptest! {
    #[test]
    fn backoff_respects_cap_deadline_and_jitter_bounds(
        kind in kind(),
        base_ms in 0u64..5_000,
        extra_ms in 0u64..60_000,
        max_attempts in 1u32..20,
        attempt in 0u32..40,
        prev_ms in 0u64..200_000,
        remaining_ms in proptest::option::of(0u64..30_000),
        hint_ms in proptest::option::of(0u64..100_000),
        scale in prop_oneof![Just(1.0f64), 0.0f64..20.0, Just(f64::NAN)],
        seed in any::<u64>(),
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base + Duration::from_millis(extra_ms);
        let b = Backoff::new(BackoffConfig { kind, base, cap, max_attempts }).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let remaining = remaining_ms.map(Duration::from_millis);
        let hint = hint_ms.map(|ms| RetryHint { after: Duration::from_millis(ms), source: HintSource::RetryAfter });
        let prev = Duration::from_millis(prev_ms);
        match b.next_delay(attempt, prev, hint, remaining, scale, &mut rng) {
            Delay::GiveUp(GiveUpReason::AttemptsExhausted) => prop_assert!(attempt.max(1) >= max_attempts),
            Delay::GiveUp(GiveUpReason::DeadlineExhausted) => prop_assert_eq!(remaining, Some(Duration::ZERO)),
            Delay::GiveUp(GiveUpReason::HintExceedsDeadline) => {
                prop_assert!(hint.unwrap().after >= remaining.unwrap());
            }
            Delay::Wait { delay, reason: DelayReason::Hint(_) } => {
                prop_assert_eq!(delay, hint.unwrap().after);
                if let Some(r) = remaining { prop_assert!(delay < r); }
            }
            Delay::Wait { delay, reason: DelayReason::Backoff } => {
                prop_assert!(hint.is_none());
                prop_assert!(delay <= cap);
                if let Some(r) = remaining { prop_assert!(delay <= r); }
                let s = if scale.is_finite() { scale.clamp(1.0, 1000.0) } else { 1.0 };
                let scaled = Duration::from_nanos(((base.as_nanos() as f64) * s) as u64).min(cap);
                let exp = scaled.saturating_mul(2u32.saturating_pow(attempt.max(1) - 1)).min(cap);
                let unclamped = remaining.is_none_or(|r| delay < r);
                match kind {
                    BackoffKind::Immediate => prop_assert_eq!(delay, Duration::ZERO),
                    BackoffKind::Fixed if unclamped => prop_assert_eq!(delay, scaled),
                    BackoffKind::Exponential if unclamped => prop_assert_eq!(delay, exp),
                    BackoffKind::FullJitter => prop_assert!(delay <= exp),
                    BackoffKind::EqualJitter if unclamped => prop_assert!(delay >= exp / 2 && delay <= exp),
                    BackoffKind::Decorrelated if unclamped => {
                        prop_assert!(delay >= scaled);
                        prop_assert!(delay <= prev.max(scaled).saturating_mul(3).min(cap));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        advance_ms: u64,
        tokens_permille: u32,
        max_wait_ms: u64,
    },
    /// Settle or cancel one of the pending reservations (chosen by index).
    Resolve {
        pick: usize,
        advance_ms: u64,
        fate: Fate,
    },
    Observe {
        remaining_requests: Option<u64>,
        remaining_tokens: Option<u64>,
        reset_ms: u64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Cancel,
    /// Settle with this share (per mille) of the estimate.
    Refund(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let fate = prop_oneof![
        1 => Just(Fate::Cancel),
        2 => (0u32..=1000).prop_map(Fate::Refund),
    ];
    prop_oneof![
        8 => (0u64..3_000, 0u32..=1000, 0u64..120_000).prop_map(
            |(advance_ms, tokens_permille, max_wait_ms)| Op::Reserve { advance_ms, tokens_permille, max_wait_ms }
        ),
        4 => (any::<usize>(), 0u64..3_000, fate).prop_map(|(pick, advance_ms, fate)| Op::Resolve { pick, advance_ms, fate }),
        1 => (proptest::option::of(0u64..50), proptest::option::of(0u64..5_000), 0u64..20_000).prop_map(
            |(remaining_requests, remaining_tokens, reset_ms)| Op::Observe { remaining_requests, remaining_tokens, reset_ms }
        ),
    ]
}

/// Largest sum of `weights` whose instants fall in one closed 60 s window.
fn max_in_any_minute(mut starts: Vec<(Instant, u64)>) -> u64 {
    starts.sort_by_key(|(t, _)| *t);
    let mut best = 0;
    for (i, (a, _)) in starts.iter().enumerate() {
        let sum: u64 = starts[i..]
            .iter()
            .take_while(|(t, _)| *t <= *a + Duration::from_secs(60))
            .map(|(_, w)| *w)
            .sum();
        best = best.max(sum);
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn limiter_never_exceeds_limit_plus_burst_in_any_minute(
        rpm in 1u32..300,
        tpm in 1u32..50_000,
        burst_fraction in 0.01f64..=1.0,
        ops in proptest::collection::vec(op(), 1..250),
    ) {
        let mut l = RateLimiter::new(LimiterConfig { rpm: Some(rpm), tpm: Some(tpm), burst_fraction }).unwrap();
        let mut now = Instant::now();
        // (ready_at, requests, tokens) of every reservation; pending ones may still be resolved.
        let mut booked: Vec<(Instant, u64, u64)> = vec![];
        let mut pending: Vec<(usize, keel_policy::Reservation)> = vec![];
        for op in ops {
            match op {
                Op::Reserve { advance_ms, tokens_permille, max_wait_ms } => {
                    now += Duration::from_millis(advance_ms);
                    let want = (u64::from(tpm) * u64::from(tokens_permille) / 1000) as u32;
                    let Ok(r) = l.reserve(now, want, Duration::from_millis(max_wait_ms)) else { continue };
                    prop_assert!(r.ready_at >= now);
                    prop_assert!(r.ready_at <= now + Duration::from_millis(max_wait_ms));
                    if let Some(last) = booked.last() {
                        prop_assert!(r.ready_at >= last.0, "FIFO");
                    }
                    booked.push((r.ready_at, 1, u64::from(want)));
                    pending.push((booked.len() - 1, r));
                }
                Op::Resolve { pick, advance_ms, fate } => {
                    if pending.is_empty() { continue; }
                    now += Duration::from_millis(advance_ms);
                    let (idx, r) = pending.swap_remove(pick % pending.len());
                    match fate {
                        Fate::Cancel => {
                            l.cancel(now, &r);
                            booked[idx] = (r.ready_at, 0, 0);
                        }
                        Fate::Refund(permille) => {
                            let actual = (u64::from(r.tokens) * u64::from(permille) / 1000) as u32;
                            l.settle(now, &r, actual);
                            booked[idx].2 = u64::from(actual);
                        }
                    }
                }
                Op::Observe { remaining_requests, remaining_tokens, reset_ms } => {
                    l.observe(now, &RateLimitHeaders {
                        remaining_requests,
                        remaining_tokens,
                        reset_requests: Some(Duration::from_millis(reset_ms)),
                        reset_tokens: Some(Duration::from_millis(reset_ms)),
                        ..RateLimitHeaders::default()
                    });
                }
            }
        }
        let requests = booked.iter().map(|(t, r, _)| (*t, *r)).collect();
        let tokens = booked.iter().map(|(t, _, k)| (*t, *k)).collect();
        let rpm_bound = f64::from(rpm) * (1.0 + burst_fraction) + 1e-6;
        let tpm_bound = f64::from(tpm) * (1.0 + burst_fraction) + 1e-6;
        let max_requests = max_in_any_minute(requests);
        let max_tokens = max_in_any_minute(tokens);
        prop_assert!(max_requests as f64 <= rpm_bound, "{} requests > {}", max_requests, rpm_bound);
        prop_assert!(max_tokens as f64 <= tpm_bound, "{} tokens > {}", max_tokens, tpm_bound);
    }
}

#[derive(Clone, Debug)]
enum BOp {
    Acquire,
    Outcome(Option<FailureClass>, u64),
    Cancel,
    Advance(u64),
    ForceOpen(u64),
}

fn class() -> impl Strategy<Value = FailureClass> {
    proptest::sample::select(FailureClass::ALL.to_vec())
}

fn bop() -> impl Strategy<Value = BOp> {
    prop_oneof![
        4 => Just(BOp::Acquire),
        4 => (proptest::option::of(class()), 0u64..3_000).prop_map(|(c, l)| BOp::Outcome(c, l)),
        1 => Just(BOp::Cancel),
        3 => (0u64..30_000).prop_map(BOp::Advance),
        1 => (1u64..60_000).prop_map(BOp::ForceOpen),
    ]
}

fn legal(from: BreakerStateKind, to: BreakerStateKind) -> bool {
    use BreakerStateKind::*;
    from == to
        || matches!(
            (from, to),
            (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Open) | (HalfOpen, Closed)
        )
}

proptest! {
    #[test]
    fn breaker_moves_only_along_legal_edges(
        ratio_mode in any::<bool>(),
        threshold in 1u32..5,
        probes in 1u32..4,
        slow in proptest::option::of(100u64..2_000),
        ops in proptest::collection::vec(bop(), 1..300),
    ) {
        let mode = if ratio_mode {
            BreakerMode::FailureRatio { ratio: 0.5, window: Duration::from_secs(10), min_throughput: threshold }
        } else {
            BreakerMode::ConsecutiveFailures { threshold }
        };
        let mut b = CircuitBreaker::new(BreakerConfig {
            mode,
            half_open_probes: probes,
            slow_call: slow.map(Duration::from_millis),
            ..BreakerConfig::default()
        }).unwrap();
        let mut now = Instant::now();
        let mut probes_out = 0u32;
        let mut trips = 0;
        let mut forced = 0;
        for op in ops {
            let before = b.state(now).kind();
            let reported = match op {
                BOp::Acquire => {
                    let ok = b.try_acquire(now).is_ok();
                    if before == BreakerStateKind::Open { prop_assert!(!ok); }
                    if before == BreakerStateKind::Closed { prop_assert!(ok); }
                    if before == BreakerStateKind::HalfOpen && ok {
                        probes_out += 1;
                        prop_assert!(probes_out <= probes);
                    }
                    None
                }
                BOp::Outcome(class, latency) => {
                    if before == BreakerStateKind::HalfOpen { probes_out = probes_out.saturating_sub(1); }
                    b.on_outcome(now, class, Duration::from_millis(latency))
                }
                BOp::Cancel => {
                    if before == BreakerStateKind::HalfOpen { probes_out = probes_out.saturating_sub(1); }
                    b.on_cancel(now);
                    None
                }
                BOp::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    None
                }
                BOp::ForceOpen(ms) => {
                    forced += 1;
                    b.force_open(now, Duration::from_millis(ms))
                }
            };
            let after = b.state(now).kind();
            if before != BreakerStateKind::HalfOpen || after != BreakerStateKind::HalfOpen {
                probes_out = 0;
            }
            prop_assert!(legal(before, after), "{:?} -> {:?} via {:?}", before, after, op);
            if let Some(t) = reported {
                prop_assert_eq!(t.from, before);
                prop_assert_eq!(t.to, after);
                if t.to == BreakerStateKind::Open {
                    trips += 1;
                }
            }
            if let BreakerState::Open { until } = b.state(now) {
                prop_assert!(until > now);
                prop_assert!(until - now <= Duration::from_secs(300).max(Duration::from_millis(60_000)));
            }
        }
        // Every trip is reported, except re-forcing an already open breaker.
        prop_assert!(b.trips() >= trips);
        prop_assert!(b.trips() <= trips + forced);
    }
}

proptest! {
    #[test]
    fn parsers_are_total(s in ".{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..300), status in any::<u16>()) {
        let _ = parse_go_duration(&s);
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_000_000);
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&s).or_else(|_| HeaderValue::from_bytes(&bytes));
        if let Ok(value) = value {
            for name in [
                "retry-after", "retry-after-ms", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
                "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens",
                "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-tokens-remaining",
            ] {
                headers.insert(name, value.clone());
            }
        }
        if let Some(h) = retry_hint(&headers, now) {
            prop_assert!(h.after <= keel_policy::MAX_HINT);
        }
        let _ = rate_limit_headers(&headers, now);
        let _ = classify_response(status, &headers, &bytes, now);
        let _ = classify_response(status, &headers, s.as_bytes(), now);
    }

    #[test]
    fn go_durations_round_trip(h in 0u64..100, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s");
        prop_assert_eq!(parse_go_duration(&text), Some(Duration::from_secs(h * 3600 + m * 60 + s)));
        let text = format!("{m}m{s}.{ms:03}s");
        prop_assert_eq!(parse_go_duration(&text), Some(Duration::from_millis((m * 60 + s) * 1000 + ms)));
    }

    #[test]
    fn rfc3339_dates_are_relative_to_now(offset in 0u64..86_000) {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_000_000);
        let at = humantime::format_rfc3339(now + Duration::from_secs(offset)).to_string();
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-ratelimit-requests-reset", HeaderValue::from_str(&at).unwrap());
        prop_assert_eq!(retry_hint(&headers, now).map(|h| h.after), Some(Duration::from_secs(offset)));
    }
}
