//! A streamed OpenAI chunk read for what a gateway decides on, without
//! building a [`ChatChunk`].
//!
//! **Why.** A streamed answer is tens to thousands of chunks. Parsing each
//! into a [`ChatChunk`] (every string owned, three levels of flattened
//! `extra` maps buffered through serde's content tree) and serialising it
//! again cost more CPU than everything else Keel does to a stream. When
//! the client speaks the provider's own API, the chunk's bytes can go to
//! the client as they came (with only `model` replaced); Keel only has to
//! read what it decides on: the id, the text (for a resume), finish
//! reasons, usage, and whether the chunk carries anything. This view
//! borrows those from the bytes and skips everything else unparsed.
//!
//! The view requires the same shape as [`ChatChunk`] for what it reads
//! (`id` and `model` strings, `choices` an array of objects that each have
//! a `delta` object, a string `role`), so bytes it rejects are bytes the
//! full parse rejects too. (The converse does not hold: the view skips
//! fields it does not read, such as `created`, without checking their type.)
//!
//! ```
//! use keel_wire::chunk_view::ChunkView;
//! let json = br#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
//!   "choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null,"logprobs":null}]}"#;
//! let view = ChunkView::parse(json).unwrap();
//! assert_eq!(view.id, "c1");
//! assert!(view.has_payload());
//! assert_eq!(view.choices[0].delta.content.as_deref(), Some("Hel"));
//! ```
//!
//! [`ChatChunk`]: crate::openai::ChatChunk

use std::borrow::Cow;

use serde::Deserialize;

use crate::openai::{ToolCallDelta, Usage};

/// What a gateway reads of one `chat.completion.chunk`.
#[derive(Debug, Deserialize)]
pub struct ChunkView<'a> {
    /// Completion id (borrowed unless it has escapes).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The model the upstream named.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// Deltas, one per choice (empty on the usage chunk).
    #[serde(borrow)]
    pub choices: Vec<ChoiceView<'a>>,
    /// Token usage, on the last chunk when `include_usage` was asked.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The bytes the view was read from.
    #[serde(skip)]
    source: &'a [u8],
}

/// What a gateway reads of one choice of a chunk.
#[derive(Debug, Deserialize)]
pub struct ChoiceView<'a> {
    /// What was added.
    #[serde(borrow)]
    pub delta: DeltaView<'a>,
    /// Set on the choice's last chunk.
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// What a gateway reads of one delta.
#[derive(Debug, Deserialize)]
pub struct DeltaView<'a> {
    /// Set on the first chunk.
    #[serde(default, borrow)]
    pub role: Option<Cow<'a, str>>,
    /// Text added.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    /// Tool-call fragments added (rare on the hot path, so owned).
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Refusal text added.
    #[serde(default, borrow)]
    pub refusal: Option<Cow<'a, str>>,
}

