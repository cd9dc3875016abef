//! Bulkhead: a cap on calls in flight.
//!
//! A rate limit bounds how fast calls start; a service that hangs can still
//! collect thousands of open calls. The bulkhead bounds how many are open at
//! once and refuses the next one at once with [`Error::BulkheadFull`]
//! (rather than queueing it, which would only move the pile-up). The slot is
//! released when the call finishes or is dropped.

use std::sync::Arc;
use std::task::{Context, Poll};

use keel_policy::PolicyError;
use tower::{Layer, Service};

use crate::error::{BoxError, Error};
use crate::ResponseFuture;

/// Applies [`Bulkhead`] to a service. Every service made by one layer (and
/// its clones) shares the same slots.
///
/// ```
/// use keel_tower::BulkheadLayer;
/// let layer = BulkheadLayer::new(64)?;
/// assert_eq!(layer.in_flight(), 0);
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    bulkhead: Arc<keel_policy::Bulkhead>,
}

impl BulkheadLayer {
    /// At most `max` (>= 1) calls in flight.
    pub fn new(max: u32) -> Result<BulkheadLayer, PolicyError> {
        Ok(BulkheadLayer {
            bulkhead: Arc::new(keel_policy::Bulkhead::new(max)?),
        })
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.bulkhead.in_flight()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// Refuses calls beyond the in-flight cap; see [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct Bulkhead<S> {
    inner: S,
    bulkhead: Arc<keel_policy::Bulkhead>,
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.bulkhead.try_acquire() {
            Ok(permit) => permit,
            Err(full) => {
                return Box::pin(std::future::ready(Err(Error::BulkheadFull {
                    max: full.max,
                })))
            }
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let outcome = call.await;
            drop(permit);
            outcome.map_err(Error::from_inner)
        })
    }
}
