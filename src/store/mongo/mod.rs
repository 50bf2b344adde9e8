//! The MongoDB job store, with the official `mongodb` driver.
//!
//! One document per job in the `jobs` collection, and the job's runs inside it (`runs`, an
//! array). Every write the port asks for is then a single-document atomic operation, so the
//! adapter needs no multi-document transactions, which a standalone `mongod` and the
//! MongoDB-wire servers the tests use do not have:
//! - a conditional update filters on `version` and sets the job's fields and its run together;
//! - the claim reads the candidates by `_id`, then takes the due and free ones in one
//!   unordered `update` command whose every statement is guarded by the document as read
//!   (`_id`, `version`, `fence`, see `queries::guard`) and moves `fence`: two round trips
//!   whatever the batch size (a third when some were taken meanwhile), and two schedulers can
//!   never both hold a job;
//! - a batch of scheduler steps is one unordered `update` command (split only by message
//!   size) whose every statement filters on `_id`, the version the claim saw and the claim's
//!   fencing token, so a run is never written twice or by a replica whose claim was
//!   superseded.
//!
//! Every filter of the fire path names `_id`, so even a MongoDB-wire server without a query
//! planner serves it from an index (with the `guard` index it gets, see `create_indexes`);
//! only the window read, the listings and the census are ranges.
//!
//! A write's events go in the job document too: it pushes them onto the document's `outbox`
//! array (and sets `outboxAt`, the time of its oldest pending event, which the sequencer's
//! index sorts on) in the same update that changes the job, and the holder of the relay lease
//! later moves them into the journal ([`journal`]). A deleted job whose deletion event is not
//! yet journaled stays as a tombstone (`deleted: true`, invisible to every read) until it is,
//! then goes.
//!
//! Open runs live in the job's fields (`openRuns`); finished runs are appended to `runs` with
//! `$push` and `$slice`, so the ledger keeps the newest `history` records. A claim increments
//! the job's `fence`, and a step is written only where `fence` still has the claim's value.
//!
//! How a job maps to its document is [`document`]'s; this module holds the queries.

mod adopt;
mod census;
mod document;
mod indexes;
mod journal;
mod lease;
mod queries;
mod schedule;
mod sequencing;

use anyhow::anyhow;
use async_trait::async_trait;
use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Client, Collection, Database,
    error::{ErrorKind, WriteFailure},
    options::ClientOptions,
};

use self::{
    document::{bson_time, decode_job, decode_runs, job_update, new_job},
    queries::{filter_document, is_tombstone, ledger_update, live, outbox_update, without_runs},
    sequencing::as_written,
};
use super::{RELAY_LEASE, history_bound};
use crate::runtime::Backoff;
use crate::{
    domain::{Delivery, Event, Job, JobId, JobType, Run},
    jobs::{
        listing::{ByteBudget, JobFilter, PageRequest},
        ports::{
            Census, Claimed, ClaimedStep, DEFAULT_RUN_HISTORY, Due, IdempotencyKey, JobStore,
            JournalBounds, Journaled, Lease, PUBLISHED, Retention, StoreError,
        },
    },
};

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
    /// What the event sequencer keeps between rounds.
    sequencing: sequencing::Sequencing,
}

