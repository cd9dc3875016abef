//! Retry: classification, server hints, backoff, a retry budget and a total
//! deadline.
//!
//! The layer only performs what `keel-policy` decides. After each attempt
//! the [`Classify`] implementation says whether it failed and whether the
//! same service may succeed on another try (`action.retry_same`);
//! [`Backoff::next_delay`] picks the wait (a server hint such as
//! `Retry-After` wins, a hint longer than the time left gives up at once);
//! the shared [`Budget`] must grant every retry, so an outage cannot
//! multiply the load on the failing service. With a
//! [`deadline`](RetryLayer::deadline), every attempt and every wait fits in
//! the total time allowed for the request.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use keel_policy::{Backoff, Delay};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tower::{Layer, Service, ServiceExt};

use crate::budget::Budget;
use crate::classify::{Classify, HttpClassifier};
use crate::error::{BoxError, Error};
use crate::{lock, now, ResponseFuture};

/// Applies [`Retry`] to a service.
///
/// ```
/// use keel_policy::{Backoff, BackoffConfig};
/// use keel_tower::{Budget, RetryLayer};
/// use std::time::Duration;
///
/// let layer = RetryLayer::new(Backoff::new(BackoffConfig::default())?)
///     .budget(Budget::default())
///     .deadline(Duration::from_secs(30))
///     .seed(7);
/// # let _ = layer;
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer<C = HttpClassifier> {
    policy: RetryPolicy,
    classifier: C,
}

#[derive(Clone, Debug)]
struct RetryPolicy {
    backoff: Backoff,
    budget: Budget,
    deadline: Option<Duration>,
    rng: Arc<Mutex<StdRng>>,
}

impl RetryLayer {
    /// Retries per `backoff` (which also bounds the attempts), classifying
    /// outcomes with [`HttpClassifier`], spending from [`Budget::default`],
    /// without a total deadline.
    pub fn new(backoff: Backoff) -> RetryLayer {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x6b65_656c);
        RetryLayer {
            policy: RetryPolicy {
                backoff,
                budget: Budget::default(),
                deadline: None,
                rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            },
            classifier: HttpClassifier,
        }
    }
}

impl<C> RetryLayer<C> {
    /// Classifies outcomes with `classifier` instead.
    pub fn classify_with<C2>(self, classifier: C2) -> RetryLayer<C2> {
        RetryLayer {
            policy: self.policy,
            classifier,
        }
    }

    /// Spends retries from `budget` (share it with a
    /// [`HedgeLayer`](crate::HedgeLayer) so hedges and retries count together).
    pub fn budget(mut self, budget: Budget) -> Self {
        self.policy.budget = budget;
        self
    }

    /// Bounds the whole request, attempts and waits included: an attempt
    /// still running at the deadline is dropped and the call fails with
    /// [`Error::Timeout`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = Some(deadline);
        self
    }

    /// Seeds the jitter (deterministic tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        self
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Retries failed calls of the inner service; see [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S, C = HttpClassifier> {
    inner: S,
    policy: RetryPolicy,
    classifier: C,
}

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + 'static,
    Req: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The readied service makes the first attempt; clones make the others.
        let clone = self.inner.clone();
        let first = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        let classifier = self.classifier.clone();
        Box::pin(run(policy, classifier, first, req))
    }
}

async fn run<S, C, Req>(
    policy: RetryPolicy,
    classifier: C,
    mut svc: S,
    req: Req,
) -> Result<S::Response, Error>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    Req: Clone,
{
    let deadline_at = policy.deadline.map(|d| tokio::time::Instant::now() + d);
    policy.budget.record_request(now());
    let mut attempt = 1u32;
    let mut prev = Duration::ZERO;
    loop {
        let call = svc.call(req.clone());
        let outcome = match (deadline_at, policy.deadline) {
            (Some(at), Some(after)) => match tokio::time::timeout_at(at, call).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(Error::Timeout { after }),
            },
            _ => call.await,
        };
        let Some(verdict) = classifier.classify(outcome.as_ref()) else {
            return outcome.map_err(Error::from_inner);
        };
        if !verdict.action.retry_same {
            return outcome.map_err(Error::from_inner);
        }
        let remaining =
            deadline_at.map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
        let decision = policy.backoff.next_delay(
            attempt,
            prev,
            verdict.hint,
            remaining,
            1.0,
            &mut *lock(&policy.rng),
        );
        let delay = match decision {
            Delay::Wait { delay, .. } => delay,
            Delay::GiveUp(reason) => {
                tracing::debug!(attempt, class = %verdict.class, reason = reason.as_str(), "retry: give up");
                return outcome.map_err(Error::from_inner);
            }
        };
        if let Err(denied) = policy.budget.try_retry(now()) {
            tracing::debug!(attempt, class = %verdict.class, "retry: budget exhausted");
            // A response is still the best answer there is; an error becomes
            // the budget's refusal.
            return match outcome {
                Ok(response) => Ok(response),
                Err(_) => Err(Error::BudgetExhausted(denied)),
            };
        }
        drop(outcome);
        tracing::debug!(attempt, class = %verdict.class, delay_ms = delay.as_millis() as u64, "retry");
        tokio::time::sleep(delay).await;
        prev = delay;
        attempt += 1;
        svc = svc.clone();
        svc.ready().await.map_err(Error::from_inner)?;
    }
}
