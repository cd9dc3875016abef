//! Edits to the top level of a JSON object without parsing it into a tree.
//!
//! **Why.** When a client speaks the provider's own API, Keel forwards its
//! request as it came, but for the `model` (the route's name becomes the
//! deployment's model) and, for streams, `stream_options`. Parsing the body
//! into typed values, cloning them and serialising them again costs more
//! than everything else Keel does to a request; a scan of the top level
//! finds the one value to replace and copies the rest byte for byte (which
//! also keeps every field the client sent exactly as it sent it).
//!
//! The scanner assumes nothing about its input: on anything it does not
//! fully understand (not an object, a key with escapes, a duplicate of the
//! key being edited, truncated input) it returns `None`, and the caller
//! falls back to the typed path.
//!
//! ```
//! use keel_wire::splice::{replace_string, has_key};
//! let body = br#"{"model":"my-route","messages":[{"role":"user","content":"hi"}]}"#;
//! let out = replace_string(body, "model", "gpt-4o-mini").unwrap();
//! assert_eq!(
//!     out,
//!     br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#.to_vec()
//! );
//! assert_eq!(has_key(body, "stream"), Some(false));
//! ```

use std::ops::Range;

/// One top-level member: the key's text (between its quotes) and the byte
/// range of its value.
#[derive(Clone, Debug)]
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

/// Where [`walk`] ended.
enum Walk {
    /// `visit` chose this member; the rest of the body was not read.
    Stopped(Member),
    /// Every member was visited; the offset of the closing brace.
    End(usize),
}

/// Hands the members of the top-level object of `body` to `visit` in order
/// until it returns true; `None` if `body` is not a plain JSON object (as
/// far as the walk read it).
fn walk(body: &[u8], mut visit: impl FnMut(&Member) -> bool) -> Option<Walk> {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut first = true;
    loop {
        i = skip_ws(body, i);
        match body.get(i)? {
            b'}' if first => break,
            b'"' => {}
            _ => return None,
        }
        first = false;
        let key_end = skip_string(body, i)?;
        let key = i + 1..key_end - 1;
        if body[key.clone()].contains(&b'\\') {
            return None;
        }
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(body, i + 1);
        let value_end = skip_value(body, i, 0)?;
        let member = Member {
            key,
            value: i..value_end,
        };
        if visit(&member) {
            return Some(Walk::Stopped(member));
        }
        i = skip_ws(body, value_end);
        match body.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    // Nothing but whitespace may follow.
    if skip_ws(body, i + 1) != body.len() {
        return None;
    }
    Some(Walk::End(i))
}

/// The members of the top-level object of `body`, and the offset of its
/// closing brace; `None` if `body` is not a plain JSON object.
fn members(body: &[u8]) -> Option<(Vec<Member>, usize)> {
    // A chat request has a handful of top-level members: room for the
    // usual ones at once, not four regrowths.
    let mut out = Vec::with_capacity(16);
    match walk(body, |m| {
        out.push(m.clone());
        false
    })? {
        Walk::End(close) => Some((out, close)),
        Walk::Stopped(_) => None,
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b[i]` is `"`; the offset just past the closing quote. Strings are most
/// of a chat body (the conversation), so the scan jumps from quote or
/// backslash to the next with `memchr` rather than stepping byte by byte.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        match b[j] {
            b'"' => return Some(j + 1),
            _ => j += 2,
        }
    }
}

/// Deepest nesting the scanner follows (serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;

/// The offset just past the JSON value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    match b.get(i)? {
        b'"' => skip_string(b, i),
        open @ (b'{' | b'[') => {
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                if *open == b'{' {
                    if b.get(j) != Some(&b'"') {
                        return None;
                    }
                    j = skip_ws(b, skip_string(b, j)?);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, j + 1);
                }
                j = skip_ws(b, skip_value(b, j, depth + 1)?);
                match b.get(j)? {
                    b',' => j = skip_ws(b, j + 1),
                    c if *c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// A JSON object scanned once: look up and edit its top-level members
/// without scanning it again.
pub struct Object<'a> {
    body: &'a [u8],
    members: std::borrow::Cow<'a, [Member]>,
    close: usize,
}

/// Where the top-level members of a JSON object body lie and where it
/// closes, as a reader that read the body found them (the request reader,
/// `ChatRequest::from_json_with_layout`): [`Layout::object`] gives the
/// [`Object`] that [`Object::parse`] would, without scanning the body again.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    members: Vec<Member>,
    close: usize,
    len: usize,
}

impl Layout {
    /// A layout of a `len`-byte body, members to come.
    pub(crate) fn new(len: usize) -> Self {
        Layout {
            members: Vec::with_capacity(16),
            close: 0,
            len,
        }
    }

