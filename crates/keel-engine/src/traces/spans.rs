//! A finished request's spans in OTLP's shape, with the GenAI semantic
//! conventions' names. No attribute carries a prompt, an answer's text or
//! a key: only names, numbers, classes and Keel's own reasons.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event as OtlpEvent, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span, Status};

use super::End;
use crate::call::Tier;
use crate::timeline::{RequestTrace, Sent};
use crate::EngineState;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub(super) fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn kv_f64(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

fn kv_strs(key: &str, values: &[&str]) -> KeyValue {
    let values = values
        .iter()
        .map(|v| AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        })
        .collect();
    kv(key, any_value::Value::ArrayValue(ArrayValue { values }))
}

/// The spans of `trace`, ended as `end` says: the SERVER span first, then
/// one CLIENT span per attempt.
pub(super) fn build(st: &EngineState, trace: &RequestTrace, end: End<'_>) -> Vec<Span> {
    let clock = Clock {
        instant: trace.started,
        wall: trace.wall,
    };
    let report = end.report;
    let answered_by = report
        .deployment
        .as_deref()
        .and_then(|name| st.config.deployments.iter().find(|d| d.name == name));
    let mut attributes = vec![
        kv_str("gen_ai.operation.name", trace.operation),
        kv_str("gen_ai.request.model", &report.route),
        kv_str("keel.route", &report.route),
        kv_str("keel.request_id", &report.request_id),
        kv_str("keel.tenant", trace.tenant.as_deref().unwrap_or("default")),
        kv_str(
            "keel.tier",
            match report.tier {
                Tier::Chain => "chain",
                Tier::Static => "static",
            },
        ),
        kv_int("keel.fallback_depth", report.fallback_depth as i64),
        kv_str("keel.cache", report.cache.as_str()),
        kv_f64("keel.cost_usd", report.cost_usd),
        kv_int("keel.attempts", trace.sends.len() as i64),
    ];
    if let Some(d) = answered_by {
        attributes.push(kv_str("gen_ai.response.model", &d.model));
        attributes.push(kv_str("gen_ai.provider.name", d.kind.as_str()));
        attributes.push(kv_str("keel.deployment", &d.name));
    }
    if let Some(n) = trace.max_tokens {
        attributes.push(kv_int("gen_ai.request.max_tokens", n.into()));
    }
    if let Some(t) = trace.temperature {
        attributes.push(kv_f64("gen_ai.request.temperature", t));
    }
    let streamed = trace.stream.as_ref();
    let answer = streamed.map(|s| &s.answer).or(end.answer.as_ref());
    if let Some(a) = answer {
        if let Some(n) = a.input_tokens {
            attributes.push(kv_int("gen_ai.usage.input_tokens", n.into()));
        }
        if let Some(n) = a.output_tokens {
            attributes.push(kv_int("gen_ai.usage.output_tokens", n.into()));
        }
        if let Some(r) = &a.finish_reason {
            attributes.push(kv_strs("gen_ai.response.finish_reasons", &[r]));
        }
        if let Some(id) = &a.response_id {
            attributes.push(kv_str("gen_ai.response.id", id));
        }
    }
    let error = streamed.and_then(|s| s.error.clone()).or(end.error.clone());
    if let Some(class) = &error {
        attributes.push(kv_str("error.type", class));
    }
    let server = Span {
        trace_id: trace.ctx.trace_id.to_vec(),
        span_id: trace.ctx.span_id.to_vec(),
        trace_state: trace.tracestate.clone(),
        parent_span_id: trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0x01 | 0x100 | if trace.parent.is_some() { 0x200 } else { 0 },
        name: format!("{} {}", trace.operation, report.route),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: clock.nanos(trace.started),
        end_time_unix_nano: clock.nanos(end.at),
        attributes,
        events: trace
            .events
            .iter()
            .map(|e| OtlpEvent {
                time_unix_nano: clock.nanos(e.at),
                name: e.name.to_string(),
                attributes: e.attributes.iter().map(|(k, v)| kv_str(k, v)).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        status: Some(match &error {
            Some(class) => Status {
                message: class.clone(),
                code: StatusCode::Error as i32,
            },
            None => Status::default(),
        }),
        ..Default::default()
    };
    let mut spans = Vec::with_capacity(1 + trace.sends.len());
    spans.push(server);
    for s in &trace.sends {
        spans.push(client_span(st, trace, s, &clock, end.at));
    }
    spans
}

/// An attempt's CLIENT span.
fn client_span(
    st: &EngineState,
    trace: &RequestTrace,
    s: &Sent,
    clock: &Clock,
    request_end: Instant,
) -> Span {
    let dep = st
        .config
        .deployments
        .iter()
        .find(|d| d.name == s.deployment);
    let model = dep.map_or(s.deployment.as_str(), |d| d.model.as_str());
    // Every attempt asks a deployment for a chat completion, whatever the
    // client's API.
    let mut attributes = vec![
        kv_str("gen_ai.operation.name", "chat"),
        kv_str("gen_ai.request.model", model),
        kv_str("keel.deployment", &s.deployment),
        kv_str("keel.attempt.kind", s.kind),
        kv_int("keel.key_index", s.key_index as i64),
    ];
    if let Some(d) = dep {
        attributes.push(kv_str("gen_ai.provider.name", d.kind.as_str()));
    }
    if let Some((ms, why)) = &s.delay {
        attributes.push(kv_int("keel.delay_ms", *ms as i64));
        attributes.push(kv_str("keel.delay_reason", why));
    }
    let mut class = None;
    let mut next = "cancelled";
    if let Some(r) = &s.record {
        // A hedge dropped before it answered has no number of its own.
        if r.attempt > 0 {
            attributes.push(kv_int("keel.attempt", r.attempt.into()));
        }
        if let Some(code) = r.status {
            attributes.push(kv_int("http.response.status_code", code.into()));
        }
        class = r.class;
        next = match r.next {
            // A hedge dropped when the first attempt answered first.
            "skip" => "cancelled",
            n => n,
        };
    }
    let mut end = s.end.unwrap_or(request_end);
    if let Some((at, broke)) = s.stream_end {
        end = at;
        class = broke.map(|c| c.as_str()).or(class);
    }
    if let Some(c) = class {
        attributes.push(kv_str("keel.class", c));
        attributes.push(kv_str("error.type", c));
    }
    attributes.push(kv_str("keel.next", next));
    let status = match (class, next) {
        (Some(c), _) => Status {
            message: c.to_string(),
            code: StatusCode::Error as i32,
        },
        (None, "cancelled") => Status {
            message: "cancelled".into(),
            code: StatusCode::Unset as i32,
        },
        _ => Status::default(),
    };
    Span {
        trace_id: trace.ctx.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        parent_span_id: trace.ctx.span_id.to_vec(),
        trace_state: trace.tracestate.clone(),
        flags: 0x01 | 0x100,
        name: format!("chat {model}"),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: clock.nanos(s.at),
        end_time_unix_nano: clock.nanos(end),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// Instants on the engine's clock as wall-clock times, from one reading of each.
struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    fn nanos(&self, t: Instant) -> u64 {
        let wall = match t.checked_duration_since(self.instant) {
            Some(after) => self.wall + after,
            None => self.wall - self.instant.saturating_duration_since(t),
        };
        wall.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}
