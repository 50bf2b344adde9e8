//! The MongoDB job store, with the official `mongodb` driver.
//!
//! One document per job in the `jobs` collection, and the job's runs inside it (`runs`, an
//! array). Every write the port asks for is then a single-document atomic operation, so the
//! adapter needs no multi-document transactions, which a standalone `mongod` and the
//! MongoDB-wire servers the tests use do not have:
//! - a conditional update filters on `version` and sets the job's fields and its run together;
//! - the claim finds the earliest due candidates, then takes each with `findOneAndUpdate` on
//!   its id, due time, status and lease expiry, so two schedulers can never both hold a job;
//! - a fire filters on version, lease owner and the absence of its run id, so a run is never
//!   written twice or overwritten.
//!
//! The outbox lives in the job document too: a write that stores an event pushes it onto the
//! document's `outbox` array (and sets `outboxAt`, the time of its oldest pending event, which
//! the relay's index sorts on) in the same update that changes the job. A deleted job whose
//! deletion event is not yet delivered stays as a tombstone (`deleted: true`, invisible to every
//! read) until the relay has published that event, then goes.
//!
//! Runs are few per job while jobs are one-shot; the run ledger's history bound (a later issue)
//! keeps the array bounded for recurring jobs.
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

use super::{Fire, IdempotencyKey, JobFilter, JobStore, Lease, Outbox, PageRequest, StoreError};
use crate::{
    domain::{Job, JobId, JobStatus, JobType, Run, RunId, RunStatus, Schedule},
    events::Event,
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
}

/// Matches live jobs: not tombstones waiting for their deletion event to go out.
fn live(mut filter: Document) -> Document {
    filter.insert("deleted", doc! { "$ne": true });
    filter
}

