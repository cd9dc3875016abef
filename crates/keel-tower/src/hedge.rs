//! Hedging: when the first attempt is slower than usual, send a second one
//! and take whichever succeeds first.
//!
//! [`HedgePolicy::hedge_after`] picks the delay from recent latencies (a
//! [`LatencyTracker`] fed by this layer's successful calls) or a fixed
//! value; until enough samples are in, no hedge is sent. Every hedge is an
//! extra attempt and must be granted by the [`Budget`], so hedging cannot
//! amplify load during an outage. The first outcome the classifier calls a
//! success wins and the other call is dropped (cancelled); if both fail, the
//! first attempt's outcome is returned.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use keel_policy::{HedgePolicy, LatencyTracker};
use tower::{Layer, Service, ServiceExt};

use crate::budget::Budget;
use crate::classify::{Classify, HttpClassifier};
use crate::error::{BoxError, Error};
use crate::{lock, now, ResponseFuture};

/// Applies [`Hedge`] to a service.
///
/// ```
/// use keel_policy::HedgePolicy;
/// use keel_tower::{Budget, HedgeLayer};
///
/// let budget = Budget::default(); // share it with the RetryLayer
/// let layer = HedgeLayer::new(HedgePolicy::default(), budget.clone()).record_requests(false);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct HedgeLayer<C = HttpClassifier> {
    shared: HedgeShared,
    classifier: C,
}

#[derive(Clone, Debug)]
struct HedgeShared {
    policy: HedgePolicy,
    tracker: Arc<Mutex<LatencyTracker>>,
    budget: Budget,
    record_requests: bool,
}

impl HedgeLayer {
    /// Hedges per `policy`, paying for each hedge from `budget`, classifying
    /// outcomes with [`HttpClassifier`].
    pub fn new(policy: HedgePolicy, budget: Budget) -> HedgeLayer {
        HedgeLayer {
            shared: HedgeShared {
                policy,
                tracker: Arc::new(Mutex::new(LatencyTracker::default())),
                budget,
                record_requests: true,
            },
            classifier: HttpClassifier,
        }
    }
}

impl<C> HedgeLayer<C> {
    /// Classifies outcomes with `classifier` instead.
    pub fn classify_with<C2>(self, classifier: C2) -> HedgeLayer<C2> {
        HedgeLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// Whether each call counts as a first attempt that earns budget
    /// (default `true`). Set `false` when an outer
    /// [`RetryLayer`](crate::RetryLayer) shares the budget and already
    /// counts requests.
    pub fn record_requests(mut self, record: bool) -> Self {
        self.shared.record_requests = record;
        self
    }

    /// The delay a hedge would be sent after now (`None`: no hedge yet).
    pub fn hedge_after(&self) -> Option<std::time::Duration> {
        self.shared.policy.hedge_after(&lock(&self.shared.tracker))
    }
}

impl<S, C: Clone> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Sends a second attempt when the first is slow; see [`HedgeLayer`].
#[derive(Clone, Debug)]
pub struct Hedge<S, C = HttpClassifier> {
    inner: S,
    shared: HedgeShared,
    classifier: C,
}

impl<S, C, Req> Service<Req> for Hedge<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
    Req: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let spare = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, spare.clone());
        let shared = self.shared.clone();
        let classifier = self.classifier.clone();
        let started = now();
        if shared.record_requests {
            shared.budget.record_request(started);
        }
        let delay = shared.policy.hedge_after(&lock(&shared.tracker));
        let primary = first.call(req.clone());
        Box::pin(async move {
            let ok = |outcome: &Result<S::Response, S::Error>| {
                classifier.classify(outcome.as_ref()).is_none()
            };
            let record = |since: std::time::Instant| {
                lock(&shared.tracker).record(now().saturating_duration_since(since));
            };
            let Some(delay) = delay else {
                let outcome = primary.await;
                if ok(&outcome) {
                    record(started);
                }
                return outcome.map_err(Error::from_inner);
            };
            tokio::pin!(primary);
            tokio::select! {
                outcome = &mut primary => {
                    if ok(&outcome) {
                        record(started);
                    }
                    return outcome.map_err(Error::from_inner);
                }
                () = tokio::time::sleep(delay) => {}
            }
            if shared.budget.try_retry(now()).is_err() {
                tracing::debug!("hedge: budget exhausted, not hedging");
                let outcome = primary.await;
                if ok(&outcome) {
                    record(started);
                }
                return outcome.map_err(Error::from_inner);
            }
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "hedge: sending second attempt"
            );
            let hedge_started = now();
            let mut spare = spare;
            let hedge = async move {
                match spare.ready().await {
                    Ok(svc) => svc.call(req).await,
                    Err(e) => Err(e),
                }
            };
            tokio::pin!(hedge);
            let mut primary_failed = None;
            let mut hedge_failed = false;
            loop {
                tokio::select! {
                    outcome = &mut primary, if primary_failed.is_none() => {
                        if ok(&outcome) {
                            record(started);
                            return outcome.map_err(Error::from_inner);
                        }
                        if hedge_failed {
                            return outcome.map_err(Error::from_inner);
                        }
                        primary_failed = Some(outcome);
                    }
                    outcome = &mut hedge, if !hedge_failed => {
                        if ok(&outcome) {
                            record(hedge_started);
                            return outcome.map_err(Error::from_inner);
                        }
                        if let Some(first) = primary_failed.take() {
                            return first.map_err(Error::from_inner);
                        }
                        hedge_failed = true;
                    }
                    else => {
                        return match primary_failed.take() {
                            Some(first) => first.map_err(Error::from_inner),
                            None => Err(Error::Inner("hedge: no outcome".into())),
                        };
                    }
                }
            }
        })
    }
}
