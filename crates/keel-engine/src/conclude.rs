//! Stage 6, *conclude*: when no deployment gave an answer, a held refusal
//! is the answer, then the route's static tier, then an error that lists
//! every attempt, with the status its cause calls for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_policy::{Classification, FailureClass};
use keel_wire::openai::{ChatResponse, Choice, Message, Usage};

use crate::call::{EngineError, ErrorKind, FullAnswer, RequestReport, Tier};
use crate::config::Route;
use crate::outcome::Success;
use crate::plan::{Plan, RequestState};
use crate::{now, EngineState};

/// The chain's result when no deployment answered.
pub(crate) fn conclude(
    st: &EngineState,
    plan: &Plan<'_>,
    mut req: RequestState,
    report: &mut RequestReport,
) -> Result<(Success, usize), EngineError> {
    let route = plan.route;
    // A refusal is still an answer when nothing better came.
    if let Some(held) = req.refused.take() {
        report.refusal = true;
        report.deployment = Some(st.deployments[held.di].spec.name.clone());
        report.fallback_depth = held.pos;
        return Ok((held.answer, held.di));
    }
    // Static fallback tier (text: for chat answers only).
    if let Some(text) = route
        .static_response
        .as_ref()
        .filter(|_| plan.mode != crate::outcome::Mode::Plain)
    {
        report.tier = Tier::Static;
        report.deployment = None;
        st.counters.static_fallbacks.fetch_add(1, Ordering::Relaxed);
        st.metrics.fallback(&route.name, "static", plan.order.len());
        let answer = FullAnswer::new(static_answer(&route.name, text));
        return Ok((Success::Full(answer), usize::MAX));
    }
    Err(final_error(route, req, report, now() >= plan.deadline))
}

pub(crate) fn fail_fast(c: &Classification, meta: &RequestReport) -> EngineError {
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
    req: RequestState,
    meta: &RequestReport,
    timed_out: bool,
) -> EngineError {
    let RequestState {
        last,
        earliest_retry,
        skips,
        budget_spent,
        ..
    } = req;
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
    } else if skips.any() {
        // A limiter skip says "rate limited"; breakers and bulkheads "unavailable".
        let limited = skips.rate_limit > 0;
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

fn summarize(meta: &RequestReport) -> String {
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
