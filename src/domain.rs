//! The domain: jobs, their schedules and runs, as the core sees them.
//!
//! Raw input becomes these types at the edge ([`JobInput::parse`]), so the use cases and the
//! stores never see an unchecked string. Times are kept at millisecond precision, the precision
//! every store keeps.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidateEmail, ValidationError, ValidationErrors};

use crate::error::{Error, FieldError};

/// Longest `jobData`, as serialized JSON text.
pub const MAX_JOB_DATA_BYTES: usize = 64 * 1024;
/// Longest run `output`.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Longest run `error`.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// A job id: a MongoDB ObjectId, 24 lowercase hex digits, made by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(bson::oid::ObjectId);

impl JobId {
    /// A new, unique id.
    pub fn generate() -> Self {
        Self(bson::oid::ObjectId::new())
    }

    /// The MongoDB ObjectId it is.
    pub fn object_id(self) -> bson::oid::ObjectId {
        self.0
    }

    pub fn from_object_id(id: bson::oid::ObjectId) -> Self {
        Self(id)
    }

    /// Parses an id from a path, query or message. Anything but 24 hex digits is rejected, so
    /// an id can never smuggle a query operator into a store lookup.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::try_from(raw.to_owned()).map_err(|message| Error::invalid("id", message))
    }
}

impl TryFrom<String> for JobId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw.len() != 24 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be a 24-hex-digit ObjectId".into());
        }
        bson::oid::ObjectId::parse_str(&raw)
            .map(Self)
            .map_err(|_| "must be a 24-hex-digit ObjectId".into())
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.to_string()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

/// A run id: a UUID derived from the job id, the due time and the attempt, so the same
/// expected execution always has the same id and executors can drop duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    /// Namespace of run ids (UUIDv5).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_3a2c_9b7e_4c58_a0d2_51e3_8f47_c916);

    /// The id of attempt `attempt` of the fire of `job` due at `scheduled_for`.
    pub fn derive(job: JobId, scheduled_for: DateTime<Utc>, attempt: u32) -> Self {
        let name = format!("{job}/{}/{attempt}", scheduled_for.timestamp_millis());
        Self(Uuid::new_v5(&Self::NAMESPACE, name.as_bytes()))
    }

    /// Parses a run id from a path or message.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| Error::invalid("runId", "must be a UUID"))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a job does when it fires; executors pick the messages of their type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobType {
    Email,
    Sms,
}

