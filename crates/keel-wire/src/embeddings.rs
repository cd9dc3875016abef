//! OpenAI's embeddings API (`POST /v1/embeddings`): the request as a client
//! sends it, validated into the inputs Keel may split, and the pieces of an
//! answer Keel reassembles.
//!
//! `input` comes in four shapes: a string, an array of strings, an array of
//! token ids (one input) or an array of arrays of token ids. Each is read
//! into a list of inputs (a string or a token array each), the unit Keel
//! splits a request by.

use serde_json::{Map, Value};

/// A validated embeddings request.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingsRequest {
    /// The route asked for.
    pub model: String,
    /// The inputs, each a string or an array of token ids, in the client's order.
    pub inputs: Vec<Value>,
    /// `dimensions`: the length of the vectors asked for.
    pub dimensions: Option<u32>,
    /// `encoding_format`: `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// Any other member, passed to the provider as it came.
    pub extra: Map<String, Value>,
}

/// Why a body is not an embeddings request (the message names the field).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEmbeddings {
    /// What is wrong, naming the field.
    pub message: String,
    /// The field (`input`, `model`, ...).
    pub param: Option<&'static str>,
}

fn invalid(param: &'static str, message: String) -> InvalidEmbeddings {
    InvalidEmbeddings {
        message,
        param: Some(param),
    }
}

fn is_token(v: &Value) -> bool {
    v.as_u64().is_some_and(|t| t <= u64::from(u32::MAX))
}

impl EmbeddingsRequest {
    /// Reads and validates a request body.
    pub fn from_json(body: &[u8]) -> Result<EmbeddingsRequest, InvalidEmbeddings> {
        let value: Value = serde_json::from_slice(body).map_err(|e| InvalidEmbeddings {
            message: format!("the request body is not valid JSON: {e}"),
            param: None,
        })?;
        let Value::Object(mut obj) = value else {
            return Err(InvalidEmbeddings {
                message: "the request body must be a JSON object".into(),
                param: None,
            });
        };
        let model = match obj.remove("model") {
            Some(Value::String(m)) if !m.is_empty() => m,
            Some(other) => {
                return Err(invalid(
                    "model",
                    format!("model: expected the name of a route, got {other}"),
                ))
            }
            None => return Err(invalid("model", "model: required".into())),
        };
        let inputs = Self::read_inputs(obj.remove("input"))?;
        let dimensions = match obj.remove("dimensions") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u64::from(u32::MAX)).contains(&n) => Some(n as u32),
                _ => {
                    return Err(invalid(
                        "dimensions",
                        format!("dimensions: expected a positive integer, got {v}"),
                    ))
                }
            },
        };
        let encoding_format = match obj.remove("encoding_format") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) if f == "float" || f == "base64" => Some(f),
            Some(v) => {
                return Err(invalid(
                    "encoding_format",
                    format!("encoding_format: expected \"float\" or \"base64\", got {v}"),
                ))
            }
        };
        let user = match obj.remove("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u),
            Some(v) => return Err(invalid("user", format!("user: expected a string, got {v}"))),
        };
        Ok(EmbeddingsRequest {
            model,
            inputs,
            dimensions,
            encoding_format,
            user,
            extra: obj,
        })
    }

    fn read_inputs(input: Option<Value>) -> Result<Vec<Value>, InvalidEmbeddings> {
        let inputs = match input {
            None => return Err(invalid("input", "input: required".into())),
            Some(Value::String(s)) => vec![Value::String(s)],
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(is_token) => {
                vec![Value::Array(items)]
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(invalid(
                    "input",
                    format!("input: expected a string, an array of strings, an array of token ids or an array of arrays of token ids, got {other}"),
                ))
            }
        };
        if inputs.is_empty() {
            return Err(invalid(
                "input",
                "input: expected at least one input, got an empty array".into(),
            ));
        }
        for (i, input) in inputs.iter().enumerate() {
            match input {
                Value::String(s) if s.is_empty() => {
                    return Err(invalid(
                        "input",
                        format!("input[{i}]: expected a non-empty string, got \"\""),
                    ))
                }
                Value::String(_) => {}
                Value::Array(t) if !t.is_empty() && t.iter().all(is_token) => {}
                other => {
                    return Err(invalid(
                        "input",
                        format!(
                            "input[{i}]: expected a non-empty string or a non-empty array of token ids, got {other}"
                        ),
                    ))
                }
            }
        }
        Ok(inputs)
    }

    /// The body for `inputs` on a deployment whose model is `model`: every
    /// member the client sent, with the model and the inputs replaced.
    pub fn body_for(&self, model: &str, inputs: &[Value]) -> Value {
        let mut obj = self.extra.clone();
        obj.insert("model".into(), Value::String(model.into()));
        obj.insert("input".into(), Value::Array(inputs.to_vec()));
        if let Some(d) = self.dimensions {
            obj.insert("dimensions".into(), d.into());
        }
        if let Some(f) = &self.encoding_format {
            obj.insert("encoding_format".into(), Value::String(f.clone()));
        }
        if let Some(u) = &self.user {
            obj.insert("user".into(), Value::String(u.clone()));
        }
        Value::Object(obj)
    }
}

/// Estimated tokens of one input: its token ids, or a quarter of its text's bytes.
pub fn input_tokens(input: &Value) -> u32 {
    match input {
        Value::Array(t) => t.len().min(u32::MAX as usize) as u32,
        Value::String(s) => (s.len() / 4 + 1).min(u32::MAX as usize) as u32,
        _ => 1,
    }
}

