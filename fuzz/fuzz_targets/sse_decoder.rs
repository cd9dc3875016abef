//! The SSE decoder on arbitrary bytes split at an arbitrary point: no panic,
//! and the same events whether the bytes arrive whole or in two pieces.
#![no_main]

use keel_wire::sse::SseDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * rest.len()) / 255;
    let whole = {
        let mut d = SseDecoder::with_max_event_bytes(4096);
        d.push(rest).and_then(|mut evs| {
            evs.extend(d.finish()?);
            Ok(evs)
        })
    };
    let split = {
        let mut d = SseDecoder::with_max_event_bytes(4096);
        d.push(&rest[..cut]).and_then(|mut evs| {
            evs.extend(d.push(&rest[cut..])?);
            evs.extend(d.finish()?);
            Ok(evs)
        })
    };
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b, "split at {cut} changed the events");
    }
    // Re-encoding what was decoded decodes to the same events.
    if let Ok(evs) = whole {
        let mut d = SseDecoder::new();
        let mut again = Vec::new();
        for ev in &evs {
            again.extend(d.push(&keel_wire::sse::encode(ev)).unwrap_or_default());
        }
        assert_eq!(evs.len(), again.len());
    }
});
