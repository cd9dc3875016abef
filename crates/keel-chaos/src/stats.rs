//! What each upstream saw: attempt counts by outcome and a bounded log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// How many attempt records are kept per upstream (the oldest are dropped).
pub const LOG_CAPACITY: usize = 10_000;

/// Counters and recent attempts of one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamStats {
    /// Chat attempts received since start or the last reset.
    pub attempts: u64,
    /// Attempts per outcome: `ok`, a fault kind (`rate_limit`, `hang`, ...),
    /// or a natural refusal (`rpm_limit`, `tpm_limit`, `auth`,
    /// `invalid_request`, `not_found`, `context_overflow`).
    pub by_outcome: BTreeMap<String, u64>,
    /// The last [`LOG_CAPACITY`] attempts, oldest first.
    pub log: Vec<AttemptRecord>,
}

/// One attempt as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// Milliseconds since the server started.
    pub at_ms: u64,
    /// Outcome name (see [`UpstreamStats::by_outcome`]).
    pub outcome: String,
    /// HTTP status sent; 0 when none was (reset, hang).
    pub status: u16,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Requested model (empty when the request could not be parsed).
    pub model: String,
    /// The request body as received (not serialised with the stats: tests
    /// read it to check exactly what a client of the upstream sent).
    #[serde(skip)]
    pub body: String,
    /// The request's W3C `traceparent` header, when it had one.
    #[serde(skip)]
    pub traceparent: Option<String>,
    /// The request's W3C `tracestate` header, when it had one.
    #[serde(skip)]
    pub tracestate: Option<String>,
}

/// A log entry as stored: the outcome stays a static name until a snapshot.
#[derive(Debug)]
struct Entry {
    at_ms: u64,
    outcome: &'static str,
    status: u16,
    stream: bool,
    model: String,
    body: bytes::Bytes,
    traceparent: Option<http::HeaderValue>,
    tracestate: Option<http::HeaderValue>,
}

#[derive(Debug, Default)]
struct Inner {
    attempts: u64,
    by_outcome: BTreeMap<&'static str, u64>,
    log: VecDeque<Entry>,
}

/// Thread-safe recorder; the lock is held only to push one record.
#[derive(Debug, Default)]
pub(crate) struct StatsCell {
    inner: Mutex<Inner>,
}

impl StatsCell {
    pub(crate) fn record(
        &self,
        at_ms: u64,
        outcome: &'static str,
        status: u16,
        stream: bool,
        model: &str,
        (body, traceparent, tracestate): (
            &bytes::Bytes,
            Option<&http::HeaderValue>,
            Option<&http::HeaderValue>,
        ),
    ) {
        let record = Entry {
            at_ms,
            outcome,
            status,
            stream,
            model: model.to_owned(),
            body: body.clone(),
            traceparent: traceparent.cloned(),
            tracestate: tracestate.cloned(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.attempts += 1;
        *inner.by_outcome.entry(outcome).or_insert(0) += 1;
        if inner.log.len() == LOG_CAPACITY {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
    }

    pub(crate) fn snapshot(&self, with_log: bool) -> UpstreamStats {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        UpstreamStats {
            attempts: inner.attempts,
            by_outcome: inner
                .by_outcome
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            log: if with_log {
                inner
                    .log
                    .iter()
                    .map(|e| AttemptRecord {
                        at_ms: e.at_ms,
                        outcome: e.outcome.to_owned(),
                        status: e.status,
                        stream: e.stream,
                        model: e.model.clone(),
                        body: String::from_utf8_lossy(&e.body).into_owned(),
                        traceparent: header_text(e.traceparent.as_ref()),
                        tracestate: header_text(e.tracestate.as_ref()),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub(crate) fn clear(&self) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Inner::default();
    }
}

fn header_text(v: Option<&http::HeaderValue>) -> Option<String> {
    v.and_then(|v| v.to_str().ok()).map(str::to_owned)
}
