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

/// An object key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The default of an absent optional field: `Default::default()`, or the
/// expression given.
macro_rules! or_default {
    ($v:expr) => {
        $v.unwrap_or_default()
    };
    ($v:expr, $def:expr) => {
        $v.unwrap_or_else(|| $def)
    };
}
pub(crate) use or_default;

/// `Deserialize` for a struct whose unknown fields go to an `extra` map,
/// reading what `#[serde(flatten)] extra` reads (the same fields, values,
/// defaults and errors) in one pass. serde's derive buffers the whole object
/// into an intermediate tree first when a struct has a flattened field,
/// which makes a request or an answer about twice as slow to read; the
/// workspace's tests hold the two readings equal.
///
/// `required` fields must be present; `optional` ones take
/// `Default::default()` or the expression after `=` when absent. A field
/// given twice is an error, as with the derive; an unknown field given twice
/// keeps its last value.
macro_rules! with_extra {
    (
        $ty:ident,
        required [$($req:ident),* $(,)?],
        optional [$($opt:ident $(= $def:expr)?),* $(,)?] $(,)?
    ) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $(let mut $req = None;)*
                        $(let mut $opt = None;)*
                        let mut extra = serde_json::Map::new();
                        while let Some($crate::de::Key(key)) = map.next_key()? {
                            match &*key {
                                $(stringify!($req) => {
                                    if $req.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($req)));
                                    }
                                    $req = Some(map.next_value()?);
                                })*
                                $(stringify!($opt) => {
                                    if $opt.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($opt)));
                                    }
                                    $opt = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: serde_json::Value = map.next_value()?;
                                    extra.insert(key.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| serde::de::Error::missing_field(stringify!($req)))?,)*
                            $($opt: $crate::de::or_default!($opt $(, $def)?),)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(Visit)
            }
        }
    };
}
pub(crate) use with_extra;
