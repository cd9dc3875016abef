//! OpenTelemetry traces end to end: Keel's HTTP front and engine against
//! `keel chaos`, exporting to a test OTLP/HTTP receiver on a loopback port.
//! Each test flushes the exporter before reading what the receiver got.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod otlp;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use keel_server::{app, AppState};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp::{attrs, hex, Receiver};
use tower::ServiceExt;

const KEY_A: &str = "sk-trace-CANARY-a-5e1f7c";
const KEY_B: &str = "sk-ant-trace-CANARY-b-9d3a";
const COLLECTOR_KEY: &str = "collector-CANARY-77aa";
const PROMPT: &str = "PROMPT-CANARY what is the capital of Atlantis";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn chaos(a_faults: &str, a_extra: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"{KEY_A}\"\n{a_extra}{a_faults}\
         [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\napi_key = \"{KEY_B}\"\n{b_extra}",
        b_extra = if a_extra.contains("latency") {
            "latency = \"80ms\"\n"
        } else {
            ""
        },
    );
    let scenario = Scenario::from_toml_str(&toml, "t.toml").unwrap();
    ChaosServer::start(scenario, 7, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Route `r` = [a, b]; `route` and `telemetry` add keys to their tables.
fn engine(ch: &ChaosHandle, rcv: &Receiver, route: &str, telemetry: &str) -> Engine {
    let text = format!(
        r#"
[telemetry]
otlp_endpoint = "{endpoint}"
service_name = "keel-test"
headers = {{ x-collector-key = "${{COLLECTOR_KEY}}" }}
{telemetry}
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "${{KEY_A}}"
[providers.b]
kind = "anthropic"
base_url = "{b}"
api_key = "${{KEY_B}}"
[deployments.a]
provider = "a"
model = "gpt-a"
[deployments.b]
provider = "b"
model = "claude-b"
[routes.r]
chain = ["a", "b"]
{route}
[policy]
max_attempts = 2
backoff_base = "5ms"
backoff_cap = "20ms"
"#,
        endpoint = rcv.endpoint,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    let env = |k: &str| match k {
        "KEY_A" => Some(KEY_A.to_string()),
        "KEY_B" => Some(KEY_B.to_string()),
        "COLLECTOR_KEY" => Some(COLLECTOR_KEY.to_string()),
        _ => None,
    };
    Engine::with_seed(Config::from_toml_str(&text, "t.toml", &env).unwrap(), 3).unwrap()
}

fn chat_body(stream: bool) -> String {
    serde_json::json!({
        "model": "r",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 60,
        "temperature": 0.5,
        "stream": stream,
    })
    .to_string()
}

async fn call(e: &Engine, body: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::post("/v1/chat/completions").header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(AppState::new(e.clone()))
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The trace `trace_id` as the receiver got it: the SERVER span, then the
/// CLIENT spans in the order they started.
fn trace(rcv: &Receiver, trace_id: &str) -> (Span, Vec<Span>) {
    let spans: Vec<Span> = rcv
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1, "one SERVER span: {spans:#?}");
    let server = servers[0].clone();
    let mut clients: Vec<Span> = spans
        .into_iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| s.start_time_unix_nano);
    for c in &clients {
        assert_eq!(
            c.parent_span_id, server.span_id,
            "a CLIENT span is the SERVER span's child"
        );
        assert!(c.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(
            c.end_time_unix_nano <= server.end_time_unix_nano,
            "{c:#?}\n{server:#?}"
        );
        assert!(c.start_time_unix_nano <= c.end_time_unix_nano);
    }
    (server, clients)
}

/// A span in one line: name, status and the attributes of `keys`.
fn line(s: &Span, keys: &[&str]) -> String {
    let a = attrs(&s.attributes);
    let status = s.status.clone().unwrap_or_default();
    let mut out = format!("{} status={}", s.name, status.code);
    if !status.message.is_empty() {
        out += &format!("({})", status.message);
    }
    for k in keys {
        if let Some(v) = a.get(*k) {
            out += &format!(" {k}={v}");
        }
    }
    out
}

const SERVER_KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.provider.name",
    "keel.attempts",
    "keel.fallback_depth",
    "keel.tier",
    "keel.cache",
    "keel.tenant",
    "error.type",
];
const CLIENT_KEYS: &[&str] = &[
    "keel.attempt.kind",
    "keel.deployment",
    "keel.attempt",
    "http.response.status_code",
    "keel.class",
    "keel.next",
    "keel.delay_reason",
];

fn render(server: &Span, clients: &[Span]) -> String {
    let mut out = line(server, SERVER_KEYS) + "\n";
    for c in clients {
        out += &format!("  {}\n", line(c, CLIENT_KEYS));
    }
    out
}

/// Neither a key nor the prompt in any span: names, attributes, events.
fn assert_nothing_secret(rcv: &Receiver) {
    let text = format!("{:?}", rcv.spans());
    for secret in [KEY_A, KEY_B, COLLECTOR_KEY, "PROMPT-CANARY", "Atlantis"] {
        assert!(!text.contains(secret), "a span carries {secret}: {text}");
    }
}

fn trace_id(headers: &HeaderMap) -> String {
    headers["x-keel-trace-id"].to_str().unwrap().to_string()
}

fn upstream_traceparents(ch: &ChaosHandle, name: &str) -> Vec<String> {
    ch.stats(name)
        .unwrap()
        .log
        .into_iter()
        .map(|r| r.traceparent.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_first_try_success_is_a_server_span_with_one_client_span() {
    let (rcv, ch) = (Receiver::start(false).await, chaos("", "").await);
    let e = engine(&ch, &rcv, "", "");
    let (status, headers, body) = call(&e, &chat_body(false), &[]).await;
    assert_eq!(status, 200, "{body}");
    let id = trace_id(&headers);
    assert_eq!(id.len(), 32);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &id);
    assert_eq!(
        render(&server, &clients),
        "chat r status=0 gen_ai.operation.name=chat gen_ai.request.model=r gen_ai.response.model=gpt-a \
         gen_ai.provider.name=openai keel.attempts=1 keel.fallback_depth=0 keel.tier=chain keel.cache=none keel.tenant=default\n  \
         chat gpt-a status=0 keel.attempt.kind=first_try keel.deployment=a keel.attempt=1 http.response.status_code=200 keel.next=ok\n"
    );
    assert!(
        server.parent_span_id.is_empty(),
        "a root span without a client traceparent"
    );
    let a = attrs(&server.attributes);
    assert_eq!(a["gen_ai.request.max_tokens"], "60");
    assert_eq!(a["gen_ai.request.temperature"], "0.5");
    assert!(
        a["gen_ai.usage.input_tokens"].parse::<u32>().unwrap() > 0,
        "{a:?}"
    );
    assert!(
        a["gen_ai.usage.output_tokens"].parse::<u32>().unwrap() > 0,
        "{a:?}"
    );
    assert_eq!(a["gen_ai.response.finish_reasons"], "stop");
    assert!(a["gen_ai.response.id"].starts_with("chatcmpl"), "{a:?}");
    assert!(a.contains_key("keel.cost_usd") && a.contains_key("keel.request_id"));
    // The attempt sent its own span as the upstream's parent.
    let tp = upstream_traceparents(&ch, "a");
    assert_eq!(tp, [format!("00-{id}-{}-01", hex(&clients[0].span_id))]);
    // The collector got the configured service name and header.
    assert_eq!(rcv.service_names(), ["keel-test"]);
    assert_eq!(rcv.headers()[0]["x-collector-key"], COLLECTOR_KEY);
    assert_eq!(rcv.headers()[0]["content-type"], "application/x-protobuf");
    assert_nothing_secret(&rcv);
    let m = e.render_metrics();
    assert!(m.contains("keel_trace_spans_exported_total 2\n"), "{m}");
    assert!(m.contains("keel_trace_spans_dropped_total 0\n"), "{m}");
    assert!(m.ends_with("# EOF\n"));
    // The latency bucket the request fell in links to its trace, and the
    // attempt's bucket to its CLIENT span.
    let exemplar = format!(" # {{trace_id=\"{id}\"}} ");
    let linked: Vec<&str> = m.lines().filter(|l| l.contains(&exemplar)).collect();
    assert_eq!(linked.len(), 1, "{m}");
    assert!(
        linked[0].starts_with("keel_request_duration_seconds_bucket{")
            && linked[0].contains("route=\"r\",stream=\"false\"}"),
        "{}",
        linked[0]
    );
    let exemplar = format!(
        " # {{trace_id=\"{id}\",span_id=\"{}\"}} ",
        hex(&clients[0].span_id)
    );
    let linked: Vec<&str> = m.lines().filter(|l| l.contains(&exemplar)).collect();
    assert_eq!(linked.len(), 1, "{m}");
    assert!(
        linked[0].starts_with("keel_attempt_duration_seconds_bucket{")
            && linked[0].contains("deployment=\"a\"")
            && linked[0].contains("outcome=\"ok\""),
        "{}",
        linked[0]
    );
}

#[tokio::test]
async fn a_responses_request_is_a_responses_span() {
    let (rcv, ch) = (Receiver::start(false).await, chaos("", "").await);
    let e = engine(&ch, &rcv, "", "");
    let req = Request::post("/v1/responses")
        .header("content-type", "application/json")
        .body(Body::from(format!(r#"{{"model":"r","input":"{PROMPT}"}}"#)))
        .unwrap();
    let resp = app(AppState::new(e.clone())).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let id = trace_id(resp.headers());
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &id);
    assert_eq!(server.name, "responses r");
    assert_eq!(
        attrs(&server.attributes)["gen_ai.operation.name"],
        "responses"
    );
    assert_eq!(clients.len(), 1);
    assert_nothing_secret(&rcv);
}

#[tokio::test]
async fn a_retry_after_a_429_shows_its_delay_and_reason() {
    let rcv = Receiver::start(false).await;
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"rate_limit\"\nretry_after = \"30ms\"\nsequence = [1]\n",
        "",
    )
    .await;
    let e = engine(&ch, &rcv, "", "");
    let (status, headers, _) = call(&e, &chat_body(false), &[]).await;
    assert_eq!(status, 200);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &trace_id(&headers));
    assert_eq!(
        render(&server, &clients),
        "chat r status=0 gen_ai.operation.name=chat gen_ai.request.model=r gen_ai.response.model=gpt-a \
         gen_ai.provider.name=openai keel.attempts=2 keel.fallback_depth=0 keel.tier=chain keel.cache=none keel.tenant=default\n  \
         chat gpt-a status=2(rate_limited) keel.attempt.kind=first_try keel.deployment=a keel.attempt=1 http.response.status_code=429 keel.class=rate_limited keel.next=retry\n  \
         chat gpt-a status=0 keel.attempt.kind=retry keel.deployment=a keel.attempt=2 http.response.status_code=200 keel.next=ok keel.delay_reason=hint retry-after-ms\n"
    );
    let delay: u64 = attrs(&clients[1].attributes)["keel.delay_ms"]
        .parse()
        .unwrap();
    assert!((30..=40).contains(&delay), "{delay}");
    // The retry started after its delay.
    let gap = clients[1].start_time_unix_nano - clients[0].end_time_unix_nano;
    assert!(gap >= 29_000_000, "{gap} ns between the attempts");
    assert_eq!(ch.stats("a").unwrap().attempts, 2);
}

#[tokio::test]
async fn a_fallback_is_a_client_span_on_the_next_deployment() {
    let rcv = Receiver::start(false).await;
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 503\n",
        "",
    )
    .await;
    let e = engine(&ch, &rcv, "", "");
    let (status, headers, _) = call(&e, &chat_body(false), &[]).await;
    assert_eq!(status, 200);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &trace_id(&headers));
    assert_eq!(
        render(&server, &clients),
        "chat r status=0 gen_ai.operation.name=chat gen_ai.request.model=r gen_ai.response.model=claude-b \
         gen_ai.provider.name=anthropic keel.attempts=3 keel.fallback_depth=1 keel.tier=chain keel.cache=none keel.tenant=default\n  \
         chat gpt-a status=2(overloaded) keel.attempt.kind=first_try keel.deployment=a keel.attempt=1 http.response.status_code=503 keel.class=overloaded keel.next=retry\n  \
         chat gpt-a status=2(overloaded) keel.attempt.kind=retry keel.deployment=a keel.attempt=2 http.response.status_code=503 keel.class=overloaded keel.next=fallback keel.delay_reason=backoff\n  \
         chat claude-b status=0 keel.attempt.kind=fallback keel.deployment=b keel.attempt=1 http.response.status_code=200 keel.next=ok\n"
    );
    assert_eq!(
        (
            ch.stats("a").unwrap().attempts,
            ch.stats("b").unwrap().attempts
        ),
        (2, 1)
    );
    // Each attempt carried its own span id upstream.
    let mut sent = upstream_traceparents(&ch, "a");
    sent.extend(upstream_traceparents(&ch, "b"));
    let spans: Vec<String> = clients
        .iter()
        .map(|c| format!("00-{}-{}-01", hex(&c.trace_id), hex(&c.span_id)))
        .collect();
    assert_eq!(sent, spans);
    assert_nothing_secret(&rcv);
}

