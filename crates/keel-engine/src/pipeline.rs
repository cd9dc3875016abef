//! The one pipeline. For each request: route plan -> per deployment: breaker
//! -> limiter -> bulkhead -> attempt (timeout) -> classify -> retry or next
//! deployment -> static fallback -> error. Streaming and non-streaming share
//! this loop; they differ only in what an attempt returns (see [`Mode`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_policy::{Classification, Delay, DelayReason, FailureClass, GiveUpReason, HintSource};

use keel_wire::openai::{ChatRequest, ChatResponse, Choice, Message, Usage};

use crate::content::{self, JsonMode, RefusalPolicy, TruncationPolicy, Verdict};
use tracing::{info, warn};

use crate::call::{AttemptRecord, ChatCall, EngineError, ErrorKind, FullAnswer, Meta, Tier};
use crate::config::{Deployment, Route};
use crate::hedge::{Raced, Reply};
use crate::stream::OpenStream;
use crate::upstream;
use crate::{now, Inner};

/// What an attempt must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A whole answer.
    Full,
    /// An open stream with its first token read.
    Stream,
}

/// What a successful attempt produced.
pub(crate) enum Success {
    Full(FullAnswer),
    Stream(OpenStream),
}

/// The needs of a request, for capability matching.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needs {
    pub prompt_tokens: u32,
    /// The client's output limit (0: none given).
    pub max_tokens: u32,
    pub tools: bool,
    pub images: bool,
    pub stream: bool,
    /// Choices asked for (`n`).
    pub choices: u32,
    /// The API the client speaks (decides where its limit is clamped).
    pub api: crate::call::ClientApi,
}

impl Needs {
    pub(crate) fn of(call: &ChatCall, stream: bool) -> Needs {
        let r = call.request();
        Needs {
            prompt_tokens: estimate_prompt_tokens(r),
            max_tokens: r.effective_max_tokens().unwrap_or(0),
            tools: r.has_tools(),
            images: r.has_images(),
            stream,
            choices: r.n.unwrap_or(1),
            api: call.api,
        }
    }

    /// The output tokens `dep` would be asked for (its clamp applied).
    pub(crate) fn output_tokens(&self, dep: &Deployment) -> u32 {
        let asked = (self.max_tokens > 0).then_some(self.max_tokens);
        upstream::output_limit(dep.kind, self.api, asked, dep.max_output_tokens).unwrap_or(0)
    }

    /// Tokens the limiter reserves: the prompt plus the expected output.
    pub(crate) fn reserve_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(if self.max_tokens > 0 {
            self.max_tokens
        } else {
            512
        })
    }

    /// Why `dep` cannot serve this request, if it cannot.
    pub(crate) fn mismatch(&self, dep: &Deployment) -> Option<String> {
        let c = &dep.capabilities;
        let output = self.output_tokens(dep);
        if self.prompt_tokens.saturating_add(output) > dep.context_window {
            return Some(format!(
                "needs ~{} prompt + {} output tokens, context window is {}",
                self.prompt_tokens, output, dep.context_window
            ));
        }
        if self.choices > 1 && dep.kind == crate::config::ProviderKind::Anthropic {
            return Some(format!(
                "Anthropic generates one choice per request, n = {} was asked",
                self.choices
            ));
        }
        if self.tools && !c.tools {
            return Some("no tool support".into());
        }
        if self.images && !c.vision {
            return Some("no image support".into());
        }
        if self.stream && !c.streaming {
            return Some("no streaming".into());
        }
        None
    }
}

/// A rough token estimate (4 characters a token, plus per-message overhead).
pub(crate) fn estimate_prompt_tokens(r: &keel_wire::openai::ChatRequest) -> u32 {
    let chars = r.prompt_text_len() as u64;
    (chars / 4 + 4 * r.messages.len() as u64 + 3).min(u32::MAX as u64) as u32
}

