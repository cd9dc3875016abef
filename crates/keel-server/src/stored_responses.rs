//! Stored responses: with `store` true (the default) a response is kept,
//! with its input items and the conversation before them, in Keel's
//! [`keel_store::Store`] (memory, or Redis for a fleet) under a key scoped
//! by tenant, for `[responses] ttl` (30 days unless configured). That serves `GET /v1/responses/{id}`,
//! `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, and
//! lets Keel expand `previous_response_id` into the full history itself, so
//! a conversation continues whichever provider answers each turn.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_engine::{ClientApi, Engine};
use keel_wire::responses::Response as ResponseObject;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{api_error, auth, AppState};

const API: ClientApi = ClientApi::Responses;

/// What is kept of one response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    /// The response as the client got it.
    pub response: ResponseObject,
    /// The request's own input items (with ids).
    pub input: Vec<Value>,
    /// The conversation before them (the items of the responses it continues).
    pub history: Vec<Value>,
}

impl StoredResponse {
    /// The conversation a response continuing this one starts from.
    pub(crate) fn conversation(&self) -> Vec<Value> {
        let mut items = self.history.clone();
        items.extend(self.input.iter().cloned());
        items.extend(self.response.output.iter().cloned());
        items
    }
}

/// A response to keep once it is complete.
pub(crate) struct Pending {
    pub engine: Engine,
    pub tenant: Option<String>,
    pub input: Vec<Value>,
    pub history: Vec<Value>,
}

impl Pending {
    /// Keeps `response` with the request's items.
    pub(crate) async fn save(self, response: ResponseObject) {
        let stored = StoredResponse {
            response,
            input: self.input,
            history: self.history,
        };
        save(&self.engine, self.tenant.as_deref(), &stored).await;
    }
}

fn key(tenant: Option<&str>, id: &str) -> String {
    format!("responses:{}:{id}", tenant.unwrap_or("default"))
}

/// Keeps `stored` for `[responses] ttl`.
pub(crate) async fn save(engine: &Engine, tenant: Option<&str>, stored: &StoredResponse) {
    if let Ok(bytes) = serde_json::to_vec(stored) {
        let ttl = engine.config().responses.ttl;
        engine
            .store()
            .cache_put(&key(tenant, &stored.response.id), bytes, ttl)
            .await;
    }
}

/// The stored response `id` of `tenant`, or a 404 in OpenAI's shape.
pub(crate) async fn load(
    engine: &Engine,
    tenant: Option<&str>,
    id: &str,
    param: &str,
) -> Result<StoredResponse, Response> {
    let found = engine.store().cache_get(&key(tenant, id)).await;
    match found.and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(stored) => Ok(stored),
        None => Err(missing(engine, id, param)),
    }
}

/// A new response id: `resp_`, the creation time (8 hex digits of Unix
/// seconds, so a missing response older than the TTL can be said to have
/// expired), then the request id.
pub(crate) fn new_id(created: u64, request_id: &str) -> String {
    format!("resp_{:08x}{}", created, request_id.replace('-', "_"))
}

/// When the response `id` was created, if it is one of Keel's ids.
fn created_at(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("resp_")?.get(..8)?;
    u64::from_str_radix(hex, 16).ok()
}

/// The 404 for a response that is not stored: expired when its id says it
/// is older than the TTL, unknown otherwise.
fn missing(engine: &Engine, id: &str, param: &str) -> Response {
    let ttl = engine.config().responses.ttl.as_secs();
    let now = unix_now();
    match created_at(id) {
        Some(t) if t.saturating_add(ttl) <= now => not_found_because(
            param,
            &format!("the response {id:?} has expired: stored responses are kept for {} ([responses] ttl)", humantime_secs(ttl)),
        ),
        _ => not_found(id, param),
    }
}

/// `secs` as a readable duration.
fn humantime_secs(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{s} seconds"),
    }
}

fn not_found(id: &str, param: &str) -> Response {
    not_found_because(
        param,
        &format!(
            "no stored response with id {id:?} (unknown, deleted, or stored with store: false)"
        ),
    )
}

fn not_found_because(param: &str, why: &str) -> Response {
    let mut resp = api_error(
        API,
        404,
        "invalid_request_error",
        &format!("{param}: {why}"),
        Some("not_found"),
    );
    resp.headers_mut().insert(
        "x-should-retry",
        axum::http::HeaderValue::from_static("false"),
    );
    resp
}

/// The input items as listed by `input_items`: typed, with ids, message
/// content as parts.
pub(crate) fn with_ids(items: Vec<Value>, response_id: &str) -> Vec<Value> {
    let suffix = response_id.trim_start_matches("resp_");
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if let Value::Object(m) = &mut item {
                m.entry("type").or_insert_with(|| "message".into());
                if m.get("type").and_then(Value::as_str) == Some("message") {
                    if let Some(Value::String(text)) = m.get("content").cloned() {
                        let part = match m.get("role").and_then(Value::as_str) {
                            Some("assistant") => "output_text",
                            _ => "input_text",
                        };
                        m.insert("content".into(), json!([{"type": part, "text": text}]));
                    }
                    m.entry("status").or_insert_with(|| "completed".into());
                }
                m.entry("id")
                    .or_insert_with(|| format!("in_{suffix}_{i}").into());
            }
            item
        })
        .collect()
}

async fn tenant_of(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, Response> {
    auth::tenant(&st.engine, API, headers)
}

/// `GET /v1/responses/{id}`.
pub(crate) async fn retrieve(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let st = st.for_request();
    let tenant = match tenant_of(&st, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match load(&st.engine, tenant.as_deref(), &id, "response_id").await {
        Ok(stored) => Json(stored.response).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /v1/responses/{id}`.
pub(crate) async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let st = st.for_request();
    let tenant = match tenant_of(&st, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match st
        .engine
        .store()
        .cache_delete(&key(tenant.as_deref(), &id))
        .await
    {
        true => {
            Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response()
        }
        false => missing(&st.engine, &id, "response_id"),
    }
}

/// Query of `input_items`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    order: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items` (newest first unless `order=asc`).
pub(crate) async fn input_items(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let st = st.for_request();
    let tenant = match tenant_of(&st, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let stored = match load(&st.engine, tenant.as_deref(), &id, "response_id").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut items = stored.input;
    if q.order.as_deref() != Some("asc") {
        items.reverse();
    }
    if let Some(after) = &q.after {
        if let Some(at) = items.iter().position(|i| i["id"].as_str() == Some(after)) {
            items.drain(..=at);
        }
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let has_more = items.len() > limit;
    items.truncate(limit);
    let first = items.first().map(|i| i["id"].clone());
    let last = items.last().map(|i| i["id"].clone());
    Json(json!({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": has_more}))
        .into_response()
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
