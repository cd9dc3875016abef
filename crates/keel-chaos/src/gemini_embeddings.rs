//! Gemini's embedding methods, `POST .../models/{model}:embedContent` and
//! `:batchEmbedContents`: what they accept and what they answer. The
//! attempt around them (key, faults, limits, stats) is the chat
//! endpoint's, and every failure is rendered by the Gemini dialect.
//!
//! The vectors are OpenAI's endpoint's ([`crate::embeddings::vector`]) for
//! the same model and text: a pure function of the server seed, the model
//! and the input, so a test can compare what Keel returns with what the
//! upstream made.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::answer::{ChatRequest, OutputMode};
use crate::dialect::Failure;
use crate::embeddings::{input_tokens, model_dimensions, vector, EmbeddingsRequest, Shape};

/// The most requests one `batchEmbedContents` call may carry.
pub(crate) const MAX_BATCH: usize = 100;

/// The model and whether the call is a batch, from a request's path
/// (`/{upstream}/v1beta/models/{model}:embedContent`); `None` for any
/// other method.
pub(crate) fn method(path: &str) -> Option<(String, bool)> {
    let (_, call) = path.split_once("/models/")?;
    let (model, method) = call.split_once(':')?;
    let batch = match method {
        "embedContent" => false,
        "batchEmbedContents" => true,
        _ => return None,
    };
    (!model.is_empty()).then(|| (model.to_owned(), batch))
}