/// Runs the chain for `call` and returns the first success, or an error
/// that lists every attempt. `exclude` removes a deployment (stream resume).
pub(crate) async fn run(
    inner: &Inner,
    call: &ChatCall,
    route: &Route,
    mode: Mode,
    exclude: Option<usize>,
    meta: &mut Meta,
) -> Result<(Success, usize), EngineError> {
    let policy = &route.policy;
    let started = now();
    let timeout = call.options.timeout.unwrap_or(policy.timeout);
    let deadline = started + timeout;
    let needs = Needs::of(call, mode == Mode::Stream);

    // Structured output: a bad schema is the client's error, before any upstream call.
    let json_mode = JsonMode::of(call.request(), route.json_schema.as_ref())
        .map_err(|msg| EngineError::new(400, ErrorKind::InvalidRequest, msg, meta.clone()))?;

    // Route plan: the chain, minus what cannot serve this request; then the
    // deployments listed for refusals, visited only after a refusal.
    let mut eligible: Vec<usize> =
        Vec::with_capacity(route.chain.len() + route.refusal_fallbacks.len());
    let mut reasons: Vec<String> = Vec::new();
    for &i in &route.chain {
        if Some(i) == exclude && route.chain.len() > 1 {
            continue;
        }
        let dep = &inner.deployments[i].spec;
        match needs.mismatch(dep) {
            None => eligible.push(i),
            Some(why) => reasons.push(format!("{}: {why}", dep.name)),
        }
    }
    crate::routing::order(
        inner,
        route,
        call,
        &needs,
        exclude,
        &mut eligible,
        &mut reasons,
    );
    if call.options.no_fallbacks {
        eligible.truncate(1);
    }
    if eligible.is_empty() {
        let too_long = route.chain.iter().all(|&i| {
            let d = &inner.deployments[i].spec;
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
            meta.clone(),
        );
        if too_long {
            e.code = Some("context_length_exceeded".into());
        }
        return Err(e);
    }
    let chain_len = eligible.len();
    if !call.options.no_fallbacks {
        for &i in &route.refusal_fallbacks {
            if !eligible.contains(&i) && needs.mismatch(&inner.deployments[i].spec).is_none() {
                eligible.push(i);
            }
        }
    }

    inner.lock_budget().record_request(started);
    let mut per_dep_attempts = call
        .options
        .max_attempts
        .unwrap_or(policy.backoff.max_attempts())
        .max(1);
    if call.options.sdk_retry_count > 0 {
        // The SDK already retries this request: do not multiply its retries.
        per_dep_attempts = per_dep_attempts
            .saturating_sub(call.options.sdk_retry_count)
            .max(1);
    }

    let mut last: Option<Classification> = None;
    let mut earliest_retry: Option<Duration> = None;
    let mut skipped_for_capacity = 0usize;
    let mut min_window: u32 = 0; // after a context overflow, only larger windows
    let mut budget_spent = false;
    // After a refusal, only the refusal deployments (when listed) are tried;
    // the refusal itself is the answer if nothing better comes.
    let mut refused: Option<(FullAnswer, usize, usize)> = None;

    'chain: for (pos, &di) in eligible.iter().enumerate() {
        let rt = &inner.deployments[di];
        let dep = &rt.spec;
        let refusal_only = pos >= chain_len;
        if refusal_only && refused.is_none() {
            break;
        }
        if refused.is_some()
            && !route.refusal_fallbacks.is_empty()
            && !route.refusal_fallbacks.contains(&di)
        {
            continue;
        }
        if dep.context_window <= min_window {
            meta.attempts.push(skip(
                dep,
                format!(
                    "context window {} not larger than the one that overflowed",
                    dep.context_window
                ),
            ));
            continue;
        }
        let mut attempt: u32 = 0; // counts toward max_attempts
        let mut tries: u32 = 0; // every attempt on this deployment, follow-ups included
        let mut prev_delay = Duration::ZERO;
        // What this deployment is asked next: the request, a continuation of
        // a truncated answer, or a repair of invalid JSON.
        // `None`: the client's own request.
        let mut edited: Option<ChatRequest> = None;
        let mut stitched = String::new();
        let mut usage_sum: Option<Usage> = None;
        // Output tokens of the last answer alone (`usage_sum` adds up rounds).
        let mut round_output: Option<u32> = None;
        let mut continuations = 0u32;
        let mut repairs = 0u32;
        let mut raised = false;
        let mut follow_up = false; // continuation/repair: progress, not a retry
                                   // Which of the deployment's keys this request uses (key pools).
        let mut keys = crate::keypool::KeyState::start(&rt.keys, now());
        loop {
            let t = now();
            if t >= deadline {
                break 'chain;
            }
            let remaining = deadline - t;

            // Shared breaker: another replica may have opened it (docs/design.md §9).
            if let Some(left) = crate::shared::breaker_open_elsewhere(inner, rt).await {
                meta.attempts.push(skip(
                    dep,
                    format!(
                        "breaker open (on another replica) for another {} ms",
                        left.as_millis()
                    ),
                ));
                earliest_retry = min_opt(earliest_retry, left);
                skipped_for_capacity += 1;
                continue 'chain;
            }

            // Breaker.
            if let Err(open) = rt.lock_breaker().try_acquire(t) {
                meta.attempts.push(skip(
                    dep,
                    format!(
                        "breaker open for another {} ms",
                        open.retry_after.as_millis()
                    ),
                ));
                earliest_retry = min_opt(earliest_retry, open.retry_after);
                skipped_for_capacity += 1;
                inner.metrics.breaker_rejected(di);
                log_skip(call, route, dep, "breaker_open");
                continue 'chain;
            }

            // Retry budget: every upstream attempt after the request's first
            // is a retry, except the first attempt on another deployment
            // that is answering well: the budget protects failing upstreams,
            // and a fallback to a healthy one adds no load to them (at the
            // start of an outage the budget is spent on the failing
            // deployment, and its requests must still reach the healthy one).
            let fallback_to_healthy = attempt == 0 && rt.signals.healthy();
            if meta.upstream_attempts > 0 && !follow_up && !fallback_to_healthy {
                let denied = inner.lock_budget().try_retry(t).is_err();
                if denied {
                    rt.lock_breaker().on_cancel(t);
                    inner
                        .counters
                        .budget_exhausted
                        .fetch_add(1, Ordering::Relaxed);
                    meta.attempts
                        .push(skip(dep, "retry budget exhausted".into()));
                    budget_spent = true;
                    inner.metrics.budget_exhausted();
                    log_skip(call, route, dep, "budget_exhausted");
                    if attempt > 0 {
                        // No retry here; a later deployment may still serve.
                        continue 'chain;
                    }
                    break 'chain;
                }
            }
            follow_up = false;

            // Rate limiter (estimated tokens); waits FIFO up to the queue bound.
            let max_wait = policy.max_queue_wait.min(remaining);
            let reservation = match rt
                .lock_limiter()
                .reserve(t, needs.reserve_tokens(), max_wait)
            {
                Ok(r) => r,
                Err(denied) => {
                    rt.lock_breaker().on_cancel(t);
                    meta.attempts.push(skip(
                        dep,
                        format!(
                            "local rate limit ({:?}) for another {} ms",
                            denied.cause,
                            denied.retry_after.as_millis()
                        ),
                    ));
                    earliest_retry = min_opt(earliest_retry, denied.retry_after);
                    skipped_for_capacity += 1;
                    inner.metrics.limiter_rejected(di, denied.cause.as_str());
                    log_skip(call, route, dep, "rate_limited_locally");
                    continue 'chain;
                }
            };
            inner
                .metrics
                .limiter_wait(di, reservation.ready_at.saturating_duration_since(t));
            if reservation.ready_at > t {
                let wait = reservation.ready_at - t;
                rt.counters
                    .limiter_wait_ms
                    .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
            }

            // Shared limit (docs/design.md §9): every replica books against one budget.
            match crate::shared::reserve(inner, rt, needs.reserve_tokens(), max_wait).await {
                Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                Ok(_) => {}
                Err(denied) => {
                    let t = now();
                    rt.lock_breaker().on_cancel(t);
                    rt.lock_limiter().cancel(t, &reservation);
                    meta.attempts.push(skip(
                        dep,
                        format!(
                            "local rate limit ({:?}, fleet-wide) for another {} ms",
                            denied.cause,
                            denied.retry_after.as_millis()
                        ),
                    ));
                    earliest_retry = min_opt(earliest_retry, denied.retry_after);
                    skipped_for_capacity += 1;
                    continue 'chain;
                }
            }

            // Bulkhead.
            let permit = match rt.bulkhead.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    let t = now();
                    rt.lock_breaker().on_cancel(t);
                    rt.lock_limiter().cancel(t, &reservation);
                    meta.attempts.push(skip(
                        dep,
                        format!("bulkhead full ({} in flight)", dep.max_in_flight),
                    ));
                    skipped_for_capacity += 1;
                    inner.metrics.bulkhead_rejected(di);
                    log_skip(call, route, dep, "bulkhead_full");
                    continue 'chain;
                }
            };

            // The attempt.
            attempt += 1;
            tries += 1;
            let number = tries;
            meta.upstream_attempts += 1;
            rt.counters.attempts.fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let remaining = deadline.saturating_duration_since(now());
            let adapted =
                content::adapt_for(dep, edited.as_ref().unwrap_or(call.request()), &json_mode);
            let ask = upstream::Ask::of(call, edited.as_ref(), &adapted);
            let body = match upstream::build_body(dep, ask, call.api, mode == Mode::Stream) {
                Ok(b) => b,
                Err(msg) => {
                    drop(permit);
                    let t = now();
                    rt.lock_breaker().on_cancel(t);
                    rt.lock_limiter().cancel(t, &reservation);
                    return Err(EngineError::new(
                        400,
                        ErrorKind::InvalidRequest,
                        msg,
                        meta.clone(),
                    ));
                }
            };
            let schema_tool = upstream::schema_tool_name(dep, ask);
            let kdep = crate::keypool::keyed(dep, keys.current);
            let sent = now();
            let first = crate::hedge::FirstAttempt {
                di,
                next: &eligible[pos + 1..chain_len.max(pos + 1)],
                mode,
                timeout: match mode {
                    Mode::Full => policy.attempt_timeout,
                    Mode::Stream => policy.first_token_timeout,
                },
                inter_token_timeout: policy.inter_token_timeout,
                deadline,
            };
            // Boxed: the race holds two attempts, and an inline future that
            // size is copied on every move (measured as ~5% of Keel's CPU
            // in memmove).
            let raced = match mode {
                Mode::Full => {
                    let timeout = policy.attempt_timeout.min(remaining);
                    let primary = upstream::send(&inner.client, &kdep, body, timeout, schema_tool);
                    if route.hedge.is_some() {
                        let primary = async { primary.await.map(Reply::Full) };
                        crate::boxed_in_place(|| {
                            crate::hedge::race(inner, call, route, &json_mode, first, primary, meta)
                        })
                        .await
                    } else {
                        Raced::Primary(primary.await.map(Reply::Full))
                    }
                }
                Mode::Stream => {
                    let open = || {
                        OpenStream::open(
                            &inner.client,
                            &kdep,
                            body,
                            policy.first_token_timeout.min(remaining),
                            policy.inter_token_timeout,
                            remaining,
                            schema_tool,
                        )
                    };
                    if route.hedge.is_some() {
                        let primary = async { open().await.map(Reply::Stream) };
                        crate::boxed_in_place(|| {
                            crate::hedge::race(inner, call, route, &json_mode, first, primary, meta)
                        })
                        .await
                    } else {
                        Raced::Primary(crate::boxed_in_place(open).await.map(Reply::Stream))
                    }
                }
            };
            let result = match raced {
                Raced::Primary(r) => r.map(|reply| match reply {
                    Reply::Full(a) => {
                        rt.lock_limiter().observe(now(), &a.rate_limits);
                        Success::Full(a.response)
                    }
                    Reply::Stream(s) => Success::Stream(s),
                }),
                Raced::Hedge(win) => {
                    drop(permit);
                    let wpos = crate::hedge::cancel_primary(
                        rt,
                        &reservation,
                        number,
                        sent,
                        mode,
                        win.di,
                        &eligible,
                        meta,
                    );
                    let wdep = &inner.deployments[win.di].spec;
                    return Ok(finish_ok(
                        inner,
                        call,
                        route,
                        meta,
                        win.success,
                        wdep,
                        win.di,
                        wpos,
                        1,
                        win.latency,
                    ));
                }
            };
            drop(permit);
            let t = now();
            let latency = t.saturating_duration_since(sent);
            let timing = match mode {
                Mode::Full => crate::routing::Timing::Answer,
                Mode::Stream => crate::routing::Timing::FirstToken,
            };

            // A 200 is judged on its content before it counts as an answer.
            let result = match result {
                Ok(Success::Full(mut resp)) => {
                    crate::cost::charge(inner, call, dep, resp.usage(), meta).await;
                    if !stitched.is_empty() {
                        let whole = format!("{stitched}{}", content::answer_text(resp.get()));
                        content::set_text(resp.edit(), whole);
                    }
                    round_output = resp.usage().map(|u| u.completion_tokens);
                    content::add_usage(&mut usage_sum, resp.usage());
                    if resp.usage() != usage_sum.as_ref() {
                        resp.edit().usage = usage_sum.clone();
                    }
                    let verdict = content::judge(&resp, &json_mode, &policy.content);
                    match verdict {
                        Verdict::Empty => Err(empty_answer()),
                        other => Ok((Success::Full(resp), other)),
                    }
                }
                Ok(s @ Success::Stream(_)) => Ok((s, Verdict::Good)),
                Err(c) => Err(c),
            };

            match result {
                Ok((success, verdict)) => {
                    let tokens = match &success {
                        Success::Full(r) => r.usage().map(|u| u.total_tokens),
                        Success::Stream(_) => None,
                    };
                    rt.lock_limiter().settle(
                        t,
                        &reservation,
                        tokens.unwrap_or(needs.reserve_tokens()),
                    );
                    // The deployment answered: healthy, whatever the content.
                    rt.record_outcome(t, None, latency, timing);
                    // Metrics show what the answer was: a rejected answer is
                    // counted under its content class, not as "ok".
                    let content_class = match &verdict {
                        Verdict::Truncated => Some(FailureClass::Truncated),
                        Verdict::Refusal => Some(FailureClass::ContentFiltered),
                        Verdict::Invalid(_) => Some(FailureClass::InvalidOutput),
                        Verdict::Good | Verdict::Empty => None,
                    };
                    inner.metrics.attempt(di, content_class, latency);
                    let mut rec = AttemptRecord {
                        deployment: dep.name.clone(),
                        attempt: number,
                        class: None,
                        status: Some(200),
                        latency_ms: latency.as_millis() as u64,
                        next: "ok",
                        delay_ms: None,
                        reason: if dep.api_keys.len() > 1 {
                            format!("answered (key #{})", keys.current)
                        } else {
                            "answered".into()
                        },
                    };
                    let Success::Full(mut resp) = success else {
                        meta.attempts.push(rec);
                        return Ok(finish_ok(
                            inner, call, route, meta, success, dep, di, pos, number, latency,
                        ));
                    };
                    match verdict {
                        Verdict::Truncated => {
                            let text = content::answer_text(resp.get());
                            let tools = resp
                                .get()
                                .choices
                                .first()
                                .is_some_and(|c| c.message.tool_calls.is_some());
                            rec.class = Some(FailureClass::Truncated.as_str());
                            let max = edited
                                .as_ref()
                                .unwrap_or(call.request())
                                .effective_max_tokens()
                                .unwrap_or(0);
                            let asked = call.request().effective_max_tokens();
                            let client_cut = !policy.content.continue_past_client_limit
                                && content::cut_by_client_limit(
                                    asked,
                                    upstream::output_limit(
                                        dep.kind,
                                        call.api,
                                        asked,
                                        dep.max_output_tokens,
                                    ),
                                    round_output,
                                );
                            match policy.content.truncation {
                                TruncationPolicy::Continue
                                    if continuations < policy.content.max_continuations
                                        && !tools
                                        && !client_cut =>
                                {
                                    continuations += 1;
                                    rec.next = "continue";
                                    rec.reason = format!("cut by max_tokens; asking for the rest (round {continuations})");
                                    meta.attempts.push(rec);
                                    edited = Some(content::continuation(call.request(), &text));
                                    stitched = text;
                                    follow_up = true;
                                    attempt -= 1;
                                    continue;
                                }
                                TruncationPolicy::Raise
                                    if !raised && max > 0 && max < dep.max_output_tokens =>
                                {
                                    raised = true;
                                    let larger = max.saturating_mul(2).min(dep.max_output_tokens);
                                    rec.next = "raise";
                                    rec.reason = format!(
                                        "cut by max_tokens; retrying with max_tokens {larger}"
                                    );
                                    meta.attempts.push(rec);
                                    let mut r = call.request().clone();
                                    if r.max_completion_tokens.is_some() {
                                        r.max_completion_tokens = Some(larger);
                                    } else {
                                        r.max_tokens = Some(larger);
                                    }
                                    edited = Some(r);
                                    stitched.clear();
                                    usage_sum = resp.get().usage.clone();
                                    follow_up = true;
                                    attempt -= 1;
                                    continue;
                                }
                                _ => {
                                    meta.truncated = true;
                                    rec.reason = "cut by max_tokens; returned flagged".into();
                                }
                            }
                        }
                        Verdict::Refusal => {
                            rec.class = Some(FailureClass::ContentFiltered.as_str());
                            let more = eligible[pos + 1..].iter().any(|j| {
                                route.refusal_fallbacks.is_empty()
                                    || route.refusal_fallbacks.contains(j)
                            });
                            if policy.content.refusal == RefusalPolicy::Fallback
                                && more
                                && refused.is_none()
                            {
                                rec.next = "fallback";
                                rec.reason =
                                    "refusal; trying the deployments listed for refusals".into();
                                log_content(
                                    call,
                                    route,
                                    dep,
                                    number,
                                    FailureClass::ContentFiltered,
                                    "fallback",
                                );
                                meta.attempts.push(rec);
                                refused = Some((resp, di, pos));
                                continue 'chain;
                            }
                            rec.reason = "refusal; returned flagged".into();
                            meta.refusal = true;
                        }
                        Verdict::Invalid(errors) => {
                            let text = content::answer_text(resp.get());
                            rec.class = Some(FailureClass::InvalidOutput.as_str());
                            if repairs < policy.content.max_repairs {
                                repairs += 1;
                                rec.next = "repair";
                                rec.reason =
                                    format!("invalid structured output: {}", errors.join("; "));
                                log_content(
                                    call,
                                    route,
                                    dep,
                                    number,
                                    FailureClass::InvalidOutput,
                                    "repair",
                                );
                                meta.attempts.push(rec);
                                edited = Some(content::repair(
                                    edited.as_ref().unwrap_or(call.request()),
                                    &text,
                                    &errors,
                                ));
                                stitched.clear();
                                follow_up = true;
                                attempt -= 1;
                                continue;
                            }
                            rec.next = "fallback";
                            rec.reason = format!(
                                "invalid structured output after {repairs} repairs: {}",
                                errors.join("; ")
                            );
                            log_content(
                                call,
                                route,
                                dep,
                                number,
                                FailureClass::InvalidOutput,
                                "fallback",
                            );
                            meta.attempts.push(rec);
                            let mut c = keel_policy::classify_invalid_output(&errors.join("; "));
                            c.status = Some(200);
                            last = Some(c);
                            continue 'chain;
                        }
                        Verdict::Good => {
                            if json_mode.is_on() {
                                content::clean_json(&mut resp, &json_mode);
                            }
                        }
                        Verdict::Empty => {}
                    }
                    meta.attempts.push(rec);
                    return Ok(finish_ok(
                        inner,
                        call,
                        route,
                        meta,
                        Success::Full(resp),
                        dep,
                        di,
                        pos,
                        number,
                        latency,
                    ));
                }
                Err(c) => {
                    rt.lock_limiter()
                        .settle(t, &reservation, needs.prompt_tokens);
                    rt.record_outcome(t, Some(c.class), latency, timing);
                    inner.metrics.attempt(di, Some(c.class), latency);
                    let mut rec = AttemptRecord {
                        deployment: dep.name.clone(),
                        attempt: number,
                        class: Some(c.class.as_str()),
                        status: c.status,
                        latency_ms: latency.as_millis() as u64,
                        next: "fail",
                        delay_ms: None,
                        reason: c.message.clone().unwrap_or_default(),
                    };
                    if c.class == FailureClass::ContextOverflow {
                        min_window = min_window.max(dep.context_window);
                    }
                    // Key pools: a 429 or quota error is about the key; the
                    // next attempt tries another key of this deployment first,
                    // outside the retry budget and max_attempts.
                    if matches!(
                        c.class,
                        FailureClass::RateLimited | FailureClass::QuotaExhausted
                    ) {
                        let from = keys.current;
                        if let Some(to) = keys.on_rate_limited(&rt.keys, t, c.hint.map(|h| h.after))
                        {
                            rec.next = "key_switch";
                            rec.reason = format!(
                                "{}; key #{from} rate limited, switching to key #{to}",
                                rec.reason
                            );
                            crate::keypool::log_switch(call, route, dep, number, &c, from, to);
                            meta.attempts.push(rec);
                            last = Some(c);
                            follow_up = true;
                            attempt -= 1;
                            continue;
                        }
                    }
                    // Fail fast: neither retry nor fallback helps.
                    if !c.action.retry_same && !c.action.fall_back {
                        log_attempt(
                            call,
                            route,
                            dep,
                            number,
                            &c,
                            latency,
                            "fail",
                            None,
                            "not_retryable",
                        );
                        meta.attempts.push(rec);
                        return Err(fail_fast(&c, meta));
                    }
                    let next_can_serve =
                        eligible[pos + 1..chain_len.max(pos + 1)].iter().any(|&j| {
                            let other = &inner.deployments[j];
                            other.spec.context_window > min_window && other.available(t)
                        });
                    if c.action.retry_same && attempt < per_dep_attempts {
                        let scale = rt.lock_adaptive().scale(t);
                        let delay = {
                            let mut rng = inner.lock_rng();
                            policy.backoff.next_delay(
                                attempt,
                                prev_delay,
                                c.hint,
                                Some(deadline.saturating_duration_since(t)),
                                scale,
                                &mut *rng,
                            )
                        };
                        match delay {
                            Delay::Wait { delay, reason } => {
                                if delay > policy.failover_after && next_can_serve {
                                    rec.next = "fallback";
                                    rec.reason = format!(
                                        "{}; wait of {} ms ({}) exceeds failover_after, falling over",
                                        rec.reason,
                                        delay.as_millis(),
                                        reason_str(reason)
                                    );
                                    let why = format!("failover ({} wait)", reason_str(reason));
                                    log_attempt(
                                        call,
                                        route,
                                        dep,
                                        number,
                                        &c,
                                        latency,
                                        "fallback",
                                        Some(delay),
                                        &why,
                                    );
                                    meta.attempts.push(rec);
                                    last = Some(c);
                                    continue 'chain;
                                }
                                rec.next = "retry";
                                rec.delay_ms = Some(delay.as_millis() as u64);
                                rec.reason = format!("{}; {}", rec.reason, reason_str(reason));
                                inner.metrics.retry(c.class);
                                log_attempt(
                                    call,
                                    route,
                                    dep,
                                    number,
                                    &c,
                                    latency,
                                    "retry",
                                    Some(delay),
                                    reason_str(reason),
                                );
                                meta.attempts.push(rec);
                                last = Some(c);
                                prev_delay = delay;
                                tokio::time::sleep(delay).await;
                                continue;
                            }
                            Delay::GiveUp(why) => {
                                if why == GiveUpReason::HintExceedsDeadline {
                                    if let Some(h) = c.hint {
                                        earliest_retry = min_opt(earliest_retry, h.after);
                                    }
                                }
                                rec.next = "fallback";
                                rec.reason = format!("{}; {:?}", rec.reason, why);
                                let why = format!("failover ({why:?})");
                                log_attempt(
                                    call, route, dep, number, &c, latency, "fallback", None, &why,
                                );
                                meta.attempts.push(rec);
                                last = Some(c);
                                continue 'chain;
                            }
                        }
                    }
                    if let Some(h) = c.hint {
                        earliest_retry = min_opt(earliest_retry, h.after);
                    }
                    rec.next = "fallback";
                    let why = if c.action.retry_same {
                        "failover (attempts exhausted)"
                    } else {
                        "failover (class)"
                    };
                    log_attempt(call, route, dep, number, &c, latency, "fallback", None, why);
                    meta.attempts.push(rec);
                    last = Some(c);
                    continue 'chain;
                }
            }
        }
    }

    // A refusal is still an answer when nothing better came.
    if let Some((resp, di, pos)) = refused {
        meta.refusal = true;
        let dep = &inner.deployments[di].spec;
        meta.deployment = Some(dep.name.clone());
        meta.fallback_depth = pos;
        return Ok((Success::Full(resp), di));
    }

    // Static fallback tier.
    if let Some(text) = &route.static_response {
        meta.tier = Tier::Static;
        meta.deployment = None;
        inner
            .counters
            .static_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        inner
            .metrics
            .fallback(&route.name, "static", eligible.len());
        let answer = FullAnswer::new(static_answer(&route.name, text));
        return Ok((Success::Full(answer), usize::MAX));
    }

    Err(final_error(
        route,
        last,
        meta,
        earliest_retry,
        skipped_for_capacity,
        budget_spent,
        now() >= deadline,
    ))
}

