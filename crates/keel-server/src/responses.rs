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
use serde_json::Value;

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
    let max_items = st.engine.config().responses.max_items;
    let items = history.len() + request.input_items().len();
    if items > max_items {
        return Err(bad_request(&format!(
            "input: the conversation holds {items} items, more than [responses] max_items = {max_items}"
        )));
    }
    let needs = keel_engine::ResponsesNeeds::of(&request).map_err(|m| bad_request(&m))?;
    let mut chat = translate::responses_to_chat(&request, &history).map_err(|e| invalid(&e))?;
    // Deployments that take `reasoning` and get the chat translation get
    // its effort as chat's `reasoning_effort`.
    if let Some(effort) = request
        .extra
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| e.is_string())
    {
        chat.extra.insert("reasoning_effort".into(), effort.clone());
    }
    let mut options = options(st, API, headers, tenant.clone())?;
    options.responses = needs;
    let created = stored_responses::unix_now();
    let id = stored_responses::new_id(created, &options.request_id);
    let shell = translate::response_shell(&request, &id, created);
    let native = native_body(bytes, &request, &history);
    let keep = request.store.unwrap_or(true).then(|| Pending {
        engine: st.engine.clone(),
        tenant,
        input: stored_responses::with_ids(request.input_items(), &id),
        history,
    });
    let call = ChatCall::from_responses_body(chat, native, options);
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
    let response = match out.raw().filter(|raw| raw.api == API) {
        // A native deployment's own Response, under Keel's id and the route.
        Some(raw) => translate::native_response(&raw.body, &shell)
            .unwrap_or_else(|| translate::chat_to_response(out.response(), shell)),
        None => translate::chat_to_response(out.response(), shell),
    };
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

/// The body a native Responses deployment is sent: the client's bytes as
/// they came, or, continuing a stored response, the client's request with
/// `previous_response_id` replaced by the conversation it names (Keel holds
/// it, not the provider). Item ids, reasoning items and the provider's own
/// tool calls (built-in tools) are left out of the history: they name items
/// only the provider that made them knows.
fn native_body(bytes: &[u8], request: &ResponsesRequest, history: &[Value]) -> bytes::Bytes {
    let Some(Value::Object(mut body)) = request
        .previous_response_id
        .as_ref()
        .and_then(|_| serde_json::from_slice::<Value>(bytes).ok())
    else {
        return bytes::Bytes::copy_from_slice(bytes);
    };
    body.remove("previous_response_id");
    let mut input: Vec<Value> = history
        .iter()
        .filter(|i| {
            let kind = i.get("type").and_then(Value::as_str).unwrap_or("message");
            kind != "reasoning" && !keel_wire::responses::PROVIDER_CALL_ITEMS.contains(&kind)
        })
        .cloned()
        .map(|mut i| {
            if let Value::Object(m) = &mut i {
                m.remove("id");
            }
            i
        })
        .collect();
    input.extend(request.input_items());
    body.insert("input".into(), Value::Array(input));
    serde_json::to_vec(&body)
        .map(Into::into)
        .unwrap_or_else(|_| bytes::Bytes::copy_from_slice(bytes))
}

/// A 400 for an input Keel cannot translate, naming the field.
fn invalid(e: &translate::InputError) -> Response {
    bad_request(&e.to_string())
}

/// A 400 in OpenAI's shape that the SDKs do not retry.
fn bad_request(message: &str) -> Response {
    let mut resp = api_error(API, 400, "invalid_request_error", message, None);
    resp.headers_mut().insert(
        "x-should-retry",
        axum::http::HeaderValue::from_static("false"),
    );
    resp
}
