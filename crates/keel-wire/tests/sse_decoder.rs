//! The SSE decoder gives the same events however the bytes are chunked, and
//! follows the WHATWG event-stream rules.

// Test helpers outside `#[test]` functions unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{decode_all, fixture_bytes, STREAMS};
use keel_wire::sse::{
    encode, encode_data, encode_named, write_data, write_data_parts, write_named, SseDecoder,
    SseError, SseEvent,
};
use proptest::prelude::*;

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(dec.push(chunk).unwrap());
    }
    events.extend(dec.finish().unwrap());
    events
}

fn crlf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes()
}

fn cr(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .replace('\n', "\r")
        .into_bytes()
}

/// Every fixture in its LF, CRLF and CR spellings.
fn all_variants() -> Vec<(String, Vec<u8>)> {
    STREAMS
        .iter()
        .flat_map(|name| {
            let lf = fixture_bytes(name);
            [
                (format!("{name} (CRLF)"), crlf(&lf)),
                (format!("{name} (CR)"), cr(&lf)),
                (format!("{name} (LF)"), lf),
            ]
        })
        .collect()
}

#[test]
fn fixtures_decode_to_the_expected_number_of_events() {
    let counts = [
        ("openai/chat_stream.sse", 12),
        ("openai/chat_stream_tool_calls.sse", 13),
        ("anthropic/messages_stream.sse", 18),
        ("anthropic/messages_stream_error.sse", 5),
    ];
    for (name, n) in counts {
        let events = decode_all(&fixture_bytes(name));
        assert_eq!(events.len(), n, "{name}");
        assert!(events.iter().all(|e| e.id.is_none() && e.retry.is_none()));
    }
    let openai = decode_all(&fixture_bytes("openai/chat_stream.sse"));
    assert!(openai.iter().all(|e| e.event.is_none()));
    assert!(openai.last().unwrap().is_done());
    let anthropic = decode_all(&fixture_bytes("anthropic/messages_stream.sse"));
    assert_eq!(anthropic[0].event.as_deref(), Some("message_start"));
    assert_eq!(anthropic[2].event.as_deref(), Some("ping"));
    assert_eq!(anthropic[2].data, "{\"type\": \"ping\"}");
}

#[test]
fn line_ending_variants_decode_alike() {
    for name in STREAMS {
        let lf = decode_all(&fixture_bytes(name));
        assert_eq!(decode_all(&crlf(&fixture_bytes(name))), lf, "{name} CRLF");
        assert_eq!(decode_all(&cr(&fixture_bytes(name))), lf, "{name} CR");
    }
}

#[test]
fn every_split_into_two_chunks_decodes_alike() {
    for (name, bytes) in all_variants() {
        let whole = decode_all(&bytes);
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(decode_chunks([a, b]), whole, "{name} split at {at}");
        }
    }
}

#[test]
fn single_byte_chunks_decode_alike() {
    for (name, bytes) in all_variants() {
        let whole = decode_all(&bytes);
        assert_eq!(decode_chunks(bytes.chunks(1)), whole, "{name}");
    }
}

#[test]
fn whatwg_field_rules() {
    let stream = b"\xEF\xBB\xBF: a comment\n\
        event:  spaced\n\
        data:no space\n\
        data: one\n\
        data:  two\n\
        data\n\
        id: 7\n\
        retry: 1500\n\
        unknown: ignored\n\
        \n\
        retry: 12x\n\
        id: bad\0id\n\
        data: second\n\
        \n";
    let events = decode_all(stream);
    assert_eq!(
        events,
        vec![
            SseEvent {
                event: Some(" spaced".into()),
                data: "no space\none\n two\n".into(),
                id: Some("7".into()),
                retry: Some(1500),
            },
            SseEvent::data("second"),
        ]
    );
}

#[test]
fn blocks_without_data_dispatch_nothing() {
    assert_eq!(decode_all(b"event: x\n\n: hi\n\nid: 3\n\n"), vec![]);
    // An empty `data:` line still makes an event with empty data.
    assert_eq!(decode_all(b"data:\n\n"), vec![SseEvent::data("")]);
    // The event name does not leak into the next block.
    assert_eq!(
        decode_all(b"event: a\n\ndata: b\n\n"),
        vec![SseEvent::data("b")]
    );
}

