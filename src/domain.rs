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

pub use crate::schedule::Schedule;
use crate::{
    error::{Error, FieldError},
    schedule::{CronSchedule, MAX_INTERVAL_SECONDS},
};

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

/// How one run ended or stands. The last three record expected fires that did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// No result came within the job's `runTimeoutSeconds`; counts as a failed attempt.
    TimedOut,
    /// Not fired: the previous run was still open and the overlap policy is `SKIP`.
    Skipped,
    /// Not fired: the scheduler was down or the job paused at the due time, and the misfire
    /// policy did not catch it up.
    Missed,
    /// Cancelled with its job, open or waiting for a retry.
    Cancelled,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// What a recurring job does with the fires it missed while the service was down (or the job
/// paused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MisfirePolicy {
    /// One catch-up run; the other missed times are recorded `MISSED`.
    #[default]
    FireOnce,
    /// No catch-up: every missed time is recorded `MISSED`.
    Skip,
    /// Every missed time fires, oldest first, up to a bound; older ones are `MISSED`.
    FireAll,
}

/// What a recurring job does when it is due while its previous run is still open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OverlapPolicy {
    /// The fire is recorded `SKIPPED`.
    #[default]
    Skip,
    /// The fire happens; runs overlap.
    Allow,
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1 (no retry) to 100.
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it, capped at one hour, with
    /// jitter.
    pub backoff_seconds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_seconds: 10,
        }
    }
}

/// Longest delay between attempts.
pub const MAX_BACKOFF_SECONDS: u64 = 3600;
/// Default `runTimeoutSeconds`.
pub const DEFAULT_RUN_TIMEOUT_SECONDS: u32 = 300;
/// Longest `runTimeoutSeconds`: one week.
pub const MAX_RUN_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;

impl RetryPolicy {
    /// The delay before attempt `next` (2 or more): `backoff · 2^(next-2)`, capped at one hour,
    /// then drawn uniformly from its upper half, so retries of many jobs failing together
    /// spread out instead of arriving at once.
    pub fn delay_before(&self, next: u32, jitter: f64) -> chrono::Duration {
        let exponent = next.saturating_sub(2).min(30);
        let full = (u64::from(self.backoff_seconds) * 1000)
            .saturating_mul(1 << exponent)
            .min(MAX_BACKOFF_SECONDS * 1000);
        let jitter = jitter.clamp(0.0, 1.0);
        chrono::Duration::milliseconds((full as f64 * (0.5 + 0.5 * jitter)) as i64)
    }
}

/// An attempt waiting for its backoff to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRetry {
    /// When the attempt fires.
    pub due: DateTime<Utc>,
    /// The fire it retries (with `attempt`, this gives the new run its id).
    pub scheduled_for: DateTime<Utc>,
    pub attempt: u32,
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
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "default_run_timeout")]
    pub run_timeout_seconds: u32,
    #[serde(default)]
    pub misfire_policy: MisfirePolicy,
    #[serde(default)]
    pub overlap_policy: OverlapPolicy,
    /// The schedule's next regular fire: where the schedule stands, kept while paused; `None`
    /// once a one-shot has fired or the job is cancelled.
    pub schedule_time: Option<DateTime<Utc>>,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Increases on every change; guards conditional writes.
    pub version: u64,
    /// Runs fired and not yet finished, oldest first. Kept in the job so that one atomic write
    /// fires, finishes or times them out together with the job's state.
    #[serde(default)]
    pub open_runs: Vec<Run>,
    /// Attempts waiting for their backoff, earliest first.
    #[serde(default)]
    pub retries: Vec<PendingRetry>,
    /// The attempt number the next regular fire records: 1, unless the job was rescheduled to a
    /// due time it already fired for (then the next free one, so no run id is ever reused).
    #[serde(default = "first_attempt")]
    pub next_attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

fn default_run_timeout() -> u32 {
    DEFAULT_RUN_TIMEOUT_SECONDS
}

