//! Stage 3, *attempt*: the one place that builds an upstream body, picks
//! the key and sends a request or opens a stream, hedged or not.

mod hedge;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keel_policy::Classification;
use keel_wire::openai::ChatRequest;

use crate::admit::Admission;
use crate::call::{EngineError, ErrorKind, RequestReport};
use crate::config::{Deployment, ProviderKind};
use crate::outcome::{Mode, Reply, Won};
use crate::plan::{DeploymentTry, Plan};
use crate::stream::{OpenStream, StreamLimits};
use crate::{content, traces, upstream};
use crate::{now, EngineState};

/// A body ready to send to one deployment.
pub(crate) struct Prepared {
    body: Vec<u8>,
    /// The body is a Responses request for a native Responses deployment.
    responses: bool,
    /// The JSON-schema tool's name on Anthropic deployments.
    schema_tool: Option<String>,
}

/// The body `dep` is sent: the client's request (its own bytes where they
/// can pass through) while `edited` is `None`, else the request Keel wrote,
/// adapted for `dep`'s structured output support. The body's type decides
/// which ([`upstream::Ask`]).
pub(crate) fn prepare(
    plan: &Plan<'_>,
    dep: &Deployment,
    edited: Option<&ChatRequest>,
) -> Result<Prepared, String> {
    let call = plan.call;
    if plan.mode == Mode::Plain {
        let body = crate::plain::body(dep, call)?;
        return Ok(Prepared {
            body,
            responses: false,
            schema_tool: None,
        });
    }
    let adapted = content::adapt_for(dep, edited.unwrap_or(call.request()), &plan.json_mode);
    let ask = upstream::Ask::of(call, edited, &adapted);
    let stream = plan.mode == Mode::Stream || streams_upstream(plan, dep);
    let body = upstream::build_body(dep, ask, call.api, stream)?;
    let schema_tool = upstream::schema_tool_name(dep, ask).map(str::to_owned);
    let responses = upstream::native_responses(dep, ask);
    Ok(Prepared {
        body,
        responses,
        schema_tool,
    })
}

/// What the attempt stage returns.
pub(crate) enum Attempted {
    /// The attempt's own reply, and when it was sent.
    Own(Result<Reply, Classification>, Instant),
    /// A hedge on another deployment answered first; its record is in
    /// the report.
    HedgeWon(Won, Instant),
}

/// Sends the next attempt on `dep` (admitted by `adm`), hedged when the
/// route asks for it. A 400 when no body can be built for `dep`.
pub(crate) async fn run(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &mut DeploymentTry<'_>,
    adm: &mut Admission<'_>,
    report: &mut RequestReport,
) -> Result<Attempted, EngineError> {
    dep.sent += 1;
    report.upstream_attempts += 1;
    dep.rt.counters.attempts.fetch_add(1, Ordering::Relaxed);
    if dep.counted > 0 {
        st.counters.retries.fetch_add(1, Ordering::Relaxed);
    }
    let remaining = plan.deadline.saturating_duration_since(now());
    let prepared = prepare(plan, dep.spec(), dep.edited.as_ref())
        .map_err(|msg| EngineError::new(400, ErrorKind::InvalidRequest, msg, report.clone()))?;
    let kdep = wire(keyed(dep), &prepared);
    let sent = now();
    let context = report.trace_sent(&dep.spec().name, dep.keys.current, false);
    let policy = &plan.route.policy;
    let hedged = plan.route.hedge.is_some();
    // Boxed: the race holds two attempts, and an inline future that size
    // is copied on every move (measured as ~5% of Keel's CPU in memmove).
    let raced = match plan.mode {
        Mode::Full if hedged => {
            let primary =
                traces::with_context(context, || full(st, plan, &kdep, prepared, remaining));
            crate::boxed_in_place(|| hedge::race(st, plan, dep.pos, primary, report)).await
        }
        // Awaited here: untraced, the attempt runs without a wrapper's
        // future around it (polled on every wake-up).
        Mode::Full => hedge::Raced::Primary(match context {
            None => full(st, plan, &kdep, prepared, remaining).await,
            Some(c) => traces::scoped(c, full(st, plan, &kdep, prepared, remaining)).await,
        }),
        Mode::Plain => {
            let timeout = policy.attempt_timeout.min(remaining);
            let primary = crate::plain::send(&st.client, &kdep, plan.call, prepared.body, timeout);
            if hedged {
                let primary = async { primary.await.map(Reply::Plain) };
                crate::boxed_in_place(|| hedge::race(st, plan, dep.pos, primary, report)).await
            } else {
                hedge::Raced::Primary(primary.await.map(Reply::Plain))
            }
        }
        Mode::Stream if hedged => {
            let open = move || async move {
                traces::with_context(context, || open(st, plan, &kdep, prepared, remaining))
                    .await
                    .map(Reply::Stream)
            };
            crate::boxed_in_place(|| hedge::race(st, plan, dep.pos, open(), report)).await
        }
        // As for a plain answer: no wrapper around an untraced attempt.
        Mode::Stream => hedge::Raced::Primary(
            crate::boxed_in_place(move || async move {
                match context {
                    None => open(st, plan, &kdep, prepared, remaining).await,
                    Some(c) => traces::scoped(c, open(st, plan, &kdep, prepared, remaining)).await,
                }
                .map(Reply::Stream)
            })
            .await,
        ),
    };
    adm.end();
    Ok(match raced {
        hedge::Raced::Primary(reply) if plan.mode == Mode::Stream => {
            Attempted::Own(window(st, plan, dep.di, reply).await, sent)
        }
        hedge::Raced::Primary(reply) => Attempted::Own(reply, sent),
        hedge::Raced::Hedge(win) => Attempted::HedgeWon(win, sent),
    })
}

