//! Stage 4, *observe*: what an attempt's outcome does to the deployment's
//! state, the same for the first attempt, a retry and a hedge: the limiter
//! settled, the breaker, latency and health fed, metrics and cost counted,
//! a rate-limited key cooled, and a 200 judged on its content. Also the
//! attempt records and log lines for each step the chain takes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keel_policy::{Classification, DelayReason, FailureClass, HintSource};
use tracing::warn;

use crate::admit::Admission;
use crate::call::{AttemptRecord, FullAnswer, RequestReport};
use crate::config::Deployment;
use crate::content::{self, Verdict};
use crate::decide::{FallOver, Flag, FollowUp, Step};
use crate::outcome::{Cut, Mode, PlainAnswer, Reply, Success, Won};
use crate::plan::{DeploymentTry, Plan};
use crate::stream::OpenStream;
use crate::{now, EngineState};

/// An attempt's outcome as the chain decides on it.
pub(crate) enum Observed {
    /// A 200 with content (a whole answer, or a stream judged on what it
    /// said before its commit), and its verdict (never `Empty`).
    Answer(Success, Verdict),
    /// A plain answer that reads right (embeddings, a token count): no
    /// content to judge.
    Plain(PlainAnswer),
    /// A failure; an empty answer is one.
    Failed(Classification),
    /// A whole answer cut mid-way (a failure), and its text so far.
    Cut(Classification, String),
}

/// One observed attempt, besides its outcome.
pub(crate) struct Seen {
    /// The attempt's number on its deployment.
    pub number: u32,
    pub latency: Duration,
    /// After a rate limit: the key this request switches to, and from.
    pub key_switch: Option<(usize, usize)>,
}

/// Observes `reply`, the outcome of the attempt sent at `sent` under `adm`.
pub(crate) async fn observe(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &mut DeploymentTry<'_>,
    adm: &mut Admission<'_>,
    reply: Result<Reply, Classification>,
    sent: Instant,
    report: &mut RequestReport,
) -> (Observed, Seen) {
    let rt = dep.rt;
    match &reply {
        Ok(Reply::Full(a)) => rt.lock_limiter().observe(now(), &a.rate_limits),
        Ok(Reply::Plain(a)) => rt.lock_limiter().observe(now(), &a.rate_limits),
        _ => {}
    }
    let t = now();
    let latency = t.saturating_duration_since(sent);
    // A 200 is judged on its content before it counts as an answer.
    let observed = match reply {
        Ok(Reply::Full(a)) => {
            if let Some(first) = a.first_token {
                rt.signals.first_token(first);
            }
            let usage = a.response.usage();
            crate::cost::charge(st, plan.call, dep.spec(), usage, report).await;
            judge(plan, dep, a.response)
        }
        Ok(Reply::Stream(stream)) => judge_stream(st, plan, dep.di, stream),
        Ok(Reply::Plain(a)) => {
            let usage = keel_wire::openai::Usage::new(a.input_tokens, 0);
            crate::cost::charge(st, plan.call, dep.spec(), Some(&usage), report).await;
            Observed::Plain(a)
        }
        Ok(Reply::Cut(cut)) => {
            if let Some(first) = cut.first_token {
                rt.signals.first_token(first);
            }
            let Cut { failure, text, .. } = *cut;
            Observed::Cut(failure, text)
        }
        Err(c) => Observed::Failed(c),
    };
    let timing = plan.mode.timing();
    let mut key_switch = None;
    let transition;
    match &observed {
        Observed::Answer(answer, verdict) => {
            // A stream's usage comes with its end, where the pump charges it.
            let used = match answer {
                Success::Full(a) => a.usage().map(|u| u.total_tokens),
                Success::Plain(a) => Some(a.input_tokens),
                Success::Stream(_) => None,
            };
            adm.claim
                .settle(t, used.unwrap_or(plan.needs.reserve_tokens()));
            // The deployment answered: healthy, whatever the content.
            transition = rt.record_outcome(t, None, latency, timing);
            // Metrics show what the answer was: a rejected answer is
            // counted under its content class, not as "ok".
            let class = match verdict {
                Verdict::Truncated => Some(FailureClass::Truncated),
                Verdict::Refusal => Some(FailureClass::ContentFiltered),
                Verdict::Invalid(_) => Some(FailureClass::InvalidOutput),
                Verdict::Good | Verdict::Empty => None,
            };
            st.metrics.attempt(dep.di, class, latency);
        }
        Observed::Plain(a) => {
            adm.claim.settle(t, a.input_tokens);
            transition = rt.record_outcome(t, None, latency, timing);
            st.metrics.attempt(dep.di, None, latency);
        }
        Observed::Failed(c) | Observed::Cut(c, _) => {
            adm.claim.settle(t, plan.needs.prompt_tokens);
            transition = rt.record_outcome(t, Some(c.class), latency, timing);
            st.metrics.attempt(dep.di, Some(c.class), latency);
            // Key pools: a 429 or quota error is about the key; the next
            // attempt tries another key of this deployment first, outside
            // the retry budget and max_attempts.
            if matches!(
                c.class,
                FailureClass::RateLimited | FailureClass::QuotaExhausted
            ) {
                let from = dep.keys.current;
                key_switch = dep
                    .keys
                    .on_rate_limited(&rt.keys, t, c.hint.map(|h| h.after))
                    .map(|to| (from, to));
            }
        }
    }
    if let (Some(tr), Some(trace)) = (transition, &mut report.trace) {
        trace.breaker_transition(&dep.spec().name, tr);
    }
    let seen = Seen {
        number: dep.sent,
        latency,
        key_switch,
    };
    (observed, seen)
}