#[test]
fn bom_is_stripped_only_at_the_start() {
    let events = decode_all(b"\xEF\xBB\xBFdata: a\n\n");
    assert_eq!(events, vec![SseEvent::data("a")]);
    // Split inside the BOM.
    let mut dec = SseDecoder::new();
    assert_eq!(dec.push(b"\xEF").unwrap(), vec![]);
    assert_eq!(
        dec.push(b"\xBB\xBFdata: a\n\n").unwrap(),
        vec![SseEvent::data("a")]
    );
    // Later, a BOM is part of the field name, which is then unknown.
    assert_eq!(
        decode_all(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
        vec![SseEvent::data("a")]
    );
}

#[test]
fn finish_dispatches_an_unterminated_last_event() {
    let mut dec = SseDecoder::new();
    assert_eq!(dec.push(b"data: [DONE]").unwrap(), vec![]);
    assert_eq!(dec.finish().unwrap(), Some(SseEvent::data("[DONE]")));
    assert_eq!(dec.finish().unwrap(), None);
    let mut dec = SseDecoder::new();
    assert_eq!(dec.push(b"data: x\n").unwrap(), vec![]);
    assert_eq!(dec.finish().unwrap(), Some(SseEvent::data("x")));
    let mut dec = SseDecoder::new();
    assert_eq!(dec.push(b"data: x\r").unwrap(), vec![]);
    assert_eq!(dec.finish().unwrap(), Some(SseEvent::data("x")));
    let mut dec = SseDecoder::new();
    assert_eq!(dec.finish().unwrap(), None);
}

#[test]
fn cr_at_a_chunk_boundary_is_one_line_ending() {
    let mut dec = SseDecoder::new();
    assert_eq!(dec.push(b"data: a\r").unwrap(), vec![]);
    assert_eq!(dec.push(b"\n").unwrap(), vec![]);
    assert_eq!(dec.push(b"\r").unwrap(), vec![SseEvent::data("a")]);
    assert_eq!(
        dec.push(b"\ndata: b\r\r").unwrap(),
        vec![SseEvent::data("b")]
    );
}

#[test]
fn empty_chunks_change_nothing() {
    // Regression: an empty chunk between `\r` and `\n` made the `\n` a blank line.
    let mut dec = SseDecoder::new();
    assert_eq!(dec.push(b"event: e\r").unwrap(), vec![]);
    assert_eq!(dec.push(b"").unwrap(), vec![]);
    assert_eq!(dec.push(b"\ndata: x\r\n").unwrap(), vec![]);
    assert_eq!(dec.push(b"").unwrap(), vec![]);
    assert_eq!(dec.push(b"\r\n").unwrap(), vec![SseEvent::named("e", "x")]);
}

#[test]
fn oversized_event_is_an_error_not_unbounded_memory() {
    let mut dec = SseDecoder::with_max_event_bytes(16);
    assert_eq!(dec.push(b"data: 0123456789\n").unwrap(), vec![]);
    assert_eq!(
        dec.push(b"data: 0123456789\n"),
        Err(SseError::EventTooLarge { limit: 16 })
    );
    // The decoder is spent.
    assert_eq!(dec.push(b"\n"), Err(SseError::EventTooLarge { limit: 16 }));
    assert_eq!(dec.finish(), Err(SseError::EventTooLarge { limit: 16 }));

    // A line that never ends fails as soon as it passes the limit.
    let mut dec = SseDecoder::with_max_event_bytes(1024);
    let mut failed = false;
    for _ in 0..100 {
        if dec.push(&[b'x'; 100]).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed);

    // Small events under the limit keep flowing forever.
    let mut dec = SseDecoder::with_max_event_bytes(32);
    for _ in 0..1000 {
        assert_eq!(dec.push(b"data: hello\n\n").unwrap().len(), 1);
    }
    assert_eq!(
        SseError::EventTooLarge { limit: 16 }.to_string(),
        "server-sent event exceeds the limit of 16 bytes"
    );
}

#[test]
fn invalid_utf8_is_an_error() {
    let mut dec = SseDecoder::new();
    assert_eq!(
        dec.push(b"data: ok\n\ndata: \xFF\xFE\n\n"),
        Err(SseError::InvalidUtf8 { line: 3, offset: 6 })
    );
    // Split multi-byte characters are fine.
    let snow = "data: ☃\n\n".as_bytes();
    let mut dec = SseDecoder::new();
    let mut events = Vec::new();
    for b in snow {
        events.extend(dec.push(&[*b]).unwrap());
    }
    assert_eq!(events, vec![SseEvent::data("☃")]);
    // A truncated character at the end of the stream.
    let mut dec = SseDecoder::new();
    dec.push(b"data: \xE2\x98").unwrap();
    assert!(matches!(dec.finish(), Err(SseError::InvalidUtf8 { .. })));
}

#[test]
fn encoder_output() {
    assert_eq!(&encode_data("{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
    assert_eq!(&encode_data("[DONE]")[..], b"data: [DONE]\n\n");
    assert_eq!(
        &encode_named("message_stop", "{\"type\":\"message_stop\"}")[..],
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    let ev = SseEvent {
        event: Some("up\ndate".into()),
        data: "a\nb\r\nc\rd".into(),
        id: Some("4\r2".into()),
        retry: Some(3000),
    };
    assert_eq!(
        &encode(&ev)[..],
        b"event: update\nid: 42\nretry: 3000\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    );
    assert_eq!(&encode(&SseEvent::data(""))[..], b"data: \n\n");
}

#[test]
fn encode_then_decode_is_identity_for_fixture_events() {
    for name in STREAMS {
        let events = decode_all(&fixture_bytes(name));
        let mut bytes = Vec::new();
        for ev in &events {
            bytes.extend_from_slice(&encode(ev));
        }
        assert_eq!(decode_all(&bytes), events, "{name}");
    }
}

fn arb_event() -> impl Strategy<Value = SseEvent> {
    (
        proptest::option::of("[a-z_]{1,12}"),
        "(\\PC|\n){0,40}",
        proptest::option::of("[a-z0-9]{0,6}"),
        proptest::option::of(0u64..100_000),
    )
        .prop_map(|(event, data, id, retry)| SseEvent {
            event,
            data,
            id,
            retry,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_chunking_of_fixtures_decodes_alike(
        which in 0..16usize,
        cuts in proptest::collection::vec(0usize..4096, 0..40),
    ) {
        let variants = all_variants();
        let (name, bytes) = &variants[which % variants.len()];
        let whole = decode_all(bytes);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&bytes[start..cut]);
            start = cut;
        }
        chunks.push(&bytes[start..]);
        prop_assert_eq!(decode_chunks(chunks), whole, "{}", name);
    }

    #[test]
    fn encoded_events_decode_back_under_any_chunking(
        events in proptest::collection::vec(arb_event(), 1..8),
        chunk in 1usize..17,
    ) {
        let mut bytes = Vec::new();
        for ev in &events {
            bytes.extend_from_slice(&encode(ev));
        }
        prop_assert_eq!(decode_chunks(bytes.chunks(chunk)), events);
    }

    #[test]
    fn writing_into_a_buffer_gives_the_bytes_of_encode(
        data in "[a-z{}\":\\r\\n ]{0,40}",
        name in "[a-z_\\n]{1,12}",
    ) {
        let mut out = b"prefix".to_vec();
        write_data(&mut out, data.as_bytes());
        write_named(&mut out, &name, data.as_bytes());
        let mut expected = b"prefix".to_vec();
        expected.extend_from_slice(&encode_data(&data));
        expected.extend_from_slice(&encode_named(&name, &data));
        prop_assert_eq!(out, expected);
    }

    /// `push_with` hands on the events `push` returns (name and data),
    /// under any chunking, and fails where `push` fails.
    #[test]
    fn pushing_with_a_callback_sees_what_push_returns(
        which in 0..16usize,
        extra in proptest::collection::vec(any::<u8>(), 0..64),
        chunk in 1usize..33,
    ) {
        let variants = all_variants();
        let (name, bytes) = &variants[which % variants.len()];
        // A fixture, then arbitrary bytes (often invalid).
        let mut bytes = bytes.clone();
        bytes.extend_from_slice(&extra);
        let mut pair = (SseDecoder::new(), SseDecoder::new());
        push_and_push_with_agree(&mut pair, &bytes, chunk).map_err(|e| {
            TestCaseError::fail(format!("{name}: {e}"))
        })?;
    }

    #[test]
    fn writing_data_in_parts_gives_the_bytes_of_the_whole(
        parts in proptest::collection::vec("[a-z{}\":\r\n ]{0,12}", 0..4),
    ) {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let mut out = b"prefix".to_vec();
        write_data_parts(&mut out, &parts);
        let mut expected = b"prefix".to_vec();
        write_data(&mut expected, &parts.concat());
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1usize..9) {
        let mut dec = SseDecoder::with_max_event_bytes(64);
        for c in bytes.chunks(chunk) {
            if dec.push(c).is_err() {
                break;
            }
        }
        let _ = dec.finish();
    }
}

/// Feeds `bytes` in `chunk`-sized pieces to `pair.0` by `push` and to
/// `pair.1` by `push_with`: the callback must see the events `push`
/// returns (name and data), and fail where it fails with the same error.
/// `Ok(false)` once both failed alike.
fn push_and_push_with_agree(
    pair: &mut (SseDecoder, SseDecoder),
    bytes: &[u8],
    chunk: usize,
) -> Result<bool, TestCaseError> {
    let (by_push, by_callback) = pair;
    for c in bytes.chunks(chunk) {
        let pushed = by_push.push(c);
        let mut seen = Vec::new();
        let called = by_callback.push_with(c, |event, data| {
            seen.push((event.map(str::to_owned), data.to_owned()))
        });
        match pushed {
            Ok(events) => {
                prop_assert!(called.is_ok());
                let expected: Vec<_> = events.into_iter().map(|e| (e.event, e.data)).collect();
                prop_assert_eq!(seen, expected);
            }
            Err(e) => {
                prop_assert_eq!(called, Err(e));
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// One piece of an SSE stream, weighted toward the one-line `data` event
/// that `push_with` hands on without copying.
fn sse_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z{}\": é]{0,30}".prop_map(|d| format!("data: {d}\n\n").into_bytes()),
        1 => "[a-z]{0,8}".prop_map(|d| format!("data:{d}\n\n").into_bytes()),
        1 => "[a-z]{0,8}".prop_map(|d| format!("data: {d}\r\n\r\n").into_bytes()),
        1 => "[a-z]{0,8}".prop_map(|d| format!("data: {d}\n").into_bytes()),
        1 => "[a-z]{1,8}".prop_map(|d| format!("event: {d}\n").into_bytes()),
        1 => "[0-9]{1,3}".prop_map(|d| format!("id: {d}\nretry: {d}\n").into_bytes()),
        1 => Just(b": comment\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\xEF\xBB\xBF".to_vec()),
        1 => Just(b"data: \xFF\n\n".to_vec()),
        1 => Just(b"data: x\r".to_vec()),
    ]
}

proptest! {
    /// Whatever the mix of one-line events (read without a copy) and
    /// anything else, `push_with` sees what `push` returns, fails where it
    /// fails with the same error (line numbers included), and leaves the
    /// same pending event behind.
    #[test]
    fn the_one_line_shortcut_reads_as_push_reads(
        pieces in proptest::collection::vec(sse_piece(), 0..24),
        chunk in 1usize..200,
        limit in prop_oneof![Just(1usize << 20), 8usize..40],
    ) {
        let bytes = pieces.concat();
        let mut pair = (
            SseDecoder::with_max_event_bytes(limit),
            SseDecoder::with_max_event_bytes(limit),
        );
        if push_and_push_with_agree(&mut pair, &bytes, chunk)? {
            let (by_push, by_callback) = &mut pair;
            let (a, b) = (by_push.finish(), by_callback.finish());
            prop_assert_eq!(
                a.map(|e| e.map(|e| (e.event, e.data))),
                b.map(|e| e.map(|e| (e.event, e.data)))
            );
        }
    }
}