impl Job {
    /// A job made from a checked spec, scheduled for its first due time.
    pub fn new(spec: JobSpec, now: DateTime<Utc>) -> Self {
        let now = truncate(now);
        let schedule = spec.schedule.anchored(now);
        Self {
            id: JobId::generate(),
            name: spec.name,
            description: spec.description,
            job_type: spec.job_type,
            job_data: spec.job_data,
            schedule_time: schedule.first_due(now),
            schedule,
            retry: spec.retry,
            run_timeout_seconds: spec.run_timeout_seconds,
            misfire_policy: spec.misfire_policy,
            overlap_policy: spec.overlap_policy,
            status: JobStatus::Scheduled,
            created_at: now,
            updated_at: now,
            version: 1,
            open_runs: Vec::new(),
            retries: Vec::new(),
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
            retry: self.retry,
            run_timeout_seconds: self.run_timeout_seconds,
            misfire_policy: self.misfire_policy,
            overlap_policy: self.overlap_policy,
        }
    }

    /// The job after `spec` replaced its editable fields. A changed schedule reschedules the
    /// job from now (a past one-shot time fires at once; a finished or cancelled job is
    /// scheduled again, a paused one keeps paused at its new place); open runs stay open.
    pub fn with_spec(&self, spec: JobSpec, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        let now = truncate(now);
        let schedule = spec.schedule.anchored(now);
        if schedule != self.schedule {
            next.schedule_time = schedule.first_due(now);
            next.next_attempt = 1;
            if next.status != JobStatus::Paused {
                next.status = JobStatus::Scheduled;
                next.refresh_status(None);
            }
        }
        next.name = spec.name;
        next.description = spec.description;
        next.job_type = spec.job_type;
        next.job_data = spec.job_data;
        next.schedule = schedule;
        next.retry = spec.retry;
        next.run_timeout_seconds = spec.run_timeout_seconds;
        next.misfire_policy = spec.misfire_policy;
        next.overlap_policy = spec.overlap_policy;
        next.touch(now);
        next
    }

    /// Marks a change: a new version and update time.
    pub fn touch(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = truncate(now).max(self.updated_at);
    }

