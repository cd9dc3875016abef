//! Circuit breaker: stop calling a service that keeps failing.
//!
//! [`keel_policy::CircuitBreaker`] decides (closed, open for a while, then a
//! few half-open probes); this layer asks it before every call, rejects with
//! [`Error::BreakerOpen`] (and the time left) without touching the inner
//! service while it is open, and reports each outcome's failure class and
//! latency back. A call dropped before it finishes releases its probe slot.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use keel_policy::{BreakerConfig, BreakerState, CircuitBreaker, PolicyError};
use tower::{Layer, Service};

use crate::classify::{Classify, HttpClassifier};
use crate::error::{BoxError, Error};
use crate::{lock, now, ResponseFuture};

/// Applies [`Breaker`] to a service. Every service made by one layer (and
/// its clones) shares one breaker.
///
/// ```
/// use keel_policy::{BreakerConfig, BreakerMode, BreakerState};
/// use keel_tower::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::new(BreakerConfig {
///     mode: BreakerMode::ConsecutiveFailures { threshold: 3 },
///     ..BreakerConfig::default()
/// })?;
/// assert_eq!(layer.state(), BreakerState::Closed);
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = HttpClassifier> {
    breaker: Arc<Mutex<CircuitBreaker>>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker with `cfg` (validated by [`CircuitBreaker::new`]),
    /// classifying outcomes with [`HttpClassifier`].
    pub fn new(cfg: BreakerConfig) -> Result<CircuitBreakerLayer, PolicyError> {
        Ok(CircuitBreakerLayer {
            breaker: Arc::new(Mutex::new(CircuitBreaker::new(cfg)?)),
            classifier: HttpClassifier,
        })
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Classifies outcomes with `classifier` instead.
    pub fn classify_with<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        lock(&self.breaker).state(now())
    }

    /// Times the breaker has opened.
    pub fn trips(&self) -> u64 {
        lock(&self.breaker).trips()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Calls the inner service only while the breaker admits it; see
/// [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct Breaker<S, C = HttpClassifier> {
    inner: S,
    breaker: Arc<Mutex<CircuitBreaker>>,
    classifier: C,
}

impl<S, C> Breaker<S, C> {
    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        lock(&self.breaker).state(now())
    }
}

/// Releases a half-open probe slot when a call is dropped unfinished.
struct Admitted {
    breaker: Arc<Mutex<CircuitBreaker>>,
    reported: bool,
}

impl Admitted {
    /// Reports the outcome of the admitted call.
    fn report(
        &mut self,
        class: Option<keel_policy::FailureClass>,
        started: std::time::Instant,
    ) -> Option<keel_policy::Transition> {
        self.reported = true;
        let t = now();
        lock(&self.breaker).on_outcome(t, class, t.saturating_duration_since(started))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.reported {
            lock(&self.breaker).on_cancel(now());
        }
    }
}

impl<S, C, Req> Service<Req> for Breaker<S, C>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Err(open) = lock(&self.breaker).try_acquire(now()) {
            return Box::pin(std::future::ready(Err(Error::BreakerOpen {
                retry_after: open.retry_after,
            })));
        }
        let mut admitted = Admitted {
            breaker: self.breaker.clone(),
            reported: false,
        };
        let started = now();
        let call = self.inner.call(req);
        let classifier = self.classifier.clone();
        Box::pin(async move {
            let outcome = call.await;
            let class = classifier.classify(outcome.as_ref()).map(|c| c.class);
            let transition = admitted.report(class, started);
            if let Some(tr) = transition {
                tracing::info!(
                    from = tr.from.as_str(),
                    to = tr.to.as_str(),
                    "breaker transition"
                );
            }
            outcome.map_err(Error::from_inner)
        })
    }
}