/// What an embeddings answer says, read for checking and reassembly.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingsAnswer {
    /// `data`: one item per input, each with its `index` (as the provider numbered it).
    pub data: Vec<Value>,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.total_tokens`.
    pub total_tokens: u64,
}

impl EmbeddingsAnswer {
    /// Reads an answer that must hold one vector for each of `expected`
    /// inputs, numbered `0..expected`; the error says what is missing.
    pub fn read(body: &[u8], expected: usize) -> Result<EmbeddingsAnswer, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("not an embeddings answer: {e}"))?;
        let Some(Value::Array(data)) = v.get("data").cloned() else {
            return Err("not an embeddings answer: no data array".into());
        };
        if data.len() != expected {
            return Err(format!(
                "the answer holds {} vectors for {expected} inputs",
                data.len()
            ));
        }
        let mut seen = vec![false; expected];
        for item in &data {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            let ok = item
                .get("embedding")
                .is_some_and(|e| e.is_array() || e.is_string());
            match seen.get_mut(index as usize) {
                Some(s) if ok && !*s => *s = true,
                _ => {
                    return Err(format!(
                        "the answer's vector at index {index} is missing or repeated"
                    ))
                }
            }
        }
        let usage = |k: &str| {
            v.get("usage")
                .and_then(|u| u.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Ok(EmbeddingsAnswer {
            data,
            prompt_tokens: usage("prompt_tokens"),
            total_tokens: usage("total_tokens"),
        })
    }
}

/// The answer to the client: `parts` in order, each with the position of
/// its first input, their items renumbered into the client's order and
/// their usage summed, under the client's `model`.
pub fn reassemble(model: &str, parts: Vec<(usize, EmbeddingsAnswer)>) -> Value {
    let (mut prompt, mut total) = (0u64, 0u64);
    let mut data = Vec::new();
    for (offset, part) in parts {
        prompt += part.prompt_tokens;
        total += part.total_tokens;
        for mut item in part.data {
            let index = item.get("index").and_then(Value::as_u64).unwrap_or(0) as usize + offset;
            if let Value::Object(m) = &mut item {
                m.insert("index".into(), index.into());
            }
            data.push((index, item));
        }
    }
    data.sort_by_key(|(i, _)| *i);
    serde_json::json!({
        "object": "list",
        "data": data.into_iter().map(|(_, item)| item).collect::<Vec<_>>(),
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": total},
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<EmbeddingsRequest, InvalidEmbeddings> {
        EmbeddingsRequest::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn every_input_shape_reads_as_a_list_of_inputs() {
        let cases = [
            (json!("a"), vec![json!("a")]),
            (json!(["a", "b"]), vec![json!("a"), json!("b")]),
            (json!([1, 2, 3]), vec![json!([1, 2, 3])]),
            (json!([[1, 2], [3]]), vec![json!([1, 2]), json!([3])]),
        ];
        for (input, want) in cases {
            let r =
                read(json!({"model": "e", "input": input, "dimensions": 8, "user": "u", "x": 1}))
                    .unwrap();
            assert_eq!(r.inputs, want);
            assert_eq!((r.dimensions, r.user.as_deref()), (Some(8), Some("u")));
            let body = r.body_for("up", &r.inputs[..1]);
            assert_eq!(body["model"], "up");
            assert_eq!(body["input"], json!([want[0].clone()]));
            assert_eq!(
                (body["x"].clone(), body["dimensions"].clone()),
                (json!(1), json!(8))
            );
        }
    }

    #[test]
    fn bad_input_is_named() {
        let cases = [
            (
                json!({"model": "e", "input": []}),
                "input: expected at least one input, got an empty array",
            ),
            (
                json!({"model": "e", "input": ""}),
                "input[0]: expected a non-empty string, got \"\"",
            ),
            (
                json!({"model": "e", "input": ["a", 3]}),
                "input[1]: expected a non-empty string or a non-empty array of token ids, got 3",
            ),
            (
                json!({"model": "e", "input": [[]]}),
                "input[0]: expected a non-empty string or a non-empty array of token ids, got []",
            ),
            (json!({"model": "e"}), "input: required"),
            (json!({"input": "a"}), "model: required"),
            (
                json!({"model": "e", "input": "a", "dimensions": 0}),
                "dimensions: expected a positive integer, got 0",
            ),
            (
                json!({"model": "e", "input": "a", "encoding_format": "hex"}),
                "encoding_format: expected \"float\" or \"base64\", got \"hex\"",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(read(body.clone()).unwrap_err().message, want, "{body}");
        }
    }

    #[test]
    fn parts_are_reassembled_in_the_clients_order_with_usage_summed() {
        let part = |n: usize, tokens: u64| EmbeddingsAnswer {
            data: (0..n)
                .rev()
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [i]}))
                .collect(),
            prompt_tokens: tokens,
            total_tokens: tokens,
        };
        let v = reassemble("route", vec![(3, part(2, 5)), (0, part(3, 7))]);
        let idx: Vec<u64> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["index"].as_u64().unwrap())
            .collect();
        assert_eq!(idx, [0, 1, 2, 3, 4]);
        assert_eq!(v["data"][4]["embedding"], json!([1]));
        assert_eq!(v["usage"], json!({"prompt_tokens": 12, "total_tokens": 12}));
        assert_eq!(v["model"], "route");
        let body =
            json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]})
                .to_string();
        assert_eq!(
            EmbeddingsAnswer::read(body.as_bytes(), 2).unwrap_err(),
            "the answer's vector at index 0 is missing or repeated"
        );
        assert_eq!(
            EmbeddingsAnswer::read(b"{\"data\":[]}", 1).unwrap_err(),
            "the answer holds 0 vectors for 1 inputs"
        );
    }
}
