//! Stage 2, *admit*: may an attempt go to this deployment now? The
//! breaker (this replica's and the fleet's), the retry budget, the rate
//! limiter (waiting FIFO up to the queue bound) and the bulkhead, in that
//! order. Each claim is held by a [`Claim`] that releases it when dropped
//! unless the attempt's outcome settled it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keel_policy::{BulkheadPermit, LimitDenied, Reservation};

use crate::call::RequestReport;
use crate::config::Deployment;
use crate::plan::{skip, DeploymentTry, Plan, RequestState};
use crate::{now, DeploymentRuntime, EngineState};

/// A deployment's breaker and limiter claims for one attempt. Dropped
/// unsettled (cancelled, refused, lost a hedge race), it gives both back.
pub(crate) struct Claim<'a> {
    pub rt: &'a DeploymentRuntime,
    pub reservation: Option<Reservation>,
    settled: bool,
}

impl<'a> Claim<'a> {
    fn new(rt: &'a DeploymentRuntime) -> Claim<'a> {
        Claim {
            rt,
            reservation: None,
            settled: false,
        }
    }

    /// The attempt's outcome accounts for the claim: `tokens` were used.
    pub(crate) fn settle(&mut self, t: Instant, tokens: u32) {
        self.settled = true;
        if let Some(r) = &self.reservation {
            self.rt.lock_limiter().settle(t, r, tokens);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let t = now();
            self.rt.lock_breaker().on_cancel(t);
            if let Some(r) = &self.reservation {
                self.rt.lock_limiter().cancel(t, r);
            }
        }
    }
}

/// An admitted attempt: its claims and its bulkhead slot.
pub(crate) struct Admission<'a> {
    pub claim: Claim<'a>,
    permit: Option<BulkheadPermit>,
}

impl Admission<'_> {
    /// The attempt ended: its bulkhead slot is free.
    pub(crate) fn end(&mut self) {
        self.permit = None;
    }
}

/// Where the chain goes when a deployment is not admitted.
pub(crate) enum Go {
    NextDeployment,
    Stop,
}

/// Admits the next attempt on `dep`, or records why not.
pub(crate) async fn admit<'s>(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &mut DeploymentTry<'s>,
    req: &mut RequestState,
    report: &mut RequestReport,
) -> Result<Admission<'s>, Go> {
    let rt = dep.rt;
    let spec = &rt.spec;
    let t = now();
    // Shared breaker: another replica may have opened it (docs/design.md §9).
    if let Some(left) = crate::shared::breaker_open_elsewhere(st, rt).await {
        let why = format!(
            "breaker open (on another replica) for another {} ms",
            left.as_millis()
        );
        report.push_attempt(skip(spec, why));
        req.retry_after(left);
        req.skips.breaker += 1;
        return Err(Go::NextDeployment);
    }
    if let Err(open) = rt.lock_breaker().try_acquire(t) {
        let why = format!(
            "breaker open for another {} ms",
            open.retry_after.as_millis()
        );
        report.push_attempt(skip(spec, why));
        req.retry_after(open.retry_after);
        req.skips.breaker += 1;
        st.metrics.breaker_rejected(dep.di);
        log_skip(plan, spec, "breaker_open");
        return Err(Go::NextDeployment);
    }
    let mut claim = Claim::new(rt);
    retry_budget(st, plan, dep, req, t, report)?;
    dep.follow_up = false;

    // Rate limiter (estimated tokens); waits FIFO up to the queue bound.
    let tokens = plan.needs.reserve_tokens();
    let max_wait = plan
        .route
        .policy
        .max_queue_wait
        .min(plan.deadline.saturating_duration_since(t));
    let reservation = match rt.lock_limiter().reserve(t, tokens, max_wait) {
        Ok(r) => r,
        Err(denied) => {
            drop(claim);
            rate_limited(spec, &denied, "", req, report);
            st.metrics.limiter_rejected(dep.di, denied.cause.as_str());
            log_skip(plan, spec, "rate_limited_locally");
            return Err(Go::NextDeployment);
        }
    };
    let ready_at = reservation.ready_at;
    claim.reservation = Some(reservation);
    st.metrics
        .limiter_wait(dep.di, ready_at.saturating_duration_since(t));
    if ready_at > t {
        let wait = ready_at - t;
        rt.counters
            .limiter_wait_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        if let Some(t) = &mut report.trace {
            t.limiter_wait(&spec.name, wait);
        }
        tokio::time::sleep(wait).await;
    }

    // Shared limit (docs/design.md §9): every replica books against one budget.
    match crate::shared::reserve(st, rt, tokens, max_wait).await {
        Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
        Ok(_) => {}
        Err(denied) => {
            drop(claim);
            rate_limited(spec, &denied, ", fleet-wide", req, report);
            return Err(Go::NextDeployment);
        }
    }

    let Ok(permit) = rt.bulkhead.try_acquire() else {
        drop(claim);
        let why = format!("bulkhead full ({} in flight)", spec.max_in_flight);
        report.push_attempt(skip(spec, why));
        req.skips.bulkhead += 1;
        st.metrics.bulkhead_rejected(dep.di);
        log_skip(plan, spec, "bulkhead_full");
        return Err(Go::NextDeployment);
    };
    Ok(Admission {
        claim,
        permit: Some(permit),
    })
}

