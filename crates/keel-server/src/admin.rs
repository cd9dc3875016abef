//! Operator endpoints: `/metrics` (Prometheus), `/admin/status` (JSON) and
//! `/admin` (a self-contained HTML page that polls `/admin/status`).
//!
//! When `[server] admin_token` is set, `/admin` and `/admin/status` require
//! `Authorization: Bearer <token>`; `/metrics` stays open for the scraper
//! (it holds no secret and no request data).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_engine::{SpendReport, StatusReport, METRICS_CONTENT_TYPE};
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
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        st.engine.render_metrics(),
    )
        .into_response()
}

async fn page(State(st): State<AppState>, headers: HeaderMap) -> Response {
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
