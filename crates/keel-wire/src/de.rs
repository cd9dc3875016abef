//! Deserialisers written by hand where serde's derive would buffer.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// A value that is either a JSON string or a JSON array (message content,
/// a system prompt), decided by the JSON type in one pass. An untagged enum
/// would first copy the value into serde's buffer and then try each variant
/// on the copy, and content is most of a request's bytes. Anything else is
/// an error that says what was `expecting`.
pub(crate) fn string_or_seq<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    text: fn(String) -> T,
    items: fn(Vec<E>) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: Deserialize<'de>,
{
    struct Visit<T, E> {
        expecting: &'static str,
        text: fn(String) -> T,
        items: fn(Vec<E>) -> T,
        item: PhantomData<E>,
    }
    impl<'de, T, E: Deserialize<'de>> Visitor<'de> for Visit<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
            Ok((self.text)(v.to_owned()))
        }
        fn visit_string<Er: de::Error>(self, v: String) -> Result<T, Er> {
            Ok((self.text)(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            let items = Vec::<E>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            Ok((self.items)(items))
        }
    }
    d.deserialize_any(Visit {
        expecting,
        text,
        items,
        item: PhantomData,
    })
}
