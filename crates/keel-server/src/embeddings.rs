//! `POST /v1/embeddings` (OpenAI's shape) and `POST /v1/messages/count_tokens`
//! (Anthropic's): read, checked and handed to the engine, whose answer goes
//! back with the `x-keel-*` headers. Bad input is refused here, in the
//! API's own error shape, before any upstream call.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use keel_engine::{ChatCall, ClientApi, EmbeddingsCall};
use keel_wire::anthropic::MessagesRequest;
use keel_wire::embeddings::EmbeddingsRequest;
use keel_wire::translate;

use crate::{
    add_meta_headers, api_error, auth, engine_error, idempotency, json_answer, options,
    parse_error, read_body, AppState,
};

/// `POST /v1/embeddings`.
pub(crate) async fn create(st: AppState, req: axum::extract::Request) -> Response {
    let api = ClientApi::Embeddings;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let tenant = match auth::tenant(&st.engine, api, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&st, api, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(key) = idempotency::key_of(&headers) {
        let (st2, h2, t2) = (st.clone(), headers.clone(), tenant.clone());
        let run = move |b: bytes::Bytes| -> idempotency::Run {
            Box::pin(async move { create_body(&st2, &h2, t2, b).await })
        };
        let path = "/v1/embeddings";
        return idempotency::single_flight(&st, api, path, tenant.as_deref(), &key, bytes, run)
            .await;
    }
    create_body(&st, &headers, tenant, bytes).await
}

async fn create_body(
    st: &AppState,
    headers: &HeaderMap,
    tenant: Option<String>,
    bytes: bytes::Bytes,
) -> Response {
    let api = ClientApi::Embeddings;
    let request = match EmbeddingsRequest::from_json(&bytes) {
        Ok(r) => r,
        Err(e) => return crate::errors::invalid_param(&e.message, e.param),
    };
    let options = match options(st, api, headers, tenant) {
        Ok(o) => o,
        Err(r) => return r,
    };
    match st
        .engine
        .embeddings(EmbeddingsCall { request, options })
        .await
    {
        Ok(out) => json_answer(api, serde_json::to_vec(&out.body), &out.meta),
        Err(e) => engine_error(api, &e),
    }
}

/// `POST /v1/messages/count_tokens`.
pub(crate) async fn count_tokens(st: AppState, req: axum::extract::Request) -> Response {
    let api = ClientApi::Anthropic;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let tenant = match auth::tenant(&st.engine, api, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&st, api, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A token count needs no `max_tokens`; the Messages reader does.
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return parse_error(api, &e),
    };
    let Some(obj) = value.as_object_mut() else {
        return api_error(
            api,
            400,
            "invalid_request_error",
            "the request body must be a JSON object",
            None,
        );
    };
    obj.entry("max_tokens").or_insert(1.into());
    let original: MessagesRequest = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return parse_error(api, &e),
    };
    if original.messages.is_empty() {
        return api_error(
            api,
            400,
            "invalid_request_error",
            "messages: at least one message is required",
            None,
        );
    }
    let request = match translate::anthropic_to_openai_request(&original) {
        Ok(r) => r,
        Err(e) => return api_error(api, 400, "invalid_request_error", &e.to_string(), None),
    };
    let options = match options(&st, api, &headers, tenant) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let call = ChatCall::from_anthropic_body(request, original, bytes, options);
    match st.engine.count_tokens(call).await {
        Ok(count) => {
            let body = serde_json::json!({"input_tokens": count.input_tokens});
            let mut resp = axum::Json(body).into_response();
            add_meta_headers(resp.headers_mut(), &count.meta);
            if count.estimated {
                resp.headers_mut()
                    .insert("x-keel-estimated", HeaderValue::from_static("true"));
            }
            resp
        }
        Err(e) => engine_error(api, &e),
    }
}
