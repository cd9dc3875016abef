//! OpenAI embeddings requests to Gemini's `batchEmbedContents`, and its
//! answers back to OpenAI's shape.
//!
//! Gemini embeds content (text parts), one request per input, all for the
//! model named in the URL; its answer holds the vectors in the order asked,
//! as floats, and no token count on the Gemini API. OpenAI's answer numbers
//! its vectors, may carry them as base64 (little-endian `f32`s, which the
//! official SDKs ask for by default) and reports usage: Keel estimates it
//! (see [`crate::embeddings::input_tokens`]) when Gemini reports none.

use serde_json::{json, Value};

use crate::embeddings::input_tokens;

/// The path of a batch embedding call to `model`, after the base URL.
pub fn batch_embed_path(model: &str) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    format!("/v1beta/models/{model}:batchEmbedContents")
}

/// The `batchEmbedContents` body for `inputs` on `model`: one request per
/// input, `dimensions` as `outputDimensionality`. An input of token ids
/// cannot be sent (Gemini embeds text only): the error names it.
pub fn batch_embed_request(
    model: &str,
    inputs: &[Value],
    dimensions: Option<u32>,
) -> Result<Value, String> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let name = format!("models/{model}");
    let requests = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let Value::String(text) = input else {
                return Err(format!(
                    "input[{i}]: Gemini embeds text only, got an array of token ids"
                ));
            };
            let mut r = json!({"model": name, "content": {"parts": [{"text": text}]}});
            if let Some(d) = dimensions {
                r["outputDimensionality"] = d.into();
            }
            Ok(r)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "requests": requests }))
}

/// Why a `batchEmbedContents` answer cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedAnswerError {
    /// A 2xx answer with no vector at all (retried like an empty answer).
    Empty,
    /// Anything else, described.
    Unreadable(String),
}

/// A `batchEmbedContents` answer (`{"embeddings":[{"values":[...]}]}`) for
/// `inputs`, as OpenAI's embeddings answer: `object` list, each vector
/// numbered in order (`base64`: its `f32`s little-endian, base64-encoded),
/// `model` as given, `usage` Gemini's `usageMetadata.promptTokenCount`
/// when it sends one, else Keel's estimate of the inputs.
pub fn batch_embed_to_openai(
    body: &[u8],
    inputs: &[Value],
    model: &str,
    base64: bool,
) -> Result<Value, EmbedAnswerError> {
    let unreadable = |why: String| EmbedAnswerError::Unreadable(why);
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| unreadable(format!("not a batchEmbedContents answer: {e}")))?;
    let embeddings = match v.get("embeddings") {
        Some(Value::Array(e)) => e,
        None | Some(Value::Null) => return Err(EmbedAnswerError::Empty),
        Some(_) => return Err(unreadable("embeddings is not an array".into())),
    };
    if embeddings.is_empty() {
        return Err(EmbedAnswerError::Empty);
    }
    if embeddings.len() != inputs.len() {
        return Err(unreadable(format!(
            "the answer holds {} vectors for {} inputs",
            embeddings.len(),
            inputs.len()
        )));
    }
    let data = embeddings
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| unreadable(format!("embeddings[{i}] has no values")))?;
            let floats = values
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| {
                    unreadable(format!(
                        "embeddings[{i}] holds a value that is not a number"
                    ))
                })?;
            let embedding = if base64 {
                Value::String(encode_f32s(&floats))
            } else {
                json!(floats)
            };
            Ok(json!({"object": "embedding", "index": i, "embedding": embedding}))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reported = v
        .get("usageMetadata")
        .and_then(|u| u.get("promptTokenCount"))
        .and_then(Value::as_u64);
    let tokens =
        reported.unwrap_or_else(|| inputs.iter().map(|i| u64::from(input_tokens(i))).sum());
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// `floats` as OpenAI's base64 embedding: little-endian `f32`s, standard
/// alphabet with padding.
pub fn encode_f32s(floats: &[f32]) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_per_input_with_the_model_and_the_dimensions() {
        let body = batch_embed_request(
            "models/gemini-embedding-001",
            &[json!("a"), json!("b c")],
            Some(8),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b c"}]}, "outputDimensionality": 8},
            ]})
        );
        let plain = batch_embed_request("text-embedding-004", &[json!("a")], None).unwrap();
        assert_eq!(plain["requests"][0].get("outputDimensionality"), None);
        assert_eq!(plain["requests"][0]["model"], "models/text-embedding-004");
        assert_eq!(
            batch_embed_request("m", &[json!("a"), json!([1, 2])], None).unwrap_err(),
            "input[1]: Gemini embeds text only, got an array of token ids"
        );
        assert_eq!(
            batch_embed_path("models/gemini-embedding-001"),
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
    }

    #[test]
    fn answers_become_openai_answers_float_or_base64() {
        let body =
            json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}).to_string();
        let inputs = [json!("abcdefgh"), json!("x")];
        let v = batch_embed_to_openai(body.as_bytes(), &inputs, "route", false).unwrap();
        assert_eq!(
            v,
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                    {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]},
                ],
                "model": "route",
                // Estimated: 8/4+1 and 1/4+1.
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            })
        );
        let b = batch_embed_to_openai(body.as_bytes(), &inputs, "route", true).unwrap();
        let encoded = b["data"][1]["embedding"].as_str().unwrap();
        assert_eq!(encoded, encode_f32s(&[0.25, 2.0]));
        assert_eq!(encoded, "AACAPgAAAEA=");
        let reported =
            json!({"embeddings": [{"values": [1.0]}], "usageMetadata": {"promptTokenCount": 17}})
                .to_string();
        let r = batch_embed_to_openai(reported.as_bytes(), &inputs[..1], "m", false).unwrap();
        assert_eq!(r["usage"]["prompt_tokens"], 17);
    }

    #[test]
    fn missing_or_broken_vectors_are_named() {
        let read = |v: Value, n: usize| {
            let inputs = vec![json!("a"); n];
            batch_embed_to_openai(v.to_string().as_bytes(), &inputs, "m", false)
        };
        assert_eq!(
            read(json!({"embeddings": []}), 1),
            Err(EmbedAnswerError::Empty)
        );
        assert_eq!(read(json!({}), 1), Err(EmbedAnswerError::Empty));
        assert_eq!(
            read(json!({"embeddings": [{"values": [1.0]}]}), 2),
            Err(EmbedAnswerError::Unreadable(
                "the answer holds 1 vectors for 2 inputs".into()
            ))
        );
        assert_eq!(
            read(json!({"embeddings": [{"values": ["x"]}]}), 1),
            Err(EmbedAnswerError::Unreadable(
                "embeddings[0] holds a value that is not a number".into()
            ))
        );
        assert_eq!(
            read(json!({"embeddings": [{}]}), 1),
            Err(EmbedAnswerError::Unreadable(
                "embeddings[0] has no values".into()
            ))
        );
    }
}