#[tokio::test]
async fn a_failed_request_ends_its_server_span_with_the_final_class() {
    let rcv = Receiver::start(false).await;
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "",
    )
    .await;
    let e = engine(&ch, &rcv, "", "");
    let body = chat_body(false);
    let (status, headers, _) = call(&e, &body, &[("x-keel-fallbacks", "off")]).await;
    assert_eq!(status, 502);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &trace_id(&headers));
    assert_eq!(
        line(&server, SERVER_KEYS),
        "chat r status=2(server_error) gen_ai.operation.name=chat gen_ai.request.model=r \
         keel.attempts=2 keel.fallback_depth=0 keel.tier=chain keel.cache=none keel.tenant=default error.type=server_error"
    );
    assert_eq!(clients.len(), 2);
}

#[tokio::test]
async fn a_hedge_that_loses_ends_cancelled() {
    let rcv = Receiver::start(false).await;
    // `a` answers in 20 ms, the hedge on `b` (sent after 1 ms) in 80 ms.
    let ch = chaos("", "latency = \"20ms\"\n").await;
    let e = engine(&ch, &rcv, "hedge = true\nhedge_after = \"1ms\"", "");
    let (status, headers, _) = call(&e, &chat_body(false), &[]).await;
    assert_eq!(status, 200);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &trace_id(&headers));
    assert_eq!(
        render(&server, &clients),
        "chat r status=0 gen_ai.operation.name=chat gen_ai.request.model=r gen_ai.response.model=gpt-a \
         gen_ai.provider.name=openai keel.attempts=2 keel.fallback_depth=0 keel.tier=chain keel.cache=none keel.tenant=default\n  \
         chat gpt-a status=0 keel.attempt.kind=first_try keel.deployment=a keel.attempt=1 http.response.status_code=200 keel.next=ok\n  \
         chat claude-b status=0(cancelled) keel.attempt.kind=hedge keel.deployment=b keel.next=cancelled\n"
    );
    // The loser ended with the request (when the winner answered), not
    // when it would have answered.
    assert!(clients[1].end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(upstream_traceparents(&ch, "b").len(), 1);
    assert!(upstream_traceparents(&ch, "b")[0].contains(&hex(&clients[1].span_id)));
}