/// Stitches a 200 to earlier rounds and judges it.
fn judge(plan: &Plan<'_>, dep: &mut DeploymentTry<'_>, mut answer: FullAnswer) -> Observed {
    let rounds = &mut dep.rounds;
    if !rounds.stitched.is_empty() {
        let whole = format!("{}{}", rounds.stitched, content::answer_text(answer.get()));
        content::set_text(answer.edit(), whole);
    }
    rounds.last_output = answer.usage().map(|u| u.completion_tokens);
    content::add_usage(&mut rounds.usage_sum, answer.usage());
    if answer.usage() != rounds.usage_sum.as_ref() {
        answer.edit().usage = rounds.usage_sum.clone();
    }
    match content::judge(&answer, &plan.json_mode, &plan.route.policy.content) {
        Verdict::Empty => Observed::Failed(empty_answer()),
        verdict => Observed::Answer(Success::Full(answer), verdict),
    }
}

/// Judges a stream on what it said within its commit window.
fn judge_stream(st: &EngineState, plan: &Plan<'_>, di: usize, stream: Box<OpenStream>) -> Observed {
    let verdict = match stream.prefix() {
        Some(prefix) => content::judge_prefix(prefix, &plan.route.policy.content),
        None => Verdict::Good,
    };
    match verdict {
        Verdict::Good => Observed::Answer(Success::Stream(stream), verdict),
        Verdict::Empty => {
            let mut c = empty_answer();
            c.message =
                Some("the stream ended with no content and no tool call (before commit)".into());
            st.metrics.stream_rejected(di, c.class);
            Observed::Failed(c)
        }
        verdict => {
            st.metrics
                .stream_rejected(di, FailureClass::ContentFiltered);
            Observed::Answer(Success::Stream(stream), verdict)
        }
    }
}

fn empty_answer() -> Classification {
    let mut c = keel_policy::classify_completion(None, false, false, false)
        .unwrap_or_else(|| keel_policy::classify_invalid_output("empty answer"));
    c.status = Some(200);
    c.message = Some("the answer had no content and no tool call".into());
    c
}

/// The record of an answered attempt (a 200 or an open stream).
pub(crate) fn answered(dep: &DeploymentTry<'_>, seen: &Seen) -> AttemptRecord {
    AttemptRecord {
        deployment: dep.spec().name.clone(),
        attempt: seen.number,
        class: None,
        status: Some(200),
        latency_ms: seen.latency.as_millis() as u64,
        next: "ok",
        delay_ms: None,
        reason: if dep.spec().api_keys.len() > 1 {
            format!("answered (key #{})", dep.keys.current)
        } else {
            "answered".into()
        },
    }
}

