//! The chain: every request, plain or streamed, meets the same stages in
//! this order.
//!
//! 1. [`plan`](crate::plan): the deployments that can serve it, in routing order;
//! 2. [`admit`](crate::admit): breaker, retry budget, rate limiter, bulkhead;
//! 3. [`attempt`](crate::attempt): the body, the key, the request or stream, a hedge;
//! 4. [`observe`](crate::observe): what the outcome does to the deployment's state;
//! 5. [`decide`](crate::decide): the next step, a pure function of what was observed;
//! 6. [`conclude`](crate::conclude): a held refusal, the static tier or the error.
//!
//! Plain answers and streams differ only in what an attempt returns (see
//! [`Mode`]); a stream's content after its first token is the pump's
//! ([`crate::pump`]), which asks the same *decide* for its follow-ups.

use keel_policy::{Classification, FailureClass, GiveUpReason};
use std::ops::ControlFlow;
use std::time::Duration;

use crate::admit::{self, Go};
use crate::attempt::{self, Attempted};
use crate::call::{ChatCall, EngineError, FullAnswer, RequestReport};
use crate::config::Route;
use crate::content::{self, Verdict};
use crate::decide::{self, AnswerFacts, FailureFacts, FallOver, FollowUp, Step};
use crate::observe::{self, Observed, Seen};
use crate::outcome::{Mode, Success, Won};
use crate::plan::{DeploymentTry, HeldRefusal, Pass, Plan, RequestState};
use crate::{conclude, now, EngineState};

/// Runs the chain for `call` and returns the first success, or an error
/// that lists every attempt. `exclude` removes a deployment (stream resume).
pub(crate) async fn run(
    st: &EngineState,
    call: &ChatCall,
    route: &Route,
    mode: Mode,
    exclude: Option<usize>,
    report: &mut RequestReport,
) -> Result<(Success, usize), EngineError> {
    let plan = Plan::build(st, call, route, mode, exclude, report)?;
    let mut req = RequestState::default();
    'chain: for pos in 0..plan.order.len() {
        let mut dep = match req.enter(st, &plan, pos, report) {
            Ok(dep) => dep,
            Err(Pass::Skip) => continue,
            Err(Pass::Stop) => break,
        };
        loop {
            if now() >= plan.deadline {
                break 'chain;
            }
            let mut adm = match admit::admit(st, &plan, &mut dep, &mut req, report).await {
                Ok(adm) => adm,
                Err(Go::NextDeployment) => continue 'chain,
                Err(Go::Stop) => break 'chain,
            };
            if let Some(text) = req.resume.take() {
                dep.resume(plan.call, text);
                st.metrics.answer_resumed(&plan.route.name);
            }
            let (observed, seen) = match attempt::run(st, &plan, &mut dep, &mut adm, report).await?
            {
                Attempted::Own(reply, sent) => {
                    observe::observe(st, &plan, &mut dep, &mut adm, reply, sent, report).await
                }
                Attempted::HedgeWon(won, sent) => {
                    observe::cancelled(&dep, plan.mode.answered(), sent, report);
                    drop(adm);
                    return Ok(observe::finish_ok(st, &plan, won, 1, report));
                }
            };
            drop(adm);
            let next = match observed {
                Observed::Plain(p) => {
                    report.push_attempt(observe::answered(&dep, &seen));
                    let won = dep.won(Success::Plain(p), &seen);
                    return Ok(observe::finish_ok(st, &plan, won, seen.number, report));
                }
                Observed::Answer(answer, verdict) => on_answer(
                    st,
                    &plan,
                    &mut dep,
                    &mut req,
                    (answer, verdict),
                    &seen,
                    report,
                ),
                Observed::Failed(c) => on_failure(st, &plan, &mut dep, &mut req, c, &seen, report),
                Observed::Cut(mut c, text) => {
                    // The next attempt, here or on the next deployment,
                    // continues the text (as a broken stream is resumed).
                    let text = format!("{}{text}", dep.rounds.stitched);
                    if req.carry(&plan, &text) {
                        let why = c.message.take().unwrap_or_default();
                        c.message = Some(format!(
                            "{why}; cut after {} characters, which the next attempt continues",
                            text.chars().count()
                        ));
                        req.resume = Some(text);
                    }
                    on_failure(st, &plan, &mut dep, &mut req, c, &seen, report)
                }
            };
            match next {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(Then::SameDeployment(None)) => {}
                ControlFlow::Continue(Then::SameDeployment(Some(delay))) => {
                    tokio::time::sleep(delay).await
                }
                ControlFlow::Continue(Then::NextDeployment) => continue 'chain,
            }
        }
    }
    conclude::conclude(st, &plan, req, report)
}