/// Sends `p` to `dep` as the plan's mode asks (a hedge's attempt).
async fn send(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &Deployment,
    p: Prepared,
    remaining: Duration,
) -> Result<Reply, Classification> {
    match plan.mode {
        Mode::Full => full(st, plan, dep, p, remaining).await,
        Mode::Plain => {
            let timeout = plan.route.policy.attempt_timeout.min(remaining);
            crate::plain::send(&st.client, dep, plan.call, p.body, timeout)
                .await
                .map(Reply::Plain)
        }
        Mode::Stream => open(st, plan, dep, p, remaining).await.map(Reply::Stream),
    }
}

/// Whether a whole answer from `dep` is asked as a stream and assembled
/// (the deployment's `stream_upstream`; see [`crate::assemble`]).
fn streams_upstream(plan: &Plan<'_>, dep: &Deployment) -> bool {
    // Assembled from OpenAI's and Anthropic's SSE only: Gemini, Bedrock
    // and native Responses deployments are asked for whole answers.
    plan.mode == Mode::Full
        && dep.stream_upstream
        && matches!(
            dep.kind,
            ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Anthropic
        )
        && !dep.responses.speaks
}

/// `dep`'s adaptive first-token deadline for an attempt with `remaining`
/// left (see [`crate::config::FirstTokenDeadline`]).
fn first_token_deadline(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &Deployment,
    remaining: Duration,
) -> Duration {
    let policy = &plan.route.policy;
    // Below floor / factor, the p99 cannot move the deadline off its floor.
    let ft = policy.first_token;
    let bound =
        Duration::try_from_secs_f64(ft.floor.as_secs_f64() / ft.factor).unwrap_or(Duration::MAX);
    let p99 = st.deployments[dep.index]
        .signals
        .first_token_p99_above(bound);
    let cap = policy.first_token_timeout.min(remaining);
    policy.first_token.deadline(p99, cap)
}

/// Sends one whole-answer attempt: as a stream assembled into the answer
/// when `dep` streams upstream (which may come back [`Reply::Cut`]), else
/// as a plain request.
async fn full(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &Deployment,
    p: Prepared,
    remaining: Duration,
) -> Result<Reply, Classification> {
    let policy = &plan.route.policy;
    let timeout = policy.attempt_timeout.min(remaining);
    let schema_tool = p.schema_tool.as_deref();
    if !streams_upstream(plan, dep) {
        return upstream::send(&st.client, dep, p.body, timeout, schema_tool)
            .await
            .map(Reply::Full);
    }
    // Until its first token the attempt is bounded like any plain one;
    // after it, like a stream: it is alive while tokens come (a long answer
    // is not cut by `attempt_timeout`, which a provider's plain answer of
    // the same length would take as long to send).
    let limits = crate::assemble::Limits {
        first_token: first_token_deadline(st, plan, dep, remaining).min(timeout),
        inter_token: policy.inter_token_timeout,
        total: remaining,
    };
    let metrics = (&*st.metrics, dep.index);
    crate::assemble::send(&st.client, dep, p.body, limits, schema_tool, metrics).await
}

/// Opens a stream on `dep` and reads its first token.
async fn open(
    st: &EngineState,
    plan: &Plan<'_>,
    dep: &Deployment,
    p: Prepared,
    remaining: Duration,
) -> Result<Box<OpenStream>, Classification> {
    let policy = &plan.route.policy;
    // The deployment's adaptive first-token deadline, as for a plain
    // answer asked as a stream: a hung stream costs about a second.
    let limits = StreamLimits {
        first_token: first_token_deadline(st, plan, dep, remaining),
        inter_token: policy.inter_token_timeout,
        remaining,
    };
    OpenStream::open(&st.client, dep, p.body, limits, p.schema_tool.as_deref())
        .await
        .map(Box::new)
}

/// Reads an opened stream through its commit window (see
/// [`crate::config::CommitWindow`]): a failure there is the attempt's.
/// Anything else passes as it is.
pub(crate) async fn window(
    st: &EngineState,
    plan: &Plan<'_>,
    di: usize,
    reply: Result<Reply, Classification>,
) -> Result<Reply, Classification> {
    let window = plan.route.policy.stream_commit;
    match reply {
        Ok(Reply::Stream(mut s)) if window.is_on() => match s.fill_window(window).await {
            Ok(()) => Ok(Reply::Stream(s)),
            Err(c) => {
                st.metrics.stream_rejected(di, c.class);
                Err(c)
            }
        },
        other => other,
    }
}

/// `dep` as `p` reaches it: a native Responses request goes to its
/// `/responses` endpoint and its answer is read as a Response.
fn wire<'a>(dep: Cow<'a, Deployment>, p: &Prepared) -> Cow<'a, Deployment> {
    match p.responses {
        true => Cow::Owned(dep.responses_wire()),
        false => dep,
    }
}

/// `dep` with the key the request uses.
fn keyed<'a>(dep: &'a DeploymentTry<'_>) -> Cow<'a, Deployment> {
    crate::keypool::keyed(dep.spec(), dep.keys.current)
}
