//! `POST /v1/responses`: the OpenAI Responses API as one more client API
//! over the same engine. The request is translated to the canonical chat
//! request before anything else (a malformed input item is a 400 before any
//! upstream call), runs through [`keel_engine::Engine::chat`] like any chat
//! request (same chain, retries, fallbacks and `x-keel-*` headers), and the
//! canonical answer is translated back to a Response object, kept (with
//! `store`) before the client gets it.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_engine::{ChatCall, ClientApi};
use keel_wire::responses::ResponsesRequest;
use keel_wire::translate;

use crate::stored_responses::{self, Pending};
use crate::{add_meta_headers, api_error, auth, engine_error, options, parse_error, read_body};
use crate::{sse_body, AppState};

const API: ClientApi = ClientApi::Responses;

/// `POST /v1/responses`.
pub(crate) async fn create(st: AppState, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // Authenticate before reading the body, as on the chat routes.
    let tenant = match auth::tenant(&st.engine, API, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&st, API, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match create_body(&st, &headers, tenant, &bytes).await {
        Ok(r) | Err(r) => r,
    }
}

async fn create_body(
    st: &AppState,
    headers: &HeaderMap,
    tenant: Option<String>,
    bytes: &[u8],
) -> Result<Response, Response> {
    let request: ResponsesRequest =
        serde_json::from_slice(bytes).map_err(|e| parse_error(API, &e))?;
    // Keel expands the conversation itself: whichever provider answers this
    // turn gets every earlier one.
    let history = match &request.previous_response_id {
        Some(prev) => {
            let param = "previous_response_id";
            stored_responses::load(&st.engine, tenant.as_deref(), prev, param)
                .await?
                .conversation()
        }
        None => Vec::new(),
    };
    let chat = translate::responses_to_chat(&request, &history).map_err(|e| invalid(&e))?;
    let options = options(st, API, headers, tenant.clone())?;
    let id = format!("resp_{}", options.request_id.replace('-', "_"));
    let shell = translate::response_shell(&request, &id, unix_now());
    let keep = request.store.unwrap_or(true).then(|| Pending {
        engine: st.engine.clone(),
        tenant,
        input: stored_responses::with_ids(request.input_items(), &id),
        history,
    });
    let call = ChatCall::from_responses(chat, options);
    if request.stream == Some(true) {
        let out = st
            .engine
            .chat_stream(call)
            .await
            .map_err(|e| engine_error(API, &e))?;
        let conv = translate::ChatToResponsesStream::new(shell);
        let mut resp = sse_body::responses(conv, out.items, keep);
        add_meta_headers(resp.headers_mut(), &out.meta);
        return Ok(resp);
    }
    let out = st
        .engine
        .chat(call)
        .await
        .map_err(|e| engine_error(API, &e))?;
    let response = translate::chat_to_response(out.response(), shell);
    if let Some(keep) = keep {
        keep.save(response.clone()).await;
    }
    let mut resp = match serde_json::to_vec(&response) {
        Ok(b) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            b,
        )
            .into_response(),
        Err(e) => api_error(
            API,
            500,
            "api_error",
            &format!("could not encode the response: {e}"),
            None,
        ),
    };
    add_meta_headers(resp.headers_mut(), &out.meta);
    Ok(resp)
}

/// A 400 for an input Keel cannot translate, naming the field.
fn invalid(e: &translate::InputError) -> Response {
    let mut resp = api_error(API, 400, "invalid_request_error", &e.to_string(), None);
    resp.headers_mut().insert(
        "x-should-retry",
        axum::http::HeaderValue::from_static("false"),
    );
    resp
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
