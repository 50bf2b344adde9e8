//! Raw input checked into the domain: the editable fields of a job as a client sends them
//! ([`JobInput`], REST's body and what gRPC messages convert to), and the checked result
//! ([`JobSpec`]) a job is made from. Parse, don't validate: nothing past this point sees an
//! unchecked value.
//!
//! - [`schedule`]: a schedule as given ([`ScheduleInput`]);
//! - [`json`]: JSON documents decoded into typed input, naming the field at fault.

pub mod json;
pub mod schedule;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use validator::{Validate, ValidateEmail, ValidationError, ValidationErrors};

pub use self::schedule::ScheduleInput;
use crate::domain::{
    data::JobData,
    delivery::{Delivery, Webhook, WebhookInput},
    field::{Errors, FieldError, Invalid},
    policy::{
        DEFAULT_RUN_TIMEOUT_SECONDS, JobType, MAX_ATTEMPTS, MAX_BACKOFF_SECONDS,
        MAX_RUN_TIMEOUT_SECONDS, MisfirePolicy, OverlapPolicy, RetryPolicy,
    },
    schedule::Schedule,
};

/// Longest `jobData`, as serialized JSON text.
pub const MAX_JOB_DATA_BYTES: usize = 64 * 1024;

/// The editable fields of a job as a client sends them (REST body, merge-patch result, or
/// converted from gRPC). [`JobInput::parse`] turns it into a [`JobSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobInput {
    /// 3 to 250 characters after trimming.
    #[validate(custom(function = "validate_name"))]
    #[schema(min_length = 3, max_length = 250, example = "Monday report email")]
    pub name: String,
    /// Up to 500 characters.
    #[validate(length(max = 500, message = "must be at most 500 characters"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// `EMAIL` or `SMS`.
    pub job_type: JobType,
    /// A JSON object of at most 64 KiB. For `EMAIL` it holds the strings `SourceAddress` and
    /// `DestinationAddress` (valid addresses), `Subject` and `Message`.
    #[schema(value_type = Object, example = json!({
        "SourceAddress": "reports@example.com",
        "DestinationAddress": "team@example.com",
        "Subject": "Weekly report",
        "Message": "The report is attached."
    }))]
    pub job_data: Value,
    /// When the job fires.
    #[serde(deserialize_with = "json::object")]
    pub schedule: ScheduleInput,
    /// Retries of failed or timed-out attempts; default one attempt, no retry.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json::optional_object"
    )]
    pub retry: Option<RetryInput>,
    /// Seconds a run may stay open without a result before it is `TIMED_OUT`: 1 to 604800,
    /// default 300.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json::optional_integer"
    )]
    #[schema(minimum = 1, maximum = 604800, example = 300)]
    pub run_timeout_seconds: Option<i64>,
    /// After downtime (or a pause): `FIRE_ONCE` (default), `SKIP` or `FIRE_ALL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire_policy: Option<MisfirePolicy>,
    /// When due while the previous run is open: `SKIP` (default) or `ALLOW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_policy: Option<OverlapPolicy>,
    /// Where runs go: `webhook`, `kafka` or `pull`. By default the job's webhook when it has
    /// one, else Kafka when brokers are configured, else pulling workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Where each run is POSTed, signed per the Standard Webhooks spec.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json::optional_object"
    )]
    pub webhook: Option<WebhookInput>,
}

/// Retries: `maxAttempts` 1 to 100 (default 1), `backoffSeconds` 0 to 3600 (default 10).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryInput {
    /// Attempts in all, the first included.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json::optional_integer"
    )]
    #[schema(minimum = 1, maximum = 100, example = 3)]
    pub max_attempts: Option<i64>,
    /// Delay before the first retry, doubling with each further one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json::optional_integer"
    )]
    #[schema(minimum = 0, maximum = 3600, example = 10)]
    pub backoff_seconds: Option<i64>,
}

