//! Errors as gRPC statuses: the gRPC half of the error table in `crate::jobs::error`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use super::convert::violations;
use crate::{domain::Invalid, jobs::Error, throttle::Exhausted};

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Invalid(fields) => {
                let violations = violations(&fields);
                let summary = violations
                    .iter()
                    .map(|(field, message)| format!("{field}: {message}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    summary,
                    ErrorDetails::with_bad_request(
                        violations
                            .into_iter()
                            .map(|(field, message)| FieldViolation::new(field, message))
                            .collect::<Vec<_>>(),
                    ),
                )
            }
            Error::NotFound(_) => Status::not_found(message),
            Error::AlreadyExists(_) | Error::IdempotencyKeyReused => {
                Status::already_exists(message)
            }
            Error::Conflict(_) => Status::failed_precondition(message),
            Error::VersionMismatch => Status::aborted(message),
            Error::Unavailable(cause) => {
                tracing::error!(error = ?cause, "call failed");
                Status::unavailable(message)
            }
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "call failed");
                Status::internal(message)
            }
        }
    }
}

impl From<Invalid> for Status {
    fn from(invalid: Invalid) -> Self {
        Error::from(invalid).into()
    }
}

/// A limit reached: RESOURCE_EXHAUSTED, with the wait both as a `google.rpc.RetryInfo` detail
/// and as `retry-after` metadata (whole seconds, as REST's header), for clients that read
/// either.
impl From<Exhausted> for Status {
    fn from(exhausted: Exhausted) -> Self {
        let mut status = Status::with_error_details(
            Code::ResourceExhausted,
            &exhausted.detail,
            ErrorDetails::with_retry_info(Some(exhausted.retry_after)),
        );
        status
            .metadata_mut()
            .insert("retry-after", exhausted.retry_after_seconds().into());
        status
    }
}
