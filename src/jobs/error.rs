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

use std::fmt;

use crate::domain::{FieldError, Invalid, Refused};

/// What a lookup did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No job has the id.
    Job,
    /// The job has no run with the id.
    Run,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Job => "job",
            Self::Run => "run",
        })
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
    NotFound(Missing),
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

impl From<Invalid> for Error {
    fn from(Invalid(fields): Invalid) -> Self {
        Self::Invalid(fields)
    }
}

impl From<Refused> for Error {
    fn from(Refused(why): Refused) -> Self {
        Self::Conflict(why)
    }
}