/// The policy fields of a job, each optional: what gRPC's `JobPolicy` message carries. Laid
/// over a [`JobInput`], each given field replaces the input's and the others keep theirs, so an
/// update that sets only `maxAttempts` keeps the stored `backoffSeconds`, and a create takes
/// the defaults for what it leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyInput {
    /// Attempts in all, the first included.
    pub max_attempts: Option<i64>,
    /// Delay before the first retry.
    pub backoff_seconds: Option<i64>,
    /// Seconds a run may stay open without a result.
    pub run_timeout_seconds: Option<i64>,
    /// What the job does with missed fires.
    pub misfire_policy: Option<MisfirePolicy>,
    /// What the job does when due while a run is open.
    pub overlap_policy: Option<OverlapPolicy>,
}

impl PolicyInput {
    /// Replaces the fields of `input` that this gives.
    pub fn lay_over(&self, input: &mut JobInput) {
        let Self {
            max_attempts,
            backoff_seconds,
            run_timeout_seconds,
            misfire_policy,
            overlap_policy,
        } = self;
        if max_attempts.is_some() || backoff_seconds.is_some() {
            let retry = input.retry.get_or_insert_default();
            retry.max_attempts = max_attempts.or(retry.max_attempts);
            retry.backoff_seconds = backoff_seconds.or(retry.backoff_seconds);
        }
        input.run_timeout_seconds = run_timeout_seconds.or(input.run_timeout_seconds);
        input.misfire_policy = misfire_policy.or(input.misfire_policy);
        input.overlap_policy = overlap_policy.or(input.overlap_policy);
    }
}

/// The checked editable fields of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Trimmed, 3 to 250 characters.
    pub name: String,
    /// Up to 500 characters.
    pub description: String,
    /// Which executors act on its runs.
    pub job_type: JobType,
    /// A JSON object of at most [`MAX_JOB_DATA_BYTES`], with the fields its type needs.
    pub job_data: JobData,
    /// When it fires.
    pub schedule: Schedule,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Seconds a run may stay open without a result.
    pub run_timeout_seconds: u32,
    /// What it does with missed fires.
    pub misfire_policy: MisfirePolicy,
    /// What it does when due while a run is open.
    pub overlap_policy: OverlapPolicy,
    /// Where its runs go, when it chose.
    pub delivery: Option<Delivery>,
    /// Where its runs are POSTed, when they go by webhook.
    pub webhook: Option<Webhook>,
}

impl JobSpec {
    /// The fields in their REST shape: what a merge patch applies to.
    pub fn document(&self) -> Value {
        // A struct of strings, numbers and JSON values always serializes.
        serde_json::to_value(JobInput::from(self)).unwrap_or_default()
    }

    /// A stable fingerprint, to recognise a repeated create under one `Idempotency-Key`.
    /// Stored with the key: it must not change for the same fields.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.document().to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl From<&JobSpec> for JobInput {
    /// The fields as a client would send them again.
    fn from(spec: &JobSpec) -> Self {
        Self {
            name: spec.name.clone(),
            description: Some(spec.description.clone()),
            job_type: spec.job_type,
            job_data: spec.job_data.to_value(),
            schedule: ScheduleInput::from(&spec.schedule),
            retry: Some(RetryInput {
                max_attempts: Some(i64::from(spec.retry.max_attempts)),
                backoff_seconds: Some(i64::from(spec.retry.backoff_seconds)),
            }),
            run_timeout_seconds: Some(i64::from(spec.run_timeout_seconds)),
            misfire_policy: Some(spec.misfire_policy),
            overlap_policy: Some(spec.overlap_policy),
            delivery: spec.delivery,
            webhook: spec.webhook.as_ref().map(WebhookInput::from),
        }
    }
}

impl JobInput {
    /// Checks every field and returns the domain spec, or every field error at once.
    pub fn parse(self) -> Result<JobSpec, Invalid> {
        self.parse_over(None)
    }

    /// As [`JobInput::parse`], but the schedule is `stored`, taken as it is and not checked
    /// again: an edit that does not send the schedule re-checks only what it sends, so a job
    /// stored with a schedule a later rule refuses (a time out of range) can still be renamed.
    pub fn parse_keeping_schedule(self, stored: &Schedule) -> Result<JobSpec, Invalid> {
        self.parse_over(Some(stored))
    }

