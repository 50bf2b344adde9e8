//! A job's data: a JSON object kept as its compact text, shared by every copy of the job.
//!
//! Parsed JSON costs far more memory than its text (a 64 KiB array of zeros is about 1 MiB of
//! `serde_json::Value`), and a job is copied into every event, page and claim batch that holds
//! it. Kept as text behind an `Arc`, the data costs its size on the wire once, however many
//! copies of the job exist; it is parsed only where a caller needs its fields.
//!
//! And the one check of the integers a client sends ([`inexact_integer`]): every store and wire
//! keeps an integer exactly within the signed 64-bit range, so one beyond it is refused rather
//! than silently rounded to a float.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::{Map, Value, value::RawValue};

use super::field::Invalid;

/// A JSON object, as compact text.
#[derive(Clone)]
pub struct JobData(Arc<RawValue>);

impl JobData {
    /// The data of `map`, written compactly.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        // A map of JSON values always serializes.
        let raw = serde_json::value::to_raw_value(map)
            .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).unwrap_or_default());
        Self(Arc::from(raw))
    }

    /// The data of JSON `text`, which must be an object.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let map: Map<String, Value> = serde_json::from_str(text)?;
        Ok(Self::from_map(&map))
    }

    /// The compact JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The fields, parsed.
    pub fn to_map(&self) -> Map<String, Value> {
        // Only an object's text is ever held.
        serde_json::from_str(self.text()).unwrap_or_default()
    }

    /// The data as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.to_map())
    }

    /// Whether the object has no fields.
    pub fn is_empty(&self) -> bool {
        self.text() == "{}"
    }

    /// Bytes of memory it holds (once, whatever the number of copies).
    pub fn size(&self) -> usize {
        self.text().len()
    }
}

impl Default for JobData {
    fn default() -> Self {
        Self::from_map(&Map::new())
    }
}

impl PartialEq for JobData {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl Eq for JobData {}

impl fmt::Debug for JobData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl From<Map<String, Value>> for JobData {
    fn from(map: Map<String, Value>) -> Self {
        Self::from_map(&map)
    }
}

/// Written as the object itself. With `serde_json` the text is copied as it is; other
/// serializers see `serde_json`'s raw-value token, so give them [`JobData::to_map`] instead.
impl Serialize for JobData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Read from an object; anything else is an error.
impl<'de> Deserialize<'de> for JobData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(D::Error::custom("job data must be a JSON object"));
        }
        // Text written by the service is compact already; anything else is made so.
        if raw.get().bytes().any(|b| b.is_ascii_whitespace()) {
            return Self::parse(raw.get()).map_err(D::Error::custom);
        }
        Ok(Self(Arc::from(raw)))
    }
}

/// Refuses JSON `text` holding an integer that would not be kept exactly (see
/// [`inexact_integer`]), naming the field.
pub fn exact_integers(text: &str, root: &str) -> Result<(), Invalid> {
    match inexact_integer(text, root) {
        None => Ok(()),
        Some(path) => Err(Invalid::field(
            &path,
            "is an integer beyond the signed 64-bit range, which cannot be kept exactly; send it as a string",
        )),
    }
}

/// The path (`a.b[2]`, under `root`) of the first integer in JSON `text` that lies outside the
/// signed 64-bit range, which no store or wire of the service keeps exactly. Numbers written
/// with a fraction or an exponent are floats and are not counted; `text` that is not JSON
/// yields `None` (its parser reports it).
pub fn inexact_integer(text: &str, root: &str) -> Option<String> {
    /// Where the scanner is inside a container.
    enum Level {
        /// An object: the last key read, and whether the next string is a key.
        Object { key: String, expect_key: bool },
        /// An array: the index of the current element.
        Array(usize),
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<Level> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => stack.push(Level::Object {
                key: String::new(),
                expect_key: true,
            }),
            b'[' => stack.push(Level::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Level::Object { expect_key, .. }) => *expect_key = true,
                Some(Level::Array(index)) => *index += 1,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Level::Object { key, expect_key }) = stack.last_mut()
                    && *expect_key
                {
                    let raw = text.get(start..i.min(bytes.len())).unwrap_or_default();
                    *key = serde_json::from_str::<String>(&format!("\"{raw}\""))
                        .unwrap_or_else(|_| raw.to_owned());
                    *expect_key = false;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = &text[start..i];
                let integral = !number.contains(['.', 'e', 'E']);
                if integral && number.parse::<i64>().is_err() {
                    return Some(path_of(root, &stack));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    return None;

    fn path_of(root: &str, stack: &[Level]) -> String {
        let mut path = root.to_owned();
        for level in stack {
            match level {
                Level::Object { key, .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Level::Array(index) => path.push_str(&format!("[{index}]")),
            }
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn data_is_compact_text_shared_by_copies_and_reads_back_the_same() {
        let map = json!({"b": [1, 2.5, "x"], "a": {"nested": true}})
            .as_object()
            .cloned()
            .unwrap();
        let data = JobData::from_map(&map);
        assert_eq!(data.to_map(), map);
        let copy = data.clone();
        assert!(Arc::ptr_eq(&data.0, &copy.0), "a copy shares the text");
        let written = serde_json::to_string(&json!({"jobData": data})).unwrap();
        let read: Value = serde_json::from_str(&written).unwrap();
        let back: JobData = serde_json::from_value(read["jobData"].clone()).unwrap();
        assert_eq!(back, data);
        let spaced: JobData =
            serde_json::from_str("{ \"a\" : { \"nested\" : true } ,\"b\":[1,2.5,\"x\"]}").unwrap();
        assert_eq!(spaced, data, "text from elsewhere is made compact");
        assert!(serde_json::from_str::<JobData>("[1]").is_err());
        assert!(JobData::default().is_empty());
    }

    #[test]
    fn an_integer_beyond_64_bits_is_found_by_its_path() {
        for (text, found) in [
            (r#"{"a": 1}"#, None),
            (
                r#"{"a": 9223372036854775807, "b": -9223372036854775808}"#,
                None,
            ),
            (r#"{"a": 1e300, "b": 12345678901234567890.5}"#, None),
            (r#"{"s": "99999999999999999999", "k": [1, 2]}"#, None),
            (r#"{"a": 9223372036854775808}"#, Some("jobData.a")),
            (r#"{"a": -9223372036854775809}"#, Some("jobData.a")),
            (
                r#"{"x": {"y": [0, 1, 18446744073709551616]}}"#,
                Some("jobData.x.y[2]"),
            ),
            (
                r#"{"q\"k": "\\", "z": [[], {"w": 1}, 99999999999999999999]}"#,
                Some("jobData.z[2]"),
            ),
            (r#"{"e\u0041": 99999999999999999999}"#, Some("jobData.eA")),
        ] {
            assert_eq!(inexact_integer(text, "jobData").as_deref(), found, "{text}");
        }
        assert_eq!(
            inexact_integer(r#"{"jobData": {"n": 99999999999999999999}}"#, "").as_deref(),
            Some("jobData.n")
        );
    }
}
