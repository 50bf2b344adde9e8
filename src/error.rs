//! The one error type of the use cases.
//!
//! Each variant's doc names what it becomes on each transport; the mappings themselves live in
//! `rest::problem` and `grpc::status`, side by side with this table:
//!
//! | variant | REST | gRPC |
//! |---|---|---|
//! | `Invalid` | 400 | InvalidArgument (with field violations) |
//! | `NotFound` | 404 | NotFound |
//! | `AlreadyExists` | 409 | AlreadyExists |
//! | `Conflict` | 409 | FailedPrecondition |
//! | `VersionMismatch` | 412 | Aborted |
//! | `IdempotencyKeyReused` | 422 | AlreadyExists |
//! | `Unavailable` | 503 | Unavailable |
//! | `Internal` | 500 | Internal |

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// One field's problem, named by its REST path (`schedule.runAt`, `jobData.Subject`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// What a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is wrong; every field error is listed. 400 / InvalidArgument.
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// The named thing does not exist. 404 / NotFound.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The thing to create exists already. 409 / AlreadyExists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation does not fit the current state (a different result for a finished run).
    /// 409 / FailedPrecondition.
    #[error("{0}")]
    Conflict(String),
    /// The caller's `If-Match` version is not the stored one (or is a weak tag, which never
    /// matches). 412 / Aborted.
    #[error("the job is not at the version given in If-Match")]
    VersionMismatch,
    /// An `Idempotency-Key` was used again with a different request. 422 / AlreadyExists.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// The store cannot be reached; try again. 503 / Unavailable.
    #[error("the job store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A fault of the service. 500 / Internal; the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// A single field error.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => Self::Unavailable(e),
            StoreError::DuplicateKey => Self::AlreadyExists("the job exists already".into()),
            StoreError::VersionConflict => Self::Internal(anyhow::anyhow!(
                "unhandled version conflict in the job store"
            )),
            StoreError::NotFound => Self::NotFound("job"),
            StoreError::Internal(e) => Self::Internal(e),
        }
    }
}

/// Decodes a JSON object into `T`; a malformed document or a wrong field becomes an `Invalid`
/// error that names the field's path (`schedule.runAt`) and says what was expected.
pub fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
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
            return Err(Error::invalid("body", "must be a JSON object"));
        }
        Err(e) => return Err(path_error(e)),
    };
    de.end().map_err(|e| not_json(&e))?;
    Ok(decoded)
}

fn not_json(e: &serde_json::Error) -> Error {
    Error::invalid("body", format!("is not valid JSON: {e}"))
}

/// Decodes an already parsed JSON value into `T`, with the same errors as [`decode_json`].
pub fn decode_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Error::invalid(
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
        return Error::invalid(&field, "is required");
    }
    let field = if path == "." { "body".to_owned() } else { path };
    Error::invalid(&field, message)
}

/// serde_json's message without its " at line 1 column 7" suffix.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}
