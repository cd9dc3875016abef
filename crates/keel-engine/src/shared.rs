//! Scale-out (docs/design.md §9): with `[store] redis`, replicas share their rate
//! limits (per deployment and per tenant), breaker state and spend. The local `keel-policy` decisions stay as they
//! are; these helpers add the shared decision on top of them. When Redis is
//! not configured they return at once; when it is unreachable the store
//! answers [`Shared::Local`] and the local decision stands (limits fail
//! open, counted in [`keel_store::StoreStats`]).

use std::time::{Duration, Instant};

use keel_policy::{BreakerStateKind, LimitDenied, Transition};
use keel_store::{LimitSpec, Shared, Store};

use crate::{DeploymentRuntime, EngineState};

/// The store key of a deployment's limits and breaker.
fn dep_key(rt: &DeploymentRuntime) -> String {
    format!("dep:{}", rt.spec.name)
}

/// How long another replica has opened this deployment's breaker for.
pub(crate) async fn breaker_open_elsewhere(
    inner: &EngineState,
    rt: &DeploymentRuntime,
) -> Option<Duration> {
    if !inner.store.is_shared() {
        return None;
    }
    match inner.store.breaker_open_for(&dep_key(rt)).await {
        Shared::Redis(left) => left,
        Shared::Local => None,
    }
}

/// Books against the fleet-wide limit of a deployment: `Ok(wait)` (zero
/// when there is no shared limit), or the shared denial.
pub(crate) async fn reserve(
    inner: &EngineState,
    rt: &DeploymentRuntime,
    tokens: u32,
    max_wait: Duration,
) -> Result<Duration, LimitDenied> {
    let limits = &rt.spec.limits;
    if !inner.store.is_shared() || (limits.rpm.is_none() && limits.tpm.is_none()) {
        return Ok(Duration::ZERO);
    }
    let spec = LimitSpec {
        rpm: limits.rpm,
        tpm: limits.tpm,
        burst_fraction: limits.burst_fraction,
    };
    match inner
        .store
        .limit_reserve(&dep_key(rt), &spec, tokens, max_wait)
        .await
    {
        Shared::Redis(r) => r,
        Shared::Local => Ok(Duration::ZERO),
    }
}

/// Books one request of `tenant` against its fleet-wide RPM/TPM (no
/// waiting: a tenant over its limit is refused at once). `Ok` when there is
/// no shared limit or Redis is away (the local limiter has already decided).
pub(crate) async fn reserve_tenant(
    inner: &EngineState,
    tenant: &str,
    limits: &keel_policy::LimiterConfig,
    tokens: u32,
) -> Result<(), LimitDenied> {
    if !inner.store.is_shared() || (limits.rpm.is_none() && limits.tpm.is_none()) {
        return Ok(());
    }
    let spec = LimitSpec {
        rpm: limits.rpm,
        tpm: limits.tpm,
        burst_fraction: limits.burst_fraction,
    };
    let key = format!("tenant:{tenant}");
    match inner
        .store
        .limit_reserve(&key, &spec, tokens, Duration::ZERO)
        .await
    {
        Shared::Redis(r) => r.map(|_| ()),
        Shared::Local => Ok(()),
    }
}

/// Publishes a local breaker transition to the fleet (in the background:
/// the caller holds no await point).
pub(crate) fn publish_transition(
    store: &Store,
    rt: &DeploymentRuntime,
    tr: &Transition,
    open_for: Duration,
) {
    if !store.is_shared() {
        return;
    }
    let (store, key, to) = (store.clone(), dep_key(rt), tr.to);
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        match to {
            BreakerStateKind::Open => {
                let _ = store.breaker_open(&key, open_for).await;
            }
            BreakerStateKind::Closed => {
                let _ = store.breaker_close(&key).await;
            }
            BreakerStateKind::HalfOpen => {}
        }
    });
}

/// How long the local breaker of `rt` stays open from `t`, if it is open.
pub(crate) fn local_open_for(rt: &DeploymentRuntime, t: Instant) -> Duration {
    match rt.lock_breaker().state(t) {
        keel_policy::BreakerState::Open { until } => until.saturating_duration_since(t),
        _ => Duration::ZERO,
    }
}
