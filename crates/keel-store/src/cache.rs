//! Response cache entries: opaque bytes under a key, with a time to live.
//! What an entry holds (the answer, when it was stored) is the engine's
//! business; the store only keeps it until it expires.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// Where cached answers live.
pub trait CacheStore: Send + Sync {
    /// The entry under `key`, if it has not expired.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Stores `value` under `key` for `ttl` (replacing any previous entry).
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes the entry under `key`; whether there was one.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
