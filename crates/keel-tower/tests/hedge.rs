//! Hedge layer: a second attempt after the delay, the first success wins,
//! hedges are paid from the budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{no_more_requests, pair, spawn_call, status};
use keel_policy::{BudgetConfig, HedgePolicy};
use keel_tower::{Budget, HedgeLayer};
use tokio::time::Instant;
use tower::ServiceBuilder;

fn fixed(ms: u64) -> HedgePolicy {
    HedgePolicy {
        fixed: Some(Duration::from_millis(ms)),
        ..HedgePolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn hedge_fires_after_the_delay_and_takes_the_first_answer() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(fixed(100), Budget::unlimited()))
        .service(mock);
    let t0 = Instant::now();
    let call = spawn_call(svc, "hi");
    let (_, slow) = handle.next_request().await.unwrap();
    let (req, fast) = handle.next_request().await.unwrap();
    assert_eq!(req, "hi");
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    fast.send_response(status(200, &[("x-which", "hedge")]));
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.headers()["x-which"], "hedge");
    // The primary was dropped; answering it now changes nothing.
    slow.send_response(status(200, &[("x-which", "primary")]));
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_sends_no_hedge() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(fixed(100), Budget::unlimited()))
        .service(mock);
    let call = spawn_call(svc, "hi");
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    send.send_response(status(200, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_hedge_waits_for_the_primary() {
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(fixed(100), Budget::unlimited()))
        .service(mock);
    let call = spawn_call(svc, "hi");
    let (_, primary) = handle.next_request().await.unwrap();
    let (_, hedge) = handle.next_request().await.unwrap();
    hedge.send_response(status(503, &[]));
    tokio::time::sleep(Duration::from_millis(10)).await;
    primary.send_response(status(200, &[("x-which", "primary")]));
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.headers()["x-which"], "primary");
}

#[tokio::test(start_paused = true)]
async fn no_hedge_without_budget() {
    let budget = Budget::new(BudgetConfig {
        ratio: 0.0,
        min_per_sec: 0,
        window: Duration::from_secs(10),
    })
    .unwrap();
    let (mock, mut handle) = pair();
    let svc = ServiceBuilder::new()
        .layer(HedgeLayer::new(fixed(100), budget))
        .service(mock);
    let call = spawn_call(svc, "hi");
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    send.send_response(status(200, &[]));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    assert!(no_more_requests(&mut handle).await);
}

#[tokio::test(start_paused = true)]
async fn the_delay_comes_from_observed_latencies() {
    let (mock, mut handle) = pair();
    let layer = HedgeLayer::new(
        HedgePolicy {
            quantile: 0.9,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(5),
            fixed: None,
        },
        Budget::unlimited(),
    );
    let svc = ServiceBuilder::new().layer(layer.clone()).service(mock);
    assert_eq!(layer.hedge_after(), None);
    for _ in 0..HedgePolicy::MIN_SAMPLES {
        let call = spawn_call(svc.clone(), "hi");
        let (_, send) = handle.next_request().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        send.send_response(status(200, &[]));
        call.await.unwrap().unwrap();
    }
    let after = layer.hedge_after().unwrap();
    assert!(
        after >= Duration::from_millis(40) && after < Duration::from_millis(41),
        "{after:?}"
    );
}
