//! The in-memory store: one process, no I/O. The default, and the local
//! state every replica falls back to when Redis is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keel_policy::{LimitDenied, LimiterConfig, RateLimiter};
use moka::sync::Cache;
use moka::Expiry;
use tokio::sync::Notify;

use std::collections::BTreeMap;

use crate::idempotency::{Claim, IdemRecord};
use crate::{
    BreakerStore, CacheStore, IdempotencyStore, LimitSpec, LimitStore, Month, SpendReport,
    SpendStore, StoreError,
};

/// Cached bytes with their own time to live.
struct Timed<T> {
    value: T,
    ttl: Duration,
}

struct PerEntryTtl;

impl<T> Expiry<String, Arc<Timed<T>>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Timed<T>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Timed<T>>,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Default size bound of the memory cache (bytes of stored answers).
const CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// Default size bound of the memory idempotency records.
const IDEM_BYTES: u64 = 64 * 1024 * 1024;

/// In-memory implementation of every store trait.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    cache: Cache<String, Arc<Timed<Vec<u8>>>>,
    records: Cache<String, Arc<Timed<IdemRecord>>>,
    /// Claimed keys: fingerprint and when the claim lapses.
    claims: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
    claim_changed: Notify,
    limiters: Mutex<HashMap<String, (LimitSpec, RateLimiter)>>,
    breakers: Mutex<HashMap<String, tokio::time::Instant>>,
    spend: Mutex<BTreeMap<Month, SpendReport>>,
}

/// Months of spend kept in memory: the current one and the one before.
const SPEND_MONTHS: usize = 2;

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store with the default size bounds.
    pub fn new() -> Self {
        let weigh = |k: &String, v: &Arc<Timed<Vec<u8>>>| {
            u32::try_from(k.len() + v.value.len()).unwrap_or(u32::MAX)
        };
        let weigh_rec = |k: &String, v: &Arc<Timed<IdemRecord>>| {
            u32::try_from(k.len() + v.value.response.len() + v.value.fingerprint.len())
                .unwrap_or(u32::MAX)
        };
        MemoryStore {
            inner: Arc::new(MemoryInner {
                cache: Cache::builder()
                    .max_capacity(CACHE_BYTES)
                    .weigher(weigh)
                    .expire_after(PerEntryTtl)
                    .build(),
                records: Cache::builder()
                    .max_capacity(IDEM_BYTES)
                    .weigher(weigh_rec)
                    .expire_after(PerEntryTtl)
                    .build(),
                claims: Mutex::new(HashMap::new()),
                claim_changed: Notify::new(),
                limiters: Mutex::new(HashMap::new()),
                breakers: Mutex::new(HashMap::new()),
                spend: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Removes and returns all recorded spend (the facade's unsynced
    /// amounts, on their way to Redis).
    pub(crate) fn take_spend(&self) -> Vec<SpendReport> {
        std::mem::take(&mut *lock(&self.inner.spend))
            .into_values()
            .collect()
    }

    fn held(&self, key: &str) -> bool {
        let now = tokio::time::Instant::now();
        lock(&self.inner.claims)
            .get(key)
            .is_some_and(|(_, until)| *until > now)
    }
}

impl CacheStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.cache.get(key).map(|e| e.value.clone()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        self.inner
            .cache
            .insert(key.to_string(), Arc::new(Timed { value, ttl }));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.inner.cache.remove(key).is_some())
    }
}

impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        lock_ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let now = tokio::time::Instant::now();
        let mut claims = lock(&self.inner.claims);
        if let Some(rec) = self.inner.records.get(key) {
            return Ok(Claim::Completed(rec.value.clone()));
        }
        if let Some((fp, until)) = claims.get(key) {
            if *until > now {
                return Ok(Claim::InProgress {
                    fingerprint: fp.clone(),
                });
            }
        }
        claims.retain(|_, (_, until)| *until > now);
        claims.insert(key.to_string(), (fingerprint.to_string(), now + lock_ttl));
        Ok(Claim::Acquired)
    }

    async fn complete(
        &self,
        key: &str,
        record: IdemRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        {
            let mut claims = lock(&self.inner.claims);
            self.inner
                .records
                .insert(key.to_string(), Arc::new(Timed { value: record, ttl }));
            claims.remove(key);
        }
        self.inner.claim_changed.notify_waiters();
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        lock(&self.inner.claims).remove(key);
        self.inner.claim_changed.notify_waiters();
        Ok(())
    }

    async fn changed(&self, key: &str, max: Duration) {
        let notified = self.inner.claim_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.held(key) {
            return;
        }
        let _ = tokio::time::timeout(max, notified).await;
    }
}

