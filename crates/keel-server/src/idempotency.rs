//! `Idempotency-Key` (docs/design.md §5). The first request with a key claims it and
//! runs; its response (status, headers, body: streamed answers included)
//! is recorded as it goes to the client and kept for `[store]
//! idempotency_ttl`. A duplicate that arrives while it runs waits for it
//! and gets the same response (single flight, across replicas when the
//! store is Redis); one that arrives later gets the record replayed. The
//! same key with a different body is refused with 422. Failures that a
//! retry may fix (429, 5xx) are not recorded: the claim is released and
//! the next duplicate runs again.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use keel_engine::ClientApi;
use keel_store::{Claim, IdemRecord, Store};
use tokio::sync::mpsc;

use crate::{api_error, AppState};

/// A boxed handler future (the handler is re-entered without the key).
pub(crate) type Run = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The `Idempotency-Key` header, if present and usable.
pub(crate) fn key_of(headers: &HeaderMap) -> Option<String> {
    const IDEMPOTENCY_KEY: axum::http::HeaderName =
        axum::http::HeaderName::from_static("idempotency-key");
    let v = headers.get(IDEMPOTENCY_KEY)?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 255).then(|| v.to_string())
}

/// Runs `run` once per key; duplicates wait or replay.
pub(crate) async fn single_flight(
    st: &AppState,
    api: ClientApi,
    path: &str,
    tenant: Option<&str>,
    key: &str,
    body: Bytes,
    run: impl FnOnce(Bytes) -> Run,
) -> Response {
    let engine = &st.engine;
    let store = engine.store().clone();
    let config = engine.config();
    let record_ttl = config.idempotency_ttl;
    // The claim outlives the longest request.
    let lock_ttl = config
        .routes
        .values()
        .map(|r| r.policy.timeout)
        .max()
        .unwrap_or(Duration::from_secs(60))
        + Duration::from_secs(10);
    // Keys are scoped by tenant: one tenant can never replay another's answer.
    let tenant = tenant.unwrap_or("default");
    let id = keel_store::digest_hex(&[&b"idempotency"[..], tenant.as_bytes(), key.as_bytes()]);
    let fingerprint = keel_store::digest_hex(&[path.as_bytes(), &body[..]]);
    let give_up = Instant::now() + lock_ttl;
    loop {
        match store.idem_claim(&id, &fingerprint, lock_ttl).await {
            Claim::Acquired => break,
            Claim::Completed(rec) if rec.fingerprint == fingerprint => {
                return replay(&rec.response)
                    .unwrap_or_else(|| conflict(api, 500, "the stored response is unreadable"));
            }
            Claim::Completed(_) => return mismatch(api, key),
            Claim::InProgress { fingerprint: fp } if fp != fingerprint => {
                return mismatch(api, key)
            }
            Claim::InProgress { .. } => {
                if Instant::now() >= give_up {
                    return conflict(
                        api,
                        409,
                        "a request with this Idempotency-Key is still in progress",
                    );
                }
                store.idem_changed(&id, Duration::from_secs(1)).await;
            }
        }
    }
    let resp = run(body).await;
    record(store, id, fingerprint, record_ttl, resp)
}

fn mismatch(api: ClientApi, key: &str) -> Response {
    let mut r = api_error(
        api,
        422,
        "invalid_request_error",
        &format!("Idempotency-Key {key:?} was already used with a different request body"),
        Some("idempotency_key_reused"),
    );
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    r
}

fn conflict(api: ClientApi, status: u16, message: &str) -> Response {
    api_error(api, status, "invalid_request_error", message, None)
}

/// Sends `resp` to the client while recording it; completes the key when
/// the body ended and the status is final, releases it otherwise.
fn record(
    store: Store,
    id: String,
    fingerprint: String,
    ttl: Duration,
    resp: Response,
) -> Response {
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let keep = status < 500 && status != 429;
    let head = encode_head(status, &parts.headers);
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, axum::Error>>(16);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut buf = Vec::new();
        let mut client = true;
        let mut clean = true;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(b) => {
                    buf.extend_from_slice(&b);
                    // Keep reading after the client left: waiters need the result.
                    if client && tx.send(Ok(b)).await.is_err() {
                        client = false;
                    }
                }
                Err(e) => {
                    clean = false;
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        if keep && clean {
            let mut response = head.into_bytes();
            response.push(b'\n');
            response.extend_from_slice(&buf);
            store
                .idem_complete(
                    &id,
                    IdemRecord {
                        fingerprint,
                        response,
                    },
                    ttl,
                )
                .await;
        } else {
            store.idem_release(&id).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Headers not replayed (hop-by-hop or recomputed).
const SKIP: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

fn encode_head(status: u16, headers: &HeaderMap) -> String {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| !SKIP.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    serde_json::json!({ "status": status, "headers": pairs }).to_string()
}

/// The stored response, with `idempotent-replayed: true`.
fn replay(stored: &[u8]) -> Option<Response> {
    let split = stored.iter().position(|b| *b == b'\n')?;
    let head: serde_json::Value = serde_json::from_slice(&stored[..split]).ok()?;
    let status = StatusCode::from_u16(u16::try_from(head["status"].as_u64()?).ok()?).ok()?;
    let mut resp = Response::new(Body::from(Bytes::copy_from_slice(&stored[split + 1..])));
    *resp.status_mut() = status;
    for pair in head["headers"].as_array()? {
        let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Some(resp)
}