/// The record of an answer judged on its content, for `step`; logs the
/// rejections and sets the report's flags.
pub(crate) fn answer_record(
    plan: &Plan<'_>,
    dep: &DeploymentTry<'_>,
    seen: &Seen,
    verdict: &Verdict,
    step: &Step,
    report: &mut RequestReport,
) -> AttemptRecord {
    let mut rec = answered(dep, seen);
    rec.class = match verdict {
        Verdict::Truncated => Some(FailureClass::Truncated.as_str()),
        Verdict::Refusal => Some(FailureClass::ContentFiltered.as_str()),
        Verdict::Invalid(_) => Some(FailureClass::InvalidOutput.as_str()),
        Verdict::Good | Verdict::Empty => None,
    };
    let errors = match verdict {
        Verdict::Invalid(e) => e.join("; "),
        _ => String::new(),
    };
    let (next, reason) = match step {
        Step::FollowUp(FollowUp::Continue) => (
            "continue",
            format!(
                "cut by max_tokens; asking for the rest (round {})",
                dep.continuations + 1
            ),
        ),
        Step::FollowUp(FollowUp::Raise { max_tokens }) => (
            "raise",
            format!("cut by max_tokens; retrying with max_tokens {max_tokens}"),
        ),
        Step::FollowUp(FollowUp::Repair) => {
            log_content(
                plan,
                dep,
                seen.number,
                FailureClass::InvalidOutput,
                "repair",
            );
            ("repair", format!("invalid structured output: {errors}"))
        }
        Step::FallOver(_) => {
            log_content(
                plan,
                dep,
                seen.number,
                FailureClass::InvalidOutput,
                "fallback",
            );
            (
                "fallback",
                format!(
                    "invalid structured output after {} repairs: {errors}",
                    dep.repairs
                ),
            )
        }
        Step::HoldRefusal => {
            log_content(
                plan,
                dep,
                seen.number,
                FailureClass::ContentFiltered,
                "fallback",
            );
            (
                "fallback",
                "refusal; trying the deployments listed for refusals".into(),
            )
        }
        Step::Accept(Flag::Truncated) => {
            report.truncated = true;
            ("ok", "cut by max_tokens; returned flagged".into())
        }
        Step::Accept(Flag::Refusal) => {
            report.refusal = true;
            ("ok", "refusal; returned flagged".into())
        }
        _ => return rec,
    };
    rec.next = next;
    rec.reason = reason;
    if plan.mode == Mode::Stream && next != "ok" {
        // Nothing of this stream reached the client.
        rec.reason.push_str(" (before commit)");
    }
    rec
}

/// The record of a failed attempt, for `step`; logs it.
pub(crate) fn failure_record(
    plan: &Plan<'_>,
    dep: &DeploymentTry<'_>,
    seen: &Seen,
    c: &Classification,
    step: &Step,
) -> AttemptRecord {
    let mut rec = AttemptRecord {
        deployment: dep.spec().name.clone(),
        attempt: seen.number,
        class: Some(c.class.as_str()),
        status: c.status,
        latency_ms: seen.latency.as_millis() as u64,
        next: "fail",
        delay_ms: None,
        reason: c.message.clone().unwrap_or_default(),
    };
    let log = |next: &str, delay: Option<Duration>, why: &str| {
        log_attempt(plan, dep.spec(), seen, c, next, delay, why)
    };
    match *step {
        Step::FollowUp(FollowUp::KeySwitch { from, to }) => {
            rec.next = "key_switch";
            rec.reason = format!(
                "{}; key #{from} rate limited, switching to key #{to}",
                rec.reason
            );
            crate::keypool::log_switch(plan.call, plan.route, dep.spec(), seen.number, c, from, to);
        }
        Step::FailFast => log("fail", None, "not_retryable"),
        Step::Retry { delay, reason } => {
            rec.next = "retry";
            rec.delay_ms = Some(delay.as_millis() as u64);
            rec.reason = format!("{}; {}", rec.reason, reason_str(reason));
            log("retry", Some(delay), reason_str(reason));
        }
        Step::FallOver(FallOver::LongWait { delay, reason }) => {
            rec.next = "fallback";
            rec.reason = format!(
                "{}; wait of {} ms ({}) exceeds failover_after, falling over",
                rec.reason,
                delay.as_millis(),
                reason_str(reason)
            );
            let why = format!("failover ({} wait)", reason_str(reason));
            log("fallback", Some(delay), &why);
        }
        Step::FallOver(FallOver::GiveUp(why)) => {
            rec.next = "fallback";
            rec.reason = format!("{}; {:?}", rec.reason, why);
            log("fallback", None, &format!("failover ({why:?})"));
        }
        Step::FallOver(over) => {
            rec.next = "fallback";
            let why = match over {
                FallOver::Exhausted => "failover (attempts exhausted)",
                _ => "failover (class)",
            };
            log("fallback", None, why);
        }
        Step::Accept(_) | Step::FollowUp(_) | Step::HoldRefusal => {}
    }
    rec
}

