//! JSON documents decoded into typed input, with errors that name the field at fault by its
//! path (`schedule.runAt`) and say what was expected.

use serde::de::DeserializeOwned;

use crate::domain::field::Invalid;

/// Decodes a JSON object into `T`; a malformed document or a wrong field is an error naming
/// the field.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = match serde_path_to_error::deserialize(&mut de) {
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
    Ok(decoded)
}

/// Decodes an already parsed JSON value into `T`, with the same errors as [`decode_json`].
pub fn decode_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(path_error)
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
        nested: Nested,
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
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(input, expected)| field(input) != *expected)
            .map(|(input, expected)| format!("{input}: {} instead of {expected}", field(input)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