/// Parses an embedding call at `path` as Google validates it. The
/// chat-shaped request carries what the attempt needs (model, prompt
/// tokens; no output).
pub(crate) fn parse(
    path: &str,
    body: &[u8],
    max_inputs: Option<u32>,
) -> Result<(ChatRequest, EmbeddingsRequest), Failure> {
    let Some((model, batch)) = method(path) else {
        return Err(Failure::UnknownRoute {
            method: "POST".into(),
            path: path.to_owned(),
        });
    };
    let obj = &crate::dialect::gemini::json_object(body)?;
    let requests: Vec<(&Map<String, Value>, String)> = if batch {
        let Some(Value::Array(items)) = obj.get("requests") else {
            return Err(Failure::invalid(
                "* BatchEmbedContentsRequest.requests: requests is not specified\n",
            ));
        };
        let limit = max_inputs.map_or(MAX_BATCH, |m| m as usize);
        if items.is_empty() || items.len() > limit {
            return Err(Failure::invalid(format!(
                "* BatchEmbedContentsRequest.requests: at most {limit} requests can be in one batch, got {}\n",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let r = r.as_object().ok_or_else(|| {
                    Failure::invalid(format!(
                        "* BatchEmbedContentsRequest.requests[{i}]: expected an object\n"
                    ))
                })?;
                let named = r.get("model").and_then(Value::as_str).unwrap_or_default();
                if named != format!("models/{model}") {
                    return Err(Failure::invalid(format!(
                        "* BatchEmbedContentsRequest.requests[{i}].model: the model of every request must be the model in the URL (models/{model}), got {named:?}\n"
                    )));
                }
                Ok((r, format!("BatchEmbedContentsRequest.requests[{i}]")))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![(obj, "EmbedContentRequest".to_owned())]
    };
    let mut inputs = Vec::with_capacity(requests.len());
    let mut dimensions = None;
    for (r, at) in &requests {
        inputs.push(Value::String(content_text(r, at)?));
        let asked = output_dimensionality(r, at, &model)?;
        if dimensions.is_some() && asked != dimensions {
            return Err(Failure::invalid(format!(
                "* {at}.output_dimensionality: every request of a batch must ask for the same dimensionality (Keel's chaos keeps one per call)\n"
            )));
        }
        dimensions = asked;
    }
    let chat = ChatRequest {
        model,
        stream: false,
        include_usage: false,
        max_tokens: Some(0),
        prompt_tokens: inputs.iter().map(input_tokens).sum(),
        content_seed: 0,
        output: OutputMode::Text,
        tool: None,
        continues: None,
        responses: Default::default(),
    };
    let shape = if batch {
        Shape::GeminiBatch
    } else {
        Shape::GeminiOne
    };
    Ok((
        chat,
        EmbeddingsRequest {
            inputs,
            dimensions,
            base64: false,
            shape,
        },
    ))
}

/// The text of a request's `content` (its text parts joined).
fn content_text(r: &Map<String, Value>, at: &str) -> Result<String, Failure> {
    let parts = r
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Failure::invalid(format!("* {at}.content: contents is not specified\n")))?;
    let text: String = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    if text.is_empty() {
        return Err(Failure::invalid(format!(
            "* {at}.content.parts: text must be non-empty\n"
        )));
    }
    Ok(text)
}

fn output_dimensionality(
    r: &Map<String, Value>,
    at: &str,
    model: &str,
) -> Result<Option<usize>, Failure> {
    let full = model_dimensions(model);
    match r.get("outputDimensionality") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n as usize <= full => Ok(Some(n as usize)),
            _ => Err(Failure::invalid(format!(
                "* {at}.output_dimensionality: must be between 1 and {full}, got {v}\n"
            ))),
        },
    }
}

/// The answer to `req` (`empty`: the `empty` fault's answer, no vectors).
pub(crate) fn answer(seed: u64, chat: &ChatRequest, req: &EmbeddingsRequest, empty: bool) -> Bytes {
    let values =
        |input: &Value| json!({"values": vector(seed, &chat.model, input, req.dimensions)});
    let body = match (req.shape, empty) {
        (Shape::GeminiOne, true) => json!({"embedding": {"values": []}}),
        (Shape::GeminiOne, false) => json!({"embedding": values(&req.inputs[0])}),
        (_, true) => json!({"embeddings": []}),
        (_, false) => json!({"embeddings": req.inputs.iter().map(values).collect::<Vec<_>>()}),
    };
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse_at(path: &str, body: Value) -> Result<(ChatRequest, EmbeddingsRequest), String> {
        parse(path, body.to_string().as_bytes(), None).map_err(|f| match f {
            Failure::InvalidBody { message, .. } => message,
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn both_methods_read_their_inputs() {
        let text = |t: &str| json!({"parts": [{"text": t}]});
        let (chat, one) = parse_at(
            "/g/v1beta/models/gemini-embedding-001:embedContent",
            json!({"content": text("hi"), "outputDimensionality": 8}),
        )
        .unwrap();
        assert_eq!(chat.model, "gemini-embedding-001");
        assert_eq!(
            (one.inputs, one.dimensions, one.shape),
            (vec![json!("hi")], Some(8), Shape::GeminiOne)
        );
        let m = "models/text-embedding-004";
        let (_, batch) = parse_at(
            "/g/v1/models/text-embedding-004:batchEmbedContents",
            json!({"requests": [{"model": m, "content": text("a")}, {"model": m, "content": text("b")}]}),
        )
        .unwrap();
        assert_eq!(batch.inputs, [json!("a"), json!("b")]);
        assert_eq!(batch.shape, Shape::GeminiBatch);
        let v: Value = serde_json::from_slice(&answer(7, &chat, &batch, false)).unwrap();
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(v["embeddings"][0]["values"].as_array().unwrap().len(), 3072);
    }

    #[test]
    fn bad_calls_get_googles_messages() {
        let m = "/g/v1beta/models/text-embedding-004:batchEmbedContents";
        let cases = [
            (json!({}), "* BatchEmbedContentsRequest.requests: requests is not specified\n"),
            (
                json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}),
                "* BatchEmbedContentsRequest.requests[0].model: the model of every request must be the model in the URL (models/text-embedding-004), got \"models/other\"\n",
            ),
            (
                json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 769}]}),
                "* BatchEmbedContentsRequest.requests[0].output_dimensionality: must be between 1 and 768, got 769\n",
            ),
            (
                json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": []}}]}),
                "* BatchEmbedContentsRequest.requests[0].content: contents is not specified\n",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_at(m, body.clone()).unwrap_err(), want, "{body}");
        }
        assert_eq!(method("/g/v1beta/models/x:generateContent"), None);
    }
}