/// Records a successful answer in the report and counters.
pub(crate) fn finish_ok(
    st: &EngineState,
    plan: &Plan<'_>,
    won: Won,
    number: u32,
    report: &mut RequestReport,
) -> (Success, usize) {
    let (spec, pos, latency) = (&st.deployments[won.di].spec, won.pos, won.latency);
    // Hot path: a first-try answer from the first deployment explains
    // nothing, so it is logged at debug (the metrics count it); formatting
    // and writing a line per request cost ~5% of Keel's CPU in `keel bench
    // overhead`. Answers after a retry or a fallback stay at info.
    macro_rules! attempt_ok {
        ($level:expr) => {
            tracing::event!(
                $level,
                request_id = %plan.call.options.request_id,
                route = %plan.route.name,
                deployment = %spec.name,
                attempt = number,
                class = "ok",
                status = 200u16,
                latency_ms = latency.as_millis() as u64,
                next = "ok",
                "attempt ok"
            )
        };
    }
    if number > 1 || pos > 0 {
        attempt_ok!(tracing::Level::INFO);
    } else {
        attempt_ok!(tracing::Level::DEBUG);
    }
    report.deployment = Some(spec.name.clone());
    report.fallback_depth = pos;
    if pos > 0 {
        st.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        st.metrics.fallback(&plan.route.name, "chain", pos);
    }
    match &won.success {
        Success::Full(r) => {
            if let Some(u) = r.usage() {
                st.metrics
                    .usage(won.di, u.prompt_tokens, u.completion_tokens);
            }
        }
        Success::Plain(p) => st.metrics.usage(won.di, p.input_tokens, 0),
        Success::Stream(_) => {}
    }
    (won.success, won.di)
}

/// Records the first attempt as cancelled after its hedge won: its claims
/// go back when `adm` is dropped, and its record goes before the hedge's.
pub(crate) fn cancelled(
    dep: &DeploymentTry<'_>,
    mode_answered: &str,
    sent: Instant,
    report: &mut RequestReport,
) {
    let rec = AttemptRecord {
        deployment: dep.spec().name.clone(),
        attempt: dep.sent,
        class: None,
        status: None,
        latency_ms: now().saturating_duration_since(sent).as_millis() as u64,
        next: "cancelled",
        delay_ms: None,
        reason: format!("cancelled: the hedge {mode_answered} first (this attempt had not)"),
    };
    let at = report.attempts.len().saturating_sub(1);
    report.insert_attempt(at, rec);
}

fn log_content(
    plan: &Plan<'_>,
    dep: &DeploymentTry<'_>,
    attempt: u32,
    class: FailureClass,
    next: &str,
) {
    warn!(
        request_id = %plan.call.options.request_id,
        route = %plan.route.name,
        deployment = %dep.spec().name,
        attempt,
        class = class.as_str(),
        status = 200,
        next,
        commit = commit_word(plan.mode),
        "answer rejected on content"
    );
}

/// The words for a delay's reason in records and logs.
pub(crate) fn reason_str(r: DelayReason) -> &'static str {
    match r {
        DelayReason::Backoff => "backoff",
        DelayReason::Hint(HintSource::RetryAfterMs) => "hint retry-after-ms",
        DelayReason::Hint(HintSource::RetryAfter) => "hint retry-after",
        DelayReason::Hint(HintSource::RateLimitReset) => "hint x-ratelimit-reset",
        DelayReason::Hint(HintSource::AnthropicReset) => "hint anthropic-ratelimit-reset",
        DelayReason::Hint(HintSource::RetryInfo) => "hint RetryInfo",
    }
}

/// One failed attempt's log line.
fn log_attempt(
    plan: &Plan<'_>,
    dep: &Deployment,
    seen: &Seen,
    c: &Classification,
    next: &str,
    delay: Option<Duration>,
    why: &str,
) {
    warn!(
        request_id = %plan.call.options.request_id,
        route = %plan.route.name,
        deployment = %dep.name,
        attempt = seen.number,
        class = c.class.as_str(),
        status = c.status.unwrap_or(0),
        latency_ms = seen.latency.as_millis() as u64,
        next,
        delay_ms = delay.map(|d| d.as_millis() as u64).unwrap_or(0),
        delay_reason = why,
        commit = commit_word(plan.mode),
        "attempt failed"
    );
}

/// Where a failed attempt's answer stood for the client, in log lines: a
/// stream's failures in the chain all come before its commit (after it,
/// the pump logs "after commit"); a plain answer has none.
fn commit_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Stream => "before commit",
        Mode::Full | Mode::Plain => "-",
    }
}
