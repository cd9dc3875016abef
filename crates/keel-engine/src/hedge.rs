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
//! A stream has answered when its first token arrived: that is when it is
//! committed to the client, so the race is decided before anything is
//! sent, and the loser is closed before it streamed more than its first
//! token (only that is billed twice). Its delay is the p95 of the
//! deployment's times to first token, not of whole answers.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keel_policy::{Classification, Reservation};

use crate::call::{AttemptRecord, ChatCall, Meta};
use crate::config::Route;
use crate::content::{self, JsonMode, Verdict};
use crate::pipeline::{Mode, Success};
use crate::routing::Timing;
use crate::stream::OpenStream;
use crate::upstream::{self, Answer};
use crate::{now, DeploymentRuntime, Inner};

/// What an attempt returned, before the pipeline judged it.
pub(crate) enum Reply {
    /// A whole answer (`Mode::Full`).
    Full(Answer),
    /// A stream with its first token read (`Mode::Stream`).
    Stream(OpenStream),
}

/// Which attempt answered.
pub(crate) enum Raced {
    /// The first attempt's own result (no hedge, or the hedge lost or failed).
    Primary(Result<Reply, Classification>),
    /// The hedge answered first with a good answer.
    Hedge(HedgeWin),
}

/// A hedge's good answer (or open stream).
pub(crate) struct HedgeWin {
    pub success: Success,
    pub di: usize,
    pub latency: Duration,
}

/// The first attempt of a request: its deployment, the deployments after
/// it (hedge candidates), what it must produce and its time limits.
pub(crate) struct FirstAttempt<'a> {
    pub di: usize,
    pub next: &'a [usize],
    pub mode: Mode,
    /// The attempt timeout (`Full`) or the first-token timeout (`Stream`).
    pub timeout: Duration,
    /// Between stream tokens (`Stream`).
    pub inter_token_timeout: Duration,
    /// The request's deadline.
    pub deadline: Instant,
}

/// The secondary's claims on breaker, limiter and bulkhead, released if the
/// hedge is dropped before it finished.
struct Claim<'a> {
    rt: &'a DeploymentRuntime,
    reservation: Reservation,
    done: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            let t = now();
            self.rt.lock_breaker().on_cancel(t);
            self.rt.lock_limiter().cancel(t, &self.reservation);
        }
    }
}

/// What a mode's attempt waits for, in attempt records.
fn answered(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => "answered",
        Mode::Stream => "sent its first token",
    }
}

