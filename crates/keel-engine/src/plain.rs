//! Plain JSON exchanges with a deployment: OpenAI's embeddings (Gemini's
//! `batchEmbedContents` for a Gemini deployment, its answer read back into
//! OpenAI's shape) and Anthropic's token counting. What they send and what
//! an answer must say to be taken; the transport, error classification and
//! rate-limit hints are the chat exchange's ([`crate::upstream`]).

use std::time::{Duration, SystemTime};

use keel_policy::{Classification, FailureClass, TransportError};
use keel_wire::embeddings::EmbeddingsAnswer;
use keel_wire::gemini;

use crate::call::{ChatCall, EmbeddingsPart, Work};
use crate::config::{Deployment, ProviderKind};
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

/// The URL `work` is sent to on `dep`: Azure's and Gemini's name the
/// deployment (or model) in the path.
fn url(dep: &Deployment, work: &Work) -> String {
    match (&dep.azure, dep.kind, work) {
        (Some(az), _, _) => az.url(&dep.base_url, &dep.model, path(work)),
        (None, ProviderKind::Gemini, Work::Embeddings(_)) => {
            format!("{}{}", dep.base_url, gemini::batch_embed_path(&dep.model))
        }
        (None, _, _) => format!("{}{}", dep.base_url, path(work)),
    }
}

/// The body `dep` is sent for `call`: the part's inputs with the
/// deployment's model (as Gemini's `batchEmbedContents` for a Gemini
/// deployment), or the client's Messages request with it.
pub(crate) fn body(dep: &Deployment, call: &ChatCall) -> Result<Vec<u8>, String> {
    match &call.work {
        Work::Embeddings(part) if dep.kind == ProviderKind::Gemini => {
            let body =
                gemini::batch_embed_request(&dep.model, part.inputs(), part.request.dimensions)?;
            serde_json::to_vec(&body).map_err(|e| e.to_string())
        }
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
        let uri = http::Uri::try_from(url(dep, &call.work)).map_err(|_| {
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
        let body = match &call.work {
            Work::Embeddings(part) if dep.kind == ProviderKind::Gemini => {
                from_gemini(dep, part, &body)?
            }
            _ => body,
        };
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

/// A Gemini `batchEmbedContents` answer as OpenAI's embeddings answer,
/// in the encoding the client asked for.
fn from_gemini(
    dep: &Deployment,
    part: &EmbeddingsPart,
    body: &[u8],
) -> Result<bytes::Bytes, Classification> {
    let base64 = part.request.encoding_format.as_deref() == Some("base64");
    match gemini::batch_embed_to_openai(body, part.inputs(), &dep.model, base64) {
        Ok(v) => serde_json::to_vec(&v)
            .map(bytes::Bytes::from)
            .map_err(|e| unreadable(dep, e.to_string())),
        Err(gemini::EmbedAnswerError::Empty) => Err(no_vectors()),
        Err(gemini::EmbedAnswerError::Unreadable(why)) => Err(unreadable(dep, why)),
    }
}

fn unreadable(dep: &Deployment, why: String) -> Classification {
    transport_failure(
        TransportError::BodyCut,
        &format!(
            "upstream sent an unreadable {} answer: {why}",
            dep.kind.as_str()
        ),
    )
}

/// A 2xx answer without a vector: an empty answer, retried like one.
fn no_vectors() -> Classification {
    let mut c = Classification::new(FailureClass::Empty);
    c.status = Some(200);
    c.message = Some("the answer held no vectors".into());
    c
}

/// Checks a 2xx body: an embeddings answer holds one vector per input
/// sent (none at all is an empty answer, retried like one); a token count
/// holds `input_tokens`. Returns the input tokens it used.
fn read(dep: &Deployment, work: &Work, body: &[u8]) -> Result<u32, Classification> {
    let unreadable = |why: String| unreadable(dep, why);
    match work {
        Work::Embeddings(part) => match EmbeddingsAnswer::read(body, part.inputs().len()) {
            Ok(a) => Ok(a.prompt_tokens.min(u64::from(u32::MAX)) as u32),
            Err(_) if empty_data(body) => Err(no_vectors()),
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