    fn parse_over(self, stored_schedule: Option<&Schedule>) -> Result<JobSpec, Invalid> {
        let mut errors = Errors::new();
        if let Err(e) = self.validate() {
            errors.extend(field_errors(&e));
        }
        let job_data = errors.take(check_job_data(self.job_type, self.job_data));
        let schedule = match stored_schedule {
            Some(stored) => Some(stored.clone()),
            None => errors.take(self.schedule.parse()),
        };
        let policy = errors.take(parse_policy(self.retry.as_ref(), self.run_timeout_seconds));
        let webhook = match self.webhook {
            Some(webhook) => errors.take(webhook.parse()).map(Some),
            None => Some(None),
        };
        if self.delivery == Some(Delivery::Webhook) && matches!(webhook, Some(None)) {
            errors.push("webhook", "is required when delivery is webhook");
        }
        errors.finish(|| {
            let (retry, run_timeout_seconds) = policy?;
            Some(JobSpec {
                name: self.name.trim().to_owned(),
                description: self.description.unwrap_or_default(),
                job_type: self.job_type,
                job_data: job_data?,
                schedule: schedule?,
                retry,
                run_timeout_seconds,
                misfire_policy: self.misfire_policy.unwrap_or_default(),
                overlap_policy: self.overlap_policy.unwrap_or_default(),
                delivery: self.delivery,
                webhook: webhook?,
            })
        })
    }
}

/// Checks the retry and timeout fields; defaults fill what is absent.
fn parse_policy(
    retry: Option<&RetryInput>,
    timeout: Option<i64>,
) -> Result<(RetryPolicy, u32), Invalid> {
    let mut errors = Errors::new();
    let defaults = RetryPolicy::default();
    let bounded = |value: Option<i64>, default: u32, max: u64| -> Option<u32> {
        let value = value.unwrap_or(i64::from(default));
        u64::try_from(value)
            .ok()
            .filter(|v| *v <= max)
            .and_then(|v| u32::try_from(v).ok())
    };
    let max_attempts = bounded(
        retry.and_then(|r| r.max_attempts),
        defaults.max_attempts,
        MAX_ATTEMPTS,
    )
    .filter(|n| *n >= 1);
    if max_attempts.is_none() {
        errors.push(
            "retry.maxAttempts",
            format!("must be between 1 and {MAX_ATTEMPTS}"),
        );
    }
    let backoff = bounded(
        retry.and_then(|r| r.backoff_seconds),
        defaults.backoff_seconds,
        MAX_BACKOFF_SECONDS,
    );
    if backoff.is_none() {
        errors.push(
            "retry.backoffSeconds",
            format!("must be between 0 and {MAX_BACKOFF_SECONDS}"),
        );
    }
    let timeout = bounded(
        timeout,
        DEFAULT_RUN_TIMEOUT_SECONDS,
        u64::from(MAX_RUN_TIMEOUT_SECONDS),
    )
    .filter(|t| *t >= 1);
    if timeout.is_none() {
        errors.push(
            "runTimeoutSeconds",
            format!("must be between 1 and {MAX_RUN_TIMEOUT_SECONDS}"),
        );
    }
    errors.finish(|| {
        Some((
            RetryPolicy {
                max_attempts: max_attempts?,
                backoff_seconds: backoff?,
            },
            timeout?,
        ))
    })
}

fn validate_name(name: &str) -> Result<(), ValidationError> {
    let len = name.trim().chars().count();
    if (3..=250).contains(&len) {
        Ok(())
    } else {
        Err(ValidationError::new("length")
            .with_message("must be 3 to 250 characters after trimming".into()))
    }
}

