//! The fast reading of a chunk: one pass over the bytes, no serde for
//! what the view reads. It checks the JSON grammar of everything it skips
//! as strictly as serde does (string escapes and control characters,
//! number syntax, literals, nesting), and gives up (`None`) on anything it
//! does not handle itself: a key or value with a `\u` escape, a duplicate
//! of a field it reads, a missing field, a wrong type. [`ChunkView::parse`]
//! then asks serde, which accepts or names the error.
//!
//! Numbers it skips are held to what serde can read into a
//! `serde_json::Value` (a finite `f64` at worst): one with an exponent, or
//! longer than 300 characters, is left to serde. So a whole answer the
//! scanner accepts is one the typed parse accepts too
//! ([`crate::answer_view`] relies on it).

use std::borrow::Cow;

/// Deepest nesting followed; below serde_json's own limit (128), so
/// whatever is deeper is serde's to accept or refuse.
const MAX_DEPTH: usize = 100;

pub(crate) fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// How many bytes at the start of `b` are plain string content: not a
/// quote, a backslash or a control character. Eight bytes at a time:
/// each test below sets the high bit of every byte that matches, and
/// may also set it in bytes after a match (a borrow), never before one,
/// so the lowest bit set is the first match.
pub(crate) fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = 0;
    while let Some(word) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*word);
        let found = zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b
        .get(i)
        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
    {
        i += 1;
    }
    i
}

/// `b[i]` is `"`: the offset past the closing quote, and whether the
/// string has escapes.
fn string(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        j += plain_run(b.get(j..)?);
        match *b.get(j)? {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    // \u (surrogate rules included) is left to serde.
                    _ => return None,
                }
            }
            0..=0x1f => return None,
            _ => j += 1,
        }
    }
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// A number, `true`, `false` or `null` at `b[i]`: the offset past it.
fn scalar(b: &[u8], i: usize) -> Option<usize> {
    let lit: &[u8] = match *b.get(i)? {
        b't' => b"true",
        b'f' => b"false",
        b'n' => b"null",
        _ => b"",
    };
    if !lit.is_empty() {
        return b[i..].starts_with(lit).then_some(i + lit.len());
    }
    let mut j = i + usize::from(b.get(i) == Some(&b'-'));
    j = match *b.get(j)? {
        b'0' => j + 1,
        b'1'..=b'9' => digits(b, j),
        _ => return None,
    };
    if b.get(j) == Some(&b'.') {
        let k = digits(b, j + 1);
        if k == j + 1 {
            return None;
        }
        j = k;
    }
    // An exponent, or more digits than a finite `f64` holds, may be
    // out of serde's range: its to judge.
    if matches!(b.get(j), Some(b'e' | b'E')) || j - i > 300 {
        return None;
    }
    Some(j)
}

/// The object at `b[i]` (`{`): `member(key, value_start)` reads or
/// skips each value and returns its end. The offset past the `}`.
pub(crate) fn object<'a>(
    b: &'a [u8],
    i: usize,
    mut member: impl FnMut(&'a [u8], usize) -> Option<usize>,
) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b'}') {
        return Some(j + 1);
    }
    loop {
        if b.get(j) != Some(&b'"') {
            return None;
        }
        let (key_end, escaped) = string(b, j)?;
        let key = &b[j + 1..key_end - 1];
        // serde reads keys as text: escapes are its to judge (the
        // buffer is UTF-8, checked once by `chunk`).
        if escaped {
            return None;
        }
        j = ws(b, key_end);
        if b.get(j) != Some(&b':') {
            return None;
        }
        j = ws(b, member(key, ws(b, j + 1))?);
        match *b.get(j)? {
            b',' => j = ws(b, j + 1),
            b'}' => return Some(j + 1),
            _ => return None,
        }
    }
}

/// The array at `b[i]` (`[`), each element read by `element`.
pub(crate) fn array(
    b: &[u8],
    i: usize,
    mut element: impl FnMut(usize) -> Option<usize>,
) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b']') {
        return Some(j + 1);
    }
    loop {
        j = ws(b, element(j)?);
        match *b.get(j)? {
            b',' => j = ws(b, j + 1),
            b']' => return Some(j + 1),
            _ => return None,
        }
    }
}