impl<'a> ChunkView<'a> {
    /// Reads `json`; the error is serde's, naming what did not fit.
    pub fn parse(json: &'a [u8]) -> Result<ChunkView<'a>, serde_json::Error> {
        if let Some(view) = scan::chunk(json) {
            return Ok(view);
        }
        let mut view: ChunkView<'a> = serde_json::from_slice(json)?;
        view.source = json;
        Ok(view)
    }

    /// Reads `json` like [`parse`](Self::parse), from text whose UTF-8 has
    /// already been checked (an SSE decoder's data), so it is not checked
    /// again.
    pub fn parse_str(json: &'a str) -> Result<ChunkView<'a>, serde_json::Error> {
        if let Some(view) = scan::chunk_str(json) {
            return Ok(view);
        }
        let mut view: ChunkView<'a> = serde_json::from_str(json)?;
        view.source = json.as_bytes();
        Ok(view)
    }

    /// Where `text`, one of this view's strings, lies in the bytes it was
    /// read from (quotes excluded); `None` when it had escapes (it was
    /// unescaped into a string of its own, which is not in those bytes). A
    /// reader that keeps the bytes keeps the string as this range instead
    /// of a copy.
    ///
    /// ```
    /// use keel_wire::chunk_view::ChunkView;
    /// let json = br#"{"id":"c7","model":"m\/1","choices":[]}"#;
    /// let view = ChunkView::parse(json).unwrap();
    /// assert_eq!(&json[view.span(&view.id).unwrap()], b"c7");
    /// assert_eq!(view.span(&view.model), None);
    /// ```
    pub fn span(&self, text: &str) -> Option<std::ops::Range<usize>> {
        let json = self.source;
        let start = (text.as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
        let end = start.checked_add(text.len())?;
        (end <= json.len()).then_some(start..end)
    }

    /// The chunk's bytes with the value of `model` replaced by
    /// `model_json` (a JSON string, quotes included), everything else byte
    /// for byte. The view already knows where the value is, so nothing is
    /// scanned again. `None` when the upstream's model string had escapes
    /// (it was not read in place); a caller then re-encodes the chunk.
    ///
    /// ```
    /// use keel_wire::chunk_view::ChunkView;
    /// let json = br#"{"id":"c","model":"up-1","choices":[]}"#;
    /// let view = ChunkView::parse(json).unwrap();
    /// assert_eq!(
    ///     view.with_model(r#""route""#).unwrap(),
    ///     br#"{"id":"c","model":"route","choices":[]}"#.to_vec()
    /// );
    /// ```
    pub fn with_model(&self, model_json: &str) -> Option<Vec<u8>> {
        let at = self.model_span()?;
        let json = self.source;
        let mut out = Vec::with_capacity(json.len() + model_json.len());
        out.extend_from_slice(&json[..at.start]);
        out.extend_from_slice(model_json.as_bytes());
        out.extend_from_slice(&json[at.end..]);
        Some(out)
    }

    /// Where the value of `model` lies in the chunk's bytes, quotes
    /// included: what [`with_model`](Self::with_model) replaces, for a
    /// writer that puts the pieces together itself. `None` when the value
    /// had escapes (it was not read in place).
    ///
    /// ```
    /// use keel_wire::chunk_view::ChunkView;
    /// let json = br#"{"id":"c","model":"up-1","choices":[]}"#;
    /// let at = ChunkView::parse(json).unwrap().model_span().unwrap();
    /// assert_eq!(&json[at], br#""up-1""#);
    /// ```
    pub fn model_span(&self) -> Option<std::ops::Range<usize>> {
        let std::ops::Range { start, end } = self.span(&self.model)?;
        let json = self.source;
        // The value's quotes sit right around the text serde borrowed.
        if json.get(start.checked_sub(1)?) != Some(&b'"') || json.get(end) != Some(&b'"') {
            return None;
        }
        Some(start - 1..end + 1)
    }

    /// Whether the chunk carries something a client waits for: text, a
    /// tool-call fragment, a refusal or a finish reason (a role-only chunk
    /// does not).
    pub fn has_payload(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.content.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                || c.delta.refusal.as_ref().is_some_and(|t| !t.is_empty())
                || c.finish_reason.is_some()
        })
    }

    /// Whether any choice names a role.
    pub fn has_role(&self) -> bool {
        self.choices.iter().any(|c| c.delta.role.is_some())
    }

    /// Whether any choice ends with `finish_reason` `reason`.
    pub fn finishes_with(&self, reason: &str) -> bool {
        self.choices
            .iter()
            .any(|c| c.finish_reason.as_deref() == Some(reason))
    }
}

/// Whether `next` is `prev` with one plain string value replaced by
/// another plain string: the same bytes before and after it, and between
/// the new quotes text with no escape and no control character. `text` is
/// where that value's text lies in `prev` (quotes excluded), as
/// [`ChunkView::span`] gives it for a value the view read, such as a
/// delta's `content`; `prev` is a chunk the view accepted. Returns where
/// the new text lies in `next`.
///
/// Such a chunk reads as `prev` reads but for that one string, so a
/// stream of token chunks that differ only in their text (the usual case)
/// is read by two comparisons and one short scan per chunk instead of a
/// parse. `None` only says the shortcut does not apply (the chunk may
/// still be fine: it is then read in full).
///
/// ```
/// use keel_wire::chunk_view::{same_but_text, ChunkView};
/// let prev = r#"{"id":"c","model":"m","choices":[{"delta":{"content":"Hel"}}]}"#;
/// let view = ChunkView::parse_str(prev).unwrap();
/// let at = view.span(view.choices[0].delta.content.as_deref().unwrap()).unwrap();
/// let next = r#"{"id":"c","model":"m","choices":[{"delta":{"content":"lo!"}}]}"#;
/// let new_at = same_but_text(prev.as_bytes(), at.clone(), next).unwrap();
/// assert_eq!(&next[new_at], "lo!");
/// // An escape, or anything else changed, is read in full.
/// assert_eq!(same_but_text(prev.as_bytes(), at.clone(), &next.replace("lo!", "l\\n")), None);
/// assert_eq!(same_but_text(prev.as_bytes(), at, &next.replace("\"c\"", "\"d\"")), None);
/// ```
pub fn same_but_text(
    prev: &[u8],
    text: std::ops::Range<usize>,
    next: &str,
) -> Option<std::ops::Range<usize>> {
    // The value with its quotes: `prev[open..=close]`.
    let (open, close) = (text.start.checked_sub(1)?, text.end);
    if prev.get(open) != Some(&b'"') || prev.get(close) != Some(&b'"') {
        return None;
    }
    let (head, tail) = (prev.get(..=open)?, prev.get(close..)?);
    let n = next.as_bytes();
    if n.len() < head.len() + tail.len() || !n.starts_with(head) || !n.ends_with(tail) {
        return None;
    }
    let at = head.len()..n.len() - tail.len();
    let inner = n.get(at.clone())?;
    (scan::plain_run(inner) == inner.len()).then_some(at)
}

/// The fast reading of a chunk: one pass over the bytes, no serde for
/// what the view reads. It checks the JSON grammar of everything it skips
/// as strictly as serde does (string escapes and control characters,
/// number syntax, literals, nesting), and gives up (`None`) on anything it
/// does not handle itself: a key or value with a `\u` escape, a duplicate
/// of a field it reads, a missing field, a wrong type. [`ChunkView::parse`]
/// then asks serde, which accepts or names the error.
///
/// Numbers it skips are held to what serde can read into a
/// `serde_json::Value` (a finite `f64` at worst): one with an exponent, or
/// longer than 300 characters, is left to serde. So a whole answer the
/// scanner accepts is one the typed parse accepts too
/// ([`crate::answer_view`] relies on it).
pub(crate) mod scan {
    use std::borrow::Cow;

