//! OpenTelemetry traces (SPEC §15, docs/traces.md): one SERVER span per
//! request, named `{operation} {route}`, covering the logical operation
//! with all its retries, and one CLIENT span per upstream attempt.
//!
//! Why spans are written after the fact: the chain already keeps a record
//! of every attempt ([`AttemptRecord`]) for the request report, so the
//! trace is that record with times and ids. The engine calls three hooks,
//! each a single branch on `report.trace` when traces are off: when an
//! attempt is sent ([`RequestReport::trace_sent`], which also gives the
//! attempt's `traceparent`), when a record is added
//! ([`RequestReport::push_attempt`]), and when the request ends
//! ([`Tracer::end`]). The spans are built then, off the answer's path, and
//! handed to a queue that never makes a request wait ([`export`]).

mod exemplars;
mod export;
mod spans;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use keel_policy::FailureClass;

use crate::call::{ChatCall, ChatOutcome, ClientApi, EngineError, RequestReport, StreamOutcome};
use crate::config::Telemetry;
use crate::timeline::{AnswerFacts, RequestTrace, SpanIds};
pub(crate) use crate::traceparent::Propagated;
use crate::traceparent::{parse_traceparent, SpanContext};
use crate::transport::HttpClient;
use crate::EngineState;
pub(crate) use export::ExportStats;

/// Set once any engine exports traces: until then the upstream request
/// path does not look for a `traceparent` to send.
static ANY_TRACER: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    /// The trace context of the attempt whose future is being polled.
    static UPSTREAM_CONTEXT: Propagated;
}

/// The trace context the current attempt sends upstream, if it is traced.
/// A relaxed load when no engine traces.
pub(crate) fn upstream_context() -> Option<Propagated> {
    if !ANY_TRACER.load(Ordering::Relaxed) {
        return None;
    }
    UPSTREAM_CONTEXT.try_with(Propagated::clone).ok()
}

/// `attempt` sending `context` upstream.
pub(crate) fn scoped<F: std::future::Future>(
    context: Propagated,
    attempt: F,
) -> tokio::task::futures::TaskLocalFuture<Propagated, F> {
    UPSTREAM_CONTEXT.scope(context, attempt)
}

/// Runs the future `make` builds (one upstream attempt) sending `context`
/// upstream. The attempt's future is built here, in place: passing it in
/// would copy all of it into this one.
pub(crate) async fn with_context<F: std::future::Future>(
    context: Option<Propagated>,
    make: impl FnOnce() -> F,
) -> F::Output {
    match context {
        Some(c) => UPSTREAM_CONTEXT.scope(c, make()).await,
        None => make().await,
    }
}

/// An engine's exporter and sampler.
pub(crate) struct Tracer {
    pub config: Telemetry,
    exporter: export::Exporter,
    exemplars: exemplars::Exemplars,
    ids: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

impl Tracer {
    pub fn new(config: Telemetry, client: HttpClient) -> Tracer {
        ANY_TRACER.store(true, Ordering::Relaxed);
        Tracer {
            exporter: export::Exporter::new(&config, client),
            exemplars: Default::default(),
            config,
            ids: Default::default(),
            counter: AtomicU64::new(0),
        }
    }

    /// The exporter's counters.
    pub fn stats(&self) -> &ExportStats {
        &self.exporter.stats
    }

    /// Waits until the spans of every request that ended have been exported.
    pub async fn flush(&self) {
        self.exporter.flush().await
    }

    /// 64 unpredictable bits (SipHash of a counter under a random key).
    fn random_u64(&self) -> u64 {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        match h.finish() {
            0 => 1,
            x => x,
        }
    }

    fn span_id(&self) -> [u8; 8] {
        self.random_u64().to_be_bytes()
    }

