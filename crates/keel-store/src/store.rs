//! [`Store`]: what the engine talks to. Redis when configured and healthy,
//! local state otherwise; the switch is logged once per transition,
//! counted, and undone by a background task that reconnects on its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use keel_policy::LimitDenied;
use tracing::{info, warn};

use crate::idempotency::{Claim, IdemRecord};
use crate::{
    BreakerStore, CacheStore, IdempotencyStore, LimitSpec, LimitStore, MemoryStore, Month,
    RedisStore, SpendReport, SpendStore, StoreConfig, StoreError,
};

/// The answer of a shared decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shared<T> {
    /// Redis decided.
    Redis(T),
    /// No shared state (memory only, or Redis unreachable): decide locally.
    Local,
}

/// Counters of the store, for `/admin/status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `"memory"` or `"redis"`.
    pub backend: &'static str,
    /// Whether Redis is configured and currently answering.
    pub redis_up: bool,
    /// Redis operations that failed or timed out.
    pub redis_errors: u64,
    /// Operations answered from local state because Redis was down.
    pub local_fallbacks: u64,
    /// Times Redis went from up to down.
    pub redis_down_transitions: u64,
}

/// Shared state with failover to local state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: StoreConfig,
    memory: MemoryStore,
    redis: RwLock<Option<RedisStore>>,
    up: AtomicBool,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    downs: AtomicU64,
    /// With Redis: the memory store holds spend not yet written to Redis.
    spend_unsynced: AtomicBool,
    /// The fleet-wide spend last read from Redis, the base of budget checks
    /// while Redis is away.
    spend_seen: Mutex<BTreeMap<Month, SpendReport>>,
}

/// Longest wait for the first connection at start.
const START_CONNECT: Duration = Duration::from_secs(2);
/// How often a replica without Redis tries again.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);

impl Store {
    /// Memory only.
    pub fn memory() -> Store {
        Store::build(StoreConfig::default())
    }

