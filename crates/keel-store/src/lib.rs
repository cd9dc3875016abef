//! Shared state for Keel replicas: the response cache, idempotency records,
//! rate-limit reservations, circuit-breaker state and spend.
//!
//! **Why a store crate.** One Keel process keeps all of this in memory. A
//! fleet of replicas behind a load balancer must share it, or each replica
//! admits the whole rate limit, keeps hammering a deployment another replica
//! already found broken, and calls the provider again for a retried request
//! its neighbour already answered. Each kind of state is a small trait
//! ([`CacheStore`], [`IdempotencyStore`], [`LimitStore`], [`BreakerStore`],
//! [`SpendStore`])
//! with two implementations: [`MemoryStore`] (the default, `moka` for the
//! cache) and [`RedisStore`] (atomic Lua scripts, keys under a prefix).
//!
//! **Why a failover facade.** Redis is a dependency that can disappear. The
//! engine talks to [`Store`], which sends every operation to Redis with a
//! short timeout and, when Redis is unreachable or slow, answers from local
//! state instead (the memory store for the cache and idempotency records;
//! [`Shared::Local`] for limits and breakers, so the engine's own local
//! policies decide: fail open, with a metric). It logs once per transition
//! and reconnects by itself. Spend a replica could not write to Redis is
//! kept locally and added when Redis is back.
//!
//! ```
//! # async fn run() -> Result<(), keel_store::StoreError> {
//! use keel_store::{Store, StoreConfig};
//! use std::time::Duration;
//! let store = Store::connect(&StoreConfig::default()).await?; // memory only
//! store.cache_put("k", b"v".to_vec(), Duration::from_secs(60)).await;
//! assert_eq!(store.cache_get("k").await, Some(b"v".to_vec()));
//! # Ok(()) }
//! ```

mod breaker;
mod cache;
mod config;
mod idempotency;
mod limits;
mod memory;
mod redis_store;
mod spend;
mod store;
pub mod testing;

pub use breaker::BreakerStore;
pub use cache::CacheStore;
pub use config::{RedisUrl, StoreConfig};
pub use idempotency::{Claim, IdemRecord, IdempotencyStore};
pub use limits::{LimitSpec, LimitStore};
pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use spend::{Month, SpendReport, SpendStore};
pub use store::{Shared, Store, StoreStats};

/// A failed store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached at start while `[store] required = true`.
    #[error("[store] redis at {url} is unreachable: {reason} (set [store] required = false to start on local state)")]
    Unreachable {
        /// The URL with its password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis did not answer within `[store] timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A stored value could not be read back.
    #[error("corrupt stored value under {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

/// SHA-256 of `parts` (each length-prefixed), as lowercase hex: cache keys
/// and request fingerprints.
pub fn digest_hex(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";