impl JobType {
    /// The number used on gRPC and in Kafka payloads.
    pub fn code(self) -> i32 {
        match self {
            Self::Email => 0,
            Self::Sms => 1,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(Self::Email),
            1 => Some(Self::Sms),
            _ => None,
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Pending,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Paused,
    Cancelled,
}

impl JobStatus {
    /// The number used on gRPC, in Kafka payloads and in the embedded store.
    pub fn code(self) -> i32 {
        match self {
            Self::Pending => 1,
            Self::Scheduled => 2,
            Self::Running => 3,
            Self::Succeeded => 4,
            Self::Failed => 5,
            Self::Paused => 6,
            Self::Cancelled => 7,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        [
            Self::Pending,
            Self::Scheduled,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Paused,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

/// How one run ended or stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// When a job fires. One-shot only for now: `runAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Schedule {
    /// Fires once at this time; a past time fires at once.
    RunAt(DateTime<Utc>),
}

impl Schedule {
    /// The first due time of a schedule that was just set.
    pub fn first_due(&self) -> DateTime<Utc> {
        match self {
            Self::RunAt(at) => *at,
        }
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub description: String,
    pub job_type: JobType,
    /// A JSON object; its shape is checked per job type.
    pub job_data: Map<String, Value>,
    pub schedule: Schedule,
    /// The next due time; `None` when nothing is due.
    pub schedule_time: Option<DateTime<Utc>>,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Increases on every change; guards conditional writes.
    pub version: u64,
    /// The run that is open (fired, no result yet), if any.
    #[serde(default)]
    pub open_run: Option<RunId>,
    /// The attempt number the next fire records: 1, unless the job was rescheduled to a due
    /// time it already fired for (then the next free one, so no run is ever overwritten).
    #[serde(default = "first_attempt")]
    pub next_attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

impl Job {
    /// A job made from a checked spec, scheduled for its first due time.
    pub fn new(spec: JobSpec, now: DateTime<Utc>) -> Self {
        let now = truncate(now);
        let due = spec.schedule.first_due();
        Self {
            id: JobId::generate(),
            name: spec.name,
            description: spec.description,
            job_type: spec.job_type,
            job_data: spec.job_data,
            schedule: spec.schedule,
            schedule_time: Some(due),
            status: JobStatus::Scheduled,
            created_at: now,
            updated_at: now,
            version: 1,
            open_run: None,
            next_attempt: 1,
        }
    }

    /// The editable fields of the job.
    pub fn spec(&self) -> JobSpec {
        JobSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            job_type: self.job_type,
            job_data: self.job_data.clone(),
            schedule: self.schedule.clone(),
        }
    }

    /// The job after `spec` replaced its editable fields. A changed schedule reschedules the
    /// job (a past time fires at once); other changes leave its status alone. The schedule of
    /// a job whose run is still open cannot change: that run would be left open for good.
    pub fn with_spec(&self, spec: JobSpec, now: DateTime<Utc>) -> Result<Self, Error> {
        let mut next = self.clone();
        if spec.schedule != self.schedule {
            if self.open_run.is_some() {
                return Err(Error::Conflict(
                    "the job's run is still open: report its result before changing the schedule"
                        .into(),
                ));
            }
            next.schedule_time = Some(spec.schedule.first_due());
            next.status = JobStatus::Scheduled;
            next.next_attempt = 1;
        }
        next.name = spec.name;
        next.description = spec.description;
        next.job_type = spec.job_type;
        next.job_data = spec.job_data;
        next.schedule = spec.schedule;
        next.touch(now);
        Ok(next)
    }

    /// Marks a change: a new version and update time.
    pub fn touch(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = truncate(now).max(self.updated_at);
    }

    /// The job once its due fire has happened, and the run that records it.
    pub fn fired(&self, now: DateTime<Utc>) -> (Job, Run) {
        let scheduled_for = self.schedule_time.unwrap_or(now);
        let run = Run {
            run_id: RunId::derive(self.id, scheduled_for, self.next_attempt),
            job_id: self.id,
            scheduled_for,
            fired_at: truncate(now),
            attempt: self.next_attempt,
            status: RunStatus::Running,
            finished_at: None,
            error: None,
            output: None,
        };
        let mut job = self.clone();
        job.status = JobStatus::Running;
        job.schedule_time = None;
        job.open_run = Some(run.run_id);
        job.touch(now);
        (job, run)
    }
}

/// One execution of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: RunId,
    pub job_id: JobId,
    pub scheduled_for: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub attempt: u32,
    pub status: RunStatus,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub output: Option<String>,
}

/// What an executor reports about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// `Succeeded` or `Failed`.
    pub status: RunStatus,
    pub error: Option<String>,
    pub output: Option<String>,
}

impl RunResult {
    /// Checks a reported result: a final status and bounded texts.
    pub fn parse(
        status: RunStatus,
        error: Option<String>,
        output: Option<String>,
    ) -> Result<Self, Error> {
        let mut errors = Vec::new();
        if !status.is_finished() {
            errors.push(FieldError::new("status", "must be SUCCEEDED or FAILED"));
        }
        if error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_BYTES) {
            errors.push(FieldError::new(
                "error",
                format!("must be at most {MAX_ERROR_BYTES} bytes"),
            ));
        }
        if output.as_ref().is_some_and(|o| o.len() > MAX_OUTPUT_BYTES) {
            errors.push(FieldError::new(
                "output",
                format!("must be at most {MAX_OUTPUT_BYTES} bytes"),
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(Self {
            status,
            error: non_empty(error),
            output: non_empty(output),
        })
    }
}

/// The checked editable fields of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub description: String,
    pub job_type: JobType,
    pub job_data: Map<String, Value>,
    pub schedule: Schedule,
}

impl JobSpec {
    /// The fields in their REST shape: what a merge patch applies to.
    pub fn document(&self) -> Value {
        let schedule = match &self.schedule {
            Schedule::RunAt(at) => serde_json::json!({ "runAt": format_time(*at) }),
        };
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "jobType": self.job_type,
            "jobData": self.job_data,
            "schedule": schedule,
        })
    }

    /// A stable fingerprint, to recognise a repeated create under one `Idempotency-Key`.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.document().to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The editable fields of a job as a client sends them (REST body, merge-patch result, or
/// converted from gRPC). [`JobInput::parse`] turns it into a [`JobSpec`].
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobInput {
    /// 3 to 250 characters after trimming.
    #[validate(custom(function = "validate_name"))]
    #[schema(min_length = 3, max_length = 250, example = "Monday report email")]
    pub name: String,
    /// Up to 500 characters.
    #[validate(length(max = 500, message = "must be at most 500 characters"))]
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
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
    #[validate(nested)]
    pub schedule: ScheduleInput,
}

/// When the job fires: `{"runAt": "2030-01-01T09:00:00Z"}` fires once at that time (a past time
/// fires at once).
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleInput {
    /// RFC 3339 time of the one fire.
    #[schema(example = "2030-01-01T09:00:00Z")]
    #[validate(required(message = "is required: one-shot schedules are the only kind yet"))]
    pub run_at: Option<String>,
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

impl JobInput {
    /// Checks every field and returns the domain spec, or every field error at once.
    pub fn parse(self) -> Result<JobSpec, Error> {
        let mut errors = match self.validate() {
            Ok(()) => Vec::new(),
            Err(e) => field_errors(&e),
        };
        let job_data = match check_job_data(self.job_type, self.job_data) {
            Ok(data) => Some(data),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        let run_at = match self.schedule.run_at.as_deref().map(parse_time) {
            Some(Ok(at)) => Some(at),
            Some(Err(message)) => {
                errors.push(FieldError::new("schedule.runAt", message));
                None
            }
            None => None,
        };
        match (errors.is_empty(), job_data, run_at) {
            (true, Some(job_data), Some(run_at)) => Ok(JobSpec {
                name: self.name.trim().to_owned(),
                description: self.description.unwrap_or_default(),
                job_type: self.job_type,
                job_data,
                schedule: Schedule::RunAt(run_at),
            }),
            _ => Err(Error::Invalid(errors)),
        }
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
    out.sort_by(|a, b| a.field.cmp(&b.field));
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
fn check_job_data(job_type: JobType, data: Value) -> Result<Map<String, Value>, Vec<FieldError>> {
    let Value::Object(map) = data else {
        return Err(vec![FieldError::new("jobData", "must be a JSON object")]);
    };
    if Value::Object(map.clone()).to_string().len() > MAX_JOB_DATA_BYTES {
        return Err(vec![FieldError::new(
            "jobData",
            format!("must be at most {MAX_JOB_DATA_BYTES} bytes of JSON"),
        )]);
    }
    let mut errors = Vec::new();
    if job_type == JobType::Email {
        for key in ["SourceAddress", "DestinationAddress"] {
            match map.get(key) {
                Some(Value::String(address)) if address.validate_email() => {}
                Some(Value::String(_)) => errors.push(FieldError::new(
                    &format!("jobData.{key}"),
                    "must be a valid email address",
                )),
                _ => errors.push(FieldError::new(
                    &format!("jobData.{key}"),
                    "is required for EMAIL jobs (an email address)",
                )),
            }
        }
        for key in ["Subject", "Message"] {
            if !matches!(map.get(key), Some(Value::String(_))) {
                errors.push(FieldError::new(
                    &format!("jobData.{key}"),
                    "is required for EMAIL jobs (a string)",
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(map)
    } else {
        Err(errors)
    }
}

/// Parses an RFC 3339 time, to millisecond precision.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| truncate(t.with_timezone(&Utc)))
        .map_err(|_| "must be an RFC 3339 time, such as 2030-01-01T09:00:00Z".to_owned())
}

/// Formats a time as RFC 3339 in UTC with milliseconds.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Drops sub-millisecond precision.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let Err(Error::Invalid(errors)) = input.parse() else {
            panic!("expected field errors")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"name"), "{fields:?}");
        assert!(fields.contains(&"jobData.SourceAddress"), "{fields:?}");
        assert!(fields.contains(&"jobData.DestinationAddress"), "{fields:?}");
        assert!(fields.contains(&"jobData.Message"), "{fields:?}");
        assert!(fields.contains(&"schedule.runAt"), "{fields:?}");
    }

    #[test]
    fn run_ids_are_deterministic_per_job_due_time_and_attempt() {
        let job = JobId::generate();
        let at = parse_time("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(RunId::derive(job, at, 1), RunId::derive(job, at, 1));
        assert_ne!(RunId::derive(job, at, 1), RunId::derive(job, at, 2));
        assert_ne!(
            RunId::derive(job, at, 1),
            RunId::derive(JobId::generate(), at, 1)
        );
    }

    #[test]
    fn job_ids_accept_only_24_hex_digits() {
        assert!(JobId::parse("65f1c0ffee0123456789abcd").is_ok());
        for bad in [
            "",
            "123",
            "65f1c0ffee0123456789abcz",
            "{\"$gt\": \"\"}",
            "65f1c0ffee0123456789abcd0",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_codes_round_trip() {
        for code in 1..=7 {
            assert_eq!(JobStatus::from_code(code).unwrap().code(), code);
        }
        assert_eq!(JobStatus::from_code(0), None);
    }
}
