//! The SSE decoder on arbitrary bytes cut into arbitrary pieces.
//!
//! Input: one byte `k`, then `k % 8` cut bytes, then the stream. Checks:
//! no panic; the events (or the error) are the same whether the stream
//! arrives whole, cut at the given points, or one byte at a time; they
//! equal those of a small reference decoder written from the spec;
//! every decoded event re-encodes to bytes that decode to the same event;
//! and `push_with` hands on the events `push` returns, piece by piece.
#![no_main]

use keel_wire::sse::{SseDecoder, SseError, SseEvent};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fn decode<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> Result<Vec<SseEvent>, SseError> {
    let mut d = SseDecoder::with_max_event_bytes(limit);
    let mut out = Vec::new();
    for p in pieces {
        out.extend(d.push(p)?);
    }
    out.extend(d.finish()?);
    Ok(out)
}

/// The WHATWG event-stream rules, whole-input, with Keel's differences
/// (UTF-8 errors are errors; `id` is per event; a last event without its
/// blank line is still dispatched). No size limit.
fn reference(bytes: &[u8]) -> Option<Vec<SseEvent>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
        lines.push(&rest[..i]);
        let skip = if rest[i..].starts_with(b"\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines.push(b""); // the end of the stream dispatches
    let mut events = Vec::new();
    let (mut data, mut event, mut id, mut retry) = (None::<String>, String::new(), None, None);
    for raw in lines {
        let line = std::str::from_utf8(raw).ok()?;
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(SseEvent {
                    event: (!event.is_empty()).then(|| event.clone()),
                    data: d,
                    id: id.take(),
                    retry: retry.take(),
                });
            }
            event.clear();
            id = None;
            retry = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_owned(),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = value.parse().ok();
            }
            _ => {}
        }
    }
    Some(events)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let ncuts = (k % 8) as usize;
    if rest.len() < ncuts {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(ncuts);
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&c| c as usize * stream.len() / 255)
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for &c in &cuts {
        pieces.push(&stream[from..c]);
        from = c;
    }
    pieces.push(&stream[from..]);

    let whole = decode([stream], LIMIT);
    let cut = decode(pieces.iter().copied(), LIMIT);
    assert_eq!(whole, cut, "cutting at {cuts:?} changed the result");
    let bytewise = decode(stream.chunks(1), LIMIT);
    assert_eq!(whole, bytewise, "byte-by-byte changed the result");

    // The callback reader sees each piece's events (name and data) as
    // `push` returns them, and fails at the same piece with the same error.
    let (mut by_push, mut by_callback) = (
        SseDecoder::with_max_event_bytes(LIMIT),
        SseDecoder::with_max_event_bytes(LIMIT),
    );
    for p in &pieces {
        let mut seen = Vec::new();
        let called = by_callback.push_with(p, |event, data| {
            seen.push((event.map(str::to_owned), data.to_owned()))
        });
        match by_push.push(p) {
            Ok(evs) => {
                assert_eq!(called, Ok(()), "push_with failed where push did not");
                let expected: Vec<_> = evs.into_iter().map(|e| (e.event, e.data)).collect();
                assert_eq!(seen, expected, "push_with saw other events");
            }
            Err(e) => {
                assert_eq!(called, Err(e), "push_with failed otherwise");
                break;
            }
        }
    }

    // Without a size limit, the spec's reading of the stream.
    let unlimited = decode([stream], usize::MAX);
    assert_eq!(
        unlimited.as_ref().ok(),
        reference(stream).as_ref(),
        "differs from the reference"
    );
    if let Ok(evs) = &whole {
        assert_eq!(
            Ok(evs),
            unlimited.as_ref(),
            "the limit changed a stream within it"
        );
    }

    // Re-encoding what was decoded decodes to the same events.
    if let Ok(evs) = unlimited {
        let mut again = Vec::new();
        for ev in &evs {
            let bytes = keel_wire::sse::encode(ev);
            let decoded = decode([&bytes[..]], usize::MAX);
            assert_eq!(
                decoded.as_ref(),
                Ok(&vec![ev.clone()]),
                "re-encoding {ev:?}"
            );
            again.extend(decoded.unwrap_or_default());
        }
        assert_eq!(evs, again);
    }
});
