//! Plain JSON exchanges with a deployment: OpenAI's embeddings and
//! Anthropic's token counting. What they send and what an answer must say
//! to be taken; the transport, error classification and rate-limit hints
//! are the chat exchange's ([`crate::upstream`]).

use std::time::{Duration, SystemTime};

use keel_policy::{Classification, FailureClass, TransportError};
use keel_wire::embeddings::EmbeddingsAnswer;

use crate::call::{ChatCall, Work};
use crate::config::Deployment;
use crate::outcome::PlainAnswer;
use crate::transport::HttpClient;
use crate::upstream::{self, transport_failure};

/// The path under the deployment's base URL that `work` is sent to.
fn path(work: &Work) -> &'static str {
    match work {
        Work::Embeddings(_) => "/embeddings",
        Work::CountTokens => "/messages/count_tokens",
        Work::Chat => "/chat/completions",
    }
}

/// The body `dep` is sent for `call`: the part's inputs with the
/// deployment's model, or the client's Messages request with it.
pub(crate) fn body(dep: &Deployment, call: &ChatCall) -> Result<Vec<u8>, String> {
    match &call.work {
        Work::Embeddings(part) => {
            serde_json::to_vec(&part.request.body_for(&dep.model, part.inputs()))
                .map_err(|e| e.to_string())
        }
        Work::CountTokens => {
            let original = call
                .anthropic_original()
                .ok_or("a token count needs the client's Messages request")?;
            let mut v = serde_json::to_value(original).map_err(|e| e.to_string())?;
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("model".into(), dep.model.clone().into());
                // Not members of a token count request.
                for k in [
                    "max_tokens",
                    "stream",
                    "temperature",
                    "top_p",
                    "top_k",
                    "stop_sequences",
                    "metadata",
                ] {
                    m.remove(k);
                }
            }
            serde_json::to_vec(&v).map_err(|e| e.to_string())
        }
        Work::Chat => Err("internal: a chat request has no plain body".into()),
    }
}

/// Sends one plain attempt and reads its answer.
pub(crate) async fn send(
    client: &HttpClient,
    dep: &Deployment,
    call: &ChatCall,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<PlainAnswer, Classification> {
    let fut = async {
        let uri =
            http::Uri::try_from(format!("{}{}", dep.base_url, path(&call.work))).map_err(|_| {
                transport_failure(
                    TransportError::Connect,
                    &format!("deployment {}: base_url is not a valid URL", dep.name),
                )
            })?;
        let mut resp = client
            .post(uri, dep.request_headers.clone(), body)
            .await
            .map_err(|e| transport_failure(e.kind, &e.message))?;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let rate_limits = keel_policy::rate_limit_headers(&headers, SystemTime::now());
        let body = upstream::read_body(resp).await?;
        if !(200..300).contains(&status) {
            return Err(upstream::classify_error(dep.kind, status, &headers, &body));
        }
        let input_tokens = read(dep, &call.work, &body)?;
        Ok(PlainAnswer {
            body,
            input_tokens,
            rate_limits,
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(transport_failure(
            TransportError::AttemptTimeout,
            &format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// Checks a 2xx body: an embeddings answer holds one vector per input
/// sent (none at all is an empty answer, retried like one); a token count
/// holds `input_tokens`. Returns the input tokens it used.
fn read(dep: &Deployment, work: &Work, body: &[u8]) -> Result<u32, Classification> {
    let unreadable = |why: String| {
        transport_failure(
            TransportError::BodyCut,
            &format!(
                "upstream sent an unreadable {} answer: {why}",
                dep.kind.as_str()
            ),
        )
    };
    match work {
        Work::Embeddings(part) => match EmbeddingsAnswer::read(body, part.inputs().len()) {
            Ok(a) => Ok(a.prompt_tokens.min(u64::from(u32::MAX)) as u32),
            Err(_) if empty_data(body) => {
                let mut c = Classification::new(FailureClass::Empty);
                c.status = Some(200);
                c.message = Some("the answer held no vectors".into());
                Err(c)
            }
            Err(why) => Err(unreadable(why)),
        },
        Work::CountTokens => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| unreadable(e.to_string()))?;
            match v.get("input_tokens").and_then(serde_json::Value::as_u64) {
                Some(_) => Ok(0),
                None => Err(unreadable("no input_tokens".into())),
            }
        }
        Work::Chat => Err(unreadable("a chat answer".into())),
    }
}

fn empty_data(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("data").and_then(|d| d.as_array().map(Vec::is_empty)))
        .unwrap_or(false)
}