/// Where the chain goes after a step that did not end it.
enum Then {
    /// The same deployment again, after the delay.
    SameDeployment(Option<Duration>),
    NextDeployment,
}

/// A step's outcome: the chain's result (`Break`), or where it goes on.
type Next = ControlFlow<Result<(Success, usize), EngineError>, Then>;

/// Decides on a 200 judged `verdict` and applies the step.
fn on_answer(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &mut DeploymentTry<'_>,
    req: &mut RequestState,
    (answer, verdict): (Success, Verdict),
    seen: &Seen,
    report: &mut RequestReport,
) -> Next {
    let call = plan.call;
    let content = &plan.route.policy.content;
    let truncated = verdict == Verdict::Truncated;
    let asked = call.request().effective_max_tokens();
    let facts = AnswerFacts {
        continuations: dep.continuations,
        repairs: dep.repairs,
        raised: dep.raised,
        // Read only when they matter: the answer is parsed lazily.
        tools: truncated
            && matches!(&answer, Success::Full(a) if a
                .get()
                .choices
                .first()
                .is_some_and(|c| c.message.tool_calls.is_some())),
        client_cut: truncated
            && decide::client_cut(content, dep.spec(), call.api, asked, dep.rounds.last_output),
        max_tokens: dep.request(call).effective_max_tokens().unwrap_or(0),
        deployment_max: dep.spec().max_output_tokens,
        refusal_fallback: verdict == Verdict::Refusal && plan.refusal_fallback_after(dep.pos),
        holding_refusal: req.refused.is_some(),
    };
    let step = decide::on_answer(&verdict, content, &facts);
    let rec = observe::answer_record(plan, dep, seen, &verdict, &step, report);
    report.push_attempt(rec);
    match (step, answer) {
        (Step::FollowUp(f), Success::Full(answer)) => {
            dep.follow(call, f, &answer, &verdict);
            ControlFlow::Continue(Then::SameDeployment(None))
        }
        (Step::HoldRefusal, answer) => {
            req.refused = Some(HeldRefusal {
                answer,
                di: dep.di,
                pos: dep.pos,
            });
            ControlFlow::Continue(Then::NextDeployment)
        }
        (Step::FallOver(_), _) => {
            let errors = match &verdict {
                Verdict::Invalid(e) => e.join("; "),
                _ => String::new(),
            };
            let mut c = keel_policy::classify_invalid_output(&errors);
            c.status = Some(200);
            req.last = Some(c);
            ControlFlow::Continue(Then::NextDeployment)
        }
        (_, mut answer) => {
            if let (Verdict::Good, true, Success::Full(a)) =
                (&verdict, plan.json_mode.is_on(), &mut answer)
            {
                content::clean_json(a, &plan.json_mode);
            }
            let won = dep.won(answer, seen);
            ControlFlow::Break(Ok(observe::finish_ok(st, plan, won, seen.number, report)))
        }
    }
}

