//! Retry layer: hints, backoff, budget, deadline, classification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{no_more_requests, pair, spawn_call, status};
use keel_policy::{
    Backoff, BackoffConfig, BackoffKind, BudgetConfig, Classification, FailureClass,
};
use keel_tower::{Budget, Error, RetryLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::ServiceBuilder;

fn fixed(base_ms: u64, max_attempts: u32) -> Backoff {
    Backoff::new(BackoffConfig {
        kind: BackoffKind::Fixed,
        base: Duration::from_millis(base_ms),
        cap: Duration::from_secs(10),
        max_attempts,
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_waits_the_server_hint_then_succeeds() {
    let (mock, mut handle) = pair();
    let layer = RetryLayer::new(fixed(10, 3))
        .budget(Budget::unlimited())
        .seed(1);
    let call = spawn_call(ServiceBuilder::new().layer(layer).service(mock), "hi");

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "hi");
    let t0 = Instant::now();
    send.send_response(status(429, &[("retry-after-ms", "1500")]));
    let (_, send) = handle.next_request().await.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(1510),
        "waited {waited:?}, the hint said 1500ms (backoff would be 10ms)"
    );
    send.send_response(status(200, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn retry_uses_the_backoff_without_a_hint_and_stops_at_max_attempts() {
    let (mock, mut handle) = pair();
    let layer = RetryLayer::new(fixed(200, 3)).budget(Budget::unlimited());
    let call = spawn_call(ServiceBuilder::new().layer(layer).service(mock), "hi");
    let mut last = Instant::now();
    for attempt in 1..=3 {
        let (_, send) = handle.next_request().await.unwrap();
        if attempt > 1 {
            assert_eq!(last.elapsed(), Duration::from_millis(200));
        }
        last = Instant::now();
        send.send_response(status(500, &[]));
    }
    // Attempts exhausted: the last response is the answer.
    assert_eq!(call.await.unwrap().unwrap().status(), 500);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn retry_spends_the_budget_and_refuses_when_it_is_empty() {
    let budget = Budget::new(BudgetConfig {
        ratio: 0.0,
        min_per_sec: 0,
        window: Duration::from_secs(10),
    })
    .unwrap();
    let (mock, mut handle) = pair();
    let layer = RetryLayer::new(fixed(10, 5)).budget(budget.clone());
    let call = spawn_call(ServiceBuilder::new().layer(layer).service(mock), "hi");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    match call.await.unwrap() {
        Err(Error::BudgetExhausted(denied)) => {
            assert_eq!(denied.requests_in_window, 1);
            assert_eq!(denied.retries_in_window, 0);
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_allows_its_ratio_of_retries() {
    // 50%: two requests earn one retry between them.
    let budget = Budget::new(BudgetConfig {
        ratio: 0.5,
        min_per_sec: 0,
        window: Duration::from_secs(10),
    })
    .unwrap();
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(fixed(10, 3)).budget(budget.clone()))
        .service(mock);
    budget.record_request(tokio::time::Instant::now().into_std());
    let call = spawn_call(svc.clone(), "a");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(503, &[]));
    let (_, send) = handle.next_request().await.unwrap(); // the one retry
    send.send_response(status(503, &[]));
    // No retry left: the 503 response is returned as is.
    assert_eq!(call.await.unwrap().unwrap().status(), 503);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn invalid_request_is_not_retried() {
    let (mock, mut handle) = pair();
    let layer = RetryLayer::new(fixed(10, 5)).budget(Budget::unlimited());
    let call = spawn_call(ServiceBuilder::new().layer(layer).service(mock), "hi");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(400, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 400);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn a_hint_longer_than_the_deadline_gives_up_at_once() {
    let (mock, mut handle) = pair();
    let layer = RetryLayer::new(fixed(10, 5))
        .budget(Budget::unlimited())
        .deadline(Duration::from_secs(5));
    let call = spawn_call(ServiceBuilder::new().layer(layer).service(mock), "hi");
    let t0 = Instant::now();
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(status(429, &[("retry-after", "30")]));
    assert_eq!(call.await.unwrap().unwrap().status(), 429);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn timeout_with_deadline_retries_timed_out_attempts_until_the_deadline() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::new(fixed(100, 10))
                .budget(Budget::unlimited())
                .deadline(Duration::from_millis(2500)),
        )
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(mock);
    let t0 = Instant::now();
    let call = spawn_call(svc, "hi");
    // Attempts at 0, 1.1 s and 2.2 s; none is answered.
    let mut pending = Vec::new();
    for expected_ms in [0, 1100, 2200] {
        let (_, send) = handle.next_request().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(expected_ms));
        pending.push(send);
    }
    match call.await.unwrap() {
        Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(2500)),
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert_eq!(t0.elapsed(), Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_drives_a_non_http_service() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, String>();
    let classify = |outcome: Result<&String, &keel_tower::BoxError>| match outcome {
        Ok(s) if s == "busy" => Some(Classification::new(FailureClass::Overloaded)),
        Ok(_) => None,
        Err(_) => Some(Classification::new(FailureClass::InvalidRequest)),
    };
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::new(fixed(10, 3))
                .budget(Budget::unlimited())
                .classify_with(classify),
        )
        .service(mock);
    let call = tokio::spawn(tower::ServiceExt::oneshot(svc, 7));
    let (n, send) = handle.next_request().await.unwrap();
    assert_eq!(n, 7);
    send.send_response("busy".into());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("done".into());
    assert_eq!(call.await.unwrap().unwrap(), "done");
}