#[tokio::test]
async fn a_hedge_that_wins_cancels_the_first_attempt() {
    let rcv = Receiver::start(false).await;
    // `a` would answer in 400 ms; the hedge on `b`, sent after 10 ms, in 80 ms.
    let ch = chaos("", "latency = \"400ms\"\n").await;
    let e = engine(&ch, &rcv, "hedge = true\nhedge_after = \"10ms\"", "");
    let (status, headers, _) = call(&e, &chat_body(false), &[]).await;
    assert_eq!(status, 200);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &trace_id(&headers));
    assert_eq!(
        render(&server, &clients),
        "chat r status=0 gen_ai.operation.name=chat gen_ai.request.model=r gen_ai.response.model=claude-b \
         gen_ai.provider.name=anthropic keel.attempts=2 keel.fallback_depth=1 keel.tier=chain keel.cache=none keel.tenant=default\n  \
         chat gpt-a status=0(cancelled) keel.attempt.kind=first_try keel.deployment=a keel.attempt=1 keel.next=cancelled\n  \
         chat claude-b status=0 keel.attempt.kind=hedge keel.deployment=b keel.attempt=1 http.response.status_code=200 keel.next=ok\n"
    );
    // The first attempt ended when the hedge answered, long before its 400 ms.
    let lasted = clients[0].end_time_unix_nano - clients[0].start_time_unix_nano;
    assert!(lasted < 300_000_000, "{lasted} ns");
}

