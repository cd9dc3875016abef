//! Per-attempt timeout.
//!
//! A hung upstream must not hold a caller forever. Put [`TimeoutLayer`]
//! *inside* a [`RetryLayer`](crate::RetryLayer): each attempt gets this
//! long, a timed-out attempt is classified [`FailureClass::Timeout`] and
//! retried, and the retry layer's [`deadline`](crate::RetryLayer::deadline)
//! bounds the whole request (timeout with deadline).
//!
//! [`FailureClass::Timeout`]: keel_policy::FailureClass::Timeout

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::error::{BoxError, Error};
use crate::ResponseFuture;

/// Applies [`Timeout`] to a service.
///
/// ```
/// use keel_tower::TimeoutLayer;
/// use std::time::Duration;
/// let layer = TimeoutLayer::new(Duration::from_secs(30));
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// Fails each call still running after `after` with [`Error::Timeout`].
    pub fn new(after: Duration) -> TimeoutLayer {
        TimeoutLayer { after }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            after: self.after,
        }
    }
}

/// Bounds each call of the inner service; see [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    after: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let after = self.after;
        let call = tokio::time::timeout(after, self.inner.call(req));
        Box::pin(async move {
            match call.await {
                Ok(outcome) => outcome.map_err(Error::from_inner),
                Err(_) => Err(Error::Timeout { after }),
            }
        })
    }
}