impl MongoStore {
    /// Connects lazily (the driver connects on first use) and creates the indexes. A server
    /// that does not answer yet does not stop the start: every call answers 503 / UNAVAILABLE
    /// until it does, and the indexes are created in the background as soon as it answers.
    /// Must run inside a tokio runtime.
    pub async fn connect(settings: MongoSettings) -> anyhow::Result<Self> {
        let client = Client::with_options(settings.options)?;
        let db = client.database(&settings.database);
        let store = Self {
            jobs: db.collection("jobs"),
            leases: db.collection("leases"),
            db,
            history: DEFAULT_RUN_HISTORY,
            sequencing: sequencing::Sequencing::default(),
        };
        match store.create_indexes().await {
            Ok(()) => store.adopt().await,
            Err(StoreError::Unavailable(error)) => {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    "MongoDB does not answer: serving, with calls answering 503, until it does"
                );
                tokio::spawn(store.clone().create_indexes_once_reachable());
            }
            Err(e) => return Err(anyhow!("Failed to create the MongoDB indexes: {e:?}")),
        }
        Ok(store)
    }

    /// Retries the index creation, with backoff, until the server answers.
    async fn create_indexes_once_reachable(self) {
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(5),
        );
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            match self.create_indexes().await {
                Ok(()) => {
                    tracing::info!("MongoDB answers: its indexes are in place");
                    self.adopt().await;
                    return;
                }
                Err(StoreError::Unavailable(_)) => continue,
                Err(error) => {
                    tracing::error!(error = ?error, "Failed to create the MongoDB indexes");
                    return;
                }
            }
        }
    }

    /// Adopts the older service's documents (see `adopt.rs`); a failure is logged, and the
    /// next start tries again.
    async fn adopt(&self) {
        if let Err(error) = self.adopt_older_documents().await {
            tracing::warn!(error = ?error, "could not adopt the older service's jobs; the next start tries again");
        }
    }

    /// The same store, keeping `history` finished runs per job.
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history_bound(history);
        self
    }

    /// The same store, its event sequencer looking for other processes' events at most every
    /// `poll` (the relay's) while they come, and once a second while none do, when this
    /// process has none of its own to journal. Without it, every such round looks.
    pub fn with_relay_poll(self, poll: std::time::Duration) -> Self {
        self.sequencing.pace_looks(poll, sequencing::SCAN_EVERY);
        self
    }

    /// The live job document `id`, with `projection` (and the tombstone flag), or none.
    /// Read by `_id` alone, which every MongoDB-wire server answers from its `_id` index
    /// (a filter with more fields is a collection scan on servers without a query planner);
    /// a tombstone is left out here instead.
    async fn by_id(
        &self,
        id: ObjectId,
        mut projection: Document,
    ) -> Result<Option<Document>, StoreError> {
        if projection.values().any(|v| v.as_i32() == Some(1)) {
            projection.insert("deleted", 1);
        }
        let found = self
            .jobs
            .find_one(doc! { "_id": id })
            .projection(projection)
            .await
            .map_err(map_err)?;
        Ok(found.filter(|document| !is_tombstone(document)))
    }

    /// A job's ledger, oldest first; none if the job does not exist.
    async fn runs_of(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        let found = self.by_id(job.object_id(), doc! { "runs": 1 }).await?;
        Ok(found
            .map(|document| decode_runs(job, &document))
            .unwrap_or_default())
    }

    /// Why a conditional write matched nothing: the job changed, or it is gone.
    async fn why_not_written(&self, id: ObjectId) -> StoreError {
        match self.by_id(id, doc! { "_id": 1 }).await {
            Ok(None) => StoreError::NotFound,
            Ok(Some(_)) => StoreError::VersionConflict,
            Err(e) => e,
        }
    }

    /// The database, for tests (explain, dropping).
    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// Every document a find returns, read to the end of its cursor.
async fn all(
    find: impl std::future::IntoFuture<Output = mongodb::error::Result<mongodb::Cursor<Document>>>,
) -> Result<Vec<Document>, StoreError> {
    find.await
        .map_err(map_err)?
        .try_collect()
        .await
        .map_err(map_err)
}