/// Records a successful answer in the meta and counters.
#[allow(clippy::too_many_arguments)]
fn finish_ok(
    inner: &Inner,
    call: &ChatCall,
    route: &Route,
    meta: &mut Meta,
    success: Success,
    dep: &Deployment,
    di: usize,
    pos: usize,
    attempt: u32,
    latency: Duration,
) -> (Success, usize) {
    // Hot path: a first-try answer from the first deployment explains
    // nothing, so it is logged at debug (the metrics count it); formatting
    // and writing a line per request cost ~5% of Keel's CPU in `keel bench
    // overhead`. Answers after a retry or a fallback stay at info.
    macro_rules! attempt_ok {
        ($level:expr) => {
            tracing::event!(
                $level,
                request_id = %call.options.request_id,
                route = %route.name,
                deployment = %dep.name,
                attempt,
                class = "ok",
                status = 200u16,
                latency_ms = latency.as_millis() as u64,
                next = "ok",
                "attempt ok"
            )
        };
    }
    if attempt > 1 || pos > 0 {
        attempt_ok!(tracing::Level::INFO);
    } else {
        attempt_ok!(tracing::Level::DEBUG);
    }
    meta.deployment = Some(dep.name.clone());
    meta.fallback_depth = pos;
    if pos > 0 {
        inner.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        inner.metrics.fallback(&route.name, "chain", pos);
    }
    if let Success::Full(r) = &success {
        if let Some(u) = r.usage() {
            inner
                .metrics
                .usage(di, u.prompt_tokens, u.completion_tokens);
        }
    }
    (success, di)
}

