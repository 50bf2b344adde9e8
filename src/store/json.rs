//! The JSON documents the stores keep: a job (the embedded store's `jobs.doc`), a run (its
//! `ledger.doc`) and an event (both stores' outbox entries).
//!
//! The shape is this module's own, mapped field by field from the domain, so a change in the
//! domain cannot change what is written without a change here; `tests/golden/store/` pins the
//! bytes. Fields added since the first stored version have defaults, so older documents still
//! read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::names::{
    StoredDelivery, StoredEventKind, StoredJobStatus, StoredJobType, StoredMisfirePolicy,
    StoredOverlapPolicy, StoredRunStatus,
};

use crate::{
    domain::{
        DEFAULT_RUN_TIMEOUT_SECONDS, Event, Job, JobData, JobId, PendingRetry, RetryPolicy, Run,
        RunId, RunLease, Schedule, ScheduleFields, Webhook,
    },
    jobs::ports::StoreError,
};

/// A stored job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobJson {
    id: String,
    name: String,
    description: String,
    job_type: StoredJobType,
    job_data: JobData,
    schedule: ScheduleJson,
    #[serde(default)]
    retry: RetryJson,
    #[serde(default = "default_run_timeout")]
    run_timeout_seconds: u32,
    #[serde(default)]
    misfire_policy: StoredMisfirePolicy,
    #[serde(default)]
    overlap_policy: StoredOverlapPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<StoredDelivery>,
    /// The secret included: the stores hold it, only views leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookJson>,
    schedule_time: Option<DateTime<Utc>>,
    status: StoredJobStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: u64,
    #[serde(default)]
    open_runs: Vec<RunJson>,
    #[serde(default)]
    retries: Vec<PendingRetryJson>,
    #[serde(default = "first_attempt")]
    next_attempt: u32,
    /// `Job::reschedules`; left out while 0, so documents of jobs never rescheduled are
    /// written as before it existed, and such documents read as 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    reschedules: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

fn default_run_timeout() -> u32 {
    DEFAULT_RUN_TIMEOUT_SECONDS
}

fn first_attempt() -> u32 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A stored webhook, the same in both stores: its headers as name and value pairs, because a
/// header name may hold a dot, which a MongoDB field name should not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookJson {
    url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<HeaderJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeaderJson {
    name: String,
    value: String,
}

impl From<&Webhook> for WebhookJson {
    fn from(webhook: &Webhook) -> Self {
        let Webhook {
            url,
            headers,
            secret,
        } = webhook;
        Self {
            url: url.clone(),
            headers: headers
                .iter()
                .map(|(name, value)| HeaderJson {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            secret: secret.clone(),
        }
    }
}

impl From<WebhookJson> for Webhook {
    fn from(stored: WebhookJson) -> Self {
        let WebhookJson {
            url,
            headers,
            secret,
        } = stored;
        Self {
            url,
            headers: headers.into_iter().map(|h| (h.name, h.value)).collect(),
            secret,
        }
    }
}

/// A worker's hold on a stored open run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunLeaseJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) holder: Option<String>,
    pub(crate) until: DateTime<Utc>,
}

impl From<&RunLease> for RunLeaseJson {
    fn from(lease: &RunLease) -> Self {
        let RunLease { holder, until } = lease;
        Self {
            holder: holder.clone(),
            until: *until,
        }
    }
}

impl From<RunLeaseJson> for RunLease {
    fn from(stored: RunLeaseJson) -> Self {
        let RunLeaseJson { holder, until } = stored;
        Self { holder, until }
    }
}

/// A stored schedule: the fields of its kind only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryJson {
    max_attempts: u32,
    backoff_seconds: u32,
}