#[tokio::test]
async fn a_stream_resumed_mid_answer_has_a_resume_span() {
    let rcv = Receiver::start(false).await;
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 4\n",
        "",
    )
    .await;
    // The cut comes after the commit (a one-character window).
    let e = engine(&ch, &rcv, "policy = { stream_commit_chars = 1 }\n", "");
    let (status, headers, body) = call(&e, &chat_body(true), &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("data: [DONE]"), "{body}");
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, &trace_id(&headers));
    assert_eq!(
        render(&server, &clients),
        "chat r status=0 gen_ai.operation.name=chat gen_ai.request.model=r gen_ai.response.model=gpt-a \
         gen_ai.provider.name=openai keel.attempts=2 keel.fallback_depth=0 keel.tier=chain keel.cache=none keel.tenant=default\n  \
         chat gpt-a status=2(network) keel.attempt.kind=first_try keel.deployment=a keel.attempt=1 http.response.status_code=200 keel.class=network keel.next=ok\n  \
         chat claude-b status=0 keel.attempt.kind=resume keel.deployment=b keel.attempt=1 http.response.status_code=200 keel.next=ok\n"
    );
    // The answer's finish (written by `b`) and the id the client saw.
    let a = attrs(&server.attributes);
    assert_eq!(a["gen_ai.response.finish_reasons"], "stop");
    let first: serde_json::Value =
        serde_json::from_str(body.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(a["gen_ai.response.id"], first["id"].as_str().unwrap());
    assert!(a["gen_ai.usage.output_tokens"].parse::<u32>().unwrap() > 0);
    let events: Vec<&str> = server.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["keel.first_token", "keel.commit"]);
    // The first token came with `a`'s answer; its stream went on until it broke.
    assert!(server.events[0].time_unix_nano <= server.events[1].time_unix_nano);
    assert!(clients[0].end_time_unix_nano > server.events[1].time_unix_nano);
    assert!(clients[1].start_time_unix_nano >= clients[0].end_time_unix_nano);
    assert_eq!(
        (
            ch.stats("a").unwrap().attempts,
            ch.stats("b").unwrap().attempts
        ),
        (1, 1)
    );
    assert_nothing_secret(&rcv);
}