fn empty_answer() -> Classification {
    let mut c = keel_policy::classify_completion(None, false, false, false)
        .unwrap_or_else(|| keel_policy::classify_invalid_output("empty answer"));
    c.status = Some(200);
    c.message = Some("the answer had no content and no tool call".into());
    c
}

fn log_content(
    call: &ChatCall,
    route: &Route,
    dep: &Deployment,
    attempt: u32,
    class: FailureClass,
    next: &str,
) {
    warn!(
        request_id = %call.options.request_id,
        route = %route.name,
        deployment = %dep.name,
        attempt,
        class = class.as_str(),
        status = 200,
        next,
        "answer rejected on content"
    );
}

fn min_opt(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn skip(dep: &Deployment, reason: String) -> AttemptRecord {
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

fn reason_str(r: DelayReason) -> &'static str {
    match r {
        DelayReason::Backoff => "backoff",
        DelayReason::Hint(HintSource::RetryAfterMs) => "hint retry-after-ms",
        DelayReason::Hint(HintSource::RetryAfter) => "hint retry-after",
        DelayReason::Hint(HintSource::RateLimitReset) => "hint x-ratelimit-reset",
        DelayReason::Hint(HintSource::AnthropicReset) => "hint anthropic-ratelimit-reset",
    }
}

#[allow(clippy::too_many_arguments)]
fn log_attempt(
    call: &ChatCall,
    route: &Route,
    dep: &Deployment,
    attempt: u32,
    c: &Classification,
    latency: Duration,
    next: &str,
    delay: Option<Duration>,
    delay_reason: &str,
) {
    warn!(
        request_id = %call.options.request_id,
        route = %route.name,
        deployment = %dep.name,
        attempt,
        class = c.class.as_str(),
        status = c.status.unwrap_or(0),
        latency_ms = latency.as_millis() as u64,
        next,
        delay_ms = delay.map(|d| d.as_millis() as u64).unwrap_or(0),
        delay_reason,
        "attempt failed"
    );
}

/// A deployment passed over without an attempt (breaker open, budget spent, ...).
fn log_skip(call: &ChatCall, route: &Route, dep: &Deployment, delay_reason: &str) {
    info!(
        request_id = %call.options.request_id,
        route = %route.name,
        deployment = %dep.name,
        attempt = 0u32,
        next = "skip",
        delay_reason,
        "attempt skipped"
    );
}

fn fail_fast(c: &Classification, meta: &Meta) -> EngineError {
    let status = c.status.filter(|s| (400..500).contains(s)).unwrap_or(400);
    let mut e = EngineError::new(
        status,
        ErrorKind::InvalidRequest,
        c.message
            .clone()
            .unwrap_or_else(|| format!("upstream rejected the request ({})", c.class.as_str())),
        meta.clone(),
    );
    e.code = c.provider_code.clone();
    e
}

fn final_error(
    route: &Route,
    last: Option<Classification>,
    meta: &Meta,
    earliest_retry: Option<Duration>,
    skipped_for_capacity: usize,
    budget_spent: bool,
    timed_out: bool,
) -> EngineError {
    let summary = summarize(meta);
    let (status, kind, what) = if budget_spent {
        (
            503,
            ErrorKind::Unavailable,
            "the retry budget is exhausted (upstreams are failing broadly)".to_string(),
        )
    } else if timed_out {
        (
            504,
            ErrorKind::Timeout,
            "the request deadline passed".to_string(),
        )
    } else if let Some(c) = &last {
        match c.class {
            FailureClass::RateLimited | FailureClass::QuotaExhausted => (
                429,
                ErrorKind::RateLimited,
                "every deployment is rate limited".into(),
            ),
            FailureClass::Overloaded => (
                503,
                ErrorKind::Unavailable,
                "every deployment is overloaded".into(),
            ),
            FailureClass::Timeout => (504, ErrorKind::Timeout, "every deployment timed out".into()),
            FailureClass::ContextOverflow => (
                400,
                ErrorKind::InvalidRequest,
                "the prompt is too long for every deployment".into(),
            ),
            _ => (502, ErrorKind::Upstream, "every deployment failed".into()),
        }
    } else if skipped_for_capacity > 0 {
        let limited = meta
            .attempts
            .iter()
            .any(|a| a.reason.starts_with("local rate limit"));
        if limited {
            (
                429,
                ErrorKind::RateLimited,
                "every deployment is at its rate limit".into(),
            )
        } else {
            (
                503,
                ErrorKind::Unavailable,
                "every deployment is unavailable (circuit breakers open)".into(),
            )
        }
    } else {
        (502, ErrorKind::Upstream, "no deployment answered".into())
    };
    let last_error = last
        .as_ref()
        .and_then(|c| c.message.as_deref())
        .filter(|m| !m.is_empty())
        .map(|m| format!("; last error: {m}"))
        .unwrap_or_default();
    let mut e = EngineError::new(
        status,
        kind,
        format!(
            "route '{}': {what}; attempts: {summary}{last_error}",
            route.name
        ),
        meta.clone(),
    );
    if let Some(c) = &last {
        if c.class == FailureClass::ContextOverflow {
            e.code = Some("context_length_exceeded".into());
        }
    }
    // Retrying cannot help when every deployment refused the request itself.
    let refused = |class: &str| {
        [
            FailureClass::InvalidRequest,
            FailureClass::Auth,
            FailureClass::ContextOverflow,
        ]
        .iter()
        .any(|c| c.as_str() == class)
    };
    let mut failures = meta.attempts.iter().filter_map(|a| a.class).peekable();
    if failures.peek().is_some() && failures.all(refused) {
        e.retryable = false;
    }
    if matches!(status, 429 | 503) {
        e.retry_after = Some(
            earliest_retry
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(1)),
        );
    }
    e
}

fn summarize(meta: &Meta) -> String {
    if meta.attempts.is_empty() {
        return "none".into();
    }
    meta.attempts
        .iter()
        .map(|a| match a.class {
            Some(class) => format!(
                "{}#{} {}{}",
                a.deployment,
                a.attempt,
                class,
                a.status.map(|s| format!(" ({s})")).unwrap_or_default()
            ),
            None => format!("{} skipped: {}", a.deployment, a.reason),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The route's configured static answer.
fn static_answer(route: &str, text: &str) -> ChatResponse {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ChatResponse {
        id: format!("chatcmpl-keel-static-{created}"),
        object: "chat.completion".into(),
        created,
        model: route.to_string(),
        choices: vec![Choice {
            index: 0,
            message: Message::assistant(text),
            finish_reason: Some("stop".into()),
            logprobs: None,
            extra: Default::default(),
        }],
        usage: Some(Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            extra: Default::default(),
        }),
        system_fingerprint: None,
        extra: Default::default(),
    }
}
