//! Deterministic content: lorem-style text, JSON instances of a schema, ids.
//!
//! Everything is a pure function of a 64-bit seed derived from the server
//! seed and the request, so the same request against the same seed gets the
//! same answer, streaming or not.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

/// FNV-1a, stable across Rust releases (unlike `DefaultHasher`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new(seed: u64) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.u64(seed);
        h
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }

    /// Hash a JSON value structurally, without serializing it.
    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.bytes(b"n"),
            Value::Bool(b) => self.bytes(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                self.bytes(b"#");
                self.u64(n.as_f64().unwrap_or_default().to_bits());
            }
            Value::String(s) => {
                self.bytes(b"\"");
                self.bytes(s.as_bytes());
                self.bytes(b"\"");
            }
            Value::Array(items) => {
                self.bytes(b"[");
                items.iter().for_each(|i| self.value(i));
                self.bytes(b"]");
            }
            Value::Object(map) => {
                self.bytes(b"{");
                for (k, v) in map {
                    self.bytes(k.as_bytes());
                    self.value(v);
                }
                self.bytes(b"}");
            }
        }
    }

    pub(crate) fn finish(self) -> u64 {
        mix(self.0)
    }
}

/// splitmix64 finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in [0, 1) from a hash.
pub(crate) fn unit(h: u64) -> f64 {
    (mix(h) >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

const WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "keel",
    "harbor",
    "tide",
    "anchor",
];

/// `n` words as stream pieces: the first bare, the others with a leading space;
/// sentences start with a capital and end with a period.
pub(crate) fn text_pieces(rng: &mut SmallRng, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut sentence_left = 0usize;
    for i in 0..n {
        let word = WORDS[rng.random_range(0..WORDS.len())];
        let mut piece = String::with_capacity(word.len() + 2);
        if i > 0 {
            piece.push(' ');
        }
        if sentence_left == 0 {
            sentence_left = rng.random_range(5..12);
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                piece.push(c.to_ascii_uppercase());
                piece.push_str(chars.as_str());
            }
        } else {
            piece.push_str(word);
        }
        sentence_left -= 1;
        if sentence_left == 0 || i + 1 == n {
            piece.push('.');
            sentence_left = 0;
        }
        out.push(piece);
    }
    out
}

/// Split a string into pieces of about `size` bytes on char boundaries.
pub(crate) fn split_pieces(s: &str, size: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(s.len() / size.max(1) + 1);
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + size).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(s[start..end].to_owned());
        start = end;
    }
    out
}

/// Cut a string to at most `max` bytes on a char boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Random alphanumeric id body.
pub(crate) fn id(rng: &mut SmallRng, prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    s
}

/// Rough token count of every string in a JSON value (about 4 characters a token).
pub(crate) fn estimate_tokens(v: &Value) -> u64 {
    fn chars(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(items) => items.iter().map(chars).sum(),
            Value::Object(map) => map.values().map(chars).sum(),
            _ => 1,
        }
    }
    chars(v).div_ceil(4)
}

const MAX_DEPTH: usize = 8;

/// A JSON value valid for `schema` (the subset used by structured outputs and
/// tool parameters: object, array, string, number, integer, boolean, null,
/// enum, const, anyOf/oneOf/allOf, `$ref` into `$defs`/`definitions`).
pub(crate) fn instance(schema: &Value, root: &Value, rng: &mut SmallRng) -> Value {
    instance_at(schema, root, rng, 0)
}

fn instance_at(schema: &Value, root: &Value, rng: &mut SmallRng, depth: usize) -> Value {
    let Value::Object(s) = schema else {
        // `true` or an absent schema: anything goes.
        return Value::String(word(rng).to_owned());
    };
    if let Some(Value::String(r)) = s.get("$ref") {
        return match resolve(root, r) {
            Some(target) if depth < MAX_DEPTH => instance_at(target, root, rng, depth + 1),
            _ => Value::Null,
        };
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.is_empty() {
            return options[rng.random_range(0..options.len())].clone();
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = s.get(key) {
            // Prefer a non-null variant so the answer carries content.
            let pick = options
                .iter()
                .find(|o| o.get("type") != Some(&Value::String("null".into())))
                .or(options.first());
            if let Some(option) = pick {
                return instance_at(option, root, rng, depth + 1);
            }
        }
    }
    if let Some(Value::Array(parts)) = s.get("allOf") {
        let mut merged = Map::new();
        for part in parts {
            if let Value::Object(obj) = instance_at(part, root, rng, depth + 1) {
                merged.extend(obj);
            }
        }
        return Value::Object(merged);
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = s.get("properties") {
                if depth < MAX_DEPTH {
                    for (name, prop) in props {
                        out.insert(name.clone(), instance_at(prop, root, rng, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = s
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(min.max(3))
                .max(min);
            let n = if depth >= MAX_DEPTH {
                min
            } else {
                rng.random_range(min..=max)
            };
            let items = s.get("items").unwrap_or(&Value::Bool(true));
            Value::Array(
                (0..n)
                    .map(|_| instance_at(items, root, rng, depth + 1))
                    .collect(),
            )
        }
        "integer" => {
            let min = s.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let max = s
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(min.saturating_add(100))
                .max(min);
            Value::from(rng.random_range(min..=max))
        }
        "number" => {
            let min = s.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let max = s
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(min + 100.0)
                .max(min);
            let x = min + (max - min) * rng.random::<f64>();
            Value::from((x * 100.0).round() / 100.0)
        }
        "boolean" => Value::Bool(rng.random()),
        "null" => Value::Null,
        _ => {
            let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut text = match s.get("format").and_then(Value::as_str) {
                Some("date-time") => "2024-05-01T12:00:00Z".to_owned(),
                Some("date") => "2024-05-01".to_owned(),
                Some("email") => format!("{}@example.com", word(rng)),
                Some("uri") => format!("https://example.com/{}", word(rng)),
                Some("uuid") => "123e4567-e89b-12d3-a456-426614174000".to_owned(),
                _ => {
                    let n = rng.random_range(1..4);
                    text_pieces(rng, n)
                        .concat()
                        .trim_end_matches('.')
                        .to_owned()
                }
            };
            while text.len() < min {
                text.push('x');
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                text = cut(&text, max as usize).to_owned();
            }
            Value::String(text)
        }
    }
}

fn word(rng: &mut SmallRng) -> &'static str {
    WORDS[rng.random_range(0..WORDS.len())]
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_honours_required_types_and_refs() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 3, "maximum": 5},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2},
                "pet": {"$ref": "#/$defs/Pet"},
                "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]}
            },
            "required": ["name", "age", "tags", "pet", "maybe"],
            "$defs": {"Pet": {"type": "object", "properties": {"legs": {"type": "number"}}}}
        });
        for seed in 0..20 {
            let v = instance(&schema, &schema, &mut rng(seed));
            assert!(v["name"].is_string());
            let age = v["age"].as_i64().unwrap();
            assert!((3..=5).contains(&age));
            assert!(v["tags"].as_array().unwrap().len() >= 2);
            assert!(v["pet"]["legs"].is_number());
            assert!(v["maybe"].is_boolean());
        }
    }

    #[test]
    fn text_pieces_are_deterministic() {
        let a = text_pieces(&mut rng(7), 30).concat();
        let b = text_pieces(&mut rng(7), 30).concat();
        assert_eq!(a, b);
        assert_eq!(a.split(' ').count(), 30);
    }
}