impl Default for RetryJson {
    fn default() -> Self {
        let RetryPolicy {
            max_attempts,
            backoff_seconds,
        } = RetryPolicy::default();
        Self {
            max_attempts,
            backoff_seconds,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingRetryJson {
    due: DateTime<Utc>,
    scheduled_for: DateTime<Utc>,
    attempt: u32,
}

/// A stored run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunJson {
    run_id: String,
    job_id: String,
    scheduled_for: DateTime<Utc>,
    fired_at: Option<DateTime<Utc>>,
    attempt: u32,
    status: StoredRunStatus,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<StoredDelivery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<RunLeaseJson>,
}

/// A stored event.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventJson {
    id: String,
    kind: StoredEventKind,
    time: DateTime<Utc>,
    job: JobJson,
    run: Option<RunJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

impl From<&Schedule> for ScheduleJson {
    fn from(schedule: &Schedule) -> Self {
        let ScheduleFields {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        } = ScheduleFields::from(schedule);
        Self {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        }
    }
}

impl TryFrom<ScheduleJson> for Schedule {
    type Error = String;

    fn try_from(stored: ScheduleJson) -> Result<Self, String> {
        let ScheduleJson {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        } = stored;
        Schedule::try_from(ScheduleFields {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        })
    }
}

impl From<&Job> for JobJson {
    fn from(job: &Job) -> Self {
        let Job {
            id,
            name,
            description,
            job_type,
            job_data,
            schedule,
            retry,
            run_timeout_seconds,
            misfire_policy,
            overlap_policy,
            delivery,
            webhook,
            schedule_time,
            status,
            created_at,
            updated_at,
            version,
            open_runs,
            retries,
            next_attempt,
            reschedules,
            created_by,
            updated_by,
            trace,
        } = job;
        Self {
            id: id.to_string(),
            name: name.clone(),
            description: description.clone(),
            job_type: (*job_type).into(),
            job_data: job_data.clone(),
            schedule: ScheduleJson::from(schedule),
            retry: RetryJson {
                max_attempts: retry.max_attempts,
                backoff_seconds: retry.backoff_seconds,
            },
            run_timeout_seconds: *run_timeout_seconds,
            misfire_policy: (*misfire_policy).into(),
            overlap_policy: (*overlap_policy).into(),
            delivery: delivery.map(Into::into),
            webhook: webhook.as_ref().map(WebhookJson::from),
            schedule_time: *schedule_time,
            status: (*status).into(),
            created_at: *created_at,
            updated_at: *updated_at,
            version: *version,
            open_runs: open_runs.iter().map(RunJson::from).collect(),
            retries: retries
                .iter()
                .map(|r| PendingRetryJson {
                    due: r.due,
                    scheduled_for: r.scheduled_for,
                    attempt: r.attempt,
                })
                .collect(),
            next_attempt: *next_attempt,
            reschedules: *reschedules,
            created_by: created_by.clone(),
            updated_by: updated_by.clone(),
            trace: trace.clone(),
        }
    }
}

impl TryFrom<JobJson> for Job {
    type Error = String;

    fn try_from(stored: JobJson) -> Result<Self, String> {
        let JobJson {
            id,
            name,
            description,
            job_type,
            job_data,
            schedule,
            retry,
            run_timeout_seconds,
            misfire_policy,
            overlap_policy,
            delivery,
            webhook,
            schedule_time,
            status,
            created_at,
            updated_at,
            version,
            open_runs,
            retries,
            next_attempt,
            reschedules,
            created_by,
            updated_by,
            trace,
        } = stored;
        Ok(Self {
            id: job_id(&id)?,
            name,
            description,
            job_type: job_type.into(),
            job_data,
            schedule: Schedule::try_from(schedule)?,
            retry: RetryPolicy {
                max_attempts: retry.max_attempts,
                backoff_seconds: retry.backoff_seconds,
            },
            run_timeout_seconds,
            misfire_policy: misfire_policy.into(),
            overlap_policy: overlap_policy.into(),
            delivery: delivery.map(Into::into),
            webhook: webhook.map(Into::into),
            schedule_time,
            status: status.into(),
            created_at,
            updated_at,
            version,
            open_runs: open_runs
                .into_iter()
                .map(Run::try_from)
                .collect::<Result<_, _>>()?,
            retries: retries
                .into_iter()
                .map(|r| PendingRetry {
                    due: r.due,
                    scheduled_for: r.scheduled_for,
                    attempt: r.attempt,
                })
                .collect(),
            next_attempt,
            reschedules,
            created_by,
            updated_by,
            trace,
        })
    }
}

impl From<&Run> for RunJson {
    fn from(run: &Run) -> Self {
        let Run {
            run_id,
            job_id,
            scheduled_for,
            fired_at,
            attempt,
            status,
            finished_at,
            error,
            output,
            actor,
            reason,
            trace,
            delivery,
            lease,
        } = run;
        Self {
            run_id: run_id.to_string(),
            job_id: job_id.to_string(),
            scheduled_for: *scheduled_for,
            fired_at: *fired_at,
            attempt: *attempt,
            status: (*status).into(),
            finished_at: *finished_at,
            error: error.clone(),
            output: output.clone(),
            actor: actor.clone(),
            reason: reason.clone(),
            trace: trace.clone(),
            delivery: delivery.map(Into::into),
            lease: lease.as_ref().map(RunLeaseJson::from),
        }
    }
}

impl TryFrom<RunJson> for Run {
    type Error = String;

    fn try_from(stored: RunJson) -> Result<Self, String> {
        let RunJson {
            run_id,
            job_id: job,
            scheduled_for,
            fired_at,
            attempt,
            status,
            finished_at,
            error,
            output,
            actor,
            reason,
            trace,
            delivery,
            lease,
        } = stored;
        Ok(Self {
            run_id: RunId::parse(&run_id).map_err(|_| format!("bad run id {run_id:?}"))?,
            job_id: job_id(&job)?,
            scheduled_for,
            fired_at,
            attempt,
            status: status.into(),
            finished_at,
            error,
            output,
            actor,
            reason,
            trace,
            delivery: delivery.map(Into::into),
            lease: lease.map(Into::into),
        })
    }
}

impl From<&Event> for EventJson {
    fn from(event: &Event) -> Self {
        let Event {
            id,
            kind,
            time,
            job,
            run,
            actor,
            reason,
            trace,
        } = event;
        Self {
            id: id.to_string(),
            kind: (*kind).into(),
            time: *time,
            job: JobJson::from(job),
            run: run.as_ref().map(RunJson::from),
            actor: actor.clone(),
            reason: reason.clone(),
            trace: trace.clone(),
        }
    }
}

impl TryFrom<EventJson> for Event {
    type Error = String;

    fn try_from(stored: EventJson) -> Result<Self, String> {
        let EventJson {
            id,
            kind,
            time,
            job,
            run,
            actor,
            reason,
            trace,
        } = stored;
        Ok(Self {
            id: Uuid::parse_str(&id).map_err(|_| format!("bad event id {id:?}"))?,
            kind: kind.into(),
            time,
            job: Job::try_from(job)?,
            run: run.map(Run::try_from).transpose()?,
            actor,
            reason,
            trace,
        })
    }
}

fn job_id(text: &str) -> Result<JobId, String> {
    JobId::parse_text(text).ok_or_else(|| format!("bad job id {text:?}"))
}

/// The JSON text of a stored document.
pub(crate) fn to_text<J: Serialize>(document: &J) -> Result<String, StoreError> {
    serde_json::to_string(document).map_err(|e| StoreError::Internal(e.into()))
}

/// A job, run or event from the JSON text of its document; the error says what is wrong.
pub(crate) fn from_text<J, D>(text: &str) -> Result<D, String>
where
    J: serde::de::DeserializeOwned,
    D: TryFrom<J, Error = String>,
{
    let stored: J = serde_json::from_str(text).map_err(|e| e.to_string())?;
    D::try_from(stored)
}