    fn build(cfg: StoreConfig) -> Store {
        Store {
            inner: Arc::new(Inner {
                cfg,
                memory: MemoryStore::new(),
                redis: RwLock::new(None),
                up: AtomicBool::new(false),
                errors: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
                downs: AtomicU64::new(0),
                spend_unsynced: AtomicBool::new(false),
                spend_seen: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Opens the store `cfg` describes. With Redis: connects first; if that
    /// fails, `required = true` is an error and `required = false` starts
    /// on local state with a warning. Either way a background task keeps
    /// (re)connecting while the store lives.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let store = Store::build(cfg.clone());
        let Some(url) = &cfg.redis else {
            return Ok(store);
        };
        match RedisStore::connect(url, &cfg.prefix, START_CONNECT).await {
            Ok(r) => {
                *store.write_redis() = Some(r);
                store.inner.up.store(true, Ordering::Relaxed);
                info!(redis = %url, prefix = %cfg.prefix, "shared state on redis");
            }
            Err(e) if cfg.required => {
                return Err(StoreError::Unreachable {
                    url: url.masked(),
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                warn!(redis = %url, error = %e, "redis unreachable at start; serving on local state until it appears ([store] required = false)");
            }
        }
        tokio::spawn(supervise(Arc::downgrade(&store.inner)));
        Ok(store)
    }

    /// Opens the store without waiting for Redis: starts on local state and
    /// connects in the background. Must be called inside a tokio runtime
    /// when Redis is configured.
    pub fn start(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let store = Store::build(cfg.clone());
        if cfg.redis.is_some() {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                StoreError::Redis("a redis store must be started inside a tokio runtime".into())
            })?;
            handle.spawn(supervise(Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Whether Redis is configured (state is meant to be shared).
    pub fn is_shared(&self) -> bool {
        self.inner.cfg.redis.is_some()
    }

    /// Whether Redis is configured and answering.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let i = &self.inner;
        StoreStats {
            backend: if self.is_shared() { "redis" } else { "memory" },
            redis_up: self.is_up(),
            redis_errors: i.errors.load(Ordering::Relaxed),
            local_fallbacks: i.fallbacks.load(Ordering::Relaxed),
            redis_down_transitions: i.downs.load(Ordering::Relaxed),
        }
    }

    fn write_redis(&self) -> std::sync::RwLockWriteGuard<'_, Option<RedisStore>> {
        self.inner.redis.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on Redis within the timeout; `None` means "use local state".
    async fn on_redis<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(RedisStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        if !self.is_shared() {
            return None;
        }
        let inner = &self.inner;
        let redis = if inner.up.load(Ordering::Relaxed) {
            inner
                .redis
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            None
        };
        let Some(redis) = redis else {
            inner.fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let err = match tokio::time::timeout(inner.cfg.timeout, op(redis)).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e @ StoreError::Corrupt { .. })) => {
                warn!(error = %e, "ignoring a corrupt shared value");
                return None;
            }
            Ok(Err(e)) => e,
            Err(_) => StoreError::Timeout(inner.cfg.timeout),
        };
        inner.errors.fetch_add(1, Ordering::Relaxed);
        inner.fallbacks.fetch_add(1, Ordering::Relaxed);
        inner.mark_down(&err);
        None
    }

    // ------------------------------------------------------------ cache

    /// A cached entry: local memory first, then Redis.
    pub async fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        if let Ok(Some(v)) = self.inner.memory.get(key).await {
            return Some(v);
        }
        self.on_redis(|r| async move { r.get(key).await })
            .await
            .flatten()
    }

    /// Stores an entry locally and, when configured, on Redis.
    pub async fn cache_put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if self.is_shared() {
            let v = value.clone();
            let _ = self
                .on_redis(|r| async move { r.put(key, v, ttl).await })
                .await;
        }
        let _ = self.inner.memory.put(key, value, ttl).await;
    }

    /// Removes an entry locally and, when configured, on Redis; whether
    /// either held it.
    pub async fn cache_delete(&self, key: &str) -> bool {
        let mut found = false;
        if self.is_shared() {
            found = self
                .on_redis(|r| async move { r.delete(key).await })
                .await
                .unwrap_or(false);
        }
        self.inner.memory.delete(key).await.unwrap_or(false) || found
    }

    // ------------------------------------------------------------ idempotency

    /// Claims an idempotency key (Redis, else memory).
    pub async fn idem_claim(&self, key: &str, fingerprint: &str, lock_ttl: Duration) -> Claim {
        if let Some(c) = self
            .on_redis(|r| async move { r.claim(key, fingerprint, lock_ttl).await })
            .await
        {
            return c;
        }
        self.inner
            .memory
            .claim(key, fingerprint, lock_ttl)
            .await
            .unwrap_or(Claim::Acquired)
    }

    /// Completes a claimed key with its record.
    pub async fn idem_complete(&self, key: &str, record: IdemRecord, ttl: Duration) {
        let rec = record.clone();
        if self
            .on_redis(|r| async move { r.complete(key, rec, ttl).await })
            .await
            .is_some()
        {
            // Wake local waiters at once (they poll Redis otherwise).
            let _ = self.inner.memory.release(key).await;
            return;
        }
        let _ = self.inner.memory.complete(key, record, ttl).await;
    }

    /// Releases a claim without a record.
    pub async fn idem_release(&self, key: &str) {
        let _ = self.on_redis(|r| async move { r.release(key).await }).await;
        let _ = self.inner.memory.release(key).await;
    }

    /// Waits until the key may have changed, at most `max`.
    pub async fn idem_changed(&self, key: &str, max: Duration) {
        if self.is_shared() && self.is_up() {
            let notified = self.inner.memory.changed(key, max);
            let poll = tokio::time::sleep(Duration::from_millis(20).min(max));
            tokio::select! {
                _ = notified => {}
                _ = poll => {}
            }
        } else {
            self.inner.memory.changed(key, max).await;
        }
    }

    // ------------------------------------------------------------ limits

    /// Books against the shared limit of `key`.
    pub async fn limit_reserve(
        &self,
        key: &str,
        spec: &LimitSpec,
        tokens: u32,
        max_wait: Duration,
    ) -> Shared<Result<Duration, LimitDenied>> {
        match self
            .on_redis(|r| async move { r.reserve(key, spec, tokens, max_wait).await })
            .await
        {
            Some(v) => Shared::Redis(v),
            None => Shared::Local,
        }
    }

    // ------------------------------------------------------------ breakers

    /// Publishes an open breaker.
    pub async fn breaker_open(&self, key: &str, open_for: Duration) -> Shared<bool> {
        match self
            .on_redis(|r| async move { r.open(key, open_for).await })
            .await
        {
            Some(v) => Shared::Redis(v),
            None => Shared::Local,
        }
    }

    /// Publishes a closed breaker (kept open if another replica reopened it).
    pub async fn breaker_close(&self, key: &str) -> Shared<bool> {
        match self.on_redis(|r| async move { r.close(key).await }).await {
            Some(v) => Shared::Redis(v),
            None => Shared::Local,
        }
    }

    /// How long the shared breaker of `key` stays open.
    pub async fn breaker_open_for(&self, key: &str) -> Shared<Option<Duration>> {
        match self
            .on_redis(|r| async move { r.open_for(key).await })
            .await
        {
            Some(v) => Shared::Redis(v),
            None => Shared::Local,
        }
    }

    // ------------------------------------------------------------ spend

    /// Adds a charge. With Redis the amounts go to the fleet's totals,
    /// together with any spend kept locally while Redis was away; when
    /// Redis does not answer within the timeout they are kept locally
    /// (counted as a fallback) and sent with the next charge that reaches
    /// it. A write that timed out after Redis applied it is sent again:
    /// spend may be counted twice, never lost.
    pub async fn spend_add(&self, spend: SpendReport) {
        let memory = &self.inner.memory;
        if !self.is_shared() {
            let _ = memory.add_spend(&spend).await;
            return;
        }
        let mut batch: BTreeMap<Month, SpendReport> = BTreeMap::new();
        batch.insert(spend.month, spend);
        if self.inner.spend_unsynced.swap(false, Ordering::AcqRel) {
            for r in memory.take_spend() {
                batch
                    .entry(r.month)
                    .or_insert_with(|| SpendReport::empty(r.month))
                    .merge(&r);
            }
        }
        let written = self
            .on_redis(|r| {
                let batch = &batch;
                async move {
                    let mut totals = Vec::with_capacity(batch.len());
                    for s in batch.values() {
                        totals.push(r.add_spend(s).await?);
                    }
                    Ok(totals)
                }
            })
            .await;
        if let Some(totals) = written {
            for t in totals {
                self.inner.seen(t.month, |seen| {
                    seen.tenants.extend(t.tenants);
                    seen.deployments.extend(t.deployments);
                });
            }
        } else {
            for s in batch.values() {
                let _ = memory.add_spend(s).await;
            }
            self.inner.spend_unsynced.store(true, Ordering::Release);
        }
    }

    /// What `tenant` spent in `month`: with Redis, the fleet's total (the
    /// last one seen while Redis is away) plus what this replica has not
    /// written yet; in memory, this process's total.
    pub async fn tenant_spend(&self, month: Month, tenant: &str) -> f64 {
        let local = self
            .inner
            .memory
            .tenant_spend(month, tenant)
            .await
            .unwrap_or(0.0);
        if !self.is_shared() {
            return local;
        }
        let fleet = match self
            .on_redis(|r| async move { r.tenant_spend(month, tenant).await })
            .await
        {
            Some(v) => {
                self.inner.seen(month, |r| {
                    r.tenants.insert(tenant.to_string(), v);
                });
                v
            }
            None => self
                .inner
                .seen_report(month)
                .tenants
                .get(tenant)
                .copied()
                .unwrap_or(0.0),
        };
        fleet + local
    }

    /// Everything spent in `month`, counted the same way as
    /// [`Store::tenant_spend`].
    pub async fn spend_report(&self, month: Month) -> SpendReport {
        let local = self
            .inner
            .memory
            .spend_report(month)
            .await
            .unwrap_or_else(|_| SpendReport::empty(month));
        if !self.is_shared() {
            return local;
        }
        let mut report = match self
            .on_redis(|r| async move { r.spend_report(month).await })
            .await
        {
            Some(r) => {
                self.inner.seen(month, |seen| *seen = r.clone());
                r
            }
            None => self.inner.seen_report(month),
        };
        report.merge(&local);
        report
    }
}

impl Inner {
    /// Updates the last Redis view of `month`'s spend.
    fn seen(&self, month: Month, update: impl FnOnce(&mut SpendReport)) {
        let mut seen = self.spend_seen.lock().unwrap_or_else(|p| p.into_inner());
        update(
            seen.entry(month)
                .or_insert_with(|| SpendReport::empty(month)),
        );
        while seen.len() > 2 {
            seen.pop_first();
        }
    }

    /// The last Redis view of `month`'s spend.
    fn seen_report(&self, month: Month) -> SpendReport {
        self.spend_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&month)
            .cloned()
            .unwrap_or_else(|| SpendReport::empty(month))
    }

    fn mark_down(&self, err: &StoreError) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.downs.fetch_add(1, Ordering::Relaxed);
            warn!(error = %err, "redis unreachable: serving on local state (limits fail open) until it is back");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            info!("redis reachable again: shared state resumed");
        }
    }
}

/// Reconnects while the store lives: pings the current connection when
/// Redis is marked down, and opens a fresh one if that fails.
async fn supervise(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(RECONNECT_EVERY).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.up.load(Ordering::Relaxed) {
            continue;
        }
        let Some(url) = inner.cfg.redis.clone() else {
            return;
        };
        let wait = inner.cfg.timeout.max(Duration::from_millis(200));
        let current = inner
            .redis
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(r) = current {
            if matches!(tokio::time::timeout(wait, r.ping()).await, Ok(Ok(()))) {
                inner.mark_up();
                continue;
            }
        }
        if let Ok(fresh) = RedisStore::connect(&url, &inner.cfg.prefix, wait).await {
            if matches!(tokio::time::timeout(wait, fresh.ping()).await, Ok(Ok(()))) {
                *inner.redis.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
                inner.mark_up();
            }
        }
    }
}