    use super::{ChoiceView, ChunkView, DeltaView};
    use crate::answer_view::AnswerFacts;
    use crate::openai::{
        ChatRequest, Content, Extra, Message, Role, ToolCall, ToolCallDelta, Usage,
    };
    use crate::splice::Layout;

    /// Deepest nesting followed; below serde_json's own limit (128), so
    /// whatever is deeper is serde's to accept or refuse.
    const MAX_DEPTH: usize = 100;

    fn ws(b: &[u8], mut i: usize) -> usize {
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
    pub(super) fn plain_run(b: &[u8]) -> usize {
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
    fn object<'a>(
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
    fn array(b: &[u8], i: usize, mut element: impl FnMut(usize) -> Option<usize>) -> Option<usize> {
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
    fn list<T>(
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
    fn skip(b: &[u8], i: usize, depth: usize) -> Option<usize> {
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
    fn text(s: &str, i: usize) -> Option<(Cow<'_, str>, usize)> {
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
    fn text_or_null(s: &str, i: usize) -> Option<(Option<Cow<'_, str>>, usize)> {
        if s.as_bytes()[i..].starts_with(b"null") {
            return Some((None, i + 4));
        }
        let (t, end) = text(s, i)?;
        Some((Some(t), end))
    }

    /// Sets `slot` once; a second value for the same field gives up.
    fn once<T>(slot: &mut Option<T>, read: Option<(T, usize)>) -> Option<usize> {
        if slot.is_some() {
            return None;
        }
        let (value, end) = read?;
        *slot = Some(value);
        Some(end)
    }

    /// The value at `b[i]` parsed by serde (for the rare, structured fields).
    fn typed<T: serde::de::DeserializeOwned>(
        b: &[u8],
        i: usize,
        depth: usize,
    ) -> Option<(T, usize)> {
        let end = skip(b, i, depth)?;
        Some((serde_json::from_slice(&b[i..end]).ok()?, end))
    }

    fn delta(s: &str, i: usize) -> Option<(DeltaView<'_>, usize)> {
        let b = s.as_bytes();
        let (mut role, mut content, mut refusal, mut tools) = (None, None, None, None);
        let end = object(b, i, |key, j| match key {
            b"role" => once(&mut role, text_or_null(s, j)),
            b"content" => once(&mut content, text_or_null(s, j)),
            b"refusal" => once(&mut refusal, text_or_null(s, j)),
            b"tool_calls" => once(&mut tools, typed::<Option<Vec<ToolCallDelta>>>(b, j, 4)),
            _ => skip(b, j, 4),
        })?;
        let view = DeltaView {
            role: role.flatten(),
            content: content.flatten(),
            tool_calls: tools.flatten(),
            refusal: refusal.flatten(),
        };
        Some((view, end))
    }

    fn choice(s: &str, i: usize) -> Option<(ChoiceView<'_>, usize)> {
        let b = s.as_bytes();
        let (mut delta_view, mut finish) = (None, None);
        let end = object(b, i, |key, j| match key {
            b"delta" => once(&mut delta_view, delta(s, j)),
            b"finish_reason" => once(&mut finish, text_or_null(s, j)),
            _ => skip(b, j, 3),
        })?;
        let view = ChoiceView {
            delta: delta_view?,
            finish_reason: finish.flatten(),
        };
        Some((view, end))
    }

    /// `usage`'s value at `b[i]`: read here when it is the three counts
    /// and nothing else (the usual case), by serde otherwise.
    fn usage_at(b: &[u8], i: usize) -> Option<(Option<Usage>, usize)> {
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
            extra: crate::openai::Extra::new(),
        };
        Some((Some(usage), end))
    }

    /// An unsigned integer type a count is read into.
    pub(super) trait Count: Default + From<u8> {
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
    fn count<T: Count>(b: &[u8], i: usize) -> Option<(T, usize)> {
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
    fn null(b: &[u8], i: usize) -> Option<((), usize)> {
        b[i..].starts_with(b"null").then_some(((), i + 4))
    }

    /// What a whole answer's first message says, or `None` to leave the
    /// message to serde: content other than a string or `null` (parts),
    /// tool calls, or anything the typed parse might refuse.
    type MessageFacts = (Option<String>, Option<String>);

    fn message(s: &str, i: usize) -> Option<(MessageFacts, usize)> {
        let b = s.as_bytes();
        let (mut role, mut content, mut refusal) = (None, None, None);
        let (mut name, mut tools, mut tool_id) = (None, None, None);
        let end = object(b, i, |key, j| match key {
            b"role" => once(&mut role, text(s, j)),
            b"content" => once(&mut content, text_or_null(s, j)),
            b"refusal" => once(&mut refusal, text_or_null(s, j)),
            b"name" => once(&mut name, text_or_null(s, j)),
            b"tool_call_id" => once(&mut tool_id, text_or_null(s, j)),
            b"tool_calls" => once(&mut tools, null(b, j)),
            _ => skip(b, j, 4),
        })?;
        role?;
        let owned = |t: Option<Option<Cow<'_, str>>>| t.flatten().map(Cow::into_owned);
        Some(((owned(content), owned(refusal)), end))
    }

    /// A choice of a whole answer: its message and finish reason.
    fn answer_choice(s: &str, i: usize) -> Option<((MessageFacts, Option<String>), usize)> {
        let b = s.as_bytes();
        let (mut index, mut msg, mut finish, mut logprobs) = (None, None, None, None);
        let end = object(b, i, |key, j| match key {
            b"index" => once(&mut index, count::<u32>(b, j)),
            b"message" => once(&mut msg, message(s, j)),
            b"finish_reason" => once(&mut finish, text_or_null(s, j)),
            b"logprobs" => once(&mut logprobs, skip(b, j, 3).map(|e| ((), e))),
            _ => skip(b, j, 3),
        })?;
        let finish = finish.flatten().map(Cow::into_owned);
        Some(((msg?, finish), end))
    }

    /// The facts of a whole `chat.completion`, or `None` to leave it to
    /// serde. Every field the typed parse reads is checked for the type it
    /// reads (so what this accepts, it accepts); what the facts keep is the
    /// first choice's.
    pub(crate) fn answer(b: &[u8]) -> Option<AnswerFacts> {
        // One check of the whole body makes every string in it text.
        let s = simdutf8::basic::from_utf8(b).ok()?;
        let (mut id, mut object_name, mut created, mut model) = (None, None, None, None);
        let (mut choices, mut usage, mut fingerprint) = (None, None, None);
        let mut first = None;
        let mut n = 0usize;
        let start = ws(b, 0);
        let end = object(b, start, |key, j| match key {
            b"id" => once(&mut id, text(s, j)),
            b"object" => once(&mut object_name, text(s, j)),
            b"created" => once(&mut created, count::<u64>(b, j)),
            b"model" => once(&mut model, text(s, j).map(|(t, end)| ((t, j..end), end))),
            b"choices" => {
                let read = array(b, j, |k| {
                    let (facts, end) = answer_choice(s, k)?;
                    if n == 0 {
                        first = Some(facts);
                    }
                    n += 1;
                    Some(end)
                });
                once(&mut choices, read.map(|end| ((), end)))
            }
            b"usage" => once(&mut usage, usage_at(b, j)),
            b"system_fingerprint" => once(&mut fingerprint, text_or_null(s, j)),
            _ => skip(b, j, 2),
        })?;
        if ws(b, end) != b.len() {
            return None;
        }
        choices?;
        let (model, model_at) = model?;
        // The value's span, quotes included, when it was read in place.
        let model_at = matches!(model, Cow::Borrowed(_)).then_some(model_at);
        let ((text, refusal), finish_reason) = first.unwrap_or_default();
        Some(AnswerFacts::new(
            id?.into_owned(),
            n,
            text,
            refusal,
            finish_reason,
            usage.flatten(),
            model_at,
        ))
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
                    Some(b'"') => {
                        text(s, j).map(|(t, end)| (Some(Content::Text(t.into_owned())), end))
                    }
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
        let (mut temperature, mut top_p, mut n, mut stop, mut seed) =
            (None, None, None, None, None);
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

    /// The view of `b`, or `None` to leave it to serde.
    pub(super) fn chunk(b: &[u8]) -> Option<ChunkView<'_>> {
        // One check of the whole chunk makes every string in it text: what
        // is not UTF-8 is serde's to judge.
        chunk_str(simdutf8::basic::from_utf8(b).ok()?)
    }

    /// The view of `s`, or `None` to leave it to serde.
    pub(super) fn chunk_str(s: &str) -> Option<ChunkView<'_>> {
        let b = s.as_bytes();
        let (mut id, mut model, mut choices, mut usage) = (None, None, None, None);
        let start = ws(b, 0);
        let end = object(b, start, |key, j| match key {
            b"id" => once(&mut id, text(s, j)),
            b"model" => once(&mut model, text(s, j)),
            b"choices" => once(&mut choices, list(b, j, 1, |k| choice(s, k))),
            b"usage" => once(&mut usage, usage_at(b, j)),
            _ => skip(b, j, 2),
        })?;
        if ws(b, end) != b.len() {
            return None;
        }
        Some(ChunkView {
            id: id?,
            model: model?,
            choices: choices?,
            usage: usage.flatten(),
            source: b,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::openai::ChatChunk;

    #[test]
    fn reads_what_the_full_parse_reads_and_borrows_plain_strings() {
        let json = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"gpt-x","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"a\nb"},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let view = ChunkView::parse(json).unwrap();
        let full: ChatChunk = serde_json::from_slice(json).unwrap();
        assert!(matches!(view.id, Cow::Borrowed("chatcmpl-1")));
        assert_eq!(view.model, full.model);
        assert_eq!(
            view.choices[0].delta.content.as_deref(),
            full.choices[0].delta.content.as_deref()
        );
        assert!(view.has_role() && view.has_payload() && view.finishes_with("length"));
        assert_eq!(view.has_payload(), full.has_payload());
        assert_eq!(view.usage, full.usage);
    }

    #[test]
    fn replaces_the_model_in_place_and_only_the_model() {
        // Spacing, a key that ends in "model", and a model named like a key.
        let json = br#"{ "id" : "c", "x_model":"model", "model" :  "gpt-up" , "choices":[] }"#;
        let view = ChunkView::parse(json).unwrap();
        let out = view.with_model(r#""r\"1""#).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "id" : "c", "x_model":"model", "model" :  "r\"1" , "choices":[] }"#
        );
        // A model with escapes was not read in place: no splice.
        let json = br#"{"id":"c","model":"gpt\u002dup","choices":[]}"#;
        assert_eq!(ChunkView::parse(json).unwrap().with_model(r#""r""#), None);
        // A duplicate model is an error, not a guess at which one to replace.
        assert!(ChunkView::parse(br#"{"id":"c","model":"a","model":"b","choices":[]}"#).is_err());
    }

    /// What the pipeline reads of a view, as text to compare.
    fn reading(v: &ChunkView<'_>) -> String {
        let choices: Vec<String> = v
            .choices
            .iter()
            .map(|c| {
                format!(
                    "{:?}|{:?}|{:?}|{:?}|{:?}",
                    c.delta.role,
                    c.delta.content,
                    c.delta.tool_calls,
                    c.delta.refusal,
                    c.finish_reason
                )
            })
            .collect();
        format!("{}|{}|{:?}|{choices:?}", v.id, v.model, v.usage)
    }

    #[test]
    fn the_scanner_reads_what_serde_reads() {
        for json in [
            &br#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-upstream","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#[..],
            br#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            br#"{"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            br#" { "id" : "c" , "model" : "m" , "usage" : null , "choices" : [ { "delta" : { "content" : "a\n\"b\"\\ \/" , "refusal" : null , "role" : null } , "logprobs" : null } ] } "#,
            br#"{"id":"c","model":"m","choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#,
            br#"{"id":"c","model":"m","x":[-1.5,0,0.25,12,true,false,null,{"y":[[]]},{}],"choices":[{"delta":{"refusal":"no"}}]}"#,
        ] {
            let fast = scan::chunk(json).unwrap_or_else(|| panic!("not scanned: {}", String::from_utf8_lossy(json)));
            let slow: ChunkView = serde_json::from_slice(json).unwrap();
            assert_eq!(reading(&fast), reading(&slow));
        }
    }

    #[test]
    fn a_usual_request_is_read_in_one_pass() {
        for json in [
            &br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"temperature":0.2,"stream":false}"#[..],
            br#"{"model":"m","messages":[{"role":"user","content":"a\n\"b\"","name":"n","x":1}],"stream":true,"stream_options":{"include_usage":true},"metadata":{"k":"v"},"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}"#,
        ] {
            let (fast, _) = scan::request(json).unwrap_or_else(|| panic!("not scanned: {}", String::from_utf8_lossy(json)));
            assert_eq!(fast, serde_json::from_slice::<crate::openai::ChatRequest>(json).unwrap());
        }
    }

    #[test]
    fn the_scanner_leaves_to_serde_what_it_does_not_handle_and_both_reject_bad_json() {
        // Accepted by serde, left by the scanner: an exponent (it may be
        // out of a Value's range), \u escapes, a duplicate field.
        let json = br#"{"id":"c","model":"m","x":[-1.5e3,1E+2],"choices":[]}"#;
        assert!(scan::chunk(json).is_none());
        assert!(ChunkView::parse(json).is_ok());
        let json = br#"{"id":"c","model":"m","choices":[{"delta":{"content":"caf\u00e9"}}]}"#;
        assert!(scan::chunk(json).is_none());
        assert_eq!(
            ChunkView::parse(json).unwrap().choices[0]
                .delta
                .content
                .as_deref(),
            Some("caf\u{e9}")
        );
        // Rejected by both: bad literals and numbers, control characters,
        // trailing bytes, a wrong type, a missing delta, duplicates.
        for json in [
            &br#"{"id":"c","model":"m","created":tru,"choices":[]}"#[..],
            br#"{"id":"c","model":"m","created":01,"choices":[]}"#,
            br#"{"id":"c","model":"m","created":1.,"choices":[]}"#,
            br#"{"id":"c","model":"m","created":-,"choices":[]}"#,
            br#"{"id":"c","model":"m","created":1e,"choices":[]}"#,
            b"{\"id\":\"c\",\"model\":\"m\",\"x\":\"a\x01b\",\"choices\":[]}",
            br#"{"id":"c","model":"m","x":"\q","choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[]}x"#,
            br#"{"id":"c","model":"m","choices":[],}"#,
            br#"{"id":"c","model":5,"choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[{"index":0}]}"#,
            br#"{"id":"c","id":"d","model":"m","choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            // Found by the chunk_view fuzz target: a key that is not UTF-8.
            b"{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"delta\":{\"cont\xc1nt\":\"a\"}}]}",
        ] {
            let text = String::from_utf8_lossy(json);
            assert!(scan::chunk(json).is_none(), "scanned: {text}");
            assert!(ChunkView::parse(json).is_err(), "parsed: {text}");
        }
    }

    #[test]
    fn a_role_only_chunk_has_no_payload() {
        let json =
            br#"{"id":"c","model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        let view = ChunkView::parse(json).unwrap();
        assert!(view.has_role());
        assert!(!view.has_payload());
        assert!(!serde_json::from_slice::<ChatChunk>(json)
            .unwrap()
            .has_payload());
    }

    #[test]
    fn rejects_what_the_full_parse_rejects() {
        for json in [
            &br#"{"model":"m","choices":[]}"#[..],
            br#"{"id":"c","choices":[]}"#,
            br#"{"id":"c","model":"m","choices":[{"index":0}]}"#,
            br#"{"id":"c","model":"m","choices":[{"delta":{"role":5}}]}"#,
            br#"{"id":1,"model":"m","choices":[]}"#,
        ] {
            assert!(
                ChunkView::parse(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
            assert!(serde_json::from_slice::<ChatChunk>(json).is_err());
        }
    }

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
            proptest::prop_assert_eq!(scan::plain_run(&bytes), expected);
        }
    }
}
