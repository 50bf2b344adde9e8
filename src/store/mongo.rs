//! The MongoDB job store, with the official `mongodb` driver.
//!
//! One document per job in the `jobs` collection, and the job's runs inside it (`runs`, an
//! array). Every write the port asks for is then a single-document atomic operation, so the
//! adapter needs no multi-document transactions, which a standalone `mongod` and the
//! MongoDB-wire servers the tests use do not have:
//! - a conditional update filters on `version` and sets the job's fields and its run together;
//! - the claim finds the earliest due candidates, then takes each with `findOneAndUpdate` on
//!   its id, due time and lease expiry, so two schedulers can never both hold a job;
//! - a scheduler step filters on version, lease owner and fencing token, so a run is never
//!   written twice or by a replica whose claim was superseded.
//!
//! The outbox lives in the job document too: a write that stores an event pushes it onto the
//! document's `outbox` array (and sets `outboxAt`, the time of its oldest pending event, which
//! the relay's index sorts on) in the same update that changes the job. A deleted job whose
//! deletion event is not yet delivered stays as a tombstone (`deleted: true`, invisible to every
//! read) until the relay has published that event, then goes.
//!
//! Open runs live in the job's fields (`openRuns`); finished runs are appended to `runs` with
//! `$push` and `$slice`, so the ledger keeps the newest `history` records. A claim increments
//! the job's `fence`, and a step is written only where `fence` still has the claim's value.
//!
//! Dates are BSON dates, `jobData` an embedded document, enums their contract numbers, so the
//! documents read naturally in any MongoDB tool.

use anyhow::anyhow;
use async_trait::async_trait;
use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use super::{
    Claim, ClaimedStep, DEFAULT_RUN_HISTORY, IdempotencyKey, JobFilter, JobStore, Lease, Outbox,
    PageRequest, StoreError,
};
use crate::{
    domain::{
        Job, JobId, JobStatus, JobType, MisfirePolicy, OverlapPolicy, PendingRetry, RetryPolicy,
        Run, RunId, RunStatus, Schedule,
    },
    events::Event,
    schedule::ScheduleFields,
};

/// The id of the relay's lease document in `leases`.
const RELAY_LEASE: &str = "outbox-relay";

/// How to reach the database.
#[derive(Clone)]
pub struct MongoSettings {
    /// Parsed client options; credentials live here, never in a logged string.
    pub options: ClientOptions,
    /// The database holding the `jobs` collection.
    pub database: String,
}

/// The MongoDB store.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    jobs: Collection<Document>,
    /// Process-wide leases (the outbox relay's).
    leases: Collection<Document>,
    /// Finished runs kept per job.
    history: usize,
}

/// Matches live jobs: not tombstones waiting for their deletion event to go out.
fn live(mut filter: Document) -> Document {
    filter.insert("deleted", doc! { "$ne": true });
    filter
}

/// The update parts that store `events` in the job document's outbox.
fn outbox_update(update: &mut Document, events: Outbox<'_>) -> Result<(), StoreError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let entries = events
        .iter()
        .map(|e| outbox_entry(e).map(Bson::Document))
        .collect::<Result<Vec<_>, _>>()?;
    push(update, "outbox", doc! { "$each": entries });
    update.insert("$min", doc! { "outboxAt": bson_time(first.time) });
    Ok(())
}

/// The update part that appends finished runs to the ledger, keeping the newest `history`.
fn ledger_update(
    update: &mut Document,
    finished: &[Run],
    history: usize,
) -> Result<(), StoreError> {
    if finished.is_empty() {
        return Ok(());
    }
    let runs = finished
        .iter()
        .map(|r| RunDoc::from_run(r).to_bson())
        .collect::<Result<Vec<_>, _>>()?;
    push(
        update,
        "runs",
        doc! { "$each": runs, "$slice": -(history as i64) },
    );
    Ok(())
}

/// Adds `field: value` to the update's `$push`.
fn push(update: &mut Document, field: &str, value: Document) {
    match update.get_document_mut("$push") {
        Ok(push) => {
            push.insert(field, value);
        }
        Err(_) => {
            update.insert("$push", doc! { field: value });
        }
    }
}

