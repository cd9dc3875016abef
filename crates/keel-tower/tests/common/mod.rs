//! Helpers shared by the layer tests: a mock service answering
//! `http::Response<()>`, and response builders.

#![allow(dead_code)]

use std::time::Duration;

use tower::{Service, ServiceExt};
use tower_test::mock;

pub type Req = &'static str;
pub type Res = http::Response<()>;
pub type Handle = mock::Handle<Req, Res>;

/// A mock service and the handle that answers its calls.
pub fn pair() -> (mock::Mock<Req, Res>, Handle) {
    mock::pair()
}

/// A response with `status` and optional headers.
pub fn status(code: u16, headers: &[(&'static str, &'static str)]) -> Res {
    let mut b = http::Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// Calls `svc` once in a spawned task (so the test can answer the mock).
pub fn spawn_call<S>(svc: S, req: Req) -> tokio::task::JoinHandle<Result<Res, keel_tower::Error>>
where
    S: Service<Req, Response = Res, Error = keel_tower::Error> + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(svc.oneshot(req))
}

/// True when no further request reaches the mock within an hour of
/// (paused) time.
pub async fn no_more_requests(handle: &mut Handle) -> bool {
    !matches!(
        tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await,
        Ok(Some(_))
    )
}
