//! Rate limit: requests and tokens per minute, waiting in line.
//!
//! [`keel_policy::RateLimiter`] books each call's start as a GCRA
//! reservation: a call that fits now starts now, one that fits within
//! `max_wait` is booked at its start time (later calls queue behind it, so
//! waiting is FIFO) and sleeps until then, and one that would wait longer is
//! refused at once with [`Error::RateLimited`] and the earliest start, with
//! nothing booked. A call dropped while it waits gives its booking back.
//!
//! Tokens per minute need a cost per request: pass a closure to
//! [`RateLimitLayer::token_cost`] (for an LLM request, the prompt estimate
//! plus `max_tokens`).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use keel_policy::{LimiterConfig, PolicyError, RateLimiter, Reservation};
use tower::{Layer, Service};

use crate::error::{BoxError, Error};
use crate::{lock, now, ResponseFuture};

/// The token cost of a request, for a tokens-per-minute limit.
///
/// Implemented by closures `Fn(&Req) -> u32` and by [`NoTokens`].
pub trait TokenCost<Req> {
    /// Tokens the request is expected to consume.
    fn tokens(&self, req: &Req) -> u32;
}

impl<F, Req> TokenCost<Req> for F
where
    F: Fn(&Req) -> u32,
{
    fn tokens(&self, req: &Req) -> u32 {
        self(req)
    }
}

/// Every request costs zero tokens (only the requests-per-minute limit applies).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTokens;

impl<Req> TokenCost<Req> for NoTokens {
    fn tokens(&self, _req: &Req) -> u32 {
        0
    }
}

/// Applies [`RateLimit`] to a service. Every service made by one layer (and
/// its clones) shares one limiter.
///
/// ```
/// use keel_policy::LimiterConfig;
/// use keel_tower::RateLimitLayer;
/// use std::time::Duration;
///
/// let layer = RateLimitLayer::new(LimiterConfig { rpm: Some(600), tpm: Some(100_000), ..LimiterConfig::default() })?
///     .max_wait(Duration::from_secs(2))
///     .token_cost(|prompt: &String| prompt.len() as u32 / 4 + 256);
/// # let _ = layer;
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitLayer<T = NoTokens> {
    limiter: Arc<Mutex<RateLimiter>>,
    max_wait: Duration,
    cost: T,
}

impl RateLimitLayer {
    /// Default longest wait in line.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

    /// A limiter with `cfg` (validated by [`RateLimiter::new`]), waiting at
    /// most [`Self::DEFAULT_MAX_WAIT`], every request costing zero tokens.
    pub fn new(cfg: LimiterConfig) -> Result<RateLimitLayer, PolicyError> {
        Ok(RateLimitLayer {
            limiter: Arc::new(Mutex::new(RateLimiter::new(cfg)?)),
            max_wait: Self::DEFAULT_MAX_WAIT,
            cost: NoTokens,
        })
    }
}

impl<T> RateLimitLayer<T> {
    /// The longest a call waits for its turn before it is refused.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Charges each request `cost(&request)` tokens against the TPM limit.
    pub fn token_cost<T2>(self, cost: T2) -> RateLimitLayer<T2> {
        RateLimitLayer {
            limiter: self.limiter,
            max_wait: self.max_wait,
            cost,
        }
    }
}

impl<S, T: Clone> Layer<S> for RateLimitLayer<T> {
    type Service = RateLimit<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            max_wait: self.max_wait,
            cost: self.cost.clone(),
        }
    }
}

/// Starts calls of the inner service no faster than the limits; see
/// [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S, T = NoTokens> {
    inner: S,
    limiter: Arc<Mutex<RateLimiter>>,
    max_wait: Duration,
    cost: T,
}

/// Gives a booking back if the call is dropped before it starts.
struct Booking {
    limiter: Arc<Mutex<RateLimiter>>,
    reservation: Option<Reservation>,
}

impl Booking {
    /// The call started: the booking is used.
    fn used(&mut self) {
        self.reservation = None;
    }
}

impl Drop for Booking {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            lock(&self.limiter).cancel(now(), &r);
        }
    }
}

impl<S, T, Req> Service<Req> for RateLimit<S, T>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    T: TokenCost<Req>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let tokens = self.cost.tokens(&req);
        let reserved = lock(&self.limiter).reserve(now(), tokens, self.max_wait);
        let reservation = match reserved {
            Ok(r) => r,
            Err(denied) => {
                return Box::pin(std::future::ready(Err(Error::RateLimited {
                    retry_after: denied.retry_after,
                    cause: denied.cause,
                })))
            }
        };
        // The readied service waits with the call; a clone stays for the next.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let ready_at = tokio::time::Instant::from_std(reservation.ready_at);
        let mut booking = Booking {
            limiter: self.limiter.clone(),
            reservation: Some(reservation),
        };
        Box::pin(async move {
            tokio::time::sleep_until(ready_at).await;
            booking.used();
            svc.call(req).await.map_err(Error::from_inner)
        })
    }
}
