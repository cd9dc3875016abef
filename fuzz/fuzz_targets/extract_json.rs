//! The JSON extractor (fences, prose around an object) on arbitrary text:
//! no panic, and what it returns is a slice of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(found) = keel_wire::content::extract_json(text) {
        let (start, end) = (text.as_ptr() as usize, text.as_ptr() as usize + text.len());
        let p = found.as_ptr() as usize;
        assert!(p >= start && p + found.len() <= end);
    }
});
