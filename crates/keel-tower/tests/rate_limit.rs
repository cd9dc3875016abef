//! Rate limit layer: the GCRA interval, FIFO waits, max wait, token cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{pair, spawn_call, status};
use keel_policy::{LimitCause, LimiterConfig};
use keel_tower::{Error, RateLimitLayer};
use tokio::time::Instant;
use tower::ServiceBuilder;

/// 6 per minute with a burst of one: one call every 10 s.
fn one_per_10s() -> LimiterConfig {
    LimiterConfig {
        rpm: Some(6),
        tpm: None,
        burst_fraction: 1.0 / 6.0,
    }
}

fn near(got: Duration, want: Duration) -> bool {
    got >= want && got < want + Duration::from_millis(1)
}

#[tokio::test(start_paused = true)]
async fn the_second_call_waits_the_gcra_interval() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(one_per_10s())
                .unwrap()
                .max_wait(Duration::from_secs(30)),
        )
        .service(mock);
    let t0 = Instant::now();
    let first = spawn_call(svc.clone(), "first");
    let second = spawn_call(svc.clone(), "second");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!((req, t0.elapsed()), ("first", Duration::ZERO));
    send.send_response(status(200, &[]));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "second");
    assert!(
        near(t0.elapsed(), Duration::from_secs(10)),
        "{:?}",
        t0.elapsed()
    );
    send.send_response(status(200, &[]));
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_that_would_wait_longer_than_max_wait_is_refused_at_once() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(one_per_10s())
                .unwrap()
                .max_wait(Duration::from_secs(5)),
        )
        .service(mock);
    let first = spawn_call(svc.clone(), "first");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(200, &[]));
    first.await.unwrap().unwrap();
    match spawn_call(svc.clone(), "second").await.unwrap() {
        Err(Error::RateLimited { retry_after, cause }) => {
            assert_eq!(cause, LimitCause::Rpm);
            assert!(
                near(retry_after, Duration::from_secs(10)),
                "{retry_after:?}"
            );
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn token_cost_counts_against_tpm() {
    let (mock, mut handle) = pair();
    let layer = RateLimitLayer::new(LimiterConfig {
        rpm: None,
        tpm: Some(600),
        burst_fraction: 1.0 / 6.0, // 100 tokens at once
    })
    .unwrap()
    .max_wait(Duration::from_secs(60))
    .token_cost(|req: &&'static str| req.len() as u32 * 10);
    let svc = ServiceBuilder::new().layer(layer).service(mock);
    let t0 = Instant::now();
    // 100 tokens: the whole burst.
    let a = spawn_call(svc.clone(), "0123456789");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(200, &[]));
    a.await.unwrap().unwrap();
    // 50 more tokens wait until 50 have refilled: 5 s at 10 tokens/s.
    let b = spawn_call(svc.clone(), "01234");
    let (_, send) = handle.next_request().await.unwrap();
    assert!(
        near(t0.elapsed(), Duration::from_secs(5)),
        "{:?}",
        t0.elapsed()
    );
    send.send_response(status(200, &[]));
    b.await.unwrap().unwrap();
    // More than a whole minute's tokens can never run.
    let too_large = "x".repeat(61).leak() as &'static str;
    match spawn_call(svc.clone(), too_large).await.unwrap() {
        Err(Error::RateLimited { cause, .. }) => assert_eq!(cause, LimitCause::TooLarge),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_while_waiting_gives_its_place_back() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(one_per_10s())
                .unwrap()
                .max_wait(Duration::from_secs(30)),
        )
        .service(mock);
    let t0 = Instant::now();
    let first = spawn_call(svc.clone(), "first");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(200, &[]));
    first.await.unwrap().unwrap();
    let waiting = spawn_call(svc.clone(), "waiting");
    tokio::task::yield_now().await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    // The cancelled booking is refunded: the next call starts at 10 s, not 20 s.
    let next = spawn_call(svc.clone(), "next");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "next");
    assert!(
        near(t0.elapsed(), Duration::from_secs(10)),
        "{:?}",
        t0.elapsed()
    );
    send.send_response(status(200, &[]));
    next.await.unwrap().unwrap();
}
