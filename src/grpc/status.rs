//! Errors as gRPC statuses: the gRPC half of the error table in `crate::error`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::error::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Invalid(fields) => {
                let violations: Vec<FieldViolation> = fields
                    .iter()
                    .map(|f| FieldViolation::new(proto_field(&f.field), &f.message))
                    .collect();
                let summary = fields
                    .iter()
                    .map(|f| format!("{}: {}", proto_field(&f.field), f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    summary,
                    ErrorDetails::with_bad_request(violations),
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

/// The proto name of a field named by its REST path: `jobData.Subject` is `job_data.Subject`,
/// `schedule.runAt` is `schedule_time` (the older clients' one-shot time), and the other
/// schedule fields are those of the `schedule` message (`schedule.interval_seconds`).
fn proto_field(rest: &str) -> String {
    if rest == "schedule.runAt" {
        return "schedule_time".into();
    }
    if let Some(field) = rest.strip_prefix("schedule.") {
        return format!("schedule.{}", proto_field(field));
    }
    let (head, tail) = rest
        .split_once('.')
        .map_or((rest, None), |(h, t)| (h, Some(t)));
    let mut snake = String::new();
    for c in head.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    match tail {
        Some(tail) => format!("{snake}.{tail}"),
        None => snake,
    }
}

#[cfg(test)]
mod tests {
    use super::proto_field;

    #[test]
    fn rest_paths_become_proto_field_names() {
        assert_eq!(proto_field("name"), "name");
        assert_eq!(proto_field("jobType"), "job_type");
        assert_eq!(
            proto_field("jobData.SourceAddress"),
            "job_data.SourceAddress"
        );
        assert_eq!(proto_field("schedule.runAt"), "schedule_time");
        assert_eq!(
            proto_field("schedule.intervalSeconds"),
            "schedule.interval_seconds"
        );
        assert_eq!(proto_field("runId"), "run_id");
    }
}