#[tokio::test]
async fn a_client_traceparent_is_the_parent_of_keels_span() {
    let rcv = Receiver::start(false).await;
    let ch = chaos("", "").await;
    let e = engine(&ch, &rcv, "", "");
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, headers, _) = call(
        &e,
        &chat_body(false),
        &[("traceparent", &parent), ("tracestate", "vendor=x")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(trace_id(&headers), CLIENT_TRACE);
    e.flush_traces().await;
    let (server, clients) = trace(&rcv, CLIENT_TRACE);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.trace_state, "vendor=x");
    assert_ne!(hex(&server.span_id), CLIENT_SPAN);
    assert_eq!(
        upstream_traceparents(&ch, "a"),
        [format!("00-{CLIENT_TRACE}-{}-01", hex(&clients[0].span_id))]
    );
    // The client's tracestate goes upstream with the attempt's traceparent.
    let states: Vec<_> = ch
        .stats("a")
        .unwrap()
        .log
        .into_iter()
        .map(|r| r.tracestate)
        .collect();
    assert_eq!(states, [Some("vendor=x".to_string())]);

    // A client's unsampled trace is followed, not recorded.
    let unsampled = format!("00-{}-{CLIENT_SPAN}-00", "a".repeat(32));
    let (status, headers, _) = call(&e, &chat_body(false), &[("traceparent", &unsampled)]).await;
    assert_eq!(status, 200);
    assert_eq!(trace_id(&headers), "a".repeat(32));
    e.flush_traces().await;
    assert!(rcv
        .spans()
        .iter()
        .all(|s| hex(&s.trace_id) != "a".repeat(32)));
    let tp = upstream_traceparents(&ch, "a");
    assert!(
        tp[1].starts_with(&format!("00-{}-", "a".repeat(32))) && tp[1].ends_with("-00"),
        "{tp:?}"
    );

    // A malformed traceparent starts a new trace.
    let (_, headers, _) = call(&e, &chat_body(false), &[("traceparent", "00-zz-yy-01")]).await;
    assert_eq!(trace_id(&headers).len(), 32);
    assert_ne!(trace_id(&headers), CLIENT_TRACE);
}