fn outbox_entry(event: &Event) -> Result<Document, StoreError> {
    let json = serde_json::to_string(event).map_err(|e| StoreError::Internal(anyhow!(e)))?;
    Ok(doc! { "id": event.id.to_string(), "event": json })
}

/// The projection of a job read: everything but its runs, which can be many.
fn without_runs() -> Document {
    doc! { "runs": 0 }
}

impl MongoStore {
    /// Connects lazily (the driver connects on first use) and creates the indexes.
    pub async fn connect(settings: MongoSettings) -> anyhow::Result<Self> {
        let client = Client::with_options(settings.options)?;
        let db = client.database(&settings.database);
        let store = Self {
            jobs: db.collection("jobs"),
            leases: db.collection("leases"),
            db,
            history: DEFAULT_RUN_HISTORY,
        };
        store
            .create_indexes()
            .await
            .map_err(|e| anyhow!("Failed to create the MongoDB indexes: {e:?}"))?;
        Ok(store)
    }

    /// The same store, keeping `history` finished runs per job.
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(1);
        self
    }

    /// Creates, idempotently, an index for every query the store makes.
    async fn create_indexes(&self) -> Result<(), StoreError> {
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
        let models = vec![
            // The due-job query and the claim: jobs by the time they next need the scheduler.
            index(doc! { "dueAt": 1 }, Some(named("dueAt"))),
            // When the next lease lapses.
            index(
                doc! { "leaseUntil": 1 },
                Some(
                    IndexOptions::builder()
                        .name("lease".to_owned())
                        .sparse(true)
                        .build(),
                ),
            ),
            // Listing, newest first.
            index(doc! { "createdAt": -1, "_id": -1 }, Some(named("created"))),
            // The name-prefix filter.
            index(doc! { "name": 1 }, Some(named("name"))),
            // The relay's scan for pending events.
            index(
                doc! { "outboxAt": 1 },
                Some(
                    IndexOptions::builder()
                        .name("outbox".to_owned())
                        .sparse(true)
                        .build(),
                ),
            ),
            // One job per idempotency key.
            index(
                doc! { "idempotencyKey": 1 },
                Some(
                    IndexOptions::builder()
                        .name("idempotency".to_owned())
                        .unique(true)
                        .sparse(true)
                        .build(),
                ),
            ),
        ];
        self.jobs.create_indexes(models).await.map_err(map_err)?;
        Ok(())
    }

    /// A job's ledger, oldest first; none if the job does not exist.
    async fn runs_of(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        let found = self
            .jobs
            .find_one(live(doc! { "_id": job.object_id() }))
            .projection(doc! { "runs": 1 })
            .await
            .map_err(map_err)?;
        Ok(found
            .map(|document| decode_runs(job, &document))
            .unwrap_or_default())
    }

    /// Why a conditional write matched nothing: the job changed, or it is gone.
    async fn why_not_written(&self, id: ObjectId) -> StoreError {
        match self.jobs.count_documents(live(doc! { "_id": id })).await {
            Ok(0) => StoreError::NotFound,
            Ok(_) => StoreError::VersionConflict,
            Err(e) => map_err(e),
        }
    }

    /// The database, for tests (explain, dropping).
    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// Maps driver errors once: a taken unique key, an unreachable server, or anything else.
fn map_err(e: mongodb::error::Error) -> StoreError {
    const DUPLICATE_KEY: i32 = 11000;
    let duplicate = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    };
    if duplicate {
        return StoreError::DuplicateKey;
    }
    let unreachable = matches!(
        e.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
    ) || e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError");
    if unreachable {
        StoreError::Unavailable(anyhow!(e))
    } else {
        StoreError::Internal(anyhow!(e))
    }
}

