//! Stage 1, *plan*: which deployments a request may try, in which order,
//! and with what limits; and the state the chain keeps while it tries them
//! ([`RequestState`] for the request, [`DeploymentTry`] per deployment).

use std::time::{Duration, Instant};

use keel_policy::Classification;
use keel_wire::openai::{ChatRequest, Usage};

use crate::call::{AttemptRecord, ChatCall, EngineError, ErrorKind, RequestReport};
use crate::config::{Deployment, Route};
use crate::content::JsonMode;
use crate::keypool::KeyState;
use crate::outcome::{Mode, Success};
use crate::requirements::Requirements;
use crate::{now, DeploymentRuntime, EngineState};

/// A request's plan: the deployments it may try and its limits.
pub(crate) struct Plan<'a> {
    pub call: &'a ChatCall,
    pub route: &'a Route,
    pub mode: Mode,
    pub needs: Requirements,
    /// Structured output the answer must have.
    pub json_mode: JsonMode,
    pub deadline: Instant,
    /// Deployment indexes: the chain, then (after `chain_len`) the
    /// deployments listed for refusals, visited only after a refusal.
    pub order: Vec<usize>,
    pub chain_len: usize,
    /// Attempts per deployment that count toward `max_attempts`.
    pub per_deployment: u32,
}

impl<'a> Plan<'a> {
    /// The plan for `call` on `route`; `exclude` removes a deployment (a
    /// stream's resume). A 400 when the JSON schema is bad or no
    /// deployment can serve the request.
    pub(crate) fn build(
        st: &EngineState,
        call: &'a ChatCall,
        route: &'a Route,
        mode: Mode,
        exclude: Option<usize>,
        report: &mut RequestReport,
    ) -> Result<Plan<'a>, EngineError> {
        let policy = &route.policy;
        let started = now();
        let own = call.options.timeout.unwrap_or(policy.timeout);
        let client = call
            .options
            .client_timeout
            .map(crate::call::client_deadline);
        let deadline = started + client.map_or(own, |c| c.min(own));
        let needs = Requirements::of(call, mode == Mode::Stream);
        // Structured output: a bad schema is the client's error, before any upstream call.
        let json_mode = JsonMode::of(call.request(), route.json_schema.as_ref())
            .map_err(|msg| EngineError::new(400, ErrorKind::InvalidRequest, msg, report.clone()))?;
        let (order, chain_len) = eligible(st, call, route, &needs, exclude, report)?;
        st.lock_budget().record_request(started);
        let mut per_deployment = call
            .options
            .max_attempts
            .unwrap_or(policy.backoff.max_attempts())
            .max(1);
        if call.options.sdk_retry_count > 0 {
            // The SDK already retries this request: do not multiply its retries.
            per_deployment = per_deployment
                .saturating_sub(call.options.sdk_retry_count)
                .max(1);
        }
        Ok(Plan {
            call,
            route,
            mode,
            needs,
            json_mode,
            deadline,
            order,
            chain_len,
            per_deployment,
        })
    }

    /// The chain's deployments after position `pos` (hedge and failover candidates).
    pub(crate) fn chain_after(&self, pos: usize) -> &[usize] {
        &self.order[pos + 1..self.chain_len.max(pos + 1)]
    }

    /// Whether a deployment after `pos` may take a refused request.
    pub(crate) fn refusal_fallback_after(&self, pos: usize) -> bool {
        let listed = &self.route.refusal_fallbacks;
        self.order[pos + 1..]
            .iter()
            .any(|j| listed.is_empty() || listed.contains(j))
    }
}