#[tokio::test]
async fn without_telemetry_nothing_is_traced() {
    let ch = chaos("", "").await;
    let text = format!(
        "[providers.a]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{KEY_A}\"\n\
         [deployments.a]\nprovider = \"a\"\nmodel = \"gpt-a\"\n[routes.r]\nchain = [\"a\"]\n",
        ch.base_url("a")
    );
    let e = Engine::with_seed(
        Config::from_toml_str(&text, "t.toml", &|_| None).unwrap(),
        1,
    )
    .unwrap();
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, headers, _) = call(&e, &chat_body(false), &[("traceparent", &parent)]).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-keel-trace-id"));
    assert_eq!(upstream_traceparents(&ch, "a"), [""]);
    assert!(!e.render_metrics().contains("keel_trace_"));
}

#[tokio::test]
async fn a_stalled_collector_never_slows_requests_and_dropped_spans_are_counted() {
    let rcv = Receiver::start(true).await;
    let ch = chaos("", "").await;
    let e = engine(
        &ch,
        &rcv,
        "",
        "max_queue_spans = 8\nexport_timeout = \"60s\"",
    );
    let (status, _, _) = call(&e, &chat_body(false), &[]).await;
    assert_eq!(status, 200);
    // The first request's spans are in an export the collector never answers.
    rcv.exports(1).await;
    let t0 = Instant::now();
    for _ in 0..49 {
        let (status, _, _) = call(&e, &chat_body(false), &[]).await;
        assert_eq!(status, 200);
    }
    let took = t0.elapsed();
    // Had a request waited for the collector, it would wait its 60 s.
    assert!(took < Duration::from_secs(10), "49 requests took {took:?}");
    // Two spans a request: 8 queued, the other 49 * 2 - 8 dropped.
    let m = e.render_metrics();
    assert!(m.contains("keel_trace_spans_dropped_total 90\n"), "{m}");
    assert!(m.contains("keel_trace_spans_exported_total 0\n"), "{m}");
    assert_eq!(ch.stats("a").unwrap().attempts, 50);
}