/// The array at `b[i]` as a list, each element read by `element`
/// (room for `cap` of them at first).
pub(crate) fn list<T>(
    b: &[u8],
    i: usize,
    cap: usize,
    mut element: impl FnMut(usize) -> Option<(T, usize)>,
) -> Option<(Vec<T>, usize)> {
    let mut all = Vec::with_capacity(cap);
    let end = array(b, i, |k| {
        let (value, end) = element(k)?;
        all.push(value);
        Some(end)
    })?;
    Some((all, end))
}

/// Skips (and checks) the value at `b[i]`.
pub(crate) fn skip(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    match *b.get(i)? {
        b'"' => Some(string(b, i)?.0),
        b'{' => object(b, i, |_, j| skip(b, j, depth + 1)),
        b'[' => array(b, i, |j| skip(b, j, depth + 1)),
        _ => scalar(b, i),
    }
}

/// The string at `s[i]`, borrowed unless it has escapes.
pub(crate) fn text(s: &str, i: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = s.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (end, escaped) = string(b, i)?;
    let s = match escaped {
        true => Cow::Owned(serde_json::from_slice::<String>(&b[i..end]).ok()?),
        // Quotes are ASCII, so both ends are character boundaries.
        false => Cow::Borrowed(s.get(i + 1..end - 1)?),
    };
    Some((s, end))
}

/// A string or `null` at `b[i]`.
pub(crate) fn text_or_null(s: &str, i: usize) -> Option<(Option<Cow<'_, str>>, usize)> {
    if s.as_bytes()[i..].starts_with(b"null") {
        return Some((None, i + 4));
    }
    let (t, end) = text(s, i)?;
    Some((Some(t), end))
}

/// Sets `slot` once; a second value for the same field gives up.
pub(crate) fn once<T>(slot: &mut Option<T>, read: Option<(T, usize)>) -> Option<usize> {
    if slot.is_some() {
        return None;
    }
    let (value, end) = read?;
    *slot = Some(value);
    Some(end)
}

/// The value at `b[i]` parsed by serde (for the rare, structured fields).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    b: &[u8],
    i: usize,
    depth: usize,
) -> Option<(T, usize)> {
    let end = skip(b, i, depth)?;
    Some((serde_json::from_slice(&b[i..end]).ok()?, end))
}

/// An unsigned integer type a count is read into.
pub(crate) trait Count: Default + From<u8> {
    fn checked_mul(self, by: Self) -> Option<Self>;
    fn checked_add(self, n: Self) -> Option<Self>;
}

macro_rules! count_type {
    ($($t:ty),*) => {$(
        impl Count for $t {
            fn checked_mul(self, by: Self) -> Option<Self> {
                <$t>::checked_mul(self, by)
            }
            fn checked_add(self, n: Self) -> Option<Self> {
                <$t>::checked_add(self, n)
            }
        }
    )*};
}
count_type!(u32, u64);

/// A JSON integer at `b[i]` that fits a `T` (`u32`, `u64`): digits
/// without a leading zero, not followed by a fraction or an exponent.
pub(crate) fn count<T: Count>(b: &[u8], i: usize) -> Option<(T, usize)> {
    let end = digits(b, i);
    if end == i || (b[i] == b'0' && end > i + 1) {
        return None;
    }
    if matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let mut value = T::default();
    for &d in &b[i..end] {
        value = value
            .checked_mul(T::from(10))?
            .checked_add(T::from(d - b'0'))?;
    }
    Some((value, end))
}

/// `null` at `b[i]`.
pub(crate) fn null(b: &[u8], i: usize) -> Option<((), usize)> {
    b[i..].starts_with(b"null").then_some(((), i + 4))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    proptest::proptest! {
        /// The eight-at-a-time run equals the byte-by-byte definition, at
        /// every length and position of the first special byte.
        #[test]
        fn the_plain_run_stops_at_the_first_quote_backslash_or_control(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => 0x20u8..=0xff,
                    1 => proptest::sample::select(vec![b'"', b'\\', 0x00, 0x1f, 0x7f, 0x80, 0x20]),
                ],
                0..40,
            ),
        ) {
            let expected = bytes
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(bytes.len());
            proptest::prop_assert_eq!(super::plain_run(&bytes), expected);
        }
    }
}