/// The chain minus what cannot serve this request, in routing order; then
/// the refusal tail. Returns the order and the chain's length in it. Each
/// deployment left out of the chain (a capability it lacks, a cost over the
/// client's limit) is in the attempt log as a skip with its reason, whether
/// or not another serves the request.
fn eligible(
    st: &EngineState,
    call: &ChatCall,
    route: &Route,
    needs: &Requirements,
    exclude: Option<usize>,
    report: &mut RequestReport,
) -> Result<(Vec<usize>, usize), EngineError> {
    let mut order: Vec<usize> =
        Vec::with_capacity(route.chain.len() + route.refusal_fallbacks.len());
    let mut unfit: Vec<(usize, String)> = Vec::new();
    for &i in &route.chain {
        if Some(i) == exclude && route.chain.len() > 1 {
            continue;
        }
        match needs.mismatch(&st.deployments[i].spec) {
            None => order.push(i),
            Some(why) => unfit.push((i, why)),
        }
    }
    crate::routing::order(st, route, call, needs, exclude, &mut order, &mut unfit);
    let mut reasons: Vec<String> = Vec::with_capacity(unfit.len());
    for (i, why) in unfit {
        let dep = &st.deployments[i].spec;
        reasons.push(format!("{}: {why}", dep.name));
        log_unfit(call, route, dep);
        report.push_attempt(skip(dep, why));
    }
    if call.options.no_fallbacks {
        order.truncate(1);
    }
    if order.is_empty() {
        return Err(no_deployment(st, route, needs, &reasons, report));
    }
    let chain_len = order.len();
    if !call.options.no_fallbacks {
        for &i in &route.refusal_fallbacks {
            if !order.contains(&i) && needs.mismatch(&st.deployments[i].spec).is_none() {
                order.push(i);
            }
        }
    }
    Ok((order, chain_len))
}

/// A deployment the plan leaves out (its reason is in the attempt log).
fn log_unfit(call: &ChatCall, route: &Route, dep: &Deployment) {
    tracing::info!(
        request_id = %call.options.request_id,
        route = %route.name,
        deployment = %dep.name,
        attempt = 0u32,
        next = "skip",
        delay_reason = "cannot_serve",
        "attempt skipped"
    );
}

/// "No deployment can serve this request", with each one's reason.
fn no_deployment(
    st: &EngineState,
    route: &Route,
    needs: &Requirements,
    reasons: &[String],
    report: &RequestReport,
) -> EngineError {
    let too_long = route.chain.iter().all(|&i| {
        let d = &st.deployments[i].spec;
        needs.prompt_tokens.saturating_add(needs.output_tokens(d)) > d.context_window
    });
    let mut e = EngineError::new(
        400,
        ErrorKind::InvalidRequest,
        format!(
            "no deployment of route '{}' can serve this request ({})",
            route.name,
            reasons.join("; ")
        ),
        report.clone(),
    );
    if too_long {
        e.code = Some("context_length_exceeded".into());
    }
    e
}

/// Why deployments were passed over without an attempt, by cause (the
/// final error's status is chosen from these, never from a message).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skips {
    /// Circuit breaker open (here or on another replica).
    pub breaker: usize,
    /// Local or fleet-wide rate limit.
    pub rate_limit: usize,
    /// Bulkhead full.
    pub bulkhead: usize,
}

impl Skips {
    pub(crate) fn any(&self) -> bool {
        self.breaker + self.rate_limit + self.bulkhead > 0
    }
}

/// A refusal held while the deployments listed for refusals are tried: the
/// answer if nothing better comes.
pub(crate) struct HeldRefusal {
    /// A whole answer, or a stream not yet sent to the client.
    pub answer: Success,
    pub di: usize,
    pub pos: usize,
}

/// The request's state across deployments.
#[derive(Default)]
pub(crate) struct RequestState {
    /// The last failure seen.
    pub last: Option<Classification>,
    /// The earliest time a retry could succeed (for `Retry-After`).
    pub earliest_retry: Option<Duration>,
    pub skips: Skips,
    /// The retry budget refused an attempt.
    pub budget_spent: bool,
    /// After a context overflow, only larger windows are tried.
    pub min_window: u32,
    pub refused: Option<HeldRefusal>,
    /// The text of a whole answer cut mid-way, which the next attempt
    /// continues ([`crate::outcome::Reply::Cut`]).
    pub resume: Option<String>,
    /// Cut answers continued so far.
    pub resumes: u32,
}

