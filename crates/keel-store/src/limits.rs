//! Shared rate-limit reservations: the GCRA of `keel_policy::RateLimiter`
//! (requests and tokens per minute together, bookings in the future so
//! waiting is FIFO), kept where every replica books against one budget.

use std::future::Future;
use std::time::Duration;

use keel_policy::LimitDenied;

use crate::StoreError;

/// The limits of one key (a deployment, later a tenant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitSpec {
    /// Requests per minute (`None`: unlimited).
    pub rpm: Option<u32>,
    /// Tokens per minute (`None`: unlimited).
    pub tpm: Option<u32>,
    /// Share of a minute's allowance that may be spent at once, in `(0, 1]`.
    pub burst_fraction: f64,
}

impl LimitSpec {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// Where shared limiter state lives.
pub trait LimitStore: Send + Sync {
    /// Books one request and `tokens` tokens under `key` if it can start
    /// within `max_wait`: `Ok(Ok(wait))` means start after `wait`;
    /// `Ok(Err(denied))` means nothing was booked.
    fn reserve(
        &self,
        key: &str,
        spec: &LimitSpec,
        tokens: u32,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Result<Duration, LimitDenied>, StoreError>> + Send;
}
