//! The rule-based tier: a user command that answers what the models could
//! not (a regex extractor for simple documents, a lookup table, ...).
//!
//! The command runs under `sh -c`, gets the item's request line (the
//! original `custom_id`, `method`, `url`, `body`) as one JSON line on stdin,
//! and writes its answer on stdout: a chat completion object, or
//! `{"content": "..."}`, or a JSON string. A non-zero exit, a timeout or
//! anything else on stdout is a failure of this tier, and the item goes on
//! to the dead-letter file with the command's error.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

/// Longest a rule command may take for one item.
pub const RULE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` for one item; the response body or why there is none.
pub async fn answer(cmd: &str, request: &Map<String, Value>, route: &str) -> Result<Value, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("rule fallback: cannot start `sh -c {cmd}`: {e}"))?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine: ignore a broken pipe.
        let _ = stdin.write_all(&line).await;
        drop(stdin);
    }
    let output = tokio::time::timeout(RULE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "rule fallback: no answer within {} s",
                RULE_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("rule fallback: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "rule fallback: exited with {}: {tail}",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value: Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("rule fallback: stdout is not JSON ({e})"))?;
    to_completion(value, route)
}

/// Accepts a chat completion, `{"content": ...}` or a string.
fn to_completion(value: Value, route: &str) -> Result<Value, String> {
    let text = match &value {
        Value::Object(o) if o.contains_key("choices") => return Ok(value),
        Value::Object(o) => match o.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(
                    "rule fallback: stdout must be a chat completion, {\"content\": \"...\"} or a JSON string"
                        .into(),
                )
            }
        },
        Value::String(s) => s.clone(),
        _ => {
            return Err(
                "rule fallback: stdout must be a chat completion, {\"content\": \"...\"} or a JSON string"
                    .into(),
            )
        }
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(json!({
        "id": format!("chatcmpl-keel-rule-{created}"),
        "object": "chat.completion",
        "created": created,
        "model": route,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    }))
}