    /// The next fire, regular or retry: the API's `scheduleTime`.
    pub fn next_fire(&self) -> Option<DateTime<Utc>> {
        let retry = self.retries.iter().map(|r| r.due).min();
        match (self.schedule_time, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When an open run times out.
    pub fn deadline(&self, run: &Run) -> DateTime<Utc> {
        run.fired_at.unwrap_or(run.scheduled_for)
            + chrono::Duration::seconds(i64::from(self.run_timeout_seconds))
    }

    /// When the scheduler must next look at the job: its next fire (unless paused or
    /// cancelled) or the earliest deadline of an open run. The stores index this.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        let deadline = self.open_runs.iter().map(|r| self.deadline(r)).min();
        let fire = match self.status {
            JobStatus::Paused | JobStatus::Cancelled => None,
            _ => self.next_fire(),
        };
        match (deadline, fire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sets RUNNING / SCHEDULED from the open runs and pending fires, or, for a one-shot with
    /// nothing left, SUCCEEDED or FAILED by the run that just finished. Paused and cancelled
    /// jobs keep their status.
    pub fn refresh_status(&mut self, finished: Option<RunStatus>) {
        if matches!(self.status, JobStatus::Paused | JobStatus::Cancelled) {
            return;
        }
        self.status = if !self.open_runs.is_empty() {
            JobStatus::Running
        } else if self.schedule_time.is_some() || !self.retries.is_empty() {
            JobStatus::Scheduled
        } else {
            match finished {
                Some(RunStatus::Succeeded) => JobStatus::Succeeded,
                Some(_) => JobStatus::Failed,
                None => self.status,
            }
        };
    }

    /// Looks up a run among the open ones.
    pub fn open_run(&self, run_id: RunId) -> Option<&Run> {
        self.open_runs.iter().find(|r| r.run_id == run_id)
    }
}

/// One execution of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: RunId,
    pub job_id: JobId,
    pub scheduled_for: DateTime<Utc>,
    /// `None` for fires that did not happen.
    pub fired_at: Option<DateTime<Utc>>,
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
        if !matches!(status, RunStatus::Succeeded | RunStatus::Failed) {
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
    pub retry: RetryPolicy,
    pub run_timeout_seconds: u32,
    pub misfire_policy: MisfirePolicy,
    pub overlap_policy: OverlapPolicy,
}

impl JobSpec {
    /// The fields in their REST shape: what a merge patch applies to.
    pub fn document(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "jobType": self.job_type,
            "jobData": self.job_data,
            "schedule": self.schedule.document(),
            "retry": self.retry,
            "runTimeoutSeconds": self.run_timeout_seconds,
            "misfirePolicy": self.misfire_policy,
            "overlapPolicy": self.overlap_policy,
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
    pub schedule: ScheduleInput,
    /// Retries of failed or timed-out attempts; default one attempt, no retry.
    #[serde(default)]
    pub retry: Option<RetryInput>,
    /// Seconds a run may stay open without a result before it is `TIMED_OUT`: 1 to 604800,
    /// default 300.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800, example = 300)]
    pub run_timeout_seconds: Option<u64>,
    /// After downtime (or a pause): `FIRE_ONCE` (default), `SKIP` or `FIRE_ALL`.
    #[serde(default)]
    pub misfire_policy: Option<MisfirePolicy>,
    /// When due while the previous run is open: `SKIP` (default) or `ALLOW`.
    #[serde(default)]
    pub overlap_policy: Option<OverlapPolicy>,
}

/// Retries: `maxAttempts` 1 to 100 (default 1), `backoffSeconds` 0 to 3600 (default 10).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryInput {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100, example = 3)]
    pub max_attempts: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600, example = 10)]
    pub backoff_seconds: Option<u64>,
}

/// When the job fires; exactly one of: `{"runAt"}` (once; a past time fires at once),
/// `{"cron", "timezone"?}` (5 fields, or 6 with seconds first; IANA zone, default UTC), or
/// `{"intervalSeconds", "startAt"?}` (every n seconds from `startAt`, default one interval
/// from now).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleInput {
    /// RFC 3339 time of the one fire.
    #[schema(example = "2030-01-01T09:00:00Z")]
    #[serde(default)]
    pub run_at: Option<String>,
    /// A cron expression, evaluated on the wall clock of `timezone`.
    #[schema(example = "0 9 * * MON")]
    #[serde(default)]
    pub cron: Option<String>,
    /// IANA zone of `cron`; default `UTC`.
    #[schema(example = "Europe/Berlin")]
    #[serde(default)]
    pub timezone: Option<String>,
    /// Seconds between fires: 1 to 31622400.
    #[schema(minimum = 1, maximum = 31622400, example = 3600)]
    #[serde(default)]
    pub interval_seconds: Option<u64>,
    /// RFC 3339 time of the first interval fire.
    #[serde(default)]
    pub start_at: Option<String>,
}