/// Why the chain does not try a deployment.
pub(crate) enum Pass {
    Skip,
    /// Only refusal deployments are left, and nothing was refused.
    Stop,
}

impl RequestState {
    /// Starts deployment `pos` of the plan, or says why not.
    pub(crate) fn enter<'s>(
        &self,
        st: &'s EngineState,
        plan: &Plan<'_>,
        pos: usize,
        report: &mut RequestReport,
    ) -> Result<DeploymentTry<'s>, Pass> {
        let di = plan.order[pos];
        let rt = &st.deployments[di];
        if pos >= plan.chain_len && self.refused.is_none() {
            return Err(Pass::Stop);
        }
        let listed = &plan.route.refusal_fallbacks;
        if self.refused.is_some() && !listed.is_empty() && !listed.contains(&di) {
            return Err(Pass::Skip);
        }
        if rt.spec.context_window <= self.min_window {
            report.push_attempt(skip(
                &rt.spec,
                format!(
                    "context window {} not larger than the one that overflowed",
                    rt.spec.context_window
                ),
            ));
            return Err(Pass::Skip);
        }
        Ok(DeploymentTry::new(rt, di, pos))
    }

    /// Keeps the earliest time a retry could succeed.
    pub(crate) fn retry_after(&mut self, after: Duration) {
        self.earliest_retry = Some(self.earliest_retry.map_or(after, |a| a.min(after)));
    }
}

/// The rounds of one answer: text stitched from continuations and usage
/// summed over them.
#[derive(Default)]
pub(crate) struct Rounds {
    pub stitched: String,
    pub usage_sum: Option<Usage>,
    /// Output tokens of the last round alone.
    pub last_output: Option<u32>,
}

/// One deployment as the request tries it.
pub(crate) struct DeploymentTry<'s> {
    pub rt: &'s DeploymentRuntime,
    pub di: usize,
    /// Position in the plan's order (the fallback depth).
    pub pos: usize,
    /// Attempts finished that count toward `max_attempts` (follow-ups do not).
    pub counted: u32,
    /// Attempts sent, follow-ups included (the records' attempt number).
    pub sent: u32,
    pub prev_delay: Duration,
    /// What this deployment is asked next when it is not the client's own
    /// request: a continuation, a raised limit, a repair.
    pub edited: Option<ChatRequest>,
    pub rounds: Rounds,
    pub continuations: u32,
    pub repairs: u32,
    pub raised: bool,
    /// The next attempt is a follow-up (continuation, repair, key switch):
    /// progress, not a retry, so outside the retry budget.
    pub follow_up: bool,
    /// Which of the deployment's keys this request uses (key pools).
    pub keys: KeyState,
}

impl<'s> DeploymentTry<'s> {
    pub(crate) fn new(rt: &'s DeploymentRuntime, di: usize, pos: usize) -> DeploymentTry<'s> {
        DeploymentTry {
            rt,
            di,
            pos,
            counted: 0,
            sent: 0,
            prev_delay: Duration::ZERO,
            edited: None,
            rounds: Rounds::default(),
            continuations: 0,
            repairs: 0,
            raised: false,
            follow_up: false,
            keys: KeyState::start(&rt.keys, now()),
        }
    }

    pub(crate) fn spec(&self) -> &'s Deployment {
        &self.rt.spec
    }

    /// The request this deployment is asked next.
    pub(crate) fn request<'c>(&'c self, call: &'c ChatCall) -> &'c ChatRequest {
        self.edited.as_ref().unwrap_or(call.request())
    }
}

/// A deployment passed over without an attempt.
pub(crate) fn skip(dep: &Deployment, reason: String) -> AttemptRecord {
    AttemptRecord {
        deployment: dep.name.clone(),
        attempt: 0,
        class: None,
        status: None,
        latency_ms: 0,
        next: "skip",
        delay_ms: None,
        reason,
    }
}
