//! The control API under `/_chaos`: stats, run-time fault plans, reset.
//!
//! - `GET /_chaos/stats` (`?log=false` to leave the logs out)
//! - `PUT /_chaos/upstreams/{name}/faults` with `{"faults":[{"kind":"server_error","status":500}]}`
//! - `POST /_chaos/reset`
//! - `GET /_chaos/health`

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::reply::json_response;
use crate::scenario::FaultPlan;
use crate::shared::Shared;
use crate::upstream::Upstream;

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, json!({"error": {"message": message}}).to_string())
}

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>, rest: &str) -> Response<Body> {
    let method = req.method().clone();
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => json_response(StatusCode::OK, "{\"status\":\"ok\"}"),
        (&Method::GET, ["stats"]) => {
            let with_log = !req.uri().query().is_some_and(|q| q.contains("log=false"));
            let mut upstreams = Map::new();
            for up in &shared.upstreams {
                let stats =
                    serde_json::to_value(up.stats.snapshot(with_log)).unwrap_or(Value::Null);
                upstreams.insert(up.spec.name.clone(), stats);
            }
            json_response(StatusCode::OK, json!({"upstreams": upstreams}).to_string())
        }
        (&Method::POST, ["reset"]) => {
            shared.upstreams.iter().for_each(Upstream::reset);
            json_response(StatusCode::OK, "{\"status\":\"reset\"}")
        }
        (&Method::PUT, ["upstreams", name, "faults"]) => {
            let up = match shared.upstream(name) {
                Ok(up) => up,
                Err(e) => return error(StatusCode::NOT_FOUND, &e.to_string()),
            };
            let Ok(body) = axum::body::to_bytes(Body::new(req.into_body()), 1 << 20).await else {
                return error(StatusCode::BAD_REQUEST, "request body: could not be read");
            };
            let text = String::from_utf8_lossy(&body);
            match FaultPlan::from_json_str(&text) {
                Ok(plan) => {
                    let n = plan.faults.len();
                    up.set_plan(plan);
                    json_response(
                        StatusCode::OK,
                        json!({"status": "ok", "faults": n}).to_string(),
                    )
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no control endpoint {method} /_chaos/{rest}"),
        ),
    }
}