/// Awaits `primary`, hedging it when the route asks for it (see the module docs).
pub(crate) async fn race(
    inner: &Inner,
    call: &ChatCall,
    route: &Route,
    json_mode: &JsonMode,
    first: FirstAttempt<'_>,
    primary: impl Future<Output = Result<Reply, Classification>>,
    meta: &mut Meta,
) -> Raced {
    let Some(policy) = &route.hedge else {
        return Raced::Primary(primary.await);
    };
    // Only the request's first attempt is hedged; retries have their own schedule.
    let t = now();
    let second = first
        .next
        .iter()
        .copied()
        .find(|&j| j != first.di && inner.deployments[j].available(t));
    let timing = match first.mode {
        Mode::Full => Timing::Answer,
        Mode::Stream => Timing::FirstToken,
    };
    let delay = policy.hedge_after(&inner.deployments[first.di].signals.latencies(timing));
    let (Some(second), Some(delay), 1) = (second, delay, meta.upstream_attempts) else {
        return Raced::Primary(primary.await);
    };
    tokio::pin!(primary);
    tokio::select! {
        r = &mut primary => return Raced::Primary(r),
        _ = tokio::time::sleep(delay) => {}
    }

    let t = now();
    let rt = &inner.deployments[second];
    let dep = &rt.spec;
    let remaining = first.deadline.saturating_duration_since(t);
    if remaining.is_zero() {
        return Raced::Primary(primary.await);
    }
    if !policy.may_hedge(&mut inner.lock_budget(), t) {
        inner
            .counters
            .budget_exhausted
            .fetch_add(1, Ordering::Relaxed);
        inner.metrics.budget_exhausted();
        meta.attempts
            .push(skip(&dep.name, "hedge refused by the retry budget".into()));
        return Raced::Primary(primary.await);
    }
    let Some((claim, permit)) = claim(rt, t, call) else {
        meta.attempts
            .push(skip(&dep.name, "hedge: deployment at capacity".into()));
        return Raced::Primary(primary.await);
    };
    let adapted = content::adapt_for(dep, call.request(), json_mode);
    let ask = upstream::Ask::of(call, None, &adapted);
    let body = match upstream::build_body(dep, ask, call.api, first.mode == Mode::Stream) {
        Ok(b) => b,
        Err(_) => return Raced::Primary(primary.await),
    };
    meta.upstream_attempts += 1;
    rt.counters.attempts.fetch_add(1, Ordering::Relaxed);
    let sent = now();
    let schema_tool = upstream::schema_tool_name(dep, ask);
    // The key this deployment's next request would use (key pools).
    let key = crate::keypool::KeyState::start(&rt.keys, sent).current;
    let kdep = crate::keypool::keyed(dep, key);
    let timeout = first.timeout.min(remaining);
    let hedge = async {
        match first.mode {
            Mode::Full => upstream::send(&inner.client, &kdep, body, timeout, schema_tool)
                .await
                .map(Reply::Full),
            Mode::Stream => OpenStream::open(
                &inner.client,
                &kdep,
                body,
                timeout,
                first.inter_token_timeout,
                remaining,
                schema_tool,
            )
            .await
            .map(Reply::Stream),
        }
    };
    tokio::pin!(hedge);
    let mut claim = claim;
    let what = answered(first.mode);

    let hedged = tokio::select! {
        r = &mut primary => {
            if r.is_ok() {
                // The hedge is dropped (cancelled) with its claim.
                meta.attempts.push(skip(&dep.name, format!(
                    "hedge sent after {} ms, cancelled: the first attempt {what} first",
                    delay.as_millis()
                )));
                return Raced::Primary(r);
            }
            let h = hedge.await;
            let judged = judge(inner, call, route, json_mode, &mut claim, second, sent, delay, h, meta).await;
            drop(permit);
            return match judged {
                Some(win) => Raced::Hedge(win),
                None => Raced::Primary(r),
            };
        }
        h = &mut hedge => h,
    };
    let judged = judge(
        inner, call, route, json_mode, &mut claim, second, sent, delay, hedged, meta,
    )
    .await;
    drop(permit);
    match judged {
        Some(win) => Raced::Hedge(win),
        None => Raced::Primary(primary.await),
    }
}

/// Breaker, limiter (no waiting) and bulkhead of the secondary.
fn claim<'a>(
    rt: &'a DeploymentRuntime,
    t: Instant,
    call: &ChatCall,
) -> Option<(Claim<'a>, keel_policy::BulkheadPermit)> {
    rt.lock_breaker().try_acquire(t).ok()?;
    let tokens = crate::pipeline::Needs::of(call, false).reserve_tokens();
    let reservation = match rt.lock_limiter().reserve(t, tokens, Duration::ZERO) {
        Ok(r) => r,
        Err(_) => {
            rt.lock_breaker().on_cancel(t);
            return None;
        }
    };
    let claim = Claim {
        rt,
        reservation,
        done: false,
    };
    let permit = rt.bulkhead.try_acquire().ok()?;
    Some((claim, permit))
}

