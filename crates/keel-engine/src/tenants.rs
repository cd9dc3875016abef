//! Tenants (virtual keys): who may call, which routes, how fast and for how
//! much. Clients present their own token; Keel maps it to a tenant and never
//! shows them a provider key (docs/design.md §11). A tenant over its limits or budget
//! is refused before any upstream call: the point of a budget is that the
//! money is not spent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_policy::RateLimiter;
use keel_store::Month;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::call::{ChatCall, EngineError, ErrorKind, RequestReport};
use crate::config::{Route, Tenant};
use crate::requirements::Requirements;
use crate::{lock, now, shared, EngineState};

/// Live state of the configured tenants.
pub(crate) struct Tenants {
    list: Vec<(Tenant, Arc<Mutex<RateLimiter>>)>,
    /// Concurrency gates of the tenants with `max_concurrency`, by name.
    gates: Vec<(String, Arc<Semaphore>)>,
}

/// A tenant's concurrency slot, held for as long as its request runs (a
/// stream: until it ends); dropping it frees the slot.
pub(crate) struct TenantSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Seconds a tenant at its concurrency limit is told to wait.
const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Tenants {
    /// The tenants of a config; with `previous` (a reload), a tenant whose
    /// name and limits are unchanged keeps its limiter and concurrency gate.
    pub(crate) fn new(
        tenants: &[Tenant],
        previous: Option<&Tenants>,
    ) -> Result<Tenants, keel_policy::PolicyError> {
        let mut list = Vec::with_capacity(tenants.len());
        for t in tenants {
            let kept = previous
                .and_then(|p| p.list.iter().find(|(o, _)| o.name == t.name))
                .filter(|(o, _)| o.limits == t.limits)
                .map(|(_, l)| l.clone());
            let limiter = match kept {
                Some(l) => l,
                None => Arc::new(Mutex::new(RateLimiter::new(t.limits.clone())?)),
            };
            list.push((t.clone(), limiter));
        }
        let gates = tenants
            .iter()
            .filter_map(|t| {
                let n = t.max_concurrency?;
                let kept = previous.and_then(|p| {
                    let (_, gate) = p.gates.iter().find(|(name, _)| *name == t.name)?;
                    let (old, _) = p.list.iter().find(|(o, _)| o.name == t.name)?;
                    (old.max_concurrency == Some(n)).then(|| gate.clone())
                });
                let gate = kept.unwrap_or_else(|| Arc::new(Semaphore::new(n.get() as usize)));
                Some((t.name.clone(), gate))
            })
            .collect();
        Ok(Tenants { list, gates })
    }

    /// Takes one of the tenant's concurrency slots, or refuses at once with
    /// 429 and `Retry-After` (the tenant's own limit, not Keel's overload;
    /// no queue, no upstream call). Other tenants are not affected.
    pub(crate) fn slot(
        &self,
        inner: &EngineState,
        call: &ChatCall,
        meta: &RequestReport,
    ) -> Result<TenantSlot, EngineError> {
        let Some(name) = call.options.tenant.as_deref() else {
            return Ok(TenantSlot { _permit: None });
        };
        let Some((_, gate)) = self.gates.iter().find(|(n, _)| n == name) else {
            return Ok(TenantSlot { _permit: None });
        };
        match gate.clone().try_acquire_owned() {
            Ok(p) => Ok(TenantSlot { _permit: Some(p) }),
            Err(_) => {
                inner
                    .metrics
                    .shed(crate::metrics::ShedReason::TenantConcurrency);
                let mut e = EngineError::new(
                    429,
                    ErrorKind::RateLimited,
                    format!(
                        "tenant '{name}' already has its max_concurrency of requests running; retry when one ends"
                    ),
                    meta.clone(),
                );
                e.code = Some("tenant_concurrency_exceeded".into());
                e.retry_after = Some(CONCURRENCY_RETRY_AFTER);
                Err(e)
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The tenant whose token is `presented`. The token is hashed and
    /// compared with every tenant's hash in constant time, without stopping
    /// at the first match, so timing reveals nothing about the tokens.
    pub(crate) fn authenticate(&self, presented: &str) -> Option<&str> {
        let h = crate::config::hash_token(presented);
        let mut found = None;
        for (t, _) in &self.list {
            if ct_eq(&h, &t.token_sha256) {
                found = Some(t.name.as_str());
            }
        }
        found
    }

    /// The routes `tenant` may use (`None`: all, or no such tenant).
    pub(crate) fn routes_of(&self, tenant: &str) -> Option<&[String]> {
        self.list
            .iter()
            .find(|(t, _)| t.name == tenant)
            .and_then(|(t, _)| t.routes.as_deref())
    }

    /// Refuses a request its tenant may not send now: unknown tenant (401),
    /// route not allowed (403), budget spent (429) or rate limit (429 with
    /// the wait). A request without a tenant passes (the server decides
    /// whether tenants are required). With `[store] redis` the budget and
    /// the limits are the fleet's: spend is the store's total, and a
    /// request the local limiter admits is also booked on the shared one.
    pub(crate) async fn admit(
        &self,
        inner: &EngineState,
        call: &ChatCall,
        route: &Route,
        meta: &RequestReport,
    ) -> Result<(), EngineError> {
        let Some(name) = call.options.tenant.as_deref() else {
            return Ok(());
        };
        let deny = |status: u16, kind: ErrorKind, code: &str, msg: String| {
            let mut e = EngineError::new(status, kind, msg, meta.clone());
            e.code = Some(code.into());
            e
        };
        let Some((tenant, limiter)) = self.list.iter().find(|(t, _)| t.name == name) else {
            return Err(deny(
                401,
                ErrorKind::InvalidRequest,
                "invalid_api_key",
                format!("unknown tenant '{name}'"),
            ));
        };
        if let Some(allowed) = &tenant.routes {
            if !allowed.contains(&route.name) {
                return Err(deny(
                    403,
                    ErrorKind::InvalidRequest,
                    "route_not_allowed",
                    format!(
                        "tenant '{name}' may not use the model `{}`; allowed: {}",
                        route.name,
                        allowed.join(", ")
                    ),
                ));
            }
        }
        if let Some(budget) = tenant.monthly_budget_usd {
            let month = Month::now();
            let spent = inner.store.tenant_spend(month, name).await;
            if spent >= budget {
                let mut e = deny(
                    429,
                    ErrorKind::RateLimited,
                    "budget_exceeded",
                    format!(
                        "tenant '{name}' has spent ${spent:.4} of its monthly budget of ${budget:.2} ({month}); no request is sent upstream until the budget is raised or the month ends"
                    ),
                );
                // The budget renews when the month ends (UTC).
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let left = (month.next().start_unix() - now_unix).max(1) as u64;
                e.retry_after = Some(Duration::from_secs(left));
                return Err(e);
            }
        }
        let tokens = Requirements::of(call, false).reserve_tokens();
        let local = lock(limiter).reserve(now(), tokens, Duration::ZERO).err();
        let denied = match local {
            Some(d) => Some(d),
            None => shared::reserve_tenant(inner, name, &tenant.limits, tokens)
                .await
                .err(),
        };
        if let Some(d) = denied {
            let mut e = deny(
                429,
                ErrorKind::RateLimited,
                "tenant_rate_limited",
                format!(
                    "tenant '{name}' is over its own {} limit; try again in {} ms",
                    d.cause.as_str(),
                    d.retry_after.as_millis()
                ),
            );
            e.retry_after = Some(d.retry_after.max(Duration::from_millis(1)));
            return Err(e);
        }
        Ok(())
    }
}

/// Constant-time equality of two digests.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}