/// Flattens `validator`'s nested errors into `field.path: message` pairs.
fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    fn walk(prefix: &str, errors: &ValidationErrors, out: &mut Vec<FieldError>) {
        for (field, kind) in errors.errors() {
            let path = if prefix.is_empty() {
                snake_to_camel(field)
            } else {
                format!("{prefix}.{}", snake_to_camel(field))
            };
            match kind {
                validator::ValidationErrorsKind::Field(list) => {
                    for e in list {
                        let message = e
                            .message
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| format!("is invalid ({})", e.code));
                        out.push(FieldError::new(&path, message));
                    }
                }
                validator::ValidationErrorsKind::Struct(inner) => walk(&path, inner, out),
                validator::ValidationErrorsKind::List(items) => {
                    for (i, inner) in items {
                        walk(&format!("{path}[{i}]"), inner, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", errors, &mut out);
    out
}

fn snake_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks `jobData`: an object, at most 64 KiB, and the fields its job type needs.
fn check_job_data(job_type: JobType, data: Value) -> Result<JobData, Invalid> {
    let Value::Object(map) = data else {
        return Err(Invalid::field("jobData", "must be a JSON object"));
    };
    let data = JobData::from_map(&map);
    if data.size() > MAX_JOB_DATA_BYTES {
        return Err(Invalid::field(
            "jobData",
            format!("must be at most {MAX_JOB_DATA_BYTES} bytes of JSON"),
        ));
    }
    let mut errors = Errors::new();
    if job_type == JobType::Email {
        for key in ["SourceAddress", "DestinationAddress"] {
            match map.get(key) {
                Some(Value::String(address)) if address.validate_email() => {}
                Some(Value::String(_)) => {
                    errors.push(&format!("jobData.{key}"), "must be a valid email address")
                }
                _ => errors.push(
                    &format!("jobData.{key}"),
                    "is required for EMAIL jobs (an email address)",
                ),
            }
        }
        for key in ["Subject", "Message"] {
            if !matches!(map.get(key), Some(Value::String(_))) {
                errors.push(
                    &format!("jobData.{key}"),
                    "is required for EMAIL jobs (a string)",
                );
            }
        }
    }
    errors.finish(|| Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_time;

    fn email_input() -> JobInput {
        serde_json::from_value(serde_json::json!({
            "name": "  weekly report ",
            "jobType": "EMAIL",
            "jobData": {
                "SourceAddress": "a@example.com",
                "DestinationAddress": "b@example.com",
                "Subject": "s",
                "Message": "m"
            },
            "schedule": {"runAt": "2030-01-01T09:00:00.123456+02:00"}
        }))
        .unwrap()
    }

    #[test]
    fn valid_input_becomes_a_trimmed_spec_in_utc_milliseconds() {
        let spec = email_input().parse().unwrap();
        assert_eq!(spec.name, "weekly report");
        assert_eq!(
            spec.schedule,
            Schedule::RunAt(parse_time("2030-01-01T07:00:00.123Z").unwrap())
        );
    }

    #[test]
    fn every_field_error_is_reported_at_once() {
        let mut input = email_input();
        input.name = " x ".into();
        input.job_data = serde_json::json!({"Subject": "s"});
        input.schedule.run_at = Some("tomorrow".into());
        input.retry = Some(RetryInput {
            max_attempts: Some(0),
            backoff_seconds: Some(-1),
        });
        input.run_timeout_seconds = Some(i64::MAX);
        let Err(Invalid(errors)) = input.parse() else {
            panic!("expected field errors")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "jobData.DestinationAddress",
                "jobData.Message",
                "jobData.SourceAddress",
                "name",
                "retry.backoffSeconds",
                "retry.maxAttempts",
                "runTimeoutSeconds",
                "schedule.runAt",
            ]
        );
    }

    #[test]
    fn policy_fields_replace_only_what_they_give() {
        let mut input = JobInput::from(&email_input().parse().unwrap());
        PolicyInput {
            max_attempts: Some(5),
            overlap_policy: Some(OverlapPolicy::Allow),
            ..Default::default()
        }
        .lay_over(&mut input);
        let spec = input.parse().unwrap();
        assert_eq!(
            (spec.retry, spec.overlap_policy, spec.misfire_policy),
            (
                RetryPolicy {
                    max_attempts: 5,
                    backoff_seconds: 10
                },
                OverlapPolicy::Allow,
                MisfirePolicy::FireOnce
            )
        );
    }

    #[test]
    fn a_spec_reads_back_as_the_input_it_came_from() {
        let spec = email_input().parse().unwrap();
        assert_eq!(JobInput::from(&spec).parse().unwrap(), spec);
        assert_eq!(
            spec.document()["schedule"]["runAt"],
            "2030-01-01T07:00:00.123Z"
        );
    }
}
