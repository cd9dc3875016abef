//! Bulkhead layer: rejects calls over the in-flight cap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{pair, spawn_call, status};
use keel_tower::{BulkheadLayer, Error};
use tower::ServiceBuilder;

#[tokio::test(start_paused = true)]
async fn bulkhead_rejects_over_max_and_frees_the_slot_after() {
    let (mock, mut handle) = pair();
    let bulkhead = BulkheadLayer::new(2).unwrap();
    let svc = ServiceBuilder::new().layer(bulkhead.clone()).service(mock);
    let a = spawn_call(svc.clone(), "a");
    let b = spawn_call(svc.clone(), "b");
    let (_, send_a) = handle.next_request().await.unwrap();
    let (_, send_b) = handle.next_request().await.unwrap();
    assert_eq!(bulkhead.in_flight(), 2);

    match spawn_call(svc.clone(), "c").await.unwrap() {
        Err(Error::BulkheadFull { max }) => assert_eq!(max, 2),
        other => panic!("expected BulkheadFull, got {other:?}"),
    }

    send_a.send_response(status(200, &[]));
    a.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    let d = spawn_call(svc.clone(), "d");
    let (req, send_d) = handle.next_request().await.unwrap();
    assert_eq!(req, "d");
    send_d.send_response(status(200, &[]));
    send_b.send_response(status(200, &[]));
    d.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_releases_its_slot() {
    let (mock, mut handle) = pair();
    let bulkhead = BulkheadLayer::new(1).unwrap();
    let svc = ServiceBuilder::new().layer(bulkhead.clone()).service(mock);
    let a = spawn_call(svc.clone(), "a");
    let _unanswered = handle.next_request().await.unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(bulkhead.in_flight(), 0);
}