    /// The next member: its key's text (between the quotes) and its value.
    pub(crate) fn push(&mut self, key: Range<usize>, value: Range<usize>) {
        self.members.push(Member { key, value });
    }

    /// The offset of the closing brace.
    pub(crate) fn close(&mut self, at: usize) {
        self.close = at;
    }

    /// The object of `body`, the bytes the layout was read from (`None`
    /// when the length says they are not).
    pub fn object<'a>(&'a self, body: &'a [u8]) -> Option<Object<'a>> {
        (body.len() == self.len && body.get(self.close) == Some(&b'}')).then(|| Object {
            body,
            members: std::borrow::Cow::Borrowed(&self.members),
            close: self.close,
        })
    }
}

impl<'a> Object<'a> {
    /// Scans `body`; `None` if it is not a plain JSON object.
    pub fn parse(body: &'a [u8]) -> Option<Object<'a>> {
        let (members, close) = members(body)?;
        Some(Object {
            body,
            members: std::borrow::Cow::Owned(members),
            close,
        })
    }

    fn is(&self, m: &Member, key: &str) -> bool {
        &self.body[m.key.clone()] == key.as_bytes()
    }

    /// The single member named `key`; `None` when absent or duplicated.
    fn find(&self, key: &str) -> Option<&Member> {
        let mut found = self.members.iter().filter(|m| self.is(m, key));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// The members in order: each key's raw text (between its quotes,
    /// escapes as they came) and its value's raw JSON text.
    ///
    /// ```
    /// use keel_wire::splice::Object;
    /// let o = Object::parse(br#"{"a":1, "b" : [2]}"#).unwrap();
    /// let m: Vec<_> = o.members().collect();
    /// assert_eq!(m, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"[2]"[..])]);
    /// ```
    pub fn members(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        let body = self.body;
        self.members
            .iter()
            .map(move |m| (&body[m.key.clone()], &body[m.value.clone()]))
    }

    /// Whether the object has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.members.iter().any(|m| self.is(m, key))
    }

    /// The raw JSON text of the member `key`, if present once.
    pub fn raw(&self, key: &str) -> Option<&'a [u8]> {
        let body = self.body;
        self.find(key).map(|m| &body[m.value.clone()])
    }

    /// The object with the value of `key` (present exactly once) replaced
    /// by the JSON string `value`, and, with `append`, the member
    /// `"name": raw` added at the end (`None` if `name` is already there;
    /// `raw` must be valid JSON).
    pub fn rewrite(&self, key: &str, value: &str, append: Option<(&str, &str)>) -> Option<Vec<u8>> {
        let m = self.find(key)?;
        if append.is_some_and(|(name, _)| self.has(name)) {
            return None;
        }
        // `key` exists, so the object is not empty: a comma separates.
        let insert = append.map(|(name, raw)| (self.close, name, raw));
        Some(with_value(self.body, &m.value, value, insert))
    }
}

impl Object<'_> {
    /// The object with the value of `key` (present exactly once) replaced
    /// by the JSON string `value`, and each member of `set` (name, raw
    /// JSON) given its raw value: in place where the object has it once,
    /// added at the end where it has not (`None` where it has it twice).
    /// What a plain request needs to become a stream request (`"stream":
    /// true`, the usage chunk), every other byte as the client sent it.
    pub fn rewrite_setting(&self, key: &str, value: &str, set: &[(&str, &str)]) -> Option<Vec<u8>> {
        let m = self.find(key)?;
        // Edits in body order: (the bytes replaced, what replaces them).
        let mut edits: Vec<(Range<usize>, Edit<'_>)> = Vec::with_capacity(1 + set.len());
        edits.push((m.value.clone(), Edit::String(value)));
        for &(name, raw) in set {
            match self.members.iter().filter(|m| self.is(m, name)).count() {
                0 => edits.push((self.close..self.close, Edit::Member(name, raw))),
                1 => edits.push((self.find(name)?.value.clone(), Edit::Raw(raw))),
                _ => return None,
            }
        }
        edits.sort_by_key(|(r, _)| r.start);
        let extra: usize = set.iter().map(|(n, r)| n.len() + r.len() + 4).sum();
        let mut out = Vec::with_capacity(self.body.len() + value.len() + extra + 2);
        let mut at = 0;
        for (range, edit) in edits {
            out.extend_from_slice(&self.body[at..range.start]);
            match edit {
                Edit::String(text) => json_string(&mut out, text),
                Edit::Raw(raw) => out.extend_from_slice(raw.as_bytes()),
                // `key` exists, so the object is not empty: a comma separates.
                Edit::Member(name, raw) => {
                    out.push(b',');
                    json_string(&mut out, name);
                    out.push(b':');
                    out.extend_from_slice(raw.as_bytes());
                }
            }
            at = range.end;
        }
        out.extend_from_slice(&self.body[at..]);
        Some(out)
    }
}