    /// The trace of `call`: a child of the client's `traceparent`, or a new
    /// trace sampled at `sample_ratio` (parent-based, as OpenTelemetry's
    /// default sampler).
    pub fn begin(&self, call: &ChatCall, started: Instant) -> Box<RequestTrace> {
        let parent = call
            .options
            .traceparent
            .as_deref()
            .and_then(parse_traceparent);
        let ctx = match parent {
            Some(p) => SpanContext {
                span_id: self.span_id(),
                ..p
            },
            None => {
                let hi = self.random_u64();
                let lo = self.random_u64();
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&hi.to_be_bytes());
                trace_id[8..].copy_from_slice(&lo.to_be_bytes());
                // TraceIdRatioBased: the low 63 bits against the ratio.
                let r = self.config.sample_ratio;
                let sampled = r >= 1.0 || ((lo >> 1) as f64) < r * (1u64 << 63) as f64;
                SpanContext {
                    trace_id,
                    span_id: self.span_id(),
                    sampled,
                }
            }
        };
        let request = call.request();
        Box::new(RequestTrace {
            ctx,
            parent: parent.map(|p| p.span_id),
            tracestate: call.options.tracestate.clone().unwrap_or_default(),
            started,
            wall: SystemTime::now() - crate::now().saturating_duration_since(started),
            operation: match call.api {
                ClientApi::Responses => "responses",
                _ => "chat",
            },
            tenant: call.options.tenant.clone(),
            max_tokens: request.effective_max_tokens(),
            temperature: request.temperature,
            sends: Vec::new(),
            events: Vec::new(),
            last_next: None,
            next_kind: None,
            pending_delay: None,
            stream: None,
            span_ids: Arc::new(SpanIds {
                state: self.ids.clone(),
                counter: AtomicU64::new(self.random_u64()),
            }),
        })
    }

    /// Ends the request's trace: builds its spans from `trace` and `report`
    /// and queues them (when sampled).
    pub fn end(&self, st: &crate::EngineState, trace: &RequestTrace, end: End<'_>) {
        if !trace.ctx.sampled {
            return;
        }
        self.exemplify(trace, &end);
        let spans = spans::build(st, trace, end);
        self.exporter.submit(spans);
    }

    /// Makes the request an exemplar of the latency histograms it was
    /// observed in: the request's, its first token's, each attempt's.
    fn exemplify(&self, trace: &RequestTrace, end: &End<'_>) {
        use exemplars::{ATTEMPT, FIRST_TOKEN, REQUEST};
        let (x, trace_id) = (&self.exemplars, trace.ctx.trace_hex());
        let route = end.report.route.as_str();
        let elapsed = end.at.saturating_duration_since(trace.started);
        let stream = if end.stream { "true" } else { "false" };
        x.record(&REQUEST, &[route, stream], elapsed, &trace_id, None);
        if let Some(e) = trace.events.iter().find(|e| e.name == "keel.first_token") {
            let ttft = e.at.saturating_duration_since(trace.started);
            x.record(&FIRST_TOKEN, &[route], ttft, &trace_id, None);
        }
        for s in &trace.sends {
            if let (Some(r), Some(at)) = (&s.record, s.end) {
                let outcome = if r.class.is_some() { "error" } else { "ok" };
                let took = at.saturating_duration_since(s.at);
                let span = Some(
                    SpanContext {
                        span_id: s.span_id,
                        ..trace.ctx
                    }
                    .span_hex(),
                );
                x.record(&ATTEMPT, &[&s.deployment, outcome], took, &trace_id, span);
            }
        }
    }

    /// Adds the exemplars to rendered metrics.
    pub fn annotate(&self, metrics: &mut String) {
        self.exemplars.annotate(metrics);
    }
}

/// How the request ended, for its SERVER span.
pub(crate) struct End<'a> {
    pub report: &'a RequestReport,
    pub at: Instant,
    /// Usage, finish reason and response id of the answer.
    pub answer: Option<AnswerFacts>,
    /// The error's class (or kind) when the request failed.
    pub error: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
}

/// The `tracing` span that gives a request's log lines its `trace_id` and
/// `span_id` (JSON logs show them under `span`).
pub(crate) fn log_span(trace: &RequestTrace) -> tracing::Span {
    tracing::info_span!(
        "request",
        trace_id = %trace.ctx.trace_hex(),
        span_id = %trace.ctx.span_hex()
    )
}

/// Puts the request's trace (when traced) into its report.
pub(crate) fn attach(trace: &mut Option<Box<RequestTrace>>, report: &mut RequestReport) {
    if let Some(t) = trace.take() {
        report.trace_id = Some(t.ctx.trace_hex());
        report.trace = Some(t);
    }
}

/// What the SERVER span says of `answer`.
fn answer_facts(answer: &crate::call::FullAnswer) -> AnswerFacts {
    let usage = answer.usage();
    AnswerFacts {
        input_tokens: usage.map(|u| u.prompt_tokens),
        output_tokens: usage.map(|u| u.completion_tokens),
        finish_reason: answer.first_choice().finish_reason.map(str::to_string),
        response_id: Some(answer.get().id.clone()).filter(|id| !id.is_empty()),
    }
}