/// Decides on a failed attempt and applies the step.
fn on_failure(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &mut DeploymentTry<'_>,
    req: &mut RequestState,
    c: Classification,
    seen: &Seen,
    report: &mut RequestReport,
) -> Next {
    let t = now();
    let policy = &plan.route.policy;
    if c.class == FailureClass::ContextOverflow {
        req.min_window = req.min_window.max(dep.spec().context_window);
    }
    let min_window = req.min_window;
    let facts = FailureFacts {
        backoff: &policy.backoff,
        attempt: dep.counted + 1,
        per_deployment: plan.per_deployment,
        prev_delay: dep.prev_delay,
        time_left: plan.deadline.saturating_duration_since(t),
        failover_after: policy.failover_after,
        next_can_serve: plan.chain_after(dep.pos).iter().any(|&j| {
            let other = &st.deployments[j];
            other.spec.context_window > min_window && other.available(t)
        }),
        key_switch: seen.key_switch,
        scale: dep.rt.lock_adaptive().scale(t),
    };
    let step = decide::on_failure(&c, &facts, &mut *st.lock_rng());
    report.push_attempt(observe::failure_record(plan, dep, seen, &c, &step));
    let next = match step {
        Step::FailFast => return ControlFlow::Break(Err(conclude::fail_fast(&c, report))),
        Step::Retry { delay, .. } => {
            st.metrics.retry(c.class);
            dep.counted += 1;
            dep.prev_delay = delay;
            ControlFlow::Continue(Then::SameDeployment(Some(delay)))
        }
        Step::FallOver(over) => {
            let hint_counts = matches!(
                over,
                FallOver::GiveUp(GiveUpReason::HintExceedsDeadline)
                    | FallOver::Exhausted
                    | FallOver::Class
            );
            if let (true, Some(h)) = (hint_counts, c.hint) {
                req.retry_after(h.after);
            }
            ControlFlow::Continue(Then::NextDeployment)
        }
        // A key switch: the same request on another key.
        _ => {
            dep.follow_up = true;
            ControlFlow::Continue(Then::SameDeployment(None))
        }
    };
    req.last = Some(c);
    next
}

impl RequestState {
    /// Whether the text of an answer cut mid-way is continued by the next
    /// attempt: the route resumes broken streams (`stream_failure`), fewer
    /// than two resumes were made, and the request has time left. Counts
    /// the resume.
    fn carry(&mut self, plan: &Plan<'_>, text: &str) -> bool {
        let left = plan
            .deadline
            .checked_duration_since(now())
            .filter(|d| !d.is_zero());
        let failure = plan.route.policy.stream_failure;
        let ok = !text.is_empty() && decide::may_resume(failure, self.resumes, left);
        if ok {
            self.resumes += 1;
        }
        ok
    }
}

impl DeploymentTry<'_> {
    /// Sets up the follow-up `f` after `answer` (judged `verdict`).
    fn follow(&mut self, call: &ChatCall, f: FollowUp, answer: &FullAnswer, verdict: &Verdict) {
        self.follow_up = true;
        match f {
            FollowUp::Continue => {
                let text = content::answer_text(answer.get());
                self.continuations += 1;
                self.edited = Some(content::continuation(call.request(), &text));
                self.rounds.stitched = text;
            }
            FollowUp::Raise { max_tokens } => {
                self.raised = true;
                let mut r = call.request().clone();
                if r.max_completion_tokens.is_some() {
                    r.max_completion_tokens = Some(max_tokens);
                } else {
                    r.max_tokens = Some(max_tokens);
                }
                self.edited = Some(r);
                self.rounds.stitched.clear();
            }
            FollowUp::Repair => {
                let text = content::answer_text(answer.get());
                let errors = match verdict {
                    Verdict::Invalid(e) => e.as_slice(),
                    _ => &[],
                };
                self.repairs += 1;
                let repair = content::repair(self.request(call), &text, errors);
                self.edited = Some(repair);
                self.rounds.stitched.clear();
            }
            FollowUp::KeySwitch { .. } => {}
        }
    }

    /// Its next attempt continues `text`, an answer cut mid-way; the
    /// answer it gives is stitched to it.
    fn resume(&mut self, call: &ChatCall, text: String) {
        self.edited = Some(content::continuation(call.request(), &text));
        self.rounds.stitched = text;
    }

    /// This deployment's answer as the chain's result.
    fn won(&self, success: Success, seen: &Seen) -> Won {
        Won {
            success,
            di: self.di,
            pos: self.pos,
            latency: seen.latency,
        }
    }
}
