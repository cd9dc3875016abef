//! Client authentication with virtual keys. With `[[tenants]]` configured,
//! every chat request must carry a tenant token: `Authorization: Bearer`
//! (what OpenAI SDKs send) or `x-api-key` (what Anthropic SDKs send). The
//! engine compares hashes in constant time; this module only finds the
//! token and answers 401 in the API's own shape.
//!
//! Without tenants Keel runs open, which is only safe on loopback:
//! [`warn_if_open`] says so at start when it listens anywhere else.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::response::Response;
use keel_engine::{ClientApi, Engine};
use tracing::warn;

use crate::api_error;

/// The token the client presented, if any.
fn presented(api: ClientApi, headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let bearer = || {
        get("authorization").and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        })
    };
    let api_key = || get("x-api-key").map(str::to_string);
    match api {
        ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings => {
            bearer().or_else(api_key)
        }
        ClientApi::Anthropic => api_key().or_else(bearer),
    }
}

/// The tenant of a request (`None` when Keel runs open), or a 401.
pub(crate) fn tenant(
    engine: &Engine,
    api: ClientApi,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    if !engine.has_tenants() {
        return Ok(None);
    }
    let unauthorized = |msg: &str| {
        let code = match api {
            ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings => {
                Some("invalid_api_key")
            }
            ClientApi::Anthropic => None,
        };
        api_error(api, 401, "authentication_error", msg, code)
    };
    let Some(token) = presented(api, headers) else {
        return Err(unauthorized(match api {
            ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings => {
                "missing API key: send your Keel key as `Authorization: Bearer <key>`"
            }
            ClientApi::Anthropic => "x-api-key header is required (your Keel key)",
        }));
    };
    match engine.authenticate(&token) {
        Some(name) => Ok(Some(name)),
        None => Err(unauthorized(
            "invalid API key: no tenant of this gateway has this key",
        )),
    }
}

/// Warns when Keel serves without tenants on a non-loopback address.
pub(crate) fn warn_if_open(engine: &Engine, addr: Option<SocketAddr>) {
    if let Some(a) = addr {
        if !engine.has_tenants() && !a.ip().is_loopback() {
            warn!(
                listen = %a,
                "no [[tenants]] configured: Keel is open to anyone who can reach {a}; configure tenants or listen on 127.0.0.1"
            );
        }
    }
}
