//! A test OTLP/HTTP receiver: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, decoded with the `opentelemetry-proto`
//! types and kept for the test to read. It can stall: accept exports and
//! never answer them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::{watch, Notify};

#[derive(Default)]
struct Inner {
    spans: Mutex<Vec<Span>>,
    /// `service.name` of each export's resource, and the headers it came with.
    resources: Mutex<Vec<String>>,
    headers: Mutex<Vec<HeaderMap>>,
    stalled: bool,
    /// Exports received (stalled ones included).
    received: watch::Sender<usize>,
    never: Notify,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
    /// The base URL to give Keel as `otlp_endpoint`.
    pub endpoint: String,
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port; `stalled`: it
    /// never answers an export.
    pub async fn start(stalled: bool) -> Receiver {
        let inner = Arc::new(Inner {
            stalled,
            received: watch::channel(0).0,
            ..Default::default()
        });
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            inner,
            endpoint: format!("http://{addr}"),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.inner.spans.lock().unwrap().clone()
    }

    /// `service.name` of every export received.
    pub fn service_names(&self) -> Vec<String> {
        self.inner.resources.lock().unwrap().clone()
    }

    /// The headers of every export received.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.inner.headers.lock().unwrap().clone()
    }

    /// Waits until `n` exports have arrived (answered or not).
    pub async fn exports(&self, n: usize) {
        let mut rx = self.inner.received.subscribe();
        rx.wait_for(|&got| got >= n).await.unwrap();
    }
}

async fn export(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        inner.resources.lock().unwrap().push(service);
        for ss in rs.scope_spans {
            inner.spans.lock().unwrap().extend(ss.spans);
        }
    }
    inner.headers.lock().unwrap().push(headers);
    inner.received.send_modify(|n| *n += 1);
    if inner.stalled {
        inner.never.notified().await;
    }
    StatusCode::OK
}

fn text(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::ArrayValue(a) => Some(
            a.values
                .iter()
                .filter_map(|v| text(Some(v)))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

/// A span's attributes as text.
pub fn attrs(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref())?)))
        .collect()
}

/// Lowercase hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
