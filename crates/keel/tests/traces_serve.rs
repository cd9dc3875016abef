//! Traces from the real binary: `keel serve` configured only by the
//! standard `OTEL_*` variables exports to a test OTLP/HTTP receiver
//! (hyper + `opentelemetry-proto`), writes the trace id in its JSON logs
//! and answers, and sends the last spans before it exits on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use keel_chaos::{ChaosServer, Scenario};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// An OTLP/HTTP receiver on a loopback port: every export is decoded and kept.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let keep = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let keep = keep.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        keep.lock().unwrap().push(export);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), got)
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn keel_serve_exports_traces_configured_by_otel_variables() {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\n\
         [[upstream.fault]]\nkind = \"rate_limit\"\nretry_after = \"20ms\"\nsequence = [1]\n",
        "chaos.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = support::free_addr();
    let config = format!(
        "[server]\nlisten = \"{addr}\"\n[providers.a]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-a\"\n\
         [deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\n[routes.r]\nchain = [\"a\"]\n\
         [policy]\nbackoff_base = \"5ms\"\n",
        ch.base_url("a")
    );
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, config).unwrap();
    let log_path = dir.path().join("keel.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "keel-e2e")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let t = Instant::now();
    while client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(10), "keel did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let resp = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-keel-trace-id"], trace_id);

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "keel did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The spans were sent by the time keel exited.
    let exports = received.lock().unwrap().clone();
    let mut spans = Vec::new();
    for e in &exports {
        for rs in &e.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name");
            let Some(Value::StringValue(name)) =
                service.and_then(|kv| kv.value.as_ref()?.value.clone())
            else {
                panic!("no service.name")
            };
            assert_eq!(name, "keel-e2e");
            spans.extend(rs.scope_spans.iter().flat_map(|s| s.spans.clone()));
        }
    }
    let kinds: Vec<(i32, String)> = spans.iter().map(|s| (s.kind, s.name.clone())).collect();
    assert_eq!(
        kinds,
        [
            (SpanKind::Server as i32, "chat r".to_string()),
            (SpanKind::Client as i32, "chat gpt-test".to_string()),
            (SpanKind::Client as i32, "chat gpt-test".to_string()),
        ]
    );
    assert!(spans.iter().all(|s| hex(&s.trace_id) == trace_id));
    assert_eq!(hex(&spans[0].parent_span_id), "b7ad6b7169203331");

    // The attempt that failed is logged with the request's trace and span ids.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let failed: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["fields"]["message"] == "attempt failed")
        .collect();
    assert_eq!(failed.len(), 1, "{logs}");
    assert_eq!(failed[0]["span"]["trace_id"], trace_id, "{logs}");
    assert_eq!(
        failed[0]["span"]["span_id"],
        hex(&spans[0].span_id),
        "{logs}"
    );
}
