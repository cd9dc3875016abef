//! Embeddings (docs/embeddings.md): a request is split into parts every
//! deployment of the route takes (`max_batch_inputs`, and no part over a
//! deployment's tokens per minute), each part goes through the cache and
//! the chain on its own, concurrently, and the answer is reassembled with
//! every `index` in the client's order and `usage` summed.
//!
//! Why all or nothing: an answer missing some vectors, presented as whole,
//! would silently leave holes in the client's index. When a part fails for
//! good, the request fails, and its error lists every part's attempts.

use std::sync::Arc;

use futures_util::StreamExt;
use keel_wire::embeddings::{input_tokens, reassemble, EmbeddingsAnswer, EmbeddingsRequest};
use serde_json::Value;

use crate::call::{
    CacheStatus, CallOptions, ChatCall, EmbeddingsPart, EngineError, ErrorKind, RequestReport,
};
use crate::config::Route;
use crate::outcome::{Mode, PlainAnswer, Success};
use crate::requirements::MAX_EMBEDDING_INPUTS;
use crate::{cache, EngineState};

/// Most parts of one request in flight at once (the deployments' limiter
/// and bulkhead bound them further).
const MAX_CONCURRENT_PARTS: usize = 16;

/// Answers `request` on `route` (an embeddings route).
pub(crate) async fn run(
    st: &EngineState,
    request: EmbeddingsRequest,
    options: &CallOptions,
    route: &Route,
    report: &mut RequestReport,
) -> Result<Value, EngineError> {
    let model = request.model.clone();
    let parts = split(st, route, Arc::new(request), report)?;
    let n = parts.len();
    let concurrency = route
        .chain
        .iter()
        .map(|&i| st.deployments[i].spec.max_in_flight as usize)
        .min()
        .unwrap_or(1)
        .clamp(1, MAX_CONCURRENT_PARTS);
    let mut done: Vec<(usize, PartResult)> =
        futures_util::stream::iter(parts.into_iter().enumerate())
            .map(|(k, part)| async move { (k, run_part(st, route, part, options).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    done.sort_by_key(|(k, _)| *k);
    merge(report, n, &done);
    let failed = done
        .iter()
        .find_map(|(k, r)| r.answer.as_ref().err().map(|e| (*k, e)));
    if let Some((k, e)) = failed {
        let answered = done.iter().filter(|(_, r)| r.answer.is_ok()).count();
        let mut err = e.clone();
        if n > 1 {
            let range = &done[k].1.range;
            err.message = format!(
                "part {} of {n} (inputs {}..{}) failed: {}; {answered} of {n} parts answered, and no partial answer is returned",
                k + 1,
                range.start,
                range.end,
                e.message
            );
        }
        err.meta = report.clone();
        return Err(err);
    }
    let mut answers = Vec::with_capacity(n);
    for (_, r) in done {
        let Ok(plain) = r.answer else { continue };
        let read = EmbeddingsAnswer::read(&plain.body, r.range.len()).map_err(|why| {
            EngineError::new(
                500,
                ErrorKind::Upstream,
                format!("internal: {why}"),
                report.clone(),
            )
        })?;
        answers.push((r.range.start, read));
    }
    Ok(reassemble(&model, answers))
}

/// One part's outcome.
struct PartResult {
    range: std::ops::Range<usize>,
    answer: Result<PlainAnswer, EngineError>,
    report: RequestReport,
}

async fn run_part(
    st: &EngineState,
    route: &Route,
    part: EmbeddingsPart,
    options: &CallOptions,
) -> PartResult {
    let range = part.range.clone();
    let mut report = RequestReport::new(&options.request_id, &route.name);
    let answer = match ChatCall::embeddings_part(&route.name, part, options.clone()) {
        Ok(call) => {
            let slot = cache::Slot::of(&call, route, &st.config);
            match slot.run(st, &call, route, Mode::Plain, &mut report).await {
                Ok((Success::Plain(p), _)) => Ok(p),
                Ok(_) => Err(EngineError::new(
                    500,
                    ErrorKind::Upstream,
                    "internal: a chat answer to an embeddings request",
                    report.clone(),
                )),
                Err(e) => {
                    report = e.meta.clone();
                    Err(e)
                }
            }
        }
        Err(e) => Err(EngineError::new(
            500,
            ErrorKind::Upstream,
            format!("internal: {e}"),
            report.clone(),
        )),
    };
    PartResult {
        range,
        answer,
        report,
    }
}

/// The report of the whole request from its parts' (in order): every
/// attempt, marked with its part when there are several.
fn merge(report: &mut RequestReport, n: usize, done: &[(usize, PartResult)]) {
    let mut deployments: Vec<String> = Vec::new();
    let mut cache: Option<CacheStatus> = None;
    for (k, r) in done {
        let p = &r.report;
        for a in &p.attempts {
            let mut a = a.clone();
            if n > 1 {
                a.reason = format!(
                    "part {}/{n} (inputs {}..{}): {}",
                    k + 1,
                    r.range.start,
                    r.range.end,
                    a.reason
                );
            }
            report.attempts.push(a);
        }
        report.upstream_attempts += p.upstream_attempts;
        report.cost_usd += p.cost_usd;
        report.fallback_depth = report.fallback_depth.max(p.fallback_depth);
        if let Some(d) = &p.deployment {
            if !deployments.contains(d) {
                deployments.push(d.clone());
            }
        }
        cache = Some(match cache {
            None => p.cache,
            Some(c) if c == p.cache => c,
            Some(_) => CacheStatus::Miss,
        });
    }
    report.deployment = (!deployments.is_empty()).then(|| deployments.join(","));
    report.cache = cache.unwrap_or_default();
}

/// Splits `request` into parts every deployment of `route` takes, in order.
/// A 400 when one input alone is more than a deployment's tokens per minute
/// (no split can send it).
fn split(
    st: &EngineState,
    route: &Route,
    request: Arc<EmbeddingsRequest>,
    report: &RequestReport,
) -> Result<Vec<EmbeddingsPart>, EngineError> {
    let deps = route.chain.iter().map(|&i| &st.deployments[i].spec);
    let max_inputs = deps
        .clone()
        .map(|d| d.max_batch_inputs.unwrap_or(MAX_EMBEDDING_INPUTS))
        .min()
        .unwrap_or(MAX_EMBEDDING_INPUTS)
        .max(1) as usize;
    let tightest = deps
        .filter_map(|d| d.limits.tpm.map(|t| (t, d)))
        .min_by_key(|(t, _)| *t);
    let max_tokens = tightest.map_or(u32::MAX, |(t, _)| t);
    let tokens: Vec<u32> = request.inputs.iter().map(input_tokens).collect();
    if let (Some((tpm, d)), Some((i, t))) = (
        tightest,
        tokens.iter().enumerate().find(|(_, t)| **t > max_tokens),
    ) {
        return Err(EngineError::new(
            400,
            ErrorKind::InvalidRequest,
            format!(
                "input[{i}] has ~{t} tokens, more than deployment {}'s tpm of {tpm}: it cannot be sent even alone",
                d.name
            ),
            report.clone(),
        ));
    }
    Ok(ranges(&tokens, max_inputs, max_tokens)
        .into_iter()
        .map(|range| {
            let t = &tokens[range.clone()];
            EmbeddingsPart {
                request: request.clone(),
                range,
                tokens: t.iter().fold(0u32, |a, b| a.saturating_add(*b)),
                largest: t.iter().copied().max().unwrap_or(0),
            }
        })
        .collect())
}

/// Consecutive ranges of inputs (whose estimated tokens are `tokens`),
/// each of at most `max_inputs` inputs and `max_tokens` tokens (an input
/// alone over `max_tokens` makes a range of its own).
fn ranges(tokens: &[u32], max_inputs: usize, max_tokens: u32) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0usize, 0u32);
    for (i, &t) in tokens.iter().enumerate() {
        if i > start && (i - start == max_inputs || sum.saturating_add(t) > max_tokens) {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum = sum.saturating_add(t);
    }
    out.push(start..tokens.len());
    out
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn parts_hold_at_most_the_inputs_and_tokens_a_deployment_takes_in_order() {
        let r = |t: &[u32], n, m| ranges(t, n, m);
        assert_eq!(r(&[1; 100], 16, u32::MAX).len(), 7);
        assert_eq!(r(&[1; 100], 16, u32::MAX)[6], 96..100);
        assert_eq!(r(&[1; 32], 16, u32::MAX), [0..16, 16..32]);
        assert_eq!(r(&[5, 5, 5, 5, 5], 100, 10), [0..2, 2..4, 4..5]);
        assert_eq!(r(&[3, 8, 3], 100, 10), [0..1, 1..2, 2..3]);
        assert_eq!(r(&[1], 1, 1), vec![std::ops::Range { start: 0, end: 1 }]);
        // Every input once, in order, whatever the limits.
        for (n, m) in [(1, 1), (3, 7), (16, 40), (2048, u32::MAX)] {
            let tokens: Vec<u32> = (0..57).map(|i| i % 9 + 1).collect();
            let parts = r(&tokens, n, m);
            let flat: Vec<usize> = parts.iter().flat_map(|p| p.clone()).collect();
            assert_eq!(flat, (0..57).collect::<Vec<_>>());
            for p in &parts {
                assert!(p.len() <= n);
                assert!(p.len() == 1 || tokens[p.clone()].iter().sum::<u32>() <= m);
            }
        }
    }
}
