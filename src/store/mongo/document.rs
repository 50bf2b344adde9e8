//! A job as its MongoDB document holds it, mapped field by field: BSON dates, `jobData` as an
//! embedded document, status and job type as the contract's numbers, policies and run statuses
//! as their contract names (`store::names`), so the documents read naturally in any MongoDB
//! tool. `tests/golden/store/mongodb.txt` pins them, BSON types included.
//!
//! Besides the fields below, a job document holds what other writes keep: `leaseOwner`,
//! `leaseUntil` and `fence` (the claim), `runs` (the ledger), `idempotencyKey` and
//! `idempotencyFingerprint`, `outbox` and `outboxAt` (pending events), and `deleted` (a
//! tombstone whose deletion event is not yet out).

use anyhow::anyhow;
use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    domain::{
        DEFAULT_RUN_TIMEOUT_SECONDS, Delivery, Event, Job, JobData, JobId, JobStatus, JobType,
        PendingRetry, RetryPolicy, Run, RunId, RunLease, Schedule, ScheduleFields,
    },
    jobs::ports::{IdempotencyKey, StoreError},
    store::{
        from_millis,
        json::{EventJson, WebhookJson, from_text, to_text},
        mongo::lease::RunLeaseDoc,
        names::{StoredDelivery, StoredMisfirePolicy, StoredOverlapPolicy, StoredRunStatus},
        or_skip,
    },
};

/// A time as BSON stores it.
pub(super) fn bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

/// A BSON date as a time.
pub(super) fn chrono_time(t: bson::DateTime) -> DateTime<Utc> {
    from_millis(t.timestamp_millis())
}

fn internal(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Internal(e.into())
}

/// A job's fields as stored (without its ledger, lease, fencing token and idempotency key,
/// which have writes of their own).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    name: String,
    description: String,
    job_type: i32,
    job_data: Document,
    schedule: ScheduleDoc,
    #[serde(default)]
    retry: RetryDoc,
    #[serde(default = "default_timeout")]
    run_timeout_seconds: i64,
    #[serde(default)]
    misfire_policy: StoredMisfirePolicy,
    #[serde(default)]
    overlap_policy: StoredOverlapPolicy,
    /// Null when the job chose no way: `$set` then clears what an earlier write set.
    #[serde(default)]
    delivery: Option<StoredDelivery>,
    #[serde(default)]
    webhook: Option<WebhookJson>,
    schedule_time: Option<bson::DateTime>,
    status: i32,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
    #[serde(default)]
    open_runs: Vec<RunDoc>,
    #[serde(default)]
    retries: Vec<PendingRetryDoc>,
    next_attempt: i32,
    /// `Job::reschedules`; left out while 0, so documents of jobs never rescheduled (and the
    /// older service's) read as 0 and are written as before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    reschedules: i64,
    /// When the scheduler must next look at the job (`Job::due_at`): what the claim queries.
    due_at: Option<bson::DateTime>,
    /// When an open run is first offered to pulling workers (`Job::offered_at`): what their
    /// claim queries.
    #[serde(default)]
    pull_at: Option<bson::DateTime>,
    /// The same for the webhook caller.
    #[serde(default)]
    hook_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

