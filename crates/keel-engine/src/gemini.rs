//! The Gemini provider kind's seams in the pipeline: the body it is sent, how its answers and errors are read. The wire mapping
//! itself is `keel_wire::gemini`; the error table `keel_policy`'s
//! `classify_gemini`. Everything else (admission, retries, fallbacks,
//! streams) is the one pipeline every kind shares.

use std::time::SystemTime;

use bytes::Bytes;
use keel_policy::{classify_transport, Classification, TransportError};
use keel_wire::gemini::{self, GenerateContentResponse};
use keel_wire::openai::ChatRequest;

use crate::call::FullAnswer;
use crate::config::Deployment;

/// The `generateContent` body for `request`, its output limit clamped to
/// the deployment's (`limit`).
pub(crate) fn body(request: &ChatRequest, limit: Option<u32>) -> Result<Vec<u8>, String> {
    let mut req = gemini::openai_to_gemini_request(request).map_err(|e| e.to_string())?;
    if let Some(limit) = limit {
        req.generation_config
            .get_or_insert_with(Default::default)
            .max_output_tokens = Some(limit);
    }
    serde_json::to_vec(&req).map_err(|e| e.to_string())
}

/// A 2xx `generateContent` body as the canonical answer, made at `created`.
pub(crate) fn parse_success(
    dep: &Deployment,
    body: &Bytes,
    created: u64,
) -> Result<FullAnswer, Classification> {
    let resp: GenerateContentResponse = serde_json::from_slice(body).map_err(|e| {
        let mut c = classify_transport(TransportError::BodyCut);
        c.message = Some(format!("upstream sent an unreadable gemini response: {e}"));
        c
    })?;
    let mut answer = gemini::gemini_to_openai_response(&resp, &dep.model);
    answer.created = created;
    Ok(FullAnswer::new(answer))
}

/// Classifies a non-2xx Gemini answer (Google's error body).
pub(crate) fn classify(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Classification> {
    keel_policy::classify_gemini_response(status, headers, body, SystemTime::now())
}

/// The status of an error event in a Gemini stream (`data: {"error":...}`):
/// its `error.code`, else 500.
pub(crate) fn stream_error_status(data: &str) -> u16 {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("error")?.get("code")?.as_u64())
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(500)
}
