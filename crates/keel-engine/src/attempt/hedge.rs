//! Hedged requests (per route, off by default; streaming and non-streaming).
//!
//! A hang or a slow provider turns into the request's p99. When a route
//! has `hedge = true` and the request's first attempt has not answered
//! after the deployment's recent p95 (or `hedge_after`), a second attempt
//! goes to the next deployment of the chain; the first good answer wins and
//! the other attempt is dropped (its connection closed). Every hedge is paid
//! for from the retry budget ([`keel_policy::HedgePolicy::may_hedge`]), so in
//! an outage hedging stops instead of doubling the load.
//!
//! A stream has answered when its first token arrived: the race is decided
//! then, before anything is sent, and the loser is closed before it
//! streamed more than its first token (only that is billed twice); the
//! winner then goes through its commit window like any stream. Its delay is the p95 of the
//! deployment's times to first token, not of whole answers.
//!
//! The hedge goes through the same stages as any attempt: admitted by
//! [`admit::claim_now`] (no waiting), its body from [`super::prepare`],
//! its outcome through [`observe::observe`].

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_policy::Classification;

use super::Reply;
use crate::admit;
use crate::call::{AttemptRecord, RequestReport};
use crate::content::{self, Verdict};
use crate::observe::{self, Observed};
use crate::outcome::{Success, Won};
use crate::plan::{skip, DeploymentTry, Plan};
use crate::{now, EngineState};

/// Which attempt answered.
pub(crate) enum Raced {
    /// The first attempt's own result (no hedge, or the hedge lost or failed).
    Primary(Result<Reply, Classification>),
    /// The hedge answered first with a good answer.
    Hedge(Won),
}

/// Awaits `primary`, the attempt on the plan's deployment at `pos`,
/// hedging it when the route asks for it (see the module docs).
pub(crate) async fn race(
    st: &EngineState,
    plan: &Plan<'_>,
    pos: usize,
    primary: impl Future<Output = Result<Reply, Classification>>,
    report: &mut RequestReport,
) -> Raced {
    let Some(policy) = &plan.route.hedge else {
        return Raced::Primary(primary.await);
    };
    // Only the request's first attempt is hedged; retries have their own schedule.
    let t = now();
    let di = plan.order[pos];
    let second = plan
        .chain_after(pos)
        .iter()
        .copied()
        .find(|&j| j != di && st.deployments[j].available(t));
    let timing = plan.mode.timing();
    let delay = st.deployments[di]
        .signals
        .with_latencies(timing, |l| policy.hedge_after(l));
    let (Some(second), Some(delay), 1) = (second, delay, report.upstream_attempts) else {
        return Raced::Primary(primary.await);
    };
    tokio::pin!(primary);
    tokio::select! {
        r = &mut primary => return Raced::Primary(r),
        _ = tokio::time::sleep(delay) => {}
    }

    let t = now();
    let rt = &st.deployments[second];
    let remaining = plan.deadline.saturating_duration_since(t);
    if remaining.is_zero() {
        return Raced::Primary(primary.await);
    }
    if !policy.may_hedge(&mut st.lock_budget(), t) {
        st.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        st.metrics.budget_exhausted();
        report.push_attempt(skip(&rt.spec, "hedge refused by the retry budget".into()));
        return Raced::Primary(primary.await);
    }
    let Some(mut adm) = admit::claim_now(rt, t, plan.needs.reserve_tokens()) else {
        report.push_attempt(skip(&rt.spec, "hedge: deployment at capacity".into()));
        return Raced::Primary(primary.await);
    };
    let Ok(prepared) = super::prepare(plan, &rt.spec, None) else {
        return Raced::Primary(primary.await);
    };
    let wpos = plan.order.iter().position(|&j| j == second).unwrap_or(0);
    let mut dep = DeploymentTry::new(rt, second, wpos);
    dep.sent = 1;
    report.upstream_attempts += 1;
    rt.counters.attempts.fetch_add(1, Ordering::Relaxed);
    let sent = now();
    let context = report.trace_sent(&rt.spec.name, dep.keys.current, true);
    let what = plan.mode.answered();
    let (hedged, primary_failed) = {
        // The key this deployment's next request would use (key pools).
        let kdep = super::wire(super::keyed(&dep), &prepared);
        let hedge = crate::traces::with_context(context, || {
            super::send(st, plan, &kdep, prepared, remaining)
        });
        tokio::pin!(hedge);
        tokio::select! {
        r = &mut primary => {
            // A cut answer is a failure: the hedge goes on.
            if r.as_ref().is_ok_and(|r| !matches!(r, Reply::Cut(_))) {
                // The hedge is dropped (cancelled) with its claim.
                report.push_attempt(skip(&rt.spec, format!(
                    "hedge sent after {} ms, cancelled: the first attempt {what} first",
                    delay.as_millis()
                )));
                return Raced::Primary(r);
            }
            ((&mut hedge).await, Some(r))
        }
        h = &mut hedge => (h, None),
        }
    };
    let hedged = super::window(st, plan, second, hedged).await;
    adm.end();
    let (observed, seen) =
        observe::observe(st, plan, &mut dep, &mut adm, hedged, sent, report).await;
    let win = judge(&dep, plan, observed, &seen, delay, report);
    match (win, primary_failed) {
        (Some(win), _) => Raced::Hedge(win),
        (None, Some(r)) => Raced::Primary(r),
        (None, None) => Raced::Primary(primary.await),
    }
}

/// Records the hedge's outcome; `Some` when it is a good answer (or an
/// open stream).
fn judge(
    dep: &DeploymentTry<'_>,
    plan: &Plan<'_>,
    observed: Observed,
    seen: &observe::Seen,
    delay: Duration,
    report: &mut RequestReport,
) -> Option<Won> {
    let after = delay.as_millis();
    let mut rec = AttemptRecord {
        deployment: dep.spec().name.clone(),
        attempt: 1,
        class: None,
        status: Some(200),
        latency_ms: seen.latency.as_millis() as u64,
        next: "ok",
        delay_ms: None,
        reason: String::new(),
    };
    let success = match observed {
        Observed::Answer(Success::Full(mut answer), Verdict::Good) => {
            if plan.json_mode.is_on() {
                content::clean_json(&mut answer, &plan.json_mode);
            }
            rec.reason = format!("hedge sent after {after} ms answered first");
            Success::Full(answer)
        }
        Observed::Answer(Success::Stream(s), Verdict::Good) => {
            rec.reason = format!("hedge sent after {after} ms sent its first token first");
            Success::Stream(s)
        }
        Observed::Answer(_, verdict) => {
            rec.next = "fail";
            rec.reason =
                format!("hedge sent after {after} ms; its answer not usable ({verdict:?})");
            report.push_attempt(rec);
            return None;
        }
        Observed::Plain(p) => {
            rec.reason = format!("hedge sent after {after} ms answered first");
            Success::Plain(p)
        }
        Observed::Failed(c) | Observed::Cut(c, _) => {
            rec.class = Some(c.class.as_str());
            rec.status = c.status;
            rec.next = "fail";
            rec.reason = format!(
                "hedge sent after {after} ms failed: {}",
                c.message.unwrap_or_default()
            );
            report.push_attempt(rec);
            return None;
        }
    };
    report.push_attempt(rec);
    Some(Won {
        success,
        di: dep.di,
        pos: dep.pos,
        latency: seen.latency,
    })
}
