//! What each upstream saw: attempt counts by outcome and a bounded log.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Frame;

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
    /// Requests whose client went away before the answer was finished: it
    /// closed the connection during a hang, a slow first byte or a slow
    /// answer, or dropped a stream part-way. A gateway that gives an
    /// attempt up (a deadline, a hedge's loser, its own client gone) shows
    /// here.
    pub closed_by_client: u64,
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
    /// [`UpstreamStats::closed_by_client`], watched so a test can wait for
    /// it to change.
    closed: Arc<tokio::sync::watch::Sender<u64>>,
    /// [`UpstreamStats::attempts`], watched likewise.
    attempts: tokio::sync::watch::Sender<u64>,
}

impl StatsCell {
    /// A guard for one request's answer: unless it sees the answer
    /// finished, dropping it counts the request closed by its client.
    pub(crate) fn answer_guard(&self) -> AnswerGuard {
        AnswerGuard {
            closed: Some(self.closed.clone()),
        }
    }

    /// Waits until [`UpstreamStats::closed_by_client`] is at least `n`.
    pub(crate) async fn closed_by_client(&self, n: u64) {
        let mut rx = self.closed.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Waits until [`UpstreamStats::attempts`] is at least `n`.
    pub(crate) async fn attempts(&self, n: u64) {
        let mut rx = self.attempts.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

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
        self.attempts.send_replace(inner.attempts);
    }

    pub(crate) fn snapshot(&self, with_log: bool) -> UpstreamStats {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        UpstreamStats {
            closed_by_client: *self.closed.borrow(),
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
        self.closed.send_replace(0);
        self.attempts.send_replace(0);
    }
}

fn header_text(v: Option<&http::HeaderValue>) -> Option<String> {
    v.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Counts a request closed by its client unless its answer finished
/// ([`StatsCell::answer_guard`]).
#[derive(Debug)]
pub(crate) struct AnswerGuard {
    /// `None` once the answer finished (or the upstream itself gave up).
    closed: Option<Arc<tokio::sync::watch::Sender<u64>>>,
}

impl AnswerGuard {
    /// The answer finished, or the upstream ended it itself (a reset).
    pub(crate) fn finished(mut self) {
        self.closed = None;
    }

    /// `body`, whose end finishes the answer.
    pub(crate) fn watch(self, body: Body) -> Body {
        let mut watched = Watched { body, guard: self };
        watched.check_end();
        Body::new(watched)
    }
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if let Some(closed) = self.closed.take() {
            closed.send_modify(|c| *c += 1);
        }
    }
}

/// A response body that finishes its [`AnswerGuard`] at its end.
struct Watched {
    body: Body,
    guard: AnswerGuard,
}

impl Watched {
    fn check_end(&mut self) {
        if hyper::body::Body::is_end_stream(&self.body) {
            self.guard.closed = None;
        }
    }
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            // The end, or the upstream's own cut (a fault): finished.
            Poll::Ready(None | Some(Err(_))) => self.guard.closed = None,
            Poll::Ready(Some(Ok(_))) => self.check_end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}
