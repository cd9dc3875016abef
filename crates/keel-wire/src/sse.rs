//! Server-sent events: an incremental decoder and an encoder.
//!
//! Both providers stream over SSE, and Keel sits in the middle of the stream:
//! it decodes the upstream's events as bytes arrive in arbitrary chunks, and
//! encodes its own events for the client. The decoder follows the WHATWG
//! "event stream interpretation" rules (`\n`, `\r\n` and `\r` line endings,
//! even when split across chunks; comments; a leading BOM; a field without a
//! colon; one leading space stripped from a value) with three deliberate
//! differences, each because Keel is a proxy and not a browser:
//!
//! - memory is bounded: an event (or a single line) larger than the limit is
//!   an error, so a misbehaving upstream cannot make Keel buffer without end;
//! - invalid UTF-8 is an error rather than replacement characters, because
//!   silently corrupting JSON payloads would hide the fault;
//! - [`SseEvent::id`] is the `id` given in that event's block (not the
//!   stream's persistent last-event-id), so an event re-encodes as it came;
//!   and [`SseDecoder::finish`] dispatches a last event whose terminating
//!   blank line is missing instead of discarding it.

use bytes::Bytes;

/// Default limit on the size of one event, in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name; `None` means the default (`message`).
    pub event: Option<String>,
    /// The data, lines joined with `\n`.
    pub data: String,
    /// The `id:` given in this event's block.
    pub id: Option<String>,
    /// The `retry:` reconnection time in milliseconds, if given in this block.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// An unnamed event carrying `data`.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// A named event carrying `data`.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            event: Some(event.into()),
            data: data.into(),
            ..Self::default()
        }
    }

    /// Whether this is OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Why an event stream could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event, or a single line, grew past the decoder's limit.
    #[error("server-sent event exceeds the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A line was not valid UTF-8.
    #[error("server-sent event stream is not valid UTF-8 at byte {offset} of line {line}")]
    InvalidUtf8 {
        /// 1-based line number in the stream.
        line: u64,
        /// Byte offset of the first invalid byte within that line.
        offset: usize,
    },
}

/// Encodes one event. Data with several lines becomes several `data:` lines
/// (`\r\n` and `\r` in the data count as line breaks and decode as `\n`).
/// Line breaks in the event name or id, which the format cannot carry, are
/// dropped.
pub fn encode(ev: &SseEvent) -> Bytes {
    let mut out = String::with_capacity(ev.data.len() + 32);
    if let Some(event) = &ev.event {
        out.push_str("event: ");
        push_single_line(&mut out, event);
        out.push('\n');
    }
    if let Some(id) = &ev.id {
        out.push_str("id: ");
        push_single_line(&mut out, id);
        out.push('\n');
    }
    if let Some(retry) = ev.retry {
        out.push_str("retry: ");
        out.push_str(&retry.to_string());
        out.push('\n');
    }
    for line in split_lines(&ev.data) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// Encodes an unnamed event carrying `data`.
pub fn encode_data(data: &str) -> Bytes {
    encode(&SseEvent::data(data))
}

/// Encodes a named event carrying `data`.
pub fn encode_named(event: &str, data: &str) -> Bytes {
    encode(&SseEvent::named(event, data))
}

/// Appends an unnamed event carrying `data` to `out`: the same bytes as
/// [`encode_data`], written into the caller's buffer (a frame of several
/// events is then one allocation, not one per event). `data` need not be
/// UTF-8 checked again: only its line breaks are looked at.
pub fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    let mut rest = data;
    loop {
        out.extend_from_slice(b"data: ");
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let skip = if rest[i..].starts_with(b"\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\n\n");
                return;
            }
        }
    }
}

/// Appends an unnamed event whose data is `parts` one after the other: the
/// bytes of [`write_data`] of their concatenation, without building it
/// first when no part has a line break (the usual case of a JSON payload).
///
/// ```
/// use keel_wire::sse::write_data_parts;
/// let mut out = Vec::new();
/// write_data_parts(&mut out, &[b"{\"a\":", b"1", b"}"]);
/// assert_eq!(out, b"data: {\"a\":1}\n\n");
/// ```
pub fn write_data_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    if parts
        .iter()
        .any(|p| memchr::memchr2(b'\r', b'\n', p).is_some())
    {
        return write_data(out, &parts.concat());
    }
    write_data_line(out, parts);
}

