//! Operator endpoints: `/metrics` (Prometheus), `/admin/status` (JSON),
//! `/admin` (a self-contained HTML page that polls `/admin/status`) and
//! `POST /admin/reload` (re-read the config file; see
//! [`keel_engine::reload`]).
//!
//! When `[server] admin_token` is set, `/admin`, `/admin/status` and
//! `/admin/reload` require `Authorization: Bearer <token>` (the token of
//! the config running when the request came); `/metrics` stays open for
//! the scraper (it holds no secret and no request data).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_engine::{ReloadError, SpendReport, StatusReport, METRICS_CONTENT_TYPE};
use serde::Serialize;

use crate::AppState;

/// The status page: no build step, inline CSS and JS.
const PAGE: &str = include_str!("admin.html");

/// The operator routes, merged into the app's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin", get(page))
        .route("/admin/status", get(status))
        .route("/admin/reload", post(reload))
}

async fn metrics(State(st): State<AppState>) -> Response {
    let st = st.for_request();
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        st.engine.render_metrics(),
    )
        .into_response()
}

async fn page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let st = st.for_request();
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn status(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let st = st.for_request();
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    let report = AdminStatus {
        status: st.engine.status(),
        spend: st.engine.spend().await,
    };
    let mut resp = Json(report).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /admin/reload`: re-reads, validates and swaps the config. 200
/// with what was kept; 422 with the validation error (file, key, what was
/// expected) when the file is refused and the running config stays; 409
/// when the gateway was not started from a file.
async fn reload(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let st = st.for_request();
    if let Err(r) = authorize(&st, &headers) {
        return r;
    }
    let live = st.live.clone();
    // Reads a file and builds policies: off the async workers.
    let result = match tokio::task::spawn_blocking(move || live.reload()).await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({"error": format!("reload failed: {e}")})),
            )
                .into_response()
        }
    };
    let running = st.live.engine();
    let running = &running.config().hash;
    match result {
        Ok(r) => Json(serde_json::json!({"result": "ok", "reload": r})).into_response(),
        Err(e @ ReloadError::NoFile) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"result": "rejected", "error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "result": "rejected",
                "error": e.to_string(),
                "running_hash": running,
            })),
        )
            .into_response(),
    }
}

/// `/admin/status`: the engine's status and this month's spend (the
/// fleet's with `[store] redis`).
#[derive(Serialize)]
struct AdminStatus {
    #[serde(flatten)]
    status: StatusReport,
    spend: SpendReport,
}

/// Checks the bearer token when one is configured.
fn authorize(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &st.engine.config().server.admin_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"keel admin\"")],
            "admin endpoints need `Authorization: Bearer <admin_token>`\n",
        )
            .into_response()),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
