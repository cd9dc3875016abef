//! Idempotency records (`Idempotency-Key`): a key is first *claimed* by the
//! request that will do the work (a lock that expires, so a crashed replica
//! cannot block the key for ever), then *completed* with the response to
//! replay. Duplicates that arrive in between wait for the completion
//! instead of calling the provider again (single flight).

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// A completed request: the fingerprint of its body and its stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemRecord {
    /// Fingerprint of the request that produced it.
    pub fingerprint: String,
    /// The stored response (the server's encoding).
    pub response: Vec<u8>,
}

/// The state of a key after a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key: do the work, then complete or release it.
    Acquired,
    /// Another request holds it; its fingerprint tells whether the bodies match.
    InProgress {
        /// Fingerprint of the request doing the work.
        fingerprint: String,
    },
    /// The key was completed: replay the record.
    Completed(IdemRecord),
}

/// Where idempotency records live.
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a request with `fingerprint`, unless it is held or
    /// completed. The claim expires after `lock_ttl`.
    fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        lock_ttl: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    /// Stores the response of the claimed `key` for `ttl` and drops the claim.
    fn complete(
        &self,
        key: &str,
        record: IdemRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Drops the claim without a record (the work failed; a duplicate may retry).
    fn release(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Waits until `key` may have changed (completed or released), at most
    /// `max`. Memory wakes waiters at once; Redis polls.
    fn changed(&self, key: &str, max: Duration) -> impl Future<Output = ()> + Send;
}
