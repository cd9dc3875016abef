//! Backoff shapes, hints, deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_policy::{
    Backoff, BackoffConfig, BackoffKind, Delay, DelayReason, GiveUpReason, HintSource, RetryHint,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn backoff(kind: BackoffKind) -> Backoff {
    Backoff::new(BackoffConfig {
        kind,
        base: ms(100),
        cap: ms(1000),
        max_attempts: 10,
    })
    .unwrap()
}

fn wait(d: Delay) -> Duration {
    match d {
        Delay::Wait { delay, .. } => delay,
        Delay::GiveUp(r) => panic!("gave up: {r:?}"),
    }
}

#[test]
fn deterministic_shapes() {
    let mut rng = StdRng::seed_from_u64(1);
    let seq = |kind, rng: &mut StdRng| -> Vec<Duration> {
        let b = backoff(kind);
        (1..=6)
            .map(|a| wait(b.next_delay(a, Duration::ZERO, None, None, 1.0, rng)))
            .collect()
    };
    assert_eq!(
        seq(BackoffKind::Immediate, &mut rng),
        vec![Duration::ZERO; 6]
    );
    assert_eq!(seq(BackoffKind::Fixed, &mut rng), vec![ms(100); 6]);
    assert_eq!(
        seq(BackoffKind::Exponential, &mut rng),
        vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
    );
}

#[test]
fn jitter_bounds() {
    let mut rng = StdRng::seed_from_u64(2);
    let full = backoff(BackoffKind::FullJitter);
    let equal = backoff(BackoffKind::EqualJitter);
    let decorrelated = backoff(BackoffKind::Decorrelated);
    let mut prev = Duration::ZERO;
    for _ in 0..1000 {
        for attempt in 1..=9 {
            let exp = (ms(100) * 2u32.pow(attempt - 1)).min(ms(1000));
            let f = wait(full.next_delay(attempt, prev, None, None, 1.0, &mut rng));
            assert!(f <= exp);
            let e = wait(equal.next_delay(attempt, prev, None, None, 1.0, &mut rng));
            assert!(e >= exp / 2 && e <= exp, "{e:?} vs {exp:?}");
            let d = wait(decorrelated.next_delay(attempt, prev, None, None, 1.0, &mut rng));
            assert!(d >= ms(100) && d <= (prev.max(ms(100)) * 3).min(ms(1000)));
            prev = d;
        }
    }
}

#[test]
fn full_jitter_spreads() {
    let mut rng = StdRng::seed_from_u64(3);
    let b = backoff(BackoffKind::FullJitter);
    let samples: Vec<_> = (0..200)
        .map(|_| wait(b.next_delay(4, Duration::ZERO, None, None, 1.0, &mut rng)))
        .collect();
    assert!(samples.iter().any(|d| *d < ms(200)));
    assert!(samples.iter().any(|d| *d > ms(600)));
}

#[test]
fn attempts_are_bounded() {
    let mut rng = StdRng::seed_from_u64(4);
    let b = Backoff::new(BackoffConfig {
        max_attempts: 3,
        ..BackoffConfig::default()
    })
    .unwrap();
    assert_eq!(b.max_attempts(), 3);
    assert!(matches!(
        b.next_delay(1, Duration::ZERO, None, None, 1.0, &mut rng),
        Delay::Wait { .. }
    ));
    assert!(matches!(
        b.next_delay(2, Duration::ZERO, None, None, 1.0, &mut rng),
        Delay::Wait { .. }
    ));
    assert_eq!(
        b.next_delay(3, Duration::ZERO, None, None, 1.0, &mut rng),
        Delay::GiveUp(GiveUpReason::AttemptsExhausted)
    );
    let once = Backoff::new(BackoffConfig {
        max_attempts: 1,
        ..BackoffConfig::default()
    })
    .unwrap();
    assert_eq!(
        once.next_delay(1, Duration::ZERO, None, None, 1.0, &mut rng),
        Delay::GiveUp(GiveUpReason::AttemptsExhausted)
    );
}

