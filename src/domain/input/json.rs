//! JSON documents decoded into typed input, with errors that name the field at fault by its
//! path (`schedule.runAt`) and say what was expected.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, MapAccess, Visitor, value::MapAccessDeserializer},
};

use crate::domain::{data::exact_integers, field::Invalid};

/// Decodes a JSON object into `T`; a malformed document or a wrong field is an error naming
/// the field.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = match serde_path_to_error::deserialize(&mut de) {
        // serde reads a struct from an array too (`["weekly", ...]` as its fields in order).
        Ok(_) if bytes.trim_ascii_start().first() != Some(&b'{') => {
            return Err(Invalid::field("body", "must be a JSON object"));
        }
        Ok(value) => value,
        // serde_json reports some type mismatches (a number where an enum belongs) as syntax
        // errors; when the document itself is well-formed, decode it again as a value to name
        // the field.
        Err(e) if e.inner().is_syntax() => {
            return match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(value) => decode_value(value),
                Err(syntax) => Err(not_json(&syntax)),
            };
        }
        Err(_) if bytes.trim_ascii_start().first() != Some(&b'{') => {
            // serde reads a struct from an array too; say what the body should be instead.
            return Err(Invalid::field("body", "must be a JSON object"));
        }
        Err(e) => return Err(path_error(e)),
    };
    de.end().map_err(|e| not_json(&e))?;
    if let Ok(text) = std::str::from_utf8(bytes) {
        exact_integers(text, "")?;
    }
    Ok(decoded)
}

/// Decodes an already parsed JSON value into `T`, with the same errors as [`decode_json`].
pub fn decode_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// A struct field read only from a JSON object (`#[serde(deserialize_with = ...)]`): serde's
/// derive also reads a struct from an array of its fields in order, which the API refuses.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<T, D::Error> {
    de.deserialize_map(ObjectOnly(PhantomData))
}

/// [`object`] for an optional field: `null` is none.
pub fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    de: D,
) -> Result<Option<T>, D::Error> {
    /// `T` from an object only.
    struct Object<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            object(de).map(Self)
        }
    }

    Ok(Option::<Object<T>>::deserialize(de)?.map(|Object(value)| value))
}

/// An optional integer field (`#[serde(deserialize_with = ...)]`) that also takes an integral
/// number written with a fraction (`60.0`), which JSON Schema counts an integer too. A number
/// beyond the range of `i64` saturates, so the field's range check reports it.
pub fn optional_integer<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    if number.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match number.as_f64() {
        // `as` saturates at the ends of the range.
        Some(f) if f.fract() == 0.0 => Ok(Some(f as i64)),
        _ => Err(serde::de::Error::invalid_type(
            serde::de::Unexpected::Other(&format!("the number {number}")),
            &"an integer",
        )),
    }
}

/// Visits only a map, and reads `T` from it.
struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

fn not_json(e: &serde_json::Error) -> Invalid {
    Invalid::field("body", format!("is not valid JSON: {e}"))
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> Invalid {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Invalid::field(
            "body",
            format!("is not valid JSON: {}", strip_position(&inner)),
        );
    }
    let message = strip_position(&inner);
    // serde names a missing field in its message, at the parent's path: name the field itself.
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let field = if path == "." {
            missing.to_owned()
        } else {
            format!("{path}.{missing}")
        };
        return Invalid::field(&field, "is required");
    }
    let field = if path == "." { "body".to_owned() } else { path };
    Invalid::field(&field, message)
}

/// serde_json's message without its " at line 1 column 7" suffix.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        #[serde(deserialize_with = "object")]
        nested: Nested,
        #[serde(default, deserialize_with = "optional_object")]
        maybe: Option<Nested>,
        #[serde(default, deserialize_with = "optional_integer")]
        whole: Option<i64>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        count: u8,
    }

    fn field(bytes: &str) -> String {
        decode_json::<Probe>(bytes.as_bytes()).unwrap_err().0[0]
            .field
            .clone()
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let whole = |text: &str| {
            decode_json::<Probe>(
                format!(r#"{{"name": "x", "nested": {{"count": 1}}, "whole": {text}}}"#).as_bytes(),
            )
            .map(|probe| probe.whole)
        };
        assert_eq!(whole("60"), Ok(Some(60)));
        assert_eq!(whole("60.0"), Ok(Some(60)));
        assert_eq!(whole("-3e2"), Ok(Some(-300)));
        assert_eq!(whole("null"), Ok(None));
        assert_eq!(whole("1e300"), Ok(Some(i64::MAX)));
        // An integer no store keeps exactly is refused wherever it is, naming its field.
        let beyond = whole("18446744073709551615").unwrap_err();
        assert_eq!(beyond.0[0].field, "whole");
        assert!(beyond.0[0].message.contains("64-bit"), "{beyond:?}");
    }

    #[test]
    fn every_mistake_names_its_field() {
        let table = [
            (r#"{"name": "x""#, "body"),
            ("[1, 2]", "body"),
            (r#"{"name": 5, "nested": {"count": 1}}"#, "name"),
            (r#"{"name": "x"}"#, "nested"),
            (r#"{"name": "x", "nested": {}}"#, "nested.count"),
            (r#"{"name": "x", "nested": {"count": 300}}"#, "nested.count"),
            (
                r#"{"name": "x", "nested": {"count": 1}, "extra": 1}"#,
                "extra",
            ),
            (r#"{"name": "x", "nested": {"count": 1}} trailing"#, "body"),
            (r#"["x", {"count": 1}]"#, "body"),
            (r#"{"name": "x", "nested": [1]}"#, "nested"),
            (
                r#"{"name": "x", "nested": {"count": 1}, "whole": 1.5}"#,
                "whole",
            ),
            (
                r#"{"name": "x", "nested": {"count": 1}, "whole": "1"}"#,
                "whole",
            ),
            (
                r#"{"name": "x", "nested": {"count": 1}, "maybe": [1]}"#,
                "maybe",
            ),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(input, expected)| field(input) != *expected)
            .map(|(input, expected)| format!("{input}: {} instead of {expected}", field(input)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