fn default_timeout() -> i64 {
    i64::from(DEFAULT_RUN_TIMEOUT_SECONDS)
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_at: Option<bson::DateTime>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryDoc {
    max_attempts: i32,
    backoff_seconds: i32,
}

impl Default for RetryDoc {
    fn default() -> Self {
        RetryDoc::from(RetryPolicy::default())
    }
}

impl From<RetryPolicy> for RetryDoc {
    fn from(policy: RetryPolicy) -> Self {
        let RetryPolicy {
            max_attempts,
            backoff_seconds,
        } = policy;
        Self {
            max_attempts: small(max_attempts),
            backoff_seconds: small(backoff_seconds),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingRetryDoc {
    due: bson::DateTime,
    scheduled_for: bson::DateTime,
    attempt: i32,
}

/// A run in a job document: open (`openRuns`) or in the ledger (`runs`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunDoc {
    run_id: String,
    scheduled_for: bson::DateTime,
    fired_at: Option<bson::DateTime>,
    attempt: i32,
    status: StoredRunStatus,
    finished_at: Option<bson::DateTime>,
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
    lease: Option<RunLeaseDoc>,
}

/// A bounded count (attempts, seconds of a policy) as an `Int32`.
fn small(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl From<&Schedule> for ScheduleDoc {
    fn from(schedule: &Schedule) -> Self {
        let ScheduleFields {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        } = ScheduleFields::from(schedule);
        Self {
            run_at: run_at.map(bson_time),
            cron,
            timezone,
            interval_seconds: interval_seconds.and_then(|s| i64::try_from(s).ok()),
            start_at: start_at.map(bson_time),
        }
    }
}

impl ScheduleDoc {
    fn into_schedule(self) -> anyhow::Result<Schedule> {
        let Self {
            run_at,
            cron,
            timezone,
            interval_seconds,
            start_at,
        } = self;
        Schedule::try_from(ScheduleFields {
            run_at: run_at.map(chrono_time),
            cron,
            timezone,
            interval_seconds: interval_seconds.map(u64::try_from).transpose()?,
            start_at: start_at.map(chrono_time),
        })
        .map_err(|e| anyhow!(e))
    }
}

impl JobDoc {
    fn from_job(job: &Job) -> Result<Self, StoreError> {
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
        Ok(Self {
            id: id.object_id(),
            name: name.clone(),
            description: description.clone(),
            job_type: job_type.code(),
            job_data: bson::serialize_to_document(&job_data.to_map()).map_err(internal)?,
            schedule: ScheduleDoc::from(schedule),
            retry: RetryDoc::from(*retry),
            run_timeout_seconds: i64::from(*run_timeout_seconds),
            misfire_policy: (*misfire_policy).into(),
            overlap_policy: (*overlap_policy).into(),
            delivery: delivery.map(Into::into),
            webhook: webhook.as_ref().map(WebhookJson::from),
            schedule_time: schedule_time.map(bson_time),
            status: status.code(),
            created_at: bson_time(*created_at),
            updated_at: bson_time(*updated_at),
            version: i64::try_from(*version).map_err(internal)?,
            open_runs: open_runs.iter().map(RunDoc::from).collect(),
            retries: retries
                .iter()
                .map(|r| PendingRetryDoc {
                    due: bson_time(r.due),
                    scheduled_for: bson_time(r.scheduled_for),
                    attempt: small(r.attempt),
                })
                .collect(),
            next_attempt: small(*next_attempt),
            reschedules: i64::from(*reschedules),
            due_at: job.due_at().map(bson_time),
            pull_at: job.offered_at(Delivery::Pull).map(bson_time),
            hook_at: job.offered_at(Delivery::Webhook).map(bson_time),
            created_by: created_by.clone(),
            updated_by: updated_by.clone(),
            trace: trace.clone(),
        })
    }

    fn into_job(self) -> anyhow::Result<Job> {
        let Self {
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
            due_at: _,
            pull_at: _,
            hook_at: _,
            created_by,
            updated_by,
            trace,
        } = self;
        let id = JobId::from_object_id(id);
        Ok(Job {
            id,
            name,
            description,
            job_type: JobType::from_code(job_type)
                .ok_or_else(|| anyhow!("unknown job type {job_type}"))?,
            job_data: JobData::from(bson::deserialize_from_document::<Map<String, Value>>(
                job_data,
            )?),
            schedule: schedule.into_schedule()?,
            retry: RetryPolicy {
                max_attempts: u32::try_from(retry.max_attempts)?,
                backoff_seconds: u32::try_from(retry.backoff_seconds)?,
            },
            run_timeout_seconds: u32::try_from(run_timeout_seconds)?,
            misfire_policy: misfire_policy.into(),
            overlap_policy: overlap_policy.into(),
            delivery: delivery.map(Into::into),
            webhook: webhook.map(Into::into),
            schedule_time: schedule_time.map(chrono_time),
            status: JobStatus::from_code(status)
                .ok_or_else(|| anyhow!("unknown status {status}"))?,
            created_at: chrono_time(created_at),
            updated_at: chrono_time(updated_at),
            version: u64::try_from(version)?,
            open_runs: open_runs
                .into_iter()
                .map(|r| r.into_run(id))
                .collect::<anyhow::Result<_>>()?,
            retries: retries
                .into_iter()
                .map(|r| {
                    Ok(PendingRetry {
                        due: chrono_time(r.due),
                        scheduled_for: chrono_time(r.scheduled_for),
                        attempt: u32::try_from(r.attempt)?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            next_attempt: u32::try_from(next_attempt)?,
            reschedules: u32::try_from(reschedules)?,
            created_by,
            updated_by,
            trace,
        })
    }
}

impl From<&Run> for RunDoc {
    fn from(run: &Run) -> Self {
        let Run {
            run_id,
            job_id: _,
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
            scheduled_for: bson_time(*scheduled_for),
            fired_at: fired_at.map(bson_time),
            attempt: small(*attempt),
            status: (*status).into(),
            finished_at: finished_at.map(bson_time),
            error: error.clone(),
            output: output.clone(),
            actor: actor.clone(),
            reason: reason.clone(),
            trace: trace.clone(),
            delivery: delivery.map(Into::into),
            lease: lease.as_ref().map(|lease| RunLeaseDoc {
                holder: lease.holder.clone(),
                until: bson_time(lease.until),
            }),
        }
    }
}

impl RunDoc {
    /// The run of job `job` (a run document does not repeat its job's id).
    fn into_run(self, job: JobId) -> anyhow::Result<Run> {
        let Self {
            run_id,
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
        } = self;
        Ok(Run {
            run_id: RunId::parse(&run_id)?,
            job_id: job,
            scheduled_for: chrono_time(scheduled_for),
            fired_at: fired_at.map(chrono_time),
            attempt: u32::try_from(attempt)?,
            status: status.into(),
            finished_at: finished_at.map(chrono_time),
            error,
            output,
            actor,
            reason,
            trace,
            delivery: delivery.map(Into::into),
            lease: lease.map(|lease| RunLease {
                holder: lease.holder,
                until: chrono_time(lease.until),
            }),
        })
    }
}

/// The update of a job write: `$set` of every field but the id, with the lease released (a
/// write ends any claim on the job), and `$unset` of an `updatedBy` or `trace` the job no
/// longer has (`$set` would leave them as they were).
pub(super) fn job_update(job: &Job) -> Result<Document, StoreError> {
    let mut update = doc! { "$set": set_fields(job)? };
    let mut unset = Document::new();
    if job.updated_by.is_none() {
        unset.insert("updatedBy", "");
    }
    if job.trace.is_none() {
        unset.insert("trace", "");
    }
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    Ok(update)
}

fn set_fields(job: &Job) -> Result<Document, StoreError> {
    let mut fields = bson::serialize_to_document(&JobDoc::from_job(job)?).map_err(internal)?;
    fields.remove("_id");
    fields.insert("leaseOwner", Bson::Null);
    fields.insert("leaseUntil", Bson::Null);
    Ok(fields)
}

/// The document of a new job: its fields, no lease, an empty ledger, its idempotency key and
/// its first events.
pub(super) fn new_job(
    job: &Job,
    idempotency: Option<&IdempotencyKey>,
    outbox: &[Event],
) -> Result<Document, StoreError> {
    let mut document = bson::serialize_to_document(&JobDoc::from_job(job)?).map_err(internal)?;
    document.insert("leaseOwner", Bson::Null);
    document.insert("leaseUntil", Bson::Null);
    document.insert("runs", Bson::Array(Vec::new()));
    // No claim yet: stored from the start so that a claim's guard names a value.
    document.insert("fence", 0_i64);
    if let Some(key) = idempotency {
        document.insert("idempotencyKey", &key.key);
        document.insert("idempotencyFingerprint", &key.fingerprint);
    }
    if let Some(first) = outbox.first() {
        document.insert("outbox", outbox_entries(outbox)?);
        document.insert("outboxAt", bson_time(first.time));
    }
    Ok(document)
}

/// Runs as the ledger (`runs`) and `openRuns` hold them.
pub(super) fn run_entries(runs: &[Run]) -> Result<Vec<Bson>, StoreError> {
    runs.iter()
        .map(|r| bson::serialize_to_bson(&RunDoc::from(r)).map_err(internal))
        .collect()
}

/// Events as the outbox holds them: the id, and the event's JSON document as text.
pub(super) fn outbox_entries(events: &[Event]) -> Result<Vec<Bson>, StoreError> {
    events
        .iter()
        .map(|event| {
            let text = to_text(&EventJson::from(event))?;
            Ok(Bson::Document(
                bson::doc! { "id": event.id.to_string(), "event": text },
            ))
        })
        .collect()
}

/// A stored job; a malformed one is logged and skipped, never a panic.
pub(super) fn decode_job(document: Document) -> Option<Job> {
    let id = document.get("_id").cloned();
    let decoded = bson::deserialize_from_document::<JobDoc>(document)
        .map_err(anyhow::Error::from)
        .and_then(JobDoc::into_job)
        .map_err(|e| e.to_string());
    or_skip("job", &id, decoded)
}

/// The ledger stored in a job document, oldest first; malformed runs are logged and skipped.
pub(super) fn decode_runs(job: JobId, document: &Document) -> Vec<Run> {
    let Ok(runs) = document.get_array("runs") else {
        return Vec::new();
    };
    runs.iter()
        .filter_map(|run| {
            let decoded = bson::deserialize_from_bson::<RunDoc>(run.clone())
                .map_err(anyhow::Error::from)
                .and_then(|r| r.into_run(job))
                .map_err(|e| e.to_string());
            or_skip("run", &job, decoded)
        })
        .collect()
}

/// The pending events of a job document, in the order they were stored; malformed entries
/// are logged and skipped.
pub(super) fn decode_outbox(document: &Document) -> Vec<Event> {
    let Ok(entries) = document.get_array("outbox") else {
        return Vec::new();
    };
    let id = document.get("_id");
    entries
        .iter()
        .filter_map(|entry| {
            let decoded = entry
                .as_document()
                .and_then(|e| e.get_str("event").ok())
                .ok_or_else(|| "an outbox entry without its event".to_owned())
                .and_then(from_text::<EventJson, Event>);
            or_skip("outbox entry", &id, decoded)
        })
        .collect()
}

/// The fencing token a claim left on a job document.
pub(super) fn fence_of(document: &Document) -> u64 {
    match document.get("fence") {
        Some(Bson::Int64(n)) => n.unsigned_abs(),
        Some(Bson::Int32(n)) => n.unsigned_abs().into(),
        _ => 0,
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
