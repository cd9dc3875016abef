//! The one-pass reading of a request ([`crate::scan`]), and of the usage
//! object that answers and chunks share.

use std::borrow::Cow;

use super::{ChatRequest, Content, Extra, Message, Role, ToolCall, Usage};
use crate::scan::{count, list, object, once, text, text_or_null, typed, ws};
use crate::splice::Layout;

/// `usage`'s value at `b[i]`: read here when it is the three counts
/// and nothing else (the usual case), by serde otherwise.
pub(crate) fn usage_at(b: &[u8], i: usize) -> Option<(Option<Usage>, usize)> {
    counts(b, i).or_else(|| typed::<Option<Usage>>(b, i, 2))
}

/// An object of `prompt_tokens`, `completion_tokens` and `total_tokens`
/// (each at most once, each a plain integer that fits a `u32`) at
/// `b[i]`; `None` for anything else.
fn counts(b: &[u8], i: usize) -> Option<(Option<Usage>, usize)> {
    let (mut prompt, mut completion, mut total) = (None, None, None);
    let end = object(b, i, |key, j| {
        let slot = match key {
            b"prompt_tokens" => &mut prompt,
            b"completion_tokens" => &mut completion,
            b"total_tokens" => &mut total,
            _ => return None,
        };
        once(slot, count(b, j))
    })?;
    let usage = Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        total_tokens: total.unwrap_or(0),
        extra: Extra::new(),
    };
    Some((Some(usage), end))
}

/// One message of a request, or `None` to leave the request to serde.
fn request_message(s: &str, i: usize) -> Option<(Message, usize)> {
    let b = s.as_bytes();
    let (mut role, mut content, mut name) = (None, None, None);
    let (mut tools, mut tool_id, mut refusal) = (None, None, None);
    let mut extra = Extra::new();
    let end = object(b, i, |key, j| match key {
        b"role" => once(&mut role, text(s, j)),
        b"content" => {
            let read = match b.get(j) {
                Some(b'"') => text(s, j).map(|(t, end)| (Some(Content::Text(t.into_owned())), end)),
                _ => typed::<Option<Content>>(b, j, 3),
            };
            once(&mut content, read)
        }
        b"name" => once(&mut name, text_or_null(s, j)),
        b"tool_calls" => once(&mut tools, typed::<Option<Vec<ToolCall>>>(b, j, 3)),
        b"tool_call_id" => once(&mut tool_id, text_or_null(s, j)),
        b"refusal" => once(&mut refusal, text_or_null(s, j)),
        _ => member(&mut extra, key, b, j, 3),
    })?;
    let owned = |t: Option<Option<Cow<'_, str>>>| t.flatten().map(Cow::into_owned);
    let message = Message {
        role: Role::named(&role?),
        content: content.flatten(),
        name: owned(name),
        tool_calls: tools.flatten(),
        tool_call_id: owned(tool_id),
        refusal: owned(refusal),
        extra,
    };
    Some((message, end))
}

/// An unknown member, kept as serde keeps it (the last of a name
/// given twice wins).
fn member(extra: &mut Extra, key: &[u8], b: &[u8], j: usize, depth: usize) -> Option<usize> {
    let (value, end) = typed::<serde_json::Value>(b, j, depth)?;
    extra.insert(std::str::from_utf8(key).ok()?.to_owned(), value);
    Some(end)
}

/// A request read in one pass, or `None` to leave it to serde. Each
/// option is read by its own type's `Deserialize` (on its bytes alone),
/// so it reads as the typed parse reads it; the model and the messages
/// (most of a request) are read here.
pub(crate) fn request(b: &[u8]) -> Option<(ChatRequest, Layout)> {
    let s = simdutf8::basic::from_utf8(b).ok()?;
    let mut layout = Layout::new(b.len());
    let mut r = ChatRequest::new(String::new(), Vec::new());
    let (mut model, mut messages) = (None, None);
    let (mut stream, mut stream_options, mut max_tokens, mut max_completion) =
        (None, None, None, None);
    let (mut temperature, mut top_p, mut n, mut stop, mut seed) = (None, None, None, None, None);
    let (mut tools, mut tool_choice, mut format, mut user) = (None, None, None, None);
    let mut extra = Extra::new();
    let start = ws(b, 0);
    let end = object(b, start, |key, j| {
        let end = match key {
            b"model" => once(&mut model, text(s, j)),
            b"messages" => once(&mut messages, list(b, j, 4, |k| request_message(s, k))),
            b"stream" => once(&mut stream, typed(b, j, 2)),
            b"stream_options" => once(&mut stream_options, typed(b, j, 2)),
            b"max_tokens" => once(&mut max_tokens, typed(b, j, 2)),
            b"max_completion_tokens" => once(&mut max_completion, typed(b, j, 2)),
            b"temperature" => once(&mut temperature, typed(b, j, 2)),
            b"top_p" => once(&mut top_p, typed(b, j, 2)),
            b"n" => once(&mut n, typed(b, j, 2)),
            b"stop" => once(&mut stop, typed(b, j, 2)),
            b"seed" => once(&mut seed, typed(b, j, 2)),
            b"tools" => once(&mut tools, typed(b, j, 2)),
            b"tool_choice" => once(&mut tool_choice, typed(b, j, 2)),
            b"response_format" => once(&mut format, typed(b, j, 2)),
            b"user" => once(&mut user, typed(b, j, 2)),
            _ => member(&mut extra, key, b, j, 2),
        }?;
        // Keys are read in place: the key's text lies in `b`.
        let at = (key.as_ptr() as usize).checked_sub(b.as_ptr() as usize)?;
        layout.push(at..at + key.len(), j..end);
        Some(end)
    })?;
    if ws(b, end) != b.len() {
        return None;
    }
    layout.close(end - 1);
    r.model = model?.into_owned();
    r.messages = messages?;
    r.stream = stream.flatten();
    r.stream_options = stream_options.flatten();
    r.max_tokens = max_tokens.flatten();
    r.max_completion_tokens = max_completion.flatten();
    r.temperature = temperature.flatten();
    r.top_p = top_p.flatten();
    r.n = n.flatten();
    r.stop = stop.flatten();
    r.seed = seed.flatten();
    r.tools = tools.flatten();
    r.tool_choice = tool_choice.flatten();
    r.response_format = format.flatten();
    r.user = user.flatten();
    r.extra = extra;
    Some((r, layout))
}
