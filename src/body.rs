//! JSON request bodies, parsed once into typed structs, every failure
//! named by the member it is about.
//!
//! A body is declared with [`json_object!`]: each member is optional (a
//! missing one is named by the caller's own check, not by serde) and typed;
//! a member whose value has the wrong type is reported by name with the
//! caller's message for it; unknown members are skipped but the first one's
//! name is kept, so an endpoint may refuse it by name.
//!
//! Why not `#[derive(Deserialize)]` plus `serde_path_to_error`: the derive
//! cannot say which member failed, and the path-tracking wrapper is
//! generic over every nested type, which cost about 20 KB of WebAssembly
//! for two flat objects. This is the same idea for one level only.

use crate::error::Error;
use std::cell::Cell;

/// Where a generated visitor records the member whose value failed.
pub type FailedMember = Cell<Option<&'static str>>;

/// Parses `body`, a JSON object, into `T` (declared with [`json_object!`]).
///
/// # Errors
/// [`Error::InvalidBody`] when the body is not one JSON object, and
/// [`Error::InvalidField`] naming a member whose value has the wrong type,
/// with `rule(member)` as the message.
pub fn parse<T: FromJsonObject>(
    body: &[u8],
    rule: impl Fn(&str) -> &'static str,
) -> Result<T, Error> {
    let failed = FailedMember::new(None);
    // From a str, not a slice: serde_json's parser is generic over its
    // input, and every other JSON in the module is read from a str, so a
    // slice reader would be a second copy of the whole parser (about 3 KB
    // gzipped). JSON is UTF-8; a body that is not cannot be an object.
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::InvalidBody("the body must be a JSON object".into()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde::de::DeserializeSeed::deserialize(T::seed(&failed), &mut de)
        .and_then(|t| de.end().map(|()| t));
    parsed.map_err(|e| match failed.get() {
        // A value of the wrong type; broken JSON inside a value is still
        // a broken body.
        Some(member) if e.is_data() => Error::field(member, rule(member)),
        _ => Error::InvalidBody("the body must be a JSON object".into()),
    })
}

/// Implemented by [`json_object!`].
pub trait FromJsonObject: Sized {
    /// The seed that reads `Self` and records a failing member in `failed`.
    type Seed<'a>: for<'de> serde::de::DeserializeSeed<'de, Value = Self>;
    /// Makes the seed.
    fn seed(failed: &FailedMember) -> Self::Seed<'_>;
}

/// Declares a flat JSON object body: `struct Name { member: Type, ... }`
/// becomes a struct of `Option<Type>` members plus `unknown: Option<String>`
/// (the first member it does not know), readable with [`parse`].
#[macro_export]
macro_rules! json_object {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($member:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $(pub $member: Option<$ty>,)*
            /// The first member this body does not know, if any.
            pub unknown: Option<String>,
        }

        const _: () = {
            use $crate::body::{FailedMember, FromJsonObject};
            use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

            struct Seed<'a>(&'a FailedMember);

            impl FromJsonObject for $name {
                type Seed<'a> = Seed<'a>;
                fn seed(failed: &FailedMember) -> Seed<'_> {
                    Seed(failed)
                }
            }

            impl<'de> DeserializeSeed<'de> for Seed<'_> {
                type Value = $name;
                fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$name, D::Error> {
                    d.deserialize_map(self)
                }
            }

            impl<'de> Visitor<'de> for Seed<'_> {
                type Value = $name;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                    let mut out = $name::default();
                    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                        match key.as_ref() {
                            $(stringify!($member) => {
                                out.$member = map.next_value::<Option<$ty>>().map_err(|e| {
                                    self.0.set(Some(stringify!($member)));
                                    e
                                })?;
                            })*
                            other => {
                                map.next_value::<IgnoredAny>()?;
                                if out.unknown.is_none() {
                                    out.unknown = Some(other.to_string());
                                }
                            }
                        }
                    }
                    Ok(out)
                }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::json_object! {
        struct Example { count: u32, name: String }
    }

    fn rule(member: &str) -> &'static str {
        match member {
            "count" => "must be a small integer",
            _ => "must be a string",
        }
    }

    fn field_of(r: Result<Example, Error>) -> String {
        match r {
            Err(Error::InvalidField { field, message }) => format!("{field}: {message}"),
            Err(other) => format!("{other:?}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn members_are_typed_and_optional_and_unknown_ones_are_named() {
        let e: Example = parse(
            br#"{"count": 3, "extra": [1, {"x": 2}], "name": "a"}"#,
            rule,
        )
        .unwrap();
        assert_eq!((e.count, e.name.as_deref()), (Some(3), Some("a")));
        assert_eq!(e.unknown.as_deref(), Some("extra"));
        let empty: Example = parse(b" { } ", rule).unwrap();
        assert_eq!((empty.count, empty.name, empty.unknown), (None, None, None));
        let null: Example = parse(br#"{"count": null}"#, rule).unwrap();
        assert_eq!(null.count, None);
    }

    #[test]
    fn a_member_of_the_wrong_type_is_named_with_its_rule() {
        for body in [
            &br#"{"count": "3"}"#[..],
            br#"{"count": -1}"#,
            br#"{"count": 1.5}"#,
            br#"{"name": "a", "count": 4294967296}"#,
        ] {
            assert_eq!(
                field_of(parse(body, rule)),
                "count: must be a small integer"
            );
        }
        assert_eq!(
            field_of(parse(br#"{"name": 7}"#, rule)),
            "name: must be a string"
        );
    }

    #[test]
    fn anything_but_one_json_object_is_an_invalid_body() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"\"x\"",
            b"42",
            b"{",
            b"{} {}",
            b"{\"count\": 1,}",
            b"{\"count\": 1x}",
            b"not json",
        ] {
            assert_eq!(
                parse::<Example>(body, rule).unwrap_err().code(),
                "invalid_body",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
