//! Azure OpenAI's error answers (docs/azure.md). Azure speaks OpenAI's wire,
//! so [`classify_response`] reads most of them as they are: 429 with
//! `retry-after-ms`/`retry-after`, 408 `Timeout`, 5xx, 400
//! `context_length_exceeded`. What it adds:
//!
//! - The content filter blocks a *prompt* with a 400 whose
//!   `error.innererror` says `ResponsibleAIPolicyViolation` and carries the
//!   `content_filter_result` per category. That is
//!   [`FailureClass::ContentFiltered`] (another deployment, with another
//!   filter configuration, may answer) even when `error.code` is not
//!   `content_filter`, and the message names the categories that fired.
//! - `OperationNotSupported` (a 400: the deployment's model cannot do this
//!   operation, an embeddings model asked to chat) is the deployment's
//!   problem, not the request's: not retried there, but fallen back from,
//!   like a 404 `DeploymentNotFound`.
//!
//! A *completion* the filter stops is a 200 with `finish_reason:
//! "content_filter"`, read by [`crate::classify_completion`] as for OpenAI.

use std::time::SystemTime;

use http::HeaderMap;
use serde_json::Value;

use crate::class::{Action, Classification, FailureClass};
use crate::classify::classify_response;

/// Bodies larger than this are left to [`classify_response`] alone.
const MAX_JSON_BODY: usize = 256 * 1024;

/// Classifies an Azure OpenAI answer; `None` for 2xx.
///
/// ```
/// use http::HeaderMap;
/// use keel_policy::{classify_azure_response, FailureClass};
/// use std::time::SystemTime;
///
/// let body = br#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400,
///   "innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
/// let c = classify_azure_response(400, &HeaderMap::new(), body, SystemTime::now()).unwrap();
/// assert_eq!(c.class, FailureClass::ContentFiltered);
/// assert!(c.action.fall_back && !c.action.retry_same);
/// ```
pub fn classify_azure_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Option<Classification> {
    let mut c = classify_response(status, headers, body, now)?;
    if !(400..500).contains(&status) || body.len() > MAX_JSON_BODY {
        return Some(c);
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Some(c);
    };
    let error = json.get("error");
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    let inner = error.and_then(|e| e.get("innererror"));
    let filtered = inner.is_some_and(|i| {
        i.get("code").and_then(Value::as_str) == Some("ResponsibleAIPolicyViolation")
            || i.get("content_filter_result").is_some()
    });
    if filtered && c.class != FailureClass::ContentFiltered {
        c.class = FailureClass::ContentFiltered;
        c.action = FailureClass::ContentFiltered.default_action();
    }
    if c.class == FailureClass::ContentFiltered {
        c.provider_code = Some("content_filter".to_owned());
        let fired = inner
            .and_then(|i| i.get("content_filter_result"))
            .map(fired_categories)
            .unwrap_or_default();
        if !fired.is_empty() {
            let message = c.message.take().unwrap_or_default();
            c.message = Some(format!("{message} [filtered: {}]", fired.join(", ")));
        }
    } else if code == Some("OperationNotSupported") {
        c.class = FailureClass::InvalidRequest;
        c.action = Action {
            retry_same: false,
            fall_back: true,
        };
    }
    Some(c)
}

/// The categories of a `content_filter_result` that fired: `hate (high)`,
/// `jailbreak`.
fn fired_categories(result: &Value) -> Vec<String> {
    let Some(map) = result.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(_, v)| v.get("filtered").and_then(Value::as_bool) == Some(true))
        .map(
            |(name, v)| match v.get("severity").and_then(Value::as_str) {
                Some(severity) => format!("{name} ({severity})"),
                None => name.clone(),
            },
        )
        .collect()
}
