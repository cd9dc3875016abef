//! Timeout layer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{pair, spawn_call, status};
use keel_tower::{Error, TimeoutLayer};
use tokio::time::Instant;
use tower::ServiceBuilder;

#[tokio::test(start_paused = true)]
async fn timeout_fires_after_the_duration() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(3)))
        .service(mock);
    let t0 = Instant::now();
    let call = spawn_call(svc, "hi");
    let _unanswered = handle.next_request().await.unwrap();
    match call.await.unwrap() {
        Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_secs(3)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_call_answered_in_time_passes_through() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(3)))
        .service(mock);
    let call = spawn_call(svc, "hi");
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2999)).await;
    send.send_response(status(200, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}