impl LimitStore for MemoryStore {
    async fn reserve(
        &self,
        key: &str,
        spec: &LimitSpec,
        tokens: u32,
        max_wait: Duration,
    ) -> Result<Result<Duration, LimitDenied>, StoreError> {
        let now = tokio::time::Instant::now().into_std();
        let mut limiters = lock(&self.inner.limiters);
        let stale = limiters.get(key).is_none_or(|(s, _)| s != spec);
        if stale {
            let limiter = RateLimiter::new(LimiterConfig {
                rpm: spec.rpm,
                tpm: spec.tpm,
                burst_fraction: spec.burst_fraction,
            })
            .map_err(|e| StoreError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })?;
            limiters.insert(key.to_string(), (*spec, limiter));
        }
        let Some((_, limiter)) = limiters.get_mut(key) else {
            return Ok(Ok(Duration::ZERO));
        };
        Ok(limiter
            .reserve(now, tokens, max_wait)
            .map(|r| r.ready_at.saturating_duration_since(now)))
    }
}

impl BreakerStore for MemoryStore {
    async fn open(&self, key: &str, open_for: Duration) -> Result<bool, StoreError> {
        let now = tokio::time::Instant::now();
        let mut b = lock(&self.inner.breakers);
        let until = now + open_for;
        let was_open = b.get(key).is_some_and(|u| *u > now);
        let e = b.entry(key.to_string()).or_insert(until);
        *e = (*e).max(until);
        Ok(!was_open)
    }

    async fn close(&self, key: &str) -> Result<bool, StoreError> {
        let now = tokio::time::Instant::now();
        let mut b = lock(&self.inner.breakers);
        match b.get(key) {
            Some(until) if *until > now => Ok(false),
            Some(_) => {
                b.remove(key);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn open_for(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = tokio::time::Instant::now();
        Ok(lock(&self.inner.breakers)
            .get(key)
            .filter(|u| **u > now)
            .map(|u| *u - now))
    }
}

impl SpendStore for MemoryStore {
    async fn add_spend(&self, spend: &SpendReport) -> Result<SpendReport, StoreError> {
        let mut totals = SpendReport::empty(spend.month);
        if spend.amounts().next().is_none() {
            return Ok(totals);
        }
        let mut months = lock(&self.inner.spend);
        let month = months
            .entry(spend.month)
            .or_insert_with(|| SpendReport::empty(spend.month));
        month.merge(spend);
        for (side, k, _) in spend.amounts() {
            let v = month.side_mut(side).get(k).copied().unwrap_or(0.0);
            totals.side_mut(side).insert(k.to_string(), v);
        }
        while months.len() > SPEND_MONTHS {
            months.pop_first();
        }
        Ok(totals)
    }

    async fn tenant_spend(&self, month: Month, tenant: &str) -> Result<f64, StoreError> {
        Ok(lock(&self.inner.spend)
            .get(&month)
            .and_then(|r| r.tenants.get(tenant).copied())
            .unwrap_or(0.0))
    }

    async fn spend_report(&self, month: Month) -> Result<SpendReport, StoreError> {
        Ok(lock(&self.inner.spend)
            .get(&month)
            .cloned()
            .unwrap_or_else(|| SpendReport::empty(month)))
    }
}