/// The update parts that store `event` in the job document's outbox.
fn outbox_update(update: &mut Document, event: Outbox<'_>) -> Result<(), StoreError> {
    let Some(event) = event else {
        return Ok(());
    };
    update.insert("$push", doc! { "outbox": outbox_entry(event)? });
    update.insert("$min", doc! { "outboxAt": bson_time(event.time) });
    Ok(())
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
        };
        store
            .create_indexes()
            .await
            .map_err(|e| anyhow!("Failed to create the MongoDB indexes: {e:?}"))?;
        Ok(store)
    }

    /// Creates, idempotently, an index for every query the store makes.
    async fn create_indexes(&self) -> Result<(), StoreError> {
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
        let models = vec![
            // The due-job query and the claim: scheduled jobs by due time.
            index(doc! { "status": 1, "dueAt": 1 }, Some(named("due"))),
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

    /// A job's runs, newest first; none if the job does not exist.
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

/// A job's fields as stored (without its runs, lease and idempotency key, which have writes
/// of their own).
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
    schedule_time: Option<bson::DateTime>,
    status: i32,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
    open_run: Option<String>,
    next_attempt: i32,
    /// The time the claim query sees: set only while the job is scheduled.
    due_at: Option<bson::DateTime>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleDoc {
    run_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunDoc {
    run_id: String,
    scheduled_for: bson::DateTime,
    fired_at: bson::DateTime,
    attempt: i32,
    status: RunStatus,
    finished_at: Option<bson::DateTime>,
    error: Option<String>,
    output: Option<String>,
}

impl JobDoc {
    fn from_job(job: &Job) -> Result<Self, StoreError> {
        let Schedule::RunAt(run_at) = job.schedule;
        Ok(Self {
            id: job.id.object_id(),
            name: job.name.clone(),
            description: job.description.clone(),
            job_type: job.job_type.code(),
            job_data: bson::serialize_to_document(&job.job_data)
                .map_err(|e| StoreError::Internal(anyhow!(e)))?,
            schedule: ScheduleDoc {
                run_at: bson_time(run_at),
            },
            schedule_time: job.schedule_time.map(bson_time),
            status: job.status.code(),
            created_at: bson_time(job.created_at),
            updated_at: bson_time(job.updated_at),
            version: job.version as i64,
            open_run: job.open_run.map(|r| r.to_string()),
            next_attempt: job.next_attempt as i32,
            due_at: (job.status == JobStatus::Scheduled)
                .then_some(job.schedule_time)
                .flatten()
                .map(bson_time),
        })
    }

    fn into_job(self) -> anyhow::Result<Job> {
        Ok(Job {
            id: JobId::from_object_id(self.id),
            name: self.name,
            description: self.description,
            job_type: JobType::from_code(self.job_type)
                .ok_or_else(|| anyhow!("unknown job type {}", self.job_type))?,
            job_data: bson::deserialize_from_document(self.job_data)?,
            schedule: Schedule::RunAt(chrono_time(self.schedule.run_at)),
            schedule_time: self.schedule_time.map(chrono_time),
            status: JobStatus::from_code(self.status)
                .ok_or_else(|| anyhow!("unknown status {}", self.status))?,
            created_at: chrono_time(self.created_at),
            updated_at: chrono_time(self.updated_at),
            version: u64::try_from(self.version)?,
            open_run: self.open_run.as_deref().map(RunId::parse).transpose()?,
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
            fired_at: bson_time(run.fired_at),
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
            fired_at: chrono_time(self.fired_at),
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

/// The runs stored in a job document, newest first; malformed ones are logged and skipped.
fn decode_runs(job: JobId, document: &Document) -> Vec<Run> {
    let Ok(runs) = document.get_array("runs") else {
        return Vec::new();
    };
    let mut decoded: Vec<Run> = runs
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
    decoded.sort_by(|a, b| {
        b.fired_at
            .cmp(&a.fired_at)
            .then_with(|| b.run_id.to_string().cmp(&a.run_id.to_string()))
    });
    decoded
}

/// Adds pushing `run` onto the job's runs to an update (beside an outbox push, if any).
fn push_run(update: &mut Document, run: Bson) {
    match update.get_document_mut("$push") {
        Ok(push) => {
            push.insert("runs", run);
        }
        Err(_) => {
            update.insert("$push", doc! { "runs": run });
        }
    }
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
        if let Some(event) = outbox {
            document.insert("outbox", vec![Bson::Document(outbox_entry(event)?)]);
            document.insert("outboxAt", bson_time(event.time));
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
        run: Option<&Run>,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let set = JobDoc::from_job(job)?.set_fields()?;
        let id = job.id.object_id();
        let version = expected_version as i64;
        let matched = match run {
            None => {
                let mut update = doc! { "$set": set };
                outbox_update(&mut update, outbox)?;
                self.jobs
                    .update_one(live(doc! { "_id": id, "version": version }), update)
                    .await
                    .map_err(map_err)?
                    .matched_count
            }
            Some(run) => {
                let run_bson = RunDoc::from_run(run).to_bson()?;
                let run_id = run.run_id.to_string();
                // Replace the run where the job holds it, else add it: both in the one write
                // that changes the job.
                let mut replace = set.clone();
                replace.insert("runs.$", run_bson.clone());
                let mut update = doc! { "$set": replace };
                outbox_update(&mut update, outbox)?;
                let replaced = self
                    .jobs
                    .update_one(
                        live(doc! { "_id": id, "version": version, "runs.runId": &run_id }),
                        update,
                    )
                    .await
                    .map_err(map_err)?
                    .matched_count;
                if replaced == 1 {
                    1
                } else {
                    let mut update = doc! { "$set": set };
                    outbox_update(&mut update, outbox)?;
                    push_run(&mut update, run_bson);
                    self.jobs
                        .update_one(
                            live(
                                doc! { "_id": id, "version": version, "runs.runId": { "$ne": &run_id } },
                            ),
                            update,
                        )
                        .await
                        .map_err(map_err)?
                        .matched_count
                }
            }
        };
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
        let matched = if outbox.is_some() {
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
                "status": JobStatus::Scheduled.code(),
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
    ) -> Result<Vec<Job>, StoreError> {
        let now = bson_time(now);
        let claimable = doc! {
            "status": JobStatus::Scheduled.code(),
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
        let mut claimed = Vec::with_capacity(candidates.len());
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
                    doc! { "$set": {
                        "leaseOwner": &lease.owner,
                        "leaseUntil": bson_time(lease.until),
                    } },
                )
                .projection(without_runs())
                .return_document(ReturnDocument::After)
                .await
                .map_err(map_err)?;
            if let Some(job) = taken.and_then(decode_job) {
                claimed.push(job);
            }
        }
        claimed.sort_by_key(|job| job.schedule_time);
        Ok(claimed)
    }

    async fn record_fires(&self, lease: &Lease, fires: &[Fire]) -> Result<Vec<JobId>, StoreError> {
        let mut written = Vec::with_capacity(fires.len());
        for Fire { job, run, event } in fires {
            let mut update = doc! { "$set": JobDoc::from_job(job)?.set_fields()? };
            outbox_update(&mut update, event.as_ref())?;
            push_run(&mut update, RunDoc::from_run(run).to_bson()?);
            let result = self
                .jobs
                .update_one(
                    live(doc! {
                        "_id": job.id.object_id(),
                        "version": (job.version - 1) as i64,
                        "leaseOwner": &lease.owner,
                        "runs.runId": { "$ne": run.run_id.to_string() },
                    }),
                    update,
                )
                .await
                .map_err(map_err)?;
            if result.matched_count == 1 {
                written.push(job.id);
            }
        }
        Ok(written)
    }

    async fn get_run(&self, job: JobId, run: RunId) -> Result<Option<Run>, StoreError> {
        Ok(self
            .runs_of(job)
            .await?
            .into_iter()
            .find(|r| r.run_id == run))
    }

    async fn list_runs(
        &self,
        job: JobId,
        page: PageRequest,
    ) -> Result<(Vec<Run>, u64), StoreError> {
        let runs = self.runs_of(job).await?;
        let total = runs.len() as u64;
        let page_runs = runs
            .into_iter()
            .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
            .take(page.size as usize)
            .collect();
        Ok((page_runs, total))
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
            .sort(doc! { "outboxAt": 1 })
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