fn bson_time(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn chrono_time(t: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or_default()
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
    misfire_policy: MisfirePolicy,
    #[serde(default)]
    overlap_policy: OverlapPolicy,
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
    /// When the scheduler must next look at the job (`Job::due_at`): what the claim queries.
    due_at: Option<bson::DateTime>,
}

fn default_timeout() -> i64 {
    i64::from(crate::domain::DEFAULT_RUN_TIMEOUT_SECONDS)
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
        let policy = RetryPolicy::default();
        Self {
            max_attempts: policy.max_attempts as i32,
            backoff_seconds: policy.backoff_seconds as i32,
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunDoc {
    run_id: String,
    scheduled_for: bson::DateTime,
    fired_at: Option<bson::DateTime>,
    attempt: i32,
    status: RunStatus,
    finished_at: Option<bson::DateTime>,
    error: Option<String>,
    output: Option<String>,
}

impl ScheduleDoc {
    fn from_schedule(schedule: &Schedule) -> Self {
        let fields = ScheduleFields::from(schedule);
        Self {
            run_at: fields.run_at.map(bson_time),
            cron: fields.cron,
            timezone: fields.timezone,
            interval_seconds: fields.interval_seconds.map(|s| s as i64),
            start_at: fields.start_at.map(bson_time),
        }
    }

    fn into_schedule(self) -> anyhow::Result<Schedule> {
        Schedule::try_from(ScheduleFields {
            run_at: self.run_at.map(chrono_time),
            cron: self.cron,
            timezone: self.timezone,
            interval_seconds: self.interval_seconds.map(u64::try_from).transpose()?,
            start_at: self.start_at.map(chrono_time),
        })
        .map_err(|e| anyhow!(e))
    }
}

impl JobDoc {
    fn from_job(job: &Job) -> Result<Self, StoreError> {
        Ok(Self {
            id: job.id.object_id(),
            name: job.name.clone(),
            description: job.description.clone(),
            job_type: job.job_type.code(),
            job_data: bson::serialize_to_document(&job.job_data)
                .map_err(|e| StoreError::Internal(anyhow!(e)))?,
            schedule: ScheduleDoc::from_schedule(&job.schedule),
            retry: RetryDoc {
                max_attempts: job.retry.max_attempts as i32,
                backoff_seconds: job.retry.backoff_seconds as i32,
            },
            run_timeout_seconds: i64::from(job.run_timeout_seconds),
            misfire_policy: job.misfire_policy,
            overlap_policy: job.overlap_policy,
            schedule_time: job.schedule_time.map(bson_time),
            status: job.status.code(),
            created_at: bson_time(job.created_at),
            updated_at: bson_time(job.updated_at),
            version: job.version as i64,
            open_runs: job.open_runs.iter().map(RunDoc::from_run).collect(),
            retries: job
                .retries
                .iter()
                .map(|r| PendingRetryDoc {
                    due: bson_time(r.due),
                    scheduled_for: bson_time(r.scheduled_for),
                    attempt: r.attempt as i32,
                })
                .collect(),
            next_attempt: job.next_attempt as i32,
            due_at: job.due_at().map(bson_time),
        })
    }

    fn into_job(self) -> anyhow::Result<Job> {
        let id = JobId::from_object_id(self.id);
        Ok(Job {
            id,
            name: self.name,
            description: self.description,
            job_type: JobType::from_code(self.job_type)
                .ok_or_else(|| anyhow!("unknown job type {}", self.job_type))?,
            job_data: bson::deserialize_from_document(self.job_data)?,
            schedule: self.schedule.into_schedule()?,
            retry: RetryPolicy {
                max_attempts: u32::try_from(self.retry.max_attempts)?,
                backoff_seconds: u32::try_from(self.retry.backoff_seconds)?,
            },
            run_timeout_seconds: u32::try_from(self.run_timeout_seconds)?,
            misfire_policy: self.misfire_policy,
            overlap_policy: self.overlap_policy,
            schedule_time: self.schedule_time.map(chrono_time),
            status: JobStatus::from_code(self.status)
                .ok_or_else(|| anyhow!("unknown status {}", self.status))?,
            created_at: chrono_time(self.created_at),
            updated_at: chrono_time(self.updated_at),
            version: u64::try_from(self.version)?,
            open_runs: self
                .open_runs
                .into_iter()
                .map(|r| r.into_run(id))
                .collect::<anyhow::Result<_>>()?,
            retries: self
                .retries
                .into_iter()
                .map(|r| {
                    Ok(PendingRetry {
                        due: chrono_time(r.due),
                        scheduled_for: chrono_time(r.scheduled_for),
                        attempt: u32::try_from(r.attempt)?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            next_attempt: u32::try_from(self.next_attempt)?,
        })
    }

    /// The `$set` of a job write: every field but the id, and the lease released (a write
    /// ends any claim on the job).
    fn set_fields(&self) -> Result<Document, StoreError> {
        let mut fields =
            bson::serialize_to_document(self).map_err(|e| StoreError::Internal(anyhow!(e)))?;
        fields.remove("_id");
        fields.insert("leaseOwner", Bson::Null);
        fields.insert("leaseUntil", Bson::Null);
        Ok(fields)
    }
}

impl RunDoc {
    fn from_run(run: &Run) -> Self {
        Self {
            run_id: run.run_id.to_string(),
            scheduled_for: bson_time(run.scheduled_for),
            fired_at: run.fired_at.map(bson_time),
            attempt: run.attempt as i32,
            status: run.status,
            finished_at: run.finished_at.map(bson_time),
            error: run.error.clone(),
            output: run.output.clone(),
        }
    }

    fn into_run(self, job: JobId) -> anyhow::Result<Run> {
        Ok(Run {
            run_id: RunId::parse(&self.run_id)?,
            job_id: job,
            scheduled_for: chrono_time(self.scheduled_for),
            fired_at: self.fired_at.map(chrono_time),
            attempt: u32::try_from(self.attempt)?,
            status: self.status,
            finished_at: self.finished_at.map(chrono_time),
            error: self.error,
            output: self.output,
        })
    }

    fn to_bson(&self) -> Result<Bson, StoreError> {
        bson::serialize_to_bson(self).map_err(|e| StoreError::Internal(anyhow!(e)))
    }
}

/// Decodes a stored job; a malformed one is logged and skipped, never a panic.
fn decode_job(document: Document) -> Option<Job> {
    let id = document.get("_id").cloned();
    match bson::deserialize_from_document::<JobDoc>(document)
        .map_err(anyhow::Error::from)
        .and_then(JobDoc::into_job)
    {
        Ok(job) => Some(job),
        Err(error) => {
            tracing::error!(%error, id = ?id, "skipping a malformed stored job document");
            None
        }
    }
}

/// The ledger stored in a job document; malformed runs are logged and skipped.
fn decode_runs(job: JobId, document: &Document) -> Vec<Run> {
    let Ok(runs) = document.get_array("runs") else {
        return Vec::new();
    };
    let decoded: Vec<Run> = runs
        .iter()
        .filter_map(|run| {
            let result = bson::deserialize_from_bson::<RunDoc>(run.clone())
                .map_err(anyhow::Error::from)
                .and_then(|r| r.into_run(job));
            match result {
                Ok(run) => Some(run),
                Err(error) => {
                    tracing::error!(%error, %job, "skipping a malformed stored run");
                    None
                }
            }
        })
        .collect();
    decoded
}

/// Escapes a text for use as a literal inside a regular expression.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn filter_document(filter: &JobFilter) -> Document {
    let mut query = Document::new();
    if let Some(status) = filter.status {
        query.insert("status", status.code());
    }
    if let Some(job_type) = filter.job_type {
        query.insert("jobType", job_type.code());
    }
    if let Some(prefix) = filter.name_prefix.as_deref().filter(|p| !p.is_empty()) {
        // An anchored, case-sensitive prefix: the name index serves it.
        query.insert(
            "name",
            doc! { "$regex": format!("^{}", regex_literal(prefix)) },
        );
    }
    query
}

#[async_trait]
impl JobStore for MongoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn insert(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let mut document = bson::serialize_to_document(&JobDoc::from_job(job)?)
            .map_err(|e| StoreError::Internal(anyhow!(e)))?;
        document.insert("leaseOwner", Bson::Null);
        document.insert("leaseUntil", Bson::Null);
        document.insert("runs", Bson::Array(Vec::new()));
        if let Some(key) = idempotency {
            document.insert("idempotencyKey", &key.key);
            document.insert("idempotencyFingerprint", &key.fingerprint);
        }
        if let Some(first) = outbox.first() {
            let entries = outbox
                .iter()
                .map(|e| outbox_entry(e).map(Bson::Document))
                .collect::<Result<Vec<_>, _>>()?;
            document.insert("outbox", entries);
            document.insert("outboxAt", bson_time(first.time));
        }
        self.jobs.insert_one(document).await.map_err(map_err)?;
        Ok(())
    }

    async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        let found = self
            .jobs
            .find_one(live(doc! { "idempotencyKey": key }))
            .projection(without_runs())
            .await
            .map_err(map_err)?;
        Ok(found.and_then(|document| {
            let fingerprint = document
                .get_str("idempotencyFingerprint")
                .unwrap_or_default()
                .to_owned();
            decode_job(document).map(|job| (job, fingerprint))
        }))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let found = self
            .jobs
            .find_one(live(doc! { "_id": id.object_id() }))
            .projection(without_runs())
            .await
            .map_err(map_err)?;
        Ok(found.and_then(decode_job))
    }

    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        let query = live(filter_document(filter));
        let total = self
            .jobs
            .count_documents(query.clone())
            .await
            .map_err(map_err)?;
        let documents: Vec<Document> = self
            .jobs
            .find(query)
            .sort(doc! { "createdAt": -1, "_id": -1 })
            .skip(page.offset())
            .limit(page.size as i64)
            .projection(without_runs())
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        Ok((
            documents.into_iter().filter_map(decode_job).collect(),
            total,
        ))
    }

    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let id = job.id.object_id();
        let mut update = doc! { "$set": JobDoc::from_job(job)?.set_fields()? };
        ledger_update(&mut update, finished, self.history)?;
        outbox_update(&mut update, outbox)?;
        let matched = self
            .jobs
            .update_one(
                live(doc! { "_id": id, "version": expected_version as i64 }),
                update,
            )
            .await
            .map_err(map_err)?
            .matched_count;
        if matched == 1 {
            return Ok(());
        }
        Err(self.why_not_written(id).await)
    }

    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let filter = live(doc! { "_id": id.object_id(), "version": expected_version as i64 });
        let matched = if !outbox.is_empty() {
            // A tombstone holds the deletion event until the relay has published it.
            let mut update = doc! {
                "$set": {
                    "deleted": true,
                    "dueAt": Bson::Null,
                    "leaseOwner": Bson::Null,
                    "leaseUntil": Bson::Null,
                    "runs": [],
                },
                "$unset": { "idempotencyKey": "", "idempotencyFingerprint": "" },
            };
            outbox_update(&mut update, outbox)?;
            self.jobs
                .update_one(filter, update)
                .await
                .map_err(map_err)?
                .matched_count
        } else {
            self.jobs
                .delete_one(filter)
                .await
                .map_err(map_err)?
                .deleted_count
        };
        if matched == 1 {
            return Ok(());
        }
        Err(self.why_not_written(id.object_id()).await)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due = self
            .jobs
            .find_one(doc! {
                "dueAt": { "$ne": Bson::Null },
                "leaseUntil": Bson::Null,
            })
            .sort(doc! { "dueAt": 1 })
            .projection(doc! { "dueAt": 1 })
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_datetime("dueAt").ok().copied());
        let lapse = self
            .jobs
            .find_one(doc! { "leaseUntil": { "$ne": Bson::Null } })
            .sort(doc! { "leaseUntil": 1 })
            .projection(doc! { "leaseUntil": 1 })
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_datetime("leaseUntil").ok().copied());
        Ok(due.into_iter().chain(lapse).min().map(chrono_time))
    }

    async fn claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let now = bson_time(now);
        let claimable = doc! {
            "dueAt": { "$lte": now },
            "$or": [
                { "leaseUntil": Bson::Null },
                { "leaseUntil": { "$lt": now } },
            ],
        };
        // One query finds the earliest candidates; then each is taken with its own atomic
        // findOneAndUpdate that checks the same conditions again, so of two schedulers racing
        // for a job exactly one gets it, and each take is a lookup by _id.
        let candidates: Vec<Document> = self
            .jobs
            .find(claimable.clone())
            .sort(doc! { "dueAt": 1 })
            .limit(limit as i64)
            .projection(doc! { "_id": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut claims = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let Ok(id) = candidate.get_object_id("_id") else {
                continue;
            };
            let mut filter = claimable.clone();
            filter.insert("_id", id);
            let taken = self
                .jobs
                .find_one_and_update(
                    filter,
                    doc! {
                        "$set": {
                            "leaseOwner": &lease.owner,
                            "leaseUntil": bson_time(lease.until),
                        },
                        "$inc": { "fence": 1_i64 },
                    },
                )
                .projection(without_runs())
                .return_document(ReturnDocument::After)
                .await
                .map_err(map_err)?;
            let Some(document) = taken else {
                continue;
            };
            let token = match document.get("fence") {
                Some(Bson::Int64(n)) => *n as u64,
                Some(Bson::Int32(n)) => *n as u64,
                _ => 0,
            };
            if let Some(job) = decode_job(document) {
                claims.push(Claim { job, token });
            }
        }
        claims.sort_by_key(|c| c.job.due_at());
        Ok(claims)
    }

    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        let mut written = Vec::with_capacity(steps.len());
        for step in steps {
            let mut update = doc! { "$set": JobDoc::from_job(&step.job)?.set_fields()? };
            ledger_update(&mut update, &step.finished, self.history)?;
            outbox_update(&mut update, &step.events)?;
            let result = self
                .jobs
                .update_one(
                    live(doc! {
                        "_id": step.job.id.object_id(),
                        "version": (step.job.version - 1) as i64,
                        "leaseOwner": &lease.owner,
                        "fence": step.token as i64,
                    }),
                    update,
                )
                .await
                .map_err(map_err)?;
            if result.matched_count == 1 {
                written.push(step.job.id);
            }
        }
        Ok(written)
    }

    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        self.runs_of(job).await
    }

    async fn take_relay_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .leases
            .update_one(
                doc! {
                    "_id": RELAY_LEASE,
                    "$or": [ { "owner": &lease.owner }, { "until": { "$lt": bson_time(now) } } ],
                },
                doc! { "$set": { "owner": &lease.owner, "until": bson_time(lease.until) } },
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(true),
            // The lease document exists and another owner holds it: the upsert's insert of the
            // same _id is refused.
            Err(e) => match map_err(e) {
                StoreError::DuplicateKey => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let documents: Vec<Document> = self
            .jobs
            .find(doc! { "outboxAt": { "$exists": true } })
            // Ties (events stored in the same millisecond) go by job id, so every pass over
            // the same pending events publishes them in the same order. Only documents with
            // pending events are sorted: the sparse index finds them.
            .sort(doc! { "outboxAt": 1, "_id": 1 })
            .limit(limit.max(1) as i64)
            .projection(doc! { "outbox": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut events = Vec::new();
        for document in documents {
            let Ok(entries) = document.get_array("outbox") else {
                continue;
            };
            for entry in entries {
                let json = entry.as_document().and_then(|e| e.get_str("event").ok());
                match json.map(serde_json::from_str::<Event>) {
                    Some(Ok(event)) => events.push(event),
                    other => tracing::error!(
                        id = ?document.get("_id"),
                        error = ?other.and_then(|r| r.err()).map(|e| e.to_string()),
                        "skipping a malformed outbox entry"
                    ),
                }
            }
        }
        Ok(events)
    }

    async fn mark_delivered(&self, events: &[(JobId, Uuid)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut jobs: Vec<ObjectId> = events.iter().map(|(job, _)| job.object_id()).collect();
        jobs.sort();
        jobs.dedup();
        let ids: Vec<String> = events.iter().map(|(_, id)| id.to_string()).collect();
        self.jobs
            .update_many(
                doc! { "_id": { "$in": &jobs } },
                doc! { "$pull": { "outbox": { "id": { "$in": &ids } } } },
            )
            .await
            .map_err(map_err)?;
        // Each a single-document conditional write: an event pushed meanwhile keeps its job's
        // outboxAt set and its tombstone in place.
        self.jobs
            .update_many(
                doc! { "_id": { "$in": &jobs }, "outbox": { "$size": 0 } },
                doc! { "$unset": { "outboxAt": "" } },
            )
            .await
            .map_err(map_err)?;
        self.jobs
            .delete_many(
                doc! { "_id": { "$in": &jobs }, "deleted": true, "outbox": { "$size": 0 } },
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
