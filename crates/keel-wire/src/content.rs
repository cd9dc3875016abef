//! Content checks the engine runs on a model's answer.
//!
//! When a client asks for JSON, models often wrap it: in a Markdown fence, or
//! after a sentence of prose ("Sure! Here is the JSON: ..."). Before deciding
//! that an answer is invalid output (and paying for a repair round trip), the
//! engine looks for the JSON inside it.

use serde::de::IgnoredAny;

/// How many opening brackets [`extract_json`] tries before giving up, which
/// bounds its work on long prose full of brackets.
const MAX_CANDIDATES: usize = 256;

/// Finds the JSON document in a model's answer.
///
/// Tries, in order: the whole text (trimmed) if it is valid JSON; the body of
/// the first Markdown code fence (```` ```json ```` or a bare ```` ``` ````)
/// if it is valid JSON; then the first balanced `{...}` or `[...]` that is
/// valid JSON, searching from the first opening bracket. Bracket matching
/// skips brackets inside JSON strings. Returns `None` if nothing qualifies.
///
/// ```
/// use keel_wire::content::extract_json;
///
/// let answer = "Sure! Here it is:\n```json\n{\"city\": \"Paris\"}\n```";
/// assert_eq!(extract_json(answer), Some("{\"city\": \"Paris\"}"));
/// assert_eq!(extract_json("The answer is {\"a\": \"}\"} ok"), Some("{\"a\": \"}\"}"));
/// assert_eq!(extract_json("no JSON here"), None);
/// ```
pub fn extract_json(text: &str) -> Option<&str> {
    let trimmed = text.trim();
    if is_json(trimmed) {
        return Some(trimmed);
    }
    if let Some(body) = fenced_body(text) {
        let body = body.trim();
        if is_json(body) {
            return Some(body);
        }
        if let Some(found) = first_balanced_json(body) {
            return Some(found);
        }
    }
    first_balanced_json(text)
}

fn is_json(s: &str) -> bool {
    !s.is_empty() && serde_json::from_str::<IgnoredAny>(s).is_ok()
}

/// The body of the first ```` ``` ```` fence: after the opening line, up to the closing fence
/// (or the end of the text if it is not closed).
fn fenced_body(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after = &text[open + 3..];
    // The rest of the opening line is the info string (`json`, `JSON`, ...).
    let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
    let info = after[..body_start].trim();
    if !info.is_empty()
        && !info
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        // Something like ```{"a":1}``` on one line: the body starts right after the fence.
        let body = &after[..after.find("```").unwrap_or(after.len())];
        return Some(body);
    }
    let body = &after[body_start..];
    Some(&body[..body.find("```").unwrap_or(body.len())])
}

fn first_balanced_json(text: &str) -> Option<&str> {
    text.char_indices()
        .filter(|(_, c)| *c == '{' || *c == '[')
        .take(MAX_CANDIDATES)
        .find_map(|(start, _)| {
            let end = balanced_end(&text[start..])?;
            let candidate = &text[start..start + end];
            is_json(candidate).then_some(candidate)
        })
}

/// Length of the balanced bracket group at the start of `s`, skipping
/// brackets inside strings; `None` if it never closes or closes with the
/// wrong bracket.
fn balanced_end(s: &str) -> Option<usize> {
    let mut stack: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => stack.push(b'}'),
            b'[' => stack.push(b']'),
            b'}' | b']' => {
                if stack.pop() != Some(b) {
                    return None;
                }
                if stack.is_empty() {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}
