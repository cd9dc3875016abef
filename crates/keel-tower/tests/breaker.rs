//! Circuit breaker layer: opens after N failures, rejects without calling
//! the inner service, probes after the open period.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{no_more_requests, pair, spawn_call, status};
use keel_policy::{BreakerConfig, BreakerMode, BreakerState};
use keel_tower::{CircuitBreakerLayer, Error};
use tower::ServiceBuilder;

fn layer(threshold: u32) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold },
        open_for: Duration::from_secs(10),
        ..BreakerConfig::default()
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_n_failures_and_rejects_without_calling() {
    let (mock, mut handle) = pair();
    let breaker = layer(3);
    let svc = ServiceBuilder::new().layer(breaker.clone()).service(mock);
    for _ in 0..3 {
        let call = spawn_call(svc.clone(), "hi");
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(502, &[]));
        assert_eq!(call.await.unwrap().unwrap().status(), 502);
    }
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    assert_eq!(breaker.trips(), 1);

    let rejected = spawn_call(svc.clone(), "hi").await.unwrap();
    match rejected {
        Err(Error::BreakerOpen { retry_after }) => {
            assert_eq!(retry_after, Duration::from_secs(10));
        }
        other => panic!("expected BreakerOpen, got {other:?}"),
    }
    // The inner service never saw the rejected call.
    let probe = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
    assert!(probe.is_err(), "the open breaker let a call through");

    // After the open period, one probe goes through; its success closes it.
    tokio::time::advance(Duration::from_secs(10)).await;
    let call = spawn_call(svc.clone(), "probe");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "probe");
    send.send_response(status(200, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    assert_eq!(breaker.state(), BreakerState::Closed);
    drop(svc);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn request_errors_do_not_trip_the_breaker() {
    let (mock, mut handle) = pair();
    let breaker = layer(2);
    let svc = ServiceBuilder::new().layer(breaker.clone()).service(mock);
    for _ in 0..5 {
        let call = spawn_call(svc.clone(), "hi");
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(400, &[]));
        assert_eq!(call.await.unwrap().unwrap().status(), 400);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let (mock, mut handle) = pair();
    let breaker = layer(1);
    let svc = ServiceBuilder::new().layer(breaker.clone()).service(mock);
    let call = spawn_call(svc.clone(), "hi");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(matches!(call.await.unwrap(), Err(Error::Inner(_))));
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));

    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = spawn_call(svc.clone(), "probe");
    let (_, _unanswered) = handle.next_request().await.unwrap();
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());
    // The slot is free again: the next probe is admitted.
    let call = spawn_call(svc.clone(), "probe 2");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "probe 2");
    send.send_response(status(200, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}