/// Records a skip for a rate limit (`scope`: "" for this replica's, else
/// ", fleet-wide").
fn rate_limited(
    spec: &Deployment,
    denied: &LimitDenied,
    scope: &str,
    req: &mut RequestState,
    report: &mut RequestReport,
) {
    let why = format!(
        "local rate limit ({:?}{scope}) for another {} ms",
        denied.cause,
        denied.retry_after.as_millis()
    );
    report.push_attempt(skip(spec, why));
    req.retry_after(denied.retry_after);
    req.skips.rate_limit += 1;
}

/// Retry budget: every upstream attempt after the request's first is a
/// retry, except a follow-up and the first attempt on another deployment
/// that is answering well: the budget protects failing upstreams, and a
/// fallback to a healthy one adds no load to them (at the start of an
/// outage the budget is spent on the failing deployment, and its requests
/// must still reach the healthy one).
fn retry_budget(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &DeploymentTry<'_>,
    req: &mut RequestState,
    t: Instant,
    report: &mut RequestReport,
) -> Result<(), Go> {
    let fallback_to_healthy = dep.counted == 0 && dep.rt.signals.healthy();
    if report.upstream_attempts == 0 || dep.follow_up || fallback_to_healthy {
        return Ok(());
    }
    if st.lock_budget().try_retry(t).is_ok() {
        return Ok(());
    }
    st.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
    report.push_attempt(skip(&dep.rt.spec, "retry budget exhausted".into()));
    req.budget_spent = true;
    st.metrics.budget_exhausted();
    log_skip(plan, &dep.rt.spec, "budget_exhausted");
    // No retry here; a later deployment may still serve.
    Err(if dep.counted > 0 {
        Go::NextDeployment
    } else {
        Go::Stop
    })
}

/// Claims a hedge's deployment without waiting: breaker, limiter, bulkhead.
pub(crate) fn claim_now<'a>(
    rt: &'a DeploymentRuntime,
    t: Instant,
    tokens: u32,
) -> Option<Admission<'a>> {
    rt.lock_breaker().try_acquire(t).ok()?;
    let mut claim = Claim::new(rt);
    claim.reservation = Some(rt.lock_limiter().reserve(t, tokens, Duration::ZERO).ok()?);
    let permit = rt.bulkhead.try_acquire().ok()?;
    Some(Admission {
        claim,
        permit: Some(permit),
    })
}

/// A deployment passed over without an attempt (breaker open, budget spent, ...).
fn log_skip(plan: &Plan<'_>, dep: &Deployment, delay_reason: &str) {
    tracing::info!(
        request_id = %plan.call.options.request_id,
        route = %plan.route.name,
        deployment = %dep.name,
        attempt = 0u32,
        next = "skip",
        delay_reason,
        "attempt skipped"
    );
}
