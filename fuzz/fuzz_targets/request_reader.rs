//! `ChatRequest::from_json` (the one-pass request reader, serde behind it)
//! on arbitrary bytes.
//!
//! Checks: no panic; it accepts exactly what serde's typed parse accepts,
//! and reads the same request; the layout it gives splices the body as a
//! scan of its own (`splice::Object::parse`) does.
#![no_main]

use keel_wire::openai::ChatRequest;
use keel_wire::splice::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = ChatRequest::from_json_with_layout(data);
    let serde = serde_json::from_slice::<ChatRequest>(data);
    match (ours, serde) {
        (Ok((a, layout)), Ok(b)) => {
            assert_eq!(a, b);
            if let Some(layout) = layout {
                let ours = layout.object(data).expect("the layout of these bytes");
                let scan = Object::parse(data).expect("the reader accepted what the scan refuses");
                for key in ["model", "stream", "stream_options"] {
                    assert_eq!(ours.raw(key), scan.raw(key));
                    assert_eq!(ours.has(key), scan.has(key));
                }
                let append = Some(("stream_options", "{}"));
                assert_eq!(
                    ours.rewrite("model", "m", append),
                    scan.rewrite("model", "m", append)
                );
            }
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("from_json {a:?} but serde {b:?}"),
    }
});
