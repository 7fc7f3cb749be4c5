//! The `progress` object: the one open value in a report. The workflow may
//! send any members; the core validates it, stores it and shows its
//! `phase`, and must tell whether a repeated report carries the same
//! object (then nothing changed).
//!
//! It is kept as JSON text in one canonical form: members sorted by key,
//! no insignificant white space, numbers and strings as serde_json writes
//! them. The text a report brings and the text PostgreSQL gives back (jsonb
//! reorders members and adds spaces) become equal exactly when the objects
//! are. Doing this over serde's visitor, rather than through
//! `serde_json::Value`, keeps a generic JSON tree out of the module.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The canonical text of a JSON object, or `None` when `json` is not one.
pub fn canonical_object(json: &str) -> Option<String> {
    if !json.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Canonical>(json).ok().map(|c| c.0)
}

/// Reads a stored `progress` (jsonb as text, which reorders members and
/// adds spaces) back into the canonical form a report's is compared in.
///
/// # Errors
/// Only when the value is neither null nor a string.
pub fn deserialize_stored<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|text| canonical_object(&text)))
}

/// Whether canonical JSON text holds a NUL character, which PostgreSQL
/// jsonb refuses. serde_json writes NUL as the escape `\u0000` (a string
/// cannot hold it raw); an escaped backslash followed by `u0000` is not one.
pub fn has_nul(canonical: &str) -> bool {
    let mut bytes = canonical.bytes();
    while let Some(b) = bytes.next() {
        // The byte after a backslash is consumed either way, so `\\` never
        // starts an escape.
        if b == b'\\' && bytes.next() == Some(b'u') && bytes.by_ref().take(4).eq(*b"0000") {
            return true;
        }
    }
    false
}

/// The `phase` member, when it is a string.
pub fn phase(canonical: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Phase {
        phase: Option<String>,
    }
    serde_json::from_str::<Phase>(canonical).ok()?.phase
}

/// Any JSON value, written canonically while it is read (a report's
/// `progress` member is read as one, then checked to be an object).
#[derive(Debug)]
pub struct Canonical(pub String);

impl<'de> Deserialize<'de> for Canonical {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CanonicalVisitor)
    }
}

struct CanonicalVisitor;

/// A scalar written as serde_json writes it (strings escaped, floats in
/// their shortest form).
fn scalar<T: serde::Serialize, E: de::Error>(v: T) -> Result<Canonical, E> {
    serde_json::to_string(&v).map(Canonical).map_err(E::custom)
}

impl<'de> Visitor<'de> for CanonicalVisitor {
    type Value = Canonical;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Canonical, E> {
        Ok(Canonical("null".into()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Canonical, E> {
        scalar(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Canonical, E> {
        scalar(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Canonical, E> {
        scalar(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Canonical, E> {
        // A whole number is written as one, as the integer it equals:
        // PostgreSQL's jsonb holds `1`, `1.0` and `1e0` equal, and the
        // statements compare progress as jsonb, so the core must too (or
        // it would write a change each time `1` and `1.0` alternate).
        // Within ±2^53, where every integer is a float exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            #[allow(clippy::cast_possible_truncation)]
            return scalar(v as i64);
        }
        scalar(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Canonical, E> {
        scalar(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Canonical, A::Error> {
        let mut out = String::from("[");
        while let Some(Canonical(item)) = seq.next_element()? {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&item);
        }
        out.push(']');
        Ok(Canonical(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Canonical, A::Error> {
        // Sorted by key; a repeated key keeps its last value, as jsonb does.
        // (A sorted Vec rather than a BTreeMap: objects here are small, and
        // the map's code would be the module's only copy of it.)
        let mut members = Vec::<(String, String)>::new();
        while let Some((key, Canonical(value))) = map.next_entry::<String, Canonical>()? {
            match members.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
                Ok(i) => members[i].1 = value,
                Err(i) => members.insert(i, (key, value)),
            }
        }
        let mut out = String::from("{");
        for (key, value) in members {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&scalar::<_, A::Error>(key)?.0);
            out.push(':');
            out.push_str(&value);
        }
        out.push('}');
        Ok(Canonical(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_object_in_any_member_order_or_spacing_has_one_text() {
        let sent =
            r#"{"phase":"dumped","bytes":1024,"tables":["a","b"],"nested":{"z":1,"a":null}}"#;
        let from_jsonb = r#"{"bytes": 1024, "phase": "dumped", "nested": {"a": null, "z": 1}, "tables": ["a", "b"]}"#;
        let canonical = canonical_object(sent).unwrap();
        assert_eq!(
            canonical,
            r#"{"bytes":1024,"nested":{"a":null,"z":1},"phase":"dumped","tables":["a","b"]}"#
        );
        assert_eq!(canonical_object(from_jsonb).unwrap(), canonical);
        assert_ne!(
            canonical_object(r#"{"phase":"uploaded"}"#),
            canonical_object(r#"{"phase":"dumped"}"#)
        );
    }

    #[test]
    fn only_objects_are_progress() {
        for not in ["[1]", "\"x\"", "1", "null", "{", "{} x", ""] {
            assert_eq!(canonical_object(not), None, "{not}");
        }
        assert_eq!(canonical_object(" {} ").as_deref(), Some("{}"));
    }

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        assert_eq!(
            canonical_object(r#"{"s":"a\u00e9\n\"","f":1.50,"e":1e3,"n":-7,"t":true}"#).unwrap(),
            r#"{"e":1000,"f":1.5,"n":-7,"s":"aé\n\"","t":true}"#
        );
    }

    #[test]
    fn numbers_jsonb_holds_equal_have_one_text() {
        let one = canonical_object(r#"{"n":1}"#).unwrap();
        for same in [
            r#"{"n":1.0}"#,
            r#"{"n":1e0}"#,
            r#"{"n":1.000}"#,
            r#"{"n": 10e-1}"#,
        ] {
            assert_eq!(canonical_object(same).unwrap(), one, "{same}");
        }
        assert_eq!(canonical_object(r#"{"n":-0.0}"#).unwrap(), r#"{"n":0}"#);
        assert_eq!(canonical_object(r#"{"n":1.5}"#).unwrap(), r#"{"n":1.5}"#);
        assert_eq!(
            canonical_object(r#"{"n":9007199254740992.0}"#).unwrap(),
            r#"{"n":9007199254740992}"#
        );
        assert_eq!(
            canonical_object(r#"{"n":1e300}"#).unwrap(),
            r#"{"n":1e+300}"#
        );
    }

    #[test]
    fn nul_is_found_in_keys_and_values_but_not_in_an_escaped_backslash() {
        let nul = |json: &str| has_nul(&canonical_object(json).unwrap());
        assert!(nul(r#"{"a":"x\u0000"}"#));
        assert!(nul(r#"{"a\u0000":1}"#));
        assert!(nul(r#"{"a":["\u0000"]}"#));
        assert!(!nul(r#"{"a":"\\u0000"}"#), "a backslash, then u0000");
        assert!(nul(r#"{"a":"\\\u0000"}"#), "a backslash, then NUL");
    }

    #[test]
    fn the_phase_is_read_when_it_is_a_string() {
        assert_eq!(
            phase(r#"{"phase":"dumped","x":1}"#).as_deref(),
            Some("dumped")
        );
        assert_eq!(phase(r#"{"phase":3}"#), None);
        assert_eq!(phase(r#"{"x":1}"#), None);
    }
}
