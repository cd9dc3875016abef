//! One request's timeline as its trace will show it: the SERVER span's
//! context, each upstream attempt with its times and outcome, and the
//! events between them. The chain feeds it through the request report
//! (`RequestReport::push_attempt`, `trace_sent`); the spans are built from
//! it when the request ends (`crate::traces`).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderValue;
use keel_policy::FailureClass;

use crate::traceparent::SpanContext;

/// What the timeline reads of an attempt record.
pub(crate) struct Record<'a> {
    pub deployment: &'a str,
    pub attempt: u32,
    pub class: Option<&'static str>,
    pub status: Option<u16>,
    pub next: &'static str,
    pub delay_ms: Option<u64>,
    pub reason: &'a str,
}

/// What the SERVER span says of the answer.
#[derive(Clone, Debug, Default)]
pub(crate) struct AnswerFacts {
    pub input_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    pub finish_reason: Option<String>,
    pub response_id: Option<String>,
}

/// Span ids for the attempts of one request (cheap to clone with it).
#[derive(Debug)]
pub(crate) struct SpanIds {
    pub(crate) state: std::collections::hash_map::RandomState,
    pub(crate) counter: AtomicU64,
}

impl SpanIds {
    pub(crate) fn next(&self) -> [u8; 8] {
        let mut h = self.state.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        match h.finish() {
            0 => 1,
            x => x,
        }
        .to_be_bytes()
    }
}

/// One request's trace as it happens: the SERVER span's context and what
/// each upstream attempt did. Kept in the [`RequestReport`].
#[derive(Clone, Debug)]
pub(crate) struct RequestTrace {
    pub(crate) ctx: SpanContext,
    /// The client's span, when it sent a `traceparent`.
    pub(crate) parent: Option<[u8; 8]>,
    pub(crate) tracestate: String,
    pub(crate) started: Instant,
    pub(crate) wall: SystemTime,
    pub(crate) operation: &'static str,
    pub(crate) tenant: Option<String>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) temperature: Option<f64>,
    pub(crate) sends: Vec<Sent>,
    pub(crate) events: Vec<Event>,
    /// What the chain did after the last attempt (its record's `next`).
    pub(crate) last_next: Option<&'static str>,
    /// What the next attempt is, when the caller knows (a stream's resume).
    pub(crate) next_kind: Option<&'static str>,
    /// The wait before the next attempt, and why.
    pub(crate) pending_delay: Option<(u64, String)>,
    pub(crate) stream: Option<StreamFacts>,
    pub(crate) span_ids: Arc<SpanIds>,
}

/// One upstream attempt.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub(crate) span_id: [u8; 8],
    pub(crate) deployment: String,
    pub(crate) key_index: usize,
    pub(crate) kind: &'static str,
    pub(crate) at: Instant,
    /// The wait before it, and why.
    pub(crate) delay: Option<(u64, String)>,
    pub(crate) end: Option<Instant>,
    pub(crate) record: Option<Outcome>,
    /// A stream's end, after its first token.
    pub(crate) stream_end: Option<(Instant, Option<FailureClass>)>,
}

/// What an attempt's record says.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    pub(crate) attempt: u32,
    pub(crate) class: Option<&'static str>,
    pub(crate) status: Option<u16>,
    pub(crate) next: &'static str,
}

/// A point in the request's time line (a skip, a first token, a commit).
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) at: Instant,
    pub(crate) name: &'static str,
    pub(crate) attributes: Vec<(&'static str, String)>,
}

/// A streamed answer's end.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamFacts {
    pub(crate) answer: AnswerFacts,
    pub(crate) error: Option<String>,
}

