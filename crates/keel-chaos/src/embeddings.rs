//! OpenAI's embeddings endpoint (`POST /v1/embeddings`; Gemini's methods
//! build on it in `gemini_embeddings`) and Anthropic's token counting (`POST /v1/messages/count_tokens`): what they accept and
//! what they answer. The attempt around them (key, faults, limits, stats)
//! is the chat endpoint's ([`crate::chat`]).
//!
//! A vector is a pure function of the server seed, the model and the
//! input, not of the upstream: two upstreams serving the same model answer
//! the same vectors, as two keys or regions of one provider model do. With
//! `dimensions`, the vector is the model's full vector cut to that length
//! and normalised again, as OpenAI's shortened embeddings are.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::answer::{ChatRequest, OutputMode};
use crate::dialect::Failure;
use crate::generate::{self, Fnv};

/// The most inputs one OpenAI embeddings request may carry.
pub(crate) const MAX_INPUTS: usize = 2048;

/// A parsed, valid embeddings request.
#[derive(Debug, Clone)]
pub(crate) struct EmbeddingsRequest {
    /// The inputs, each a string or an array of token ids.
    pub(crate) inputs: Vec<Value>,
    pub(crate) dimensions: Option<usize>,
    pub(crate) base64: bool,
    /// The API it came in, which the answer is shaped for.
    pub(crate) shape: Shape,
}

/// Which embeddings API a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// OpenAI's `/v1/embeddings`.
    OpenAi,
    /// Gemini's `:embedContent` (one content, one `embedding`).
    GeminiOne,
    /// Gemini's `:batchEmbedContents` (`requests`, `embeddings`).
    GeminiBatch,
}

/// The full length of a model's vectors.
pub(crate) fn model_dimensions(model: &str) -> usize {
    match model {
        "text-embedding-3-large" | "gemini-embedding-001" => 3072,
        "text-embedding-004" | "embedding-001" => 768,
        _ => 1536,
    }
}

/// Whether a model accepts `dimensions` (the older ada model does not).
fn takes_dimensions(model: &str) -> bool {
    model != "text-embedding-ada-002"
}

fn invalid_input(message: String) -> Failure {
    Failure::InvalidBody {
        message,
        param: Some("input"),
        code: None,
    }
}

/// Parses an embeddings request as OpenAI validates it. The chat-shaped
/// request carries what the attempt needs (model, prompt tokens; no output).
pub(crate) fn parse(
    body: &[u8],
    max_inputs: Option<u32>,
) -> Result<(ChatRequest, EmbeddingsRequest), Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::invalid(format!(
            "We could not parse the JSON body of your request. ({e})"
        ))
    })?;
    let Value::Object(obj) = &value else {
        return Err(Failure::invalid("The request body must be a JSON object."));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(Failure::invalid("you must provide a model parameter")),
    };
    let inputs = match obj.get("input") {
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) && !items.is_empty() => {
            vec![Value::Array(items.clone())]
        }
        Some(Value::Array(items)) => items.clone(),
        _ => {
            return Err(invalid_input(
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
                    .into(),
            ))
        }
    };
    let limit = max_inputs.map_or(MAX_INPUTS, |m| m as usize);
    if inputs.is_empty() || inputs.len() > limit {
        return Err(invalid_input(format!(
            "'$.input' is invalid: expected between 1 and {limit} inputs, got {}.",
            inputs.len()
        )));
    }
    for (i, input) in inputs.iter().enumerate() {
        let ok = match input {
            Value::String(s) => !s.is_empty(),
            Value::Array(t) => !t.is_empty() && t.iter().all(Value::is_u64),
            _ => false,
        };
        if !ok {
            return Err(invalid_input(format!(
                "'$.input[{i}]' is invalid: expected a non-empty string or array of token ids."
            )));
        }
    }
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(_) if !takes_dimensions(&model) => {
                return Err(Failure::InvalidBody {
                    message: "This model does not support specifying dimensions.".into(),
                    param: Some("dimensions"),
                    code: None,
                })
            }
            Some(n) if n >= 1 && n as usize <= model_dimensions(&model) => Some(n as usize),
            _ => {
                return Err(Failure::InvalidBody {
                    message: format!(
                        "Invalid value for 'dimensions' = {v}. Must be between 1 and {}.",
                        model_dimensions(&model)
                    ),
                    param: Some("dimensions"),
                    code: None,
                })
            }
        },
    };
    let base64 = match obj.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Failure::InvalidBody {
                message: format!(
                    "Invalid value for 'encoding_format' = {other}. Must be 'float' or 'base64'."
                ),
                param: Some("encoding_format"),
                code: None,
            })
        }
    };
    let prompt_tokens = inputs.iter().map(input_tokens).sum();
    let chat = ChatRequest {
        model,
        stream: false,
        include_usage: false,
        max_tokens: Some(0),
        prompt_tokens,
        content_seed: 0,
        output: OutputMode::Text,
        tool: None,
        continues: None,
        responses: Default::default(),
    };
    Ok((
        chat,
        EmbeddingsRequest {
            inputs,
            dimensions,
            base64,
            shape: Shape::OpenAi,
        },
    ))
}

/// Tokens of one input: its token ids, or its text's estimate.
pub(crate) fn input_tokens(input: &Value) -> u64 {
    match input {
        Value::Array(t) => t.len() as u64,
        other => generate::estimate_tokens(other).max(1),
    }
}

/// The vector of `input` on `model` for the server `seed`, with `dims`
/// dimensions (unit length).
pub(crate) fn vector(seed: u64, model: &str, input: &Value, dims: Option<usize>) -> Vec<f32> {
    let full = model_dimensions(model);
    let mut h = Fnv::new(seed);
    h.bytes(model.as_bytes());
    h.value(input);
    let base = h.finish();
    let n = dims.unwrap_or(full).min(full);
    let mut v: Vec<f64> = (0..n as u64)
        .map(|i| generate::unit(base ^ generate::mix(i + 1)) * 2.0 - 1.0)
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v.into_iter().map(|x| x as f32).collect()
}

/// The answer to `req` (`empty`: the `empty` fault's answer, no vectors).
pub(crate) fn answer(seed: u64, chat: &ChatRequest, req: &EmbeddingsRequest, empty: bool) -> Bytes {
    let data: Vec<Value> = match empty {
        true => Vec::new(),
        false => req
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let v = vector(seed, &chat.model, input, req.dimensions);
                let embedding = match req.base64 {
                    true => {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                    false => json!(v),
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect(),
    };
    let body = json!({
        "object": "list",
        "data": data,
        "model": chat.model,
        "usage": {"prompt_tokens": chat.prompt_tokens, "total_tokens": chat.prompt_tokens},
    });
    Bytes::from(body.to_string())
}

/// Anthropic's token count for a Messages request (`max_tokens` is not
/// required there): the same estimate the chat endpoint counts.
pub(crate) fn count_tokens_body(body: &[u8]) -> Bytes {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut obj)) => {
            obj.entry("max_tokens").or_insert(json!(1));
            Bytes::from(Value::Object(obj).to_string())
        }
        _ => Bytes::copy_from_slice(body),
    }
}

/// The answer to a token count.
pub(crate) fn count_answer(chat: &ChatRequest) -> Bytes {
    Bytes::from(json!({"input_tokens": chat.prompt_tokens}).to_string())
}