/// Maps driver errors once: a taken unique key, an unreachable server, or anything else.
pub(super) fn map_err(e: mongodb::error::Error) -> StoreError {
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
        events: &[Event],
    ) -> Result<(), StoreError> {
        let document = new_job(job, idempotency, events)?;
        // A new document holds only these events: the relay need not read them back.
        let written = match (document.get("outbox"), document.get("outboxAt")) {
            (Some(outbox), Some(at)) => Some(as_written(
                job.id.object_id(),
                job.version,
                0,
                outbox.clone(),
                at.clone(),
            )),
            _ => None,
        };
        self.jobs.insert_one(document).await.map_err(map_err)?;
        if let Some(written) = written {
            self.sequencing.note_known(written);
        }
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
        let found = self.by_id(id.object_id(), without_runs()).await?;
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
        let mut cursor = self
            .jobs
            .find(query)
            .sort(doc! { "createdAt": -1, "_id": -1 })
            .skip(page.offset())
            .limit(page.size as i64)
            .projection(without_runs())
            .await
            .map_err(map_err)?;
        // One document decoded at a time: a parsed BSON document takes many times its size.
        let (mut jobs, mut budget) = (Vec::new(), ByteBudget::page());
        while let Some(document) = cursor.try_next().await.map_err(map_err)? {
            if let Some(job) = decode_job(document)
                && !budget.push(&mut jobs, job)
            {
                break;
            }
        }
        Ok((jobs, total))
    }

    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        events: &[Event],
    ) -> Result<(), StoreError> {
        let id = job.id.object_id();
        let mut update = job_update(job)?;
        ledger_update(&mut update, finished, self.history)?;
        outbox_update(&mut update, events)?;
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
            if !events.is_empty() {
                self.sequencing.note(id);
            }
            return Ok(());
        }
        Err(self.why_not_written(id).await)
    }

    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let filter = live(doc! { "_id": id.object_id(), "version": expected_version as i64 });
        let matched = if !events.is_empty() {
            // A tombstone holds the deletion event until it is journaled.
            let mut update = doc! {
                "$set": {
                    "deleted": true,
                    "dueAt": Bson::Null,
                    "pullAt": Bson::Null,
                    "hookAt": Bson::Null,
                    "leaseOwner": Bson::Null,
                    "leaseUntil": Bson::Null,
                    "runs": [],
                },
                "$unset": { "idempotencyKey": "", "idempotencyFingerprint": "" },
                // A claim or a step guarded by the job as it was no longer matches.
                "$inc": { "version": 1_i64 },
            };
            outbox_update(&mut update, events)?;
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
            if !events.is_empty() {
                self.sequencing.note(id.object_id());
            }
            return Ok(());
        }
        Err(self.why_not_written(id.object_id()).await)
    }

    async fn due_within(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        self.window(horizon, limit).await
    }

    async fn claim(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ids: &[JobId],
    ) -> Result<Claimed, StoreError> {
        self.claim_ids(lease, now, ids).await
    }

    async fn record_steps(
        &self,
        _lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        // The claim's fencing token stands for the lease holder: no other name is needed.
        self.write_steps(steps).await
    }

    async fn offered(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        job_types: &[JobType],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let field = match delivery {
            Delivery::Pull => "pullAt",
            Delivery::Webhook => "hookAt",
            // Kafka's runs are published, never taken.
            Delivery::Kafka => return Ok(Vec::new()),
        };
        let mut filter = doc! { field: { "$lte": bson_time(now) } };
        if !job_types.is_empty() {
            let codes: Vec<i32> = job_types.iter().map(|t| t.code()).collect();
            filter.insert("jobType", doc! { "$in": codes });
        }
        let mut cursor = self
            .jobs
            .find(live(filter))
            .sort(doc! { field: 1 })
            .limit(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
            .projection(without_runs())
            .await
            .map_err(map_err)?;
        let (mut jobs, mut budget) = (Vec::new(), ByteBudget::claim());
        while let Some(document) = cursor.try_next().await.map_err(map_err)? {
            if let Some(job) = decode_job(document)
                && !budget.push(&mut jobs, job)
            {
                break;
            }
        }
        Ok(jobs)
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
        let held = match result {
            Ok(_) => true,
            // The lease document exists and another owner holds it: the upsert's insert of the
            // same _id is refused.
            Err(e) => match map_err(e) {
                StoreError::DuplicateKey => false,
                other => return Err(other),
            },
        };
        self.sequencing
            .relay_lease(held.then_some(lease.until).filter(|until| *until > now));
        Ok(held)
    }

    async fn sequence_events(&self, limit: usize) -> Result<usize, StoreError> {
        self.sequence(limit).await
    }

    async fn read_journal(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError> {
        self.journal_after(after, job, limit).await
    }

    async fn journal_bounds(&self) -> Result<JournalBounds, StoreError> {
        self.journal_ends().await
    }

    async fn trim_journal(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.trim(retention, floor, now).await
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.cursor_at(name).await?.unwrap_or(0))
    }

    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.move_cursor(name, seq).await
    }

    async fn census(&self, now: DateTime<Utc>) -> Result<Census, StoreError> {
        let mut census = census::count(&self.jobs, now).await.map_err(map_err)?;
        // Journaled events wait only for a publisher, and only once one has a cursor.
        if let Some(after) = self.cursor_at(PUBLISHED).await? {
            let (journaled, first) = self.journaled_since(after).await?;
            census.outbox_pending += journaled;
            census.oldest_event = match (census.oldest_event, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(census)
    }
}