impl ScheduleInput {
    /// The checked schedule, or the errors of its fields.
    pub fn parse(&self) -> Result<Schedule, Vec<FieldError>> {
        let given = [
            self.run_at.is_some(),
            self.cron.is_some(),
            self.interval_seconds.is_some(),
        ];
        let mut errors = Vec::new();
        match given.iter().filter(|g| **g).count() {
            1 => {}
            0 => {
                return Err(vec![FieldError::new(
                    "schedule",
                    "needs one of runAt, cron or intervalSeconds",
                )]);
            }
            _ => {
                return Err(vec![FieldError::new(
                    "schedule",
                    "must have only one of runAt, cron or intervalSeconds",
                )]);
            }
        }
        if self.timezone.is_some() && self.cron.is_none() {
            errors.push(FieldError::new(
                "schedule.timezone",
                "is only for cron schedules",
            ));
        }
        if self.start_at.is_some() && self.interval_seconds.is_none() {
            errors.push(FieldError::new(
                "schedule.startAt",
                "is only for interval schedules",
            ));
        }
        let schedule = if let Some(run_at) = &self.run_at {
            parse_time(run_at)
                .map(Schedule::RunAt)
                .map_err(|m| FieldError::new("schedule.runAt", m))
        } else if let Some(cron) = &self.cron {
            CronSchedule::parse(cron, self.timezone.as_deref().unwrap_or("UTC"))
                .map(|cron| Schedule::Cron(Box::new(cron)))
                .map_err(|(field, m)| FieldError::new(field, m))
        } else {
            let seconds = self.interval_seconds.unwrap_or_default();
            let start_at = self
                .start_at
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(|m| FieldError::new("schedule.startAt", m));
            if !(1..=MAX_INTERVAL_SECONDS).contains(&seconds) {
                Err(FieldError::new(
                    "schedule.intervalSeconds",
                    format!("must be between 1 and {MAX_INTERVAL_SECONDS}"),
                ))
            } else {
                start_at.map(|start_at| Schedule::Interval { seconds, start_at })
            }
        };
        match schedule {
            Ok(schedule) if errors.is_empty() => Ok(schedule),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.push(e);
                Err(errors)
            }
        }
    }
}

/// Checks the retry and timeout fields; defaults fill what is absent.
fn parse_policy(
    retry: Option<&RetryInput>,
    timeout: Option<u64>,
) -> Result<(RetryPolicy, u32), Vec<FieldError>> {
    let mut errors = Vec::new();
    let defaults = RetryPolicy::default();
    let max_attempts = retry.and_then(|r| r.max_attempts).unwrap_or(1);
    if !(1..=100).contains(&max_attempts) {
        errors.push(FieldError::new(
            "retry.maxAttempts",
            "must be between 1 and 100",
        ));
    }
    let backoff = retry
        .and_then(|r| r.backoff_seconds)
        .unwrap_or(u64::from(defaults.backoff_seconds));
    if backoff > MAX_BACKOFF_SECONDS {
        errors.push(FieldError::new(
            "retry.backoffSeconds",
            format!("must be between 0 and {MAX_BACKOFF_SECONDS}"),
        ));
    }
    let timeout = timeout.unwrap_or(u64::from(DEFAULT_RUN_TIMEOUT_SECONDS));
    if !(1..=u64::from(MAX_RUN_TIMEOUT_SECONDS)).contains(&timeout) {
        errors.push(FieldError::new(
            "runTimeoutSeconds",
            format!("must be between 1 and {MAX_RUN_TIMEOUT_SECONDS}"),
        ));
    }
    if errors.is_empty() {
        Ok((
            RetryPolicy {
                max_attempts: max_attempts as u32,
                backoff_seconds: backoff as u32,
            },
            timeout as u32,
        ))
    } else {
        Err(errors)
    }
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
        let job_data = check_job_data(self.job_type, self.job_data)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        let schedule = self
            .schedule
            .parse()
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        let policy = parse_policy(self.retry.as_ref(), self.run_timeout_seconds)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        match (errors.is_empty(), job_data, schedule, policy) {
            (true, Some(job_data), Some(schedule), Some((retry, run_timeout_seconds))) => {
                Ok(JobSpec {
                    name: self.name.trim().to_owned(),
                    description: self.description.unwrap_or_default(),
                    job_type: self.job_type,
                    job_data,
                    schedule,
                    retry,
                    run_timeout_seconds,
                    misfire_policy: self.misfire_policy.unwrap_or_default(),
                    overlap_policy: self.overlap_policy.unwrap_or_default(),
                })
            }
            _ => {
                errors.sort_by(|a, b| a.field.cmp(&b.field));
                Err(Error::Invalid(errors))
            }
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

/// The contract's name of an enum value, as it appears in JSON: `SCHEDULED`, `TIMED_OUT`,
/// `FIRE_ONCE`.
pub fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        other => format!("{other:?}"),
    }
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