/// Records the hedge's outcome; `Some` when it is a good answer (or an
/// open stream).
#[allow(clippy::too_many_arguments)]
async fn judge(
    inner: &Inner,
    call: &ChatCall,
    route: &Route,
    json_mode: &JsonMode,
    claim: &mut Claim<'_>,
    di: usize,
    sent: Instant,
    delay: Duration,
    result: Result<Reply, Classification>,
    meta: &mut Meta,
) -> Option<HedgeWin> {
    let rt = claim.rt;
    let dep = &rt.spec;
    let t = now();
    let latency = t.saturating_duration_since(sent);
    claim.done = true;
    let mut rec = AttemptRecord {
        deployment: dep.name.clone(),
        attempt: 1,
        class: None,
        status: Some(200),
        latency_ms: latency.as_millis() as u64,
        next: "ok",
        delay_ms: None,
        reason: String::new(),
    };
    match result {
        Ok(Reply::Full(a)) => {
            {
                let mut limiter = rt.lock_limiter();
                limiter.observe(t, &a.rate_limits);
                let used = a.response.usage().map(|u| u.total_tokens);
                limiter.settle(
                    t,
                    &claim.reservation,
                    used.unwrap_or(claim.reservation.tokens),
                );
            }
            rt.record_outcome(t, None, latency, Timing::Answer);
            inner.metrics.attempt(di, None, latency);
            crate::cost::charge(inner, call, dep, a.response.usage(), meta).await;
            let mut resp = a.response;
            let verdict = content::judge(&resp, json_mode, &route.policy.content);
            if verdict != Verdict::Good {
                rec.next = "fail";
                rec.reason = format!(
                    "hedge sent after {} ms; its answer not usable ({verdict:?})",
                    delay.as_millis()
                );
                meta.attempts.push(rec);
                return None;
            }
            if json_mode.is_on() {
                content::clean_json(&mut resp, json_mode);
            }
            rec.reason = format!("hedge sent after {} ms answered first", delay.as_millis());
            meta.attempts.push(rec);
            Some(HedgeWin {
                success: Success::Full(resp),
                di,
                latency,
            })
        }
        Ok(Reply::Stream(s)) => {
            // Usage comes with the stream's end, where the pump charges it.
            rt.lock_limiter()
                .settle(t, &claim.reservation, claim.reservation.tokens);
            rt.record_outcome(t, None, latency, Timing::FirstToken);
            inner.metrics.attempt(di, None, latency);
            rec.reason = format!(
                "hedge sent after {} ms sent its first token first",
                delay.as_millis()
            );
            meta.attempts.push(rec);
            Some(HedgeWin {
                success: Success::Stream(s),
                di,
                latency,
            })
        }
        Err(c) => {
            // A failure records no latency sample, whatever it measured.
            let timing = Timing::Answer;
            rt.lock_limiter()
                .settle(t, &claim.reservation, claim.reservation.tokens);
            rt.record_outcome(t, Some(c.class), latency, timing);
            inner.metrics.attempt(di, Some(c.class), latency);
            rec.class = Some(c.class.as_str());
            rec.status = c.status;
            rec.next = "fail";
            rec.reason = format!(
                "hedge sent after {} ms failed: {}",
                delay.as_millis(),
                c.message.unwrap_or_default()
            );
            meta.attempts.push(rec);
            None
        }
    }
}

/// Releases the first attempt after its hedge won: the breaker and limiter
/// forget it, and the log says it was cancelled. Returns the winner's
/// position among the eligible deployments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cancel_primary(
    rt: &DeploymentRuntime,
    reservation: &Reservation,
    number: u32,
    sent: Instant,
    mode: Mode,
    winner: usize,
    eligible: &[usize],
    meta: &mut Meta,
) -> usize {
    let t = now();
    rt.lock_breaker().on_cancel(t);
    rt.lock_limiter().cancel(t, reservation);
    let rec = AttemptRecord {
        deployment: rt.spec.name.clone(),
        attempt: number,
        class: None,
        status: None,
        latency_ms: t.saturating_duration_since(sent).as_millis() as u64,
        next: "cancelled",
        delay_ms: None,
        reason: format!(
            "cancelled: the hedge {} first (this attempt had not)",
            answered(mode)
        ),
    };
    // The hedge's record is last; the primary's goes before it.
    let at = meta.attempts.len().saturating_sub(1);
    meta.attempts.insert(at, rec);
    eligible.iter().position(|&j| j == winner).unwrap_or(0)
}

fn skip(deployment: &str, reason: String) -> AttemptRecord {
    AttemptRecord {
        deployment: deployment.to_string(),
        attempt: 0,
        class: None,
        status: None,
        latency_ms: 0,
        next: "skip",
        delay_ms: None,
        reason,
    }
}