#[test]
fn hint_overrides_and_is_not_capped() {
    let mut rng = StdRng::seed_from_u64(5);
    let b = backoff(BackoffKind::Exponential);
    let hint = RetryHint {
        after: Duration::from_secs(30),
        source: HintSource::RetryAfter,
    };
    assert_eq!(
        b.next_delay(1, Duration::ZERO, Some(hint), None, 1.0, &mut rng),
        Delay::Wait {
            delay: Duration::from_secs(30),
            reason: DelayReason::Hint(HintSource::RetryAfter)
        }
    );
    assert_eq!(
        b.next_delay(
            1,
            Duration::ZERO,
            Some(hint),
            Some(Duration::from_secs(31)),
            1.0,
            &mut rng
        ),
        Delay::Wait {
            delay: Duration::from_secs(30),
            reason: DelayReason::Hint(HintSource::RetryAfter)
        }
    );
    // The hint does not fit in the deadline: fail over now instead of waiting.
    assert_eq!(
        b.next_delay(
            1,
            Duration::ZERO,
            Some(hint),
            Some(Duration::from_secs(30)),
            1.0,
            &mut rng
        ),
        Delay::GiveUp(GiveUpReason::HintExceedsDeadline)
    );
}

#[test]
fn deadline_clamps_and_exhausts() {
    let mut rng = StdRng::seed_from_u64(6);
    let b = backoff(BackoffKind::Exponential);
    assert_eq!(
        b.next_delay(4, Duration::ZERO, None, Some(ms(300)), 1.0, &mut rng),
        Delay::Wait {
            delay: ms(300),
            reason: DelayReason::Backoff
        }
    );
    assert_eq!(
        b.next_delay(1, Duration::ZERO, None, Some(Duration::ZERO), 1.0, &mut rng),
        Delay::GiveUp(GiveUpReason::DeadlineExhausted)
    );
}

#[test]
fn base_scale_raises_base_within_cap() {
    let mut rng = StdRng::seed_from_u64(7);
    let b = backoff(BackoffKind::Exponential);
    assert_eq!(
        wait(b.next_delay(1, Duration::ZERO, None, None, 3.0, &mut rng)),
        ms(300)
    );
    assert_eq!(
        wait(b.next_delay(2, Duration::ZERO, None, None, 3.0, &mut rng)),
        ms(600)
    );
    assert_eq!(
        wait(b.next_delay(3, Duration::ZERO, None, None, 3.0, &mut rng)),
        ms(1000)
    );
    // Below 1 and NaN count as 1.
    assert_eq!(
        wait(b.next_delay(1, Duration::ZERO, None, None, 0.1, &mut rng)),
        ms(100)
    );
    assert_eq!(
        wait(b.next_delay(1, Duration::ZERO, None, None, f64::NAN, &mut rng)),
        ms(100)
    );
    assert_eq!(
        wait(b.next_delay(1, Duration::ZERO, None, None, f64::INFINITY, &mut rng)),
        ms(100)
    );
}

#[test]
fn huge_attempt_numbers_saturate() {
    let mut rng = StdRng::seed_from_u64(8);
    let b = Backoff::new(BackoffConfig {
        kind: BackoffKind::Exponential,
        base: ms(100),
        cap: Duration::from_secs(60),
        max_attempts: u32::MAX,
    })
    .unwrap();
    assert_eq!(
        wait(b.next_delay(u32::MAX - 1, Duration::MAX, None, None, 1.0, &mut rng)),
        Duration::from_secs(60)
    );
}

#[test]
fn seeded_rng_is_reproducible() {
    let b = backoff(BackoffKind::Decorrelated);
    let run = || {
        let mut rng = StdRng::seed_from_u64(42);
        let mut prev = Duration::ZERO;
        (1..8)
            .map(|a| {
                prev = wait(b.next_delay(a, prev, None, None, 1.0, &mut rng));
                prev
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn kind_deserializes_from_snake_case() {
    let kinds: Vec<BackoffKind> = serde_json::from_str(
        r#"["immediate","fixed","exponential","full_jitter","equal_jitter","decorrelated"]"#,
    )
    .unwrap();
    assert_eq!(kinds.len(), 6);
    assert_eq!(kinds[3], BackoffKind::FullJitter);
}