/// One edit of [`Object::rewrite_setting`].
enum Edit<'e> {
    /// A value replaced by this JSON string.
    String(&'e str),
    /// A value replaced by this raw JSON.
    Raw(&'e str),
    /// A member (name, raw JSON) added.
    Member(&'e str, &'e str),
}

/// `body` with the bytes in `value` replaced by the JSON string `text`
/// and, with `insert` (offset, name, raw JSON), the member `,"name":raw`
/// inserted at that offset (past `value`). Everything is written straight
/// into the one output buffer.
fn with_value(
    body: &[u8],
    value: &Range<usize>,
    text: &str,
    insert: Option<(usize, &str, &str)>,
) -> Vec<u8> {
    let (at, name, raw) = insert.unwrap_or((body.len(), "", ""));
    let mut out = Vec::with_capacity(body.len() + text.len() + name.len() + raw.len() + 8);
    out.extend_from_slice(&body[..value.start]);
    json_string(&mut out, text);
    out.extend_from_slice(&body[value.end..at]);
    if insert.is_some() {
        out.push(b',');
        json_string(&mut out, name);
        out.push(b':');
        out.extend_from_slice(raw.as_bytes());
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Whether the top-level object has `key` (`None`: not a plain object).
pub fn has_key(body: &[u8], key: &str) -> Option<bool> {
    Some(Object::parse(body)?.has(key))
}

/// The raw JSON text of the top-level member `key`, if present once.
pub fn raw_value<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    Object::parse(body)?.raw(key)
}

/// `body` with the value of its top-level member `key` (present exactly
/// once) replaced by the JSON string `value`.
pub fn replace_string(body: &[u8], key: &str, value: &str) -> Option<Vec<u8>> {
    Object::parse(body)?.rewrite(key, value, None)
}

/// `body` with the value of its top-level member `key` replaced by the
/// JSON string `value`, reading no further than that member: for a body a
/// typed parse has already accepted (valid JSON, no key given twice), such
/// as a provider's answer on its way back, where the model comes near the
/// start and the rest need not be scanned again. `None` when no member
/// before the end is `key` written without escapes (the caller falls back
/// to serialising the typed value).
pub fn replace_first_string(body: &[u8], key: &str, value: &str) -> Option<Vec<u8>> {
    let Walk::Stopped(m) = walk(body, |m| &body[m.key.clone()] == key.as_bytes())? else {
        return None;
    };
    Some(with_value(body, &m.value, value, None))
}

/// `body` with the member `"key": raw` added at the end of the top-level
/// object; `None` if `key` is already there. `raw` must be valid JSON.
pub fn append_member(body: Vec<u8>, key: &str, raw: &str) -> Option<Vec<u8>> {
    let obj = Object::parse(&body)?;
    if obj.has(key) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + key.len() + raw.len() + 8);
    out.extend_from_slice(&body[..obj.close]);
    if !obj.members.is_empty() {
        out.push(b',');
    }
    json_string(&mut out, key);
    out.push(b':');
    out.extend_from_slice(raw.as_bytes());
    out.extend_from_slice(&body[obj.close..]);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn replaces_only_the_top_level_key() {
        let body = br#" { "messages" : [ {"model":"inner","content":"a \"model\": x"} ], "model" : "route" , "n": 1 } "#;
        let out = replace_string(body, "model", "dep \"1\"").unwrap();
        let v = parse(&out);
        assert_eq!(v["model"], "dep \"1\"");
        assert_eq!(v["messages"][0]["model"], "inner");
        assert_eq!(v["n"], 1);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        assert!(replace_string(b"[1,2]", "model", "x").is_none());
        assert!(replace_string(br#"{"model":"a","model":"b"}"#, "model", "x").is_none());
        assert!(replace_string(br#"{"mod\u0065l":"a"}"#, "model", "x").is_none());
        assert!(replace_string(br#"{"model":"a""#, "model", "x").is_none());
        assert!(replace_string(br#"{"model":"a"} x"#, "model", "x").is_none());
        assert!(replace_string(br#"{"other":"a"}"#, "model", "x").is_none());
        assert!(replace_string(b"", "model", "x").is_none());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(has_key(deep.as_bytes(), "a").is_none());
    }

    #[test]
    fn appends_members() {
        let out = append_member(br#"{"a":1}"#.to_vec(), "b", r#"{"c":true}"#).unwrap();
        assert_eq!(parse(&out), parse(br#"{"a":1,"b":{"c":true}}"#));
        let out = append_member(b"{ }".to_vec(), "b", "2").unwrap();
        assert_eq!(parse(&out), parse(br#"{"b":2}"#));
        assert!(append_member(br#"{"b":1}"#.to_vec(), "b", "2").is_none());
    }

    #[test]
    fn rewrites_and_appends_in_one_scan() {
        let body = br#"{"model":"r","stream":true}"#;
        let obj = Object::parse(body).unwrap();
        let out = obj
            .rewrite(
                "model",
                "d",
                Some(("stream_options", r#"{"include_usage":true}"#)),
            )
            .unwrap();
        assert_eq!(
            parse(&out),
            parse(br#"{"model":"d","stream":true,"stream_options":{"include_usage":true}}"#)
        );
        assert!(obj
            .rewrite("model", "d", Some(("stream", "false")))
            .is_none());
        // The new value and the appended name are written as JSON strings.
        let out = obj
            .rewrite("model", "a \"b\"\n\u{1}é", Some(("x\"y", "[1]")))
            .unwrap();
        assert_eq!(
            parse(&out),
            serde_json::json!({"model": "a \"b\"\n\u{1}é", "stream": true, "x\"y": [1]})
        );
        assert_eq!(
            replace_first_string(body, "model", "q\"").map(|b| parse(&b)),
            Some(serde_json::json!({"model": "q\"", "stream": true}))
        );
    }

    #[test]
    fn sets_members_in_place_or_at_the_end() {
        let usage = ("stream_options", r#"{"include_usage":true}"#);
        // Absent: added at the end, in order.
        let body = br#"{"model":"r","messages":[{"role":"user","content":"hi"}]}"#;
        let out = Object::parse(body)
            .unwrap()
            .rewrite_setting("model", "d", &[("stream", "true"), usage])
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"d","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        // Present: replaced where it stands, spacing kept; an edit before
        // the model is applied in body order.
        let body = br#"{ "stream" : false , "model" : "r", "n": 1 }"#;
        let out = Object::parse(body)
            .unwrap()
            .rewrite_setting("model", "d \"x\"", &[("stream", "true")])
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "stream" : true , "model" : "d \"x\"", "n": 1 }"#
        );
        // A member given twice, or no model: left to the typed path.
        let twice = br#"{"model":"r","stream":false,"stream":false}"#;
        let obj = Object::parse(twice).unwrap();
        assert!(obj
            .rewrite_setting("model", "d", &[("stream", "true")])
            .is_none());
        let obj = Object::parse(br#"{"stream":false}"#).unwrap();
        assert!(obj
            .rewrite_setting("model", "d", &[("stream", "true")])
            .is_none());
        // Nothing to set: the model alone, as `rewrite` does.
        let obj = Object::parse(br#"{"model":"r","n":2}"#).unwrap();
        assert_eq!(
            obj.rewrite_setting("model", "d", &[]),
            obj.rewrite("model", "d", None)
        );
    }

    #[test]
    fn reads_raw_values() {
        let body = br#"{"stream": true, "stream_options": {"include_usage": true}}"#;
        assert_eq!(raw_value(body, "stream"), Some(&b"true"[..]));
        assert_eq!(
            raw_value(body, "stream_options"),
            Some(&br#"{"include_usage": true}"#[..])
        );
        assert_eq!(raw_value(body, "model"), None);
    }

    #[test]
    fn the_first_member_replacement_agrees_with_the_full_scan_on_accepted_bodies() {
        let bodies: [&[u8]; 5] = [
            br#"{"id":"c","object":"chat.completion","model":"up","choices":[{"message":{"model":"inner"}}]}"#,
            br#" { "choices" : [ ] , "model" : "up" , "usage" : {"model": 1} } "#,
            br#"{"model":"up"}"#,
            br#"{"a":"\"model\":\"x\"","model":"up","z":[1,{"model":"y"}]}"#,
            br#"{"type":"message","role":"assistant","model":"claude","content":[]}"#,
        ];
        for body in bodies {
            assert_eq!(
                replace_first_string(body, "model", "route \"r\""),
                replace_string(body, "model", "route \"r\""),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(replace_first_string(body, "model", "r").is_some());
        }
        // Not found plainly: left to the typed path.
        assert!(replace_first_string(br#"{"mod\u0065l":"a"}"#, "model", "x").is_none());
        assert!(replace_first_string(br#"{"other":"a"}"#, "model", "x").is_none());
        assert!(replace_first_string(b"[1]", "model", "x").is_none());
        // It reads no further than the member: what follows is copied as is.
        assert_eq!(
            replace_first_string(br#"{"model":"a", rest"#, "model", "b").unwrap(),
            br#"{"model":"b", rest"#.to_vec()
        );
    }

    #[test]
    fn any_prefix_of_a_body_is_refused_or_valid() {
        let body = br#"{"model":"r","messages":[{"role":"user","content":"h\"i"}],"max_tokens":5}"#;
        for n in 0..body.len() {
            if let Some(out) = replace_string(&body[..n], "model", "d") {
                assert!(serde_json::from_slice::<Value>(&out).is_ok());
            }
        }
    }
}