/// Appends an unnamed event whose data is `parts` one after the other,
/// which the caller knows hold no line break (`\r` or `\n`): a JSON
/// payload read from one `data:` line, say. Nothing is scanned; a line
/// break would end the data line early, so debug builds check.
///
/// ```
/// use keel_wire::sse::write_data_line;
/// let mut out = Vec::new();
/// write_data_line(&mut out, &[b"{\"a\":", b"1", b"}"]);
/// assert_eq!(out, b"data: {\"a\":1}\n\n");
/// ```
pub fn write_data_line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    debug_assert!(
        !parts
            .iter()
            .any(|p| p.contains(&b'\n') || p.contains(&b'\r')),
        "write_data_line: a part holds a line break"
    );
    out.reserve(parts.iter().map(|p| p.len()).sum::<usize>() + 8);
    out.extend_from_slice(b"data: ");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends a named event carrying `data` to `out` (the bytes of
/// [`encode_named`]).
pub fn write_named(out: &mut Vec<u8>, event: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend(event.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    out.push(b'\n');
    write_data(out, data);
}

fn push_single_line(out: &mut String, s: &str) {
    out.extend(s.chars().filter(|c| *c != '\n' && *c != '\r'));
}

/// Splits on `\r\n`, `\n` and `\r`; always yields at least one line.
fn split_lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(i) => {
                let skip = if current[i..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[i + skip..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// An incremental event-stream decoder: feed it bytes as they arrive.
///
/// ```
/// use keel_wire::sse::{SseDecoder, SseEvent};
///
/// let mut decoder = SseDecoder::new();
/// // A line ending split across two network reads.
/// assert!(decoder.push(b"event: ping\r\ndata: {}\r").unwrap().is_empty());
/// let events = decoder.push(b"\n\r\ndata: [DONE]").unwrap();
/// assert_eq!(events, vec![SseEvent::named("ping", "{}")]);
/// // The stream ended without the final blank line.
/// assert_eq!(decoder.finish().unwrap(), Some(SseEvent::data("[DONE]")));
/// ```
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a leading `\n` completes that line ending.
    after_cr: bool,
    /// No line has been completed yet, so a BOM may still be stripped.
    at_start: bool,
    lines_seen: u64,
    data: String,
    event: String,
    id: Option<String>,
    retry: Option<u64>,
    failed: Option<SseError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder with the default event-size limit ([`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that fails on an event (or a line) larger than `n` bytes.
    pub fn with_max_event_bytes(n: usize) -> Self {
        Self {
            max_event_bytes: n,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            lines_seen: 0,
            data: String::new(),
            event: String::new(),
            id: None,
            retry: None,
            failed: None,
        }
    }

    /// Feeds the next chunk and returns the events it completes.
    ///
    /// After an error the decoder is spent: every later call returns the same error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut events = Vec::new();
        let mut sink = |dec: &mut SseDecoder| events.extend(dec.dispatch());
        match self.feed(chunk, &mut sink) {
            Ok(()) => Ok(events),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Feeds the next chunk like [`push`](Self::push), but hands each event
    /// it completes to `on_event` as borrowed `(event name, data)` instead of
    /// building an [`SseEvent`] (its `id` and `retry` are not passed on).
    /// The decoder's buffers are reused from event to event, so a stream's
    /// events cost no allocation each. It fails where `push` fails; the
    /// events the chunk completed before the error have then been handed on
    /// (`push` returns none of them).
    ///
    /// ```
    /// use keel_wire::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// let mut seen = Vec::new();
    /// decoder
    ///     .push_with(b"data: {}\n\nevent: ping\ndata: a\ndata: b\n\n", |name, data| {
    ///         seen.push((name.map(str::to_owned), data.to_owned()))
    ///     })
    ///     .unwrap();
    /// assert_eq!(seen, [(None, "{}".into()), (Some("ping".into()), "a\nb".into())]);
    /// ```
    pub fn push_with(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(Option<&str>, &str),
    ) -> Result<(), SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        // The usual event, `data: <one line>` and a blank line, at an event
        // boundary: handed on straight from `chunk`, without copying it
        // into the pending event. Anything else (or an invalid line, which
        // the slow path reports with its line number) takes the slow path.
        let mut chunk = chunk;
        while self.line.is_empty()
            && self.data.is_empty()
            && self.event.is_empty()
            && !self.after_cr
        {
            let Some((data, len)) = one_line_event(chunk) else {
                break;
            };
            if len > self.max_event_bytes {
                break;
            }
            self.at_start = false;
            self.lines_seen += 2;
            on_event(None, data);
            self.id = None;
            self.retry = None;
            chunk = &chunk[len..];
        }
        let mut sink = |dec: &mut SseDecoder| {
            if !dec.data.is_empty() {
                let data = dec.data.strip_suffix('\n').unwrap_or(&dec.data);
                let name = (!dec.event.is_empty()).then_some(dec.event.as_str());
                on_event(name, data);
            }
            dec.data.clear();
            dec.event.clear();
            dec.id = None;
            dec.retry = None;
        };
        match self.feed(chunk, &mut sink) {
            Ok(()) => Ok(()),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Ends the stream: completes an unterminated last line and returns the
    /// pending event, if it has data.
    ///
    /// Calling it again returns `Ok(None)`; the decoder can then be fed a new stream.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if !self.line.is_empty() {
            // A non-empty line only adds to the pending event; it never dispatches one.
            let line = std::mem::take(&mut self.line);
            if let Err(err) = self.process_line(&line) {
                self.failed = Some(err.clone());
                return Err(err);
            }
        }
        let pending = self.dispatch();
        *self = Self::with_max_event_bytes(self.max_event_bytes);
        Ok(pending)
    }

    /// Reads `chunk`'s lines; `dispatch` is called at each blank line (the
    /// end of an event block) to take the pending event.
    fn feed(
        &mut self,
        chunk: &[u8],
        dispatch: &mut dyn FnMut(&mut SseDecoder),
    ) -> Result<(), SseError> {
        let mut rest = chunk;
        // An empty chunk must not forget a pending `\r`.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            let (head, tail) = rest.split_at(end);
            self.check_size(head.len())?;
            let blank = if self.line.is_empty() {
                self.process_line(head)?
            } else {
                // Reuse the line buffer's allocation across lines.
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                let result = self.process_line(&line);
                line.clear();
                self.line = line;
                result?
            };
            if blank {
                dispatch(self);
            }
            // `tail` starts with the terminator.
            rest = match tail {
                [b'\r', b'\n', after @ ..] => after,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, after @ ..] => after,
                [] => &[],
            };
        }
        self.check_size(rest.len())?;
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// Fails if adding `more` bytes to the pending line would exceed the limit.
    fn check_size(&self, more: usize) -> Result<(), SseError> {
        let size = self.data.len() + self.event.len() + self.line.len() + more;
        if size > self.max_event_bytes {
            Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            })
        } else {
            Ok(())
        }
    }

    /// Reads one line into the pending event; `true` for a blank line,
    /// which ends the event block.
    fn process_line(&mut self, raw: &[u8]) -> Result<bool, SseError> {
        self.lines_seen += 1;
        let mut raw = raw;
        if self.at_start {
            self.at_start = false;
            if let Some(stripped) = raw.strip_prefix(b"\xEF\xBB\xBF") {
                raw = stripped;
            }
        }
        // The fast check, and std's for where it fails.
        let line = match simdutf8::basic::from_utf8(raw) {
            Ok(line) => line,
            Err(_) => std::str::from_utf8(raw).map_err(|e| SseError::InvalidUtf8 {
                line: self.lines_seen,
                offset: e.valid_up_to(),
            })?,
        };
        if line.is_empty() {
            return Ok(true);
        }
        if line.starts_with(':') {
            return Ok(false);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                // One allocation for the usual one-line event.
                self.data.reserve(value.len() + 1);
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        Ok(false)
    }

    /// Ends the current event block; returns the event if it has data.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let id = self.id.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        Some(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data,
            id,
            retry,
        })
    }
}

/// `b` starts with a whole event of one `data` line ended by `\n\n`:
/// its data (valid UTF-8) and the event's length in bytes.
fn one_line_event(b: &[u8]) -> Option<(&str, usize)> {
    let rest = b.strip_prefix(b"data:")?;
    let start = 5 + usize::from(rest.first() == Some(&b' '));
    let end = start + memchr::memchr2(b'\n', b'\r', &b[start..])?;
    if b[end] != b'\n' || b.get(end + 1) != Some(&b'\n') {
        return None;
    }
    let data = simdutf8::basic::from_utf8(&b[start..end]).ok()?;
    Some((data, end + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_handles_every_terminator() {
        let lines: Vec<_> = split_lines("a\r\nb\rc\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "d"]);
        let lines: Vec<_> = split_lines("").collect();
        assert_eq!(lines, [""]);
        let lines: Vec<_> = split_lines("a\n").collect();
        assert_eq!(lines, ["a", ""]);
    }
}