/// The class a failed request ends with: its last attempt's, else its kind.
fn error_class(e: &EngineError) -> String {
    e.meta
        .attempts
        .iter()
        .rev()
        .find_map(|a| a.class)
        .map(str::to_string)
        .unwrap_or_else(|| {
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "error".into())
        })
}

/// Ends a plain request's trace.
pub(crate) fn end_chat(
    tracer: &Tracer,
    st: &EngineState,
    result: &Result<ChatOutcome, EngineError>,
) {
    let at = crate::now();
    match result {
        Ok(o) => {
            if let Some(t) = &o.meta.trace {
                let answer = Some(answer_facts(o.answer()));
                let end = End {
                    report: &o.meta,
                    at,
                    answer,
                    error: None,
                    stream: false,
                };
                tracer.end(st, t, end);
            }
        }
        Err(e) => end_error(tracer, st, e, at, false),
    }
}

/// Ends a streamed request's trace, unless its stream is being pumped
/// (then [`Open`] ends it with the stream).
pub(crate) fn end_stream(
    tracer: &Tracer,
    st: &EngineState,
    result: &Result<StreamOutcome, EngineError>,
) {
    let at = crate::now();
    match result {
        Ok(o) => {
            if let Some(t) = &o.meta.trace {
                let end = End {
                    report: &o.meta,
                    at,
                    answer: None,
                    error: None,
                    stream: true,
                };
                tracer.end(st, t, end);
            }
        }
        Err(e) => end_error(tracer, st, e, at, true),
    }
}

fn end_error(tracer: &Tracer, st: &EngineState, e: &EngineError, at: Instant, stream: bool) {
    if let Some(t) = &e.meta.trace {
        let end = End {
            report: &e.meta,
            at,
            answer: None,
            error: Some(error_class(e)),
            stream,
        };
        tracer.end(st, t, end);
    }
}

/// The trace of a stream being pumped: ended when the pump drops it.
pub(crate) struct Open {
    inner: Arc<EngineState>,
    trace: Option<Box<RequestTrace>>,
    /// The report as the stream was committed.
    report: RequestReport,
}

impl Open {
    /// Takes the trace out of `report` as its stream is committed.
    pub fn commit(inner: &Arc<EngineState>, report: &mut RequestReport) -> Option<Open> {
        let mut trace = report.trace.take()?;
        trace.committed();
        Some(Open {
            inner: inner.clone(),
            trace: Some(trace),
            report: report.clone(),
        })
    }

    /// Lends the trace to `report`, the report of a follow-up round
    /// (`kind`: `resume` or `continuation`).
    pub fn lend(&mut self, report: &mut RequestReport, kind: &'static str) {
        if let Some(mut t) = self.trace.take() {
            t.next_round(kind);
            report.trace = Some(t);
        }
    }

    /// Takes the trace back after the round; its first token, if it
    /// answered, comes now.
    pub fn take_back(&mut self, report: &mut RequestReport) {
        self.trace = report.trace.take();
    }

    /// The stream's round ended (`failure`: it broke); `usage`: the
    /// answer's so far; `id`: the answer's id as the client sees it.
    pub fn round_ended(
        &mut self,
        failure: Option<FailureClass>,
        usage: Option<&keel_wire::openai::Usage>,
        id: Option<&str>,
    ) {
        if let Some(t) = &mut self.trace {
            t.stream_round_ended(failure);
            let facts = t.stream.get_or_insert_with(Default::default);
            if let Some(u) = usage {
                facts.answer.input_tokens = Some(u.prompt_tokens);
                facts.answer.output_tokens = Some(u.completion_tokens);
            }
            if let Some(id) = id.filter(|id| !id.is_empty()) {
                facts.answer.response_id = Some(id.to_string());
            }
        }
    }

    /// The stream carried the finish reason `reason` (the last one counts:
    /// a `length` held back for a continuation is followed by the rest's).
    pub fn finished_with(&mut self, reason: &str) {
        if let Some(t) = &mut self.trace {
            let facts = t.stream.get_or_insert_with(Default::default);
            facts.answer.finish_reason = Some(reason.to_string());
        }
    }

    /// The stream ended with an error item of `class`.
    pub fn failed(&mut self, class: FailureClass) {
        if let Some(t) = &mut self.trace {
            t.stream.get_or_insert_with(Default::default).error = Some(class.as_str().into());
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let (Some(tracer), Some(t)) = (&self.inner.tracer, &self.trace) {
            let end = End {
                report: &self.report,
                at: crate::now(),
                answer: None,
                error: None,
                stream: true,
            };
            tracer.end(&self.inner, t, end);
        }
    }
}