impl RequestTrace {
    /// Registers an attempt sent to `deployment` now and returns the
    /// `traceparent` it sends upstream. `hedge`: a hedge's attempt.
    pub(crate) fn sent(
        &mut self,
        deployment: &str,
        key_index: usize,
        hedge: bool,
    ) -> Option<crate::traceparent::Propagated> {
        let span_id = self.span_ids.next();
        let kind = if hedge {
            "hedge"
        } else if let Some(k) = self.next_kind.take() {
            k
        } else {
            match self.last_next {
                None => "first_try",
                Some("continue") => "continuation",
                Some("repair") => "repair",
                Some("fallback") => "fallback",
                Some(_) => match self.sends.last() {
                    Some(prev) if prev.deployment != deployment => "fallback",
                    _ => "retry",
                },
            }
        };
        self.sends.push(Sent {
            span_id,
            deployment: deployment.to_string(),
            key_index,
            kind,
            at: crate::now(),
            delay: self.pending_delay.take(),
            end: None,
            record: None,
            stream_end: None,
        });
        let ctx = SpanContext {
            span_id,
            ..self.ctx
        };
        Some(crate::traceparent::Propagated {
            traceparent: HeaderValue::from_str(&ctx.traceparent()).ok()?,
            tracestate: (!self.tracestate.is_empty())
                .then(|| HeaderValue::from_str(&self.tracestate).ok())
                .flatten(),
        })
    }

    /// Notes `rec`, just added to the report: it ends the oldest attempt
    /// on its deployment still open, or is a skip (an event).
    pub(crate) fn on_record(&mut self, rec: Record<'_>) {
        let at = crate::now();
        let open = self
            .sends
            .iter_mut()
            .find(|s| s.record.is_none() && s.deployment == rec.deployment);
        match open {
            Some(s) => {
                s.end = Some(at);
                s.record = Some(Outcome {
                    attempt: rec.attempt,
                    class: rec.class,
                    status: rec.status,
                    next: rec.next,
                });
                if rec.next != "skip" && rec.next != "cancelled" {
                    self.last_next = Some(rec.next);
                }
                if let (Some(ms), "retry") = (rec.delay_ms, rec.next) {
                    let why = rec.reason.rsplit("; ").next().unwrap_or_default();
                    self.pending_delay = Some((ms, why.to_string()));
                }
            }
            None if rec.next == "skip" => self.events.push(Event {
                at,
                name: "keel.skip",
                attributes: vec![
                    ("keel.deployment", rec.deployment.to_string()),
                    ("keel.reason", rec.reason.to_string()),
                ],
            }),
            None => {}
        }
    }

    /// An event on the SERVER span (a limiter wait, a breaker transition).
    pub(crate) fn event(&mut self, name: &'static str, attributes: Vec<(&'static str, String)>) {
        self.events.push(Event {
            at: crate::now(),
            name,
            attributes,
        });
    }

    /// The request waits `wait` in `deployment`'s rate limiter.
    pub(crate) fn limiter_wait(&mut self, deployment: &str, wait: std::time::Duration) {
        self.event(
            "keel.limiter_wait",
            vec![
                ("keel.deployment", deployment.to_string()),
                ("keel.wait_ms", wait.as_millis().to_string()),
            ],
        );
    }

    /// `deployment`'s breaker changed state after an attempt.
    pub(crate) fn breaker_transition(&mut self, deployment: &str, tr: keel_policy::Transition) {
        self.event(
            "keel.breaker_transition",
            vec![
                ("keel.deployment", deployment.to_string()),
                ("keel.breaker.from", tr.from.as_str().to_string()),
                ("keel.breaker.to", tr.to.as_str().to_string()),
            ],
        );
    }

    /// The chain committed a stream to the client: its first token came
    /// with the last answered attempt.
    pub(crate) fn committed(&mut self) {
        let first = self
            .sends
            .iter()
            .rev()
            .find(|s| s.record.as_ref().is_some_and(|r| r.next == "ok"))
            .and_then(|s| s.end);
        if let Some(at) = first {
            self.events.push(Event {
                at,
                name: "keel.first_token",
                attributes: Vec::new(),
            });
        }
        self.event("keel.commit", Vec::new());
    }

    /// The stream being pumped ended (`failure`: it broke).
    pub(crate) fn stream_round_ended(&mut self, failure: Option<FailureClass>) {
        let at = crate::now();
        let streaming = self
            .sends
            .iter_mut()
            .rev()
            .find(|s| s.record.as_ref().is_some_and(|r| r.next == "ok"));
        if let Some(s) = streaming {
            if s.stream_end.is_none() {
                s.stream_end = Some((at, failure));
            }
        }
    }

    /// The next round of attempts is a stream's `kind` (resume, continuation).
    pub(crate) fn next_round(&mut self, kind: &'static str) {
        self.next_kind = Some(kind);
    }
}
