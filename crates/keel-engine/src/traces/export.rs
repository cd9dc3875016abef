//! The exporter: finished spans go into a bounded queue, and one task
//! POSTs them to the collector as OTLP/HTTP protobuf, as many as have
//! queued while the previous export was in flight (batches grow with load,
//! and an idle gateway exports a request's spans at once).
//!
//! Why a queue counted in spans and dropping when full: a request never
//! waits for the collector. When it is slow or down, spans past the
//! queue's capacity are dropped and counted (`keel_trace_spans_dropped_total`),
//! and the requests go on at their usual speed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::config::Telemetry;
use crate::transport::HttpClient;

/// What the export task is sent.
enum Msg {
    Spans(Vec<Span>),
    /// Export everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// Counters of the exporter, for `/metrics`.
#[derive(Default, Debug)]
pub(crate) struct ExportStats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_exports: AtomicU64,
}

/// The queue and the task that empties it (started with the first span,
/// on the runtime that made it).
pub(crate) struct Exporter {
    tx: mpsc::UnboundedSender<Msg>,
    /// Taken by the task when it starts.
    rx: Mutex<Option<mpsc::UnboundedReceiver<Msg>>>,
    started: std::sync::atomic::AtomicBool,
    /// Spans in the queue, against `capacity`.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    pub stats: Arc<ExportStats>,
    target: Arc<Target>,
}

/// Where and how the task exports.
struct Target {
    uri: Uri,
    headers: HeaderMap,
    resource: Resource,
    client: HttpClient,
    timeout: Duration,
}

/// At most this many spans in one export.
const MAX_BATCH: usize = 512;

impl Exporter {
    pub fn new(config: &Telemetry, client: HttpClient) -> Exporter {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        for (k, v) in &config.headers {
            headers.insert(k.clone(), v.clone());
        }
        let resource = Resource {
            attributes: vec![
                super::spans::kv_str("service.name", &config.service_name),
                super::spans::kv_str("telemetry.sdk.name", "keel"),
                super::spans::kv_str("telemetry.sdk.language", "rust"),
                super::spans::kv_str("service.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Default::default()
        };
        Exporter {
            tx,
            rx: Mutex::new(Some(rx)),
            started: Default::default(),
            queued: Arc::default(),
            capacity: config.max_queue_spans,
            stats: Arc::default(),
            target: Arc::new(Target {
                uri: config.traces_uri.clone(),
                headers,
                resource,
                client,
                timeout: config.export_timeout,
            }),
        }
    }

    /// Queues one request's spans, or drops and counts them when the queue
    /// is full. Never waits.
    pub fn submit(&self, spans: Vec<Span>) {
        let n = spans.len();
        self.start();
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.capacity || self.tx.send(Msg::Spans(spans)).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Waits until every span queued before the call has been exported (or
    /// its export failed).
    pub async fn flush(&self) {
        self.start();
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Starts the export task once, on the current runtime (outside one,
    /// spans wait in the queue for a later call).
    fn start(&self) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(rx) = crate::lock(&self.rx).take() else {
            return;
        };
        let task = Task {
            rx,
            queued: self.queued.clone(),
            stats: self.stats.clone(),
            target: self.target.clone(),
        };
        runtime.spawn(task.run());
        self.started.store(true, Ordering::Relaxed);
    }
}

struct Task {
    rx: mpsc::UnboundedReceiver<Msg>,
    queued: Arc<AtomicUsize>,
    stats: Arc<ExportStats>,
    target: Arc<Target>,
}

impl Task {
    async fn run(mut self) {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        while let Some(first) = self.rx.recv().await {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Spans(s) => {
                        self.queued.fetch_sub(s.len(), Ordering::Relaxed);
                        batch.extend(s);
                    }
                    Msg::Flush(ack) => {
                        acks.push(ack);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.export(std::mem::take(&mut batch)).await;
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
        }
    }

    async fn export(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let t = &self.target;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(t.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "keel".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let body = request.encode_to_vec();
        let sent = async {
            let resp = t
                .client
                .post(t.uri.clone(), t.headers.clone(), body)
                .await
                .map_err(|e| e.message)?;
            let status = resp.status();
            // The body is read so the connection can be reused.
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        match tokio::time::timeout(t.timeout, sent).await {
            Ok(Ok(())) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {} ms", t.timeout.as_millis()),
                };
                self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(spans = n, error = %why, "trace export failed; spans dropped");
            }
        }
    }
}
