//! Gemini's thought signatures: thinking models (2.5, 3) sign the
//! `functionCall` parts they answer with (`thoughtSignature`, opaque
//! base64), and a Gemini 3 model refuses with a 400 a request whose
//! current turn has a function-calling step whose first call does not
//! carry its signature back. Chaos signs each call with a keyed hash of
//! the call itself, so it can tell a signature it issued for this very
//! call from a missing, foreign or moved one; Google's documented skip
//! signature (`skip_thought_signature_validator`) is accepted, as Google
//! accepts it (<https://ai.google.dev/gemini-api/docs/thought-signatures>).

use base64::Engine as _;
use serde_json::Value;

use super::Failure;
use crate::generate::Fnv;

/// The signature Google documents for calls Gemini did not make.
const SKIP: &str = "skip_thought_signature_validator";

/// Chaos's signature of a call of `name` with `args`: 32 bytes of keyed
/// hash, base64.
pub(crate) fn signature(name: &str, args: &Value) -> String {
    let mut bytes = Vec::with_capacity(32);
    for round in 0..4u64 {
        let mut h = Fnv::new(0x7468_6f75_6768_7473 ^ round);
        h.bytes(name.as_bytes());
        h.value(args);
        bytes.extend_from_slice(&h.finish().to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Checks the function-calling steps of a `generateContent` body's
/// current turn (the model turns after its last user turn with text): the
/// first `functionCall` part of each must carry chaos's signature for
/// that call, or the skip signature. Gemini 3's own 400 otherwise.
pub(crate) fn check(body: &[u8]) -> Result<(), Failure> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Ok(()); // The parser has refused it already.
    };
    let contents = v
        .get("contents")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let turn_start = contents
        .iter()
        .rposition(|c| {
            c.get("role").and_then(Value::as_str) != Some("model")
                && parts(c).iter().any(|p| p.get("text").is_some())
        })
        .unwrap_or(0);
    for (position, c) in contents.iter().enumerate().skip(turn_start) {
        if c.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let Some(first) = parts(c).iter().find(|p| p.get("functionCall").is_some()) else {
            continue;
        };
        let call = &first["functionCall"];
        let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
        let args = call
            .get("args")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        match first.get("thoughtSignature").and_then(Value::as_str) {
            Some(SKIP) => {}
            Some(s) if same_bytes(s, &signature(name, &args)) => {}
            Some(_) => return Err(Failure::invalid("Corrupted thought signature.")),
            None => {
                return Err(Failure::invalid(format!(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                    position + 1
                )))
            }
        }
    }
    Ok(())
}

/// Whether two base64 texts hold the same bytes: protobuf's JSON takes
/// `bytes` in either alphabet, padded or not (Google's SDKs send the
/// URL-safe one).
fn same_bytes(sent: &str, issued: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let sent = sent.trim_end_matches('=');
    let decoded = URL_SAFE_NO_PAD
        .decode(sent)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(sent));
    matches!((decoded, STANDARD.decode(issued)), (Ok(a), Ok(b)) if a == b)
}

fn parts(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn message(body: Value) -> Option<String> {
        match check(body.to_string().as_bytes()) {
            Ok(()) => None,
            Err(Failure::InvalidBody { message, .. }) => Some(message),
            Err(other) => Some(format!("{other:?}")),
        }
    }

    #[test]
    fn the_current_turns_steps_need_their_own_signature() {
        let args = json!({"city": "Paris"});
        let signed = signature("get_weather", &args);
        let body = |sig: Option<&str>| {
            let mut call = json!({"functionCall": {"name": "get_weather", "args": args}});
            if let Some(s) = sig {
                call["thoughtSignature"] = json!(s);
            }
            json!({"contents": [
                {"role": "user", "parts": [{"text": "Weather?"}]},
                {"role": "model", "parts": [call, {"functionCall": {"name": "get_time", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}
            ]})
        };
        assert_eq!(message(body(Some(&signed))), None);
        assert_eq!(message(body(Some(SKIP))), None);
        assert_eq!(
            message(body(Some(&signature(
                "get_weather",
                &json!({"city": "Rome"})
            ))))
            .unwrap(),
            "Corrupted thought signature."
        );
        assert!(message(body(None))
            .unwrap()
            .starts_with("Function call is missing a thought_signature in functionCall parts."));
        // A finished turn (a user text after it) is not checked.
        let mut old = body(None);
        old["contents"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "parts": [{"text": "Thanks"}]}));
        assert_eq!(message(old), None);
    }
}
