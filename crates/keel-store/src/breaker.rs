//! Shared circuit-breaker state. Each replica runs its own
//! `keel_policy::CircuitBreaker` on the outcomes it sees; when one opens,
//! the open period is published here so the other replicas stop sending
//! attempts too, and a replica whose probe succeeded closes it for all.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// Where shared breaker state lives.
pub trait BreakerStore: Send + Sync {
    /// Opens `key` for at least `open_for` (an open period is only ever
    /// extended). Returns whether it was closed before (a transition).
    fn open(
        &self,
        key: &str,
        open_for: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Closes `key` if its open period has passed (a probe succeeded);
    /// a newer open period set by another replica is kept. Returns whether
    /// it was open before.
    fn close(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// How long `key` stays open, if it is open.
    fn open_for(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Duration>, StoreError>> + Send;
}
