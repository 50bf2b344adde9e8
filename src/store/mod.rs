//! The job store port, owned by the core, and its adapters.
//!
//! The trait is shaped for a document store as much as for SQL: every write touches one job and
//! its runs, conditional writes compare `version`, and the scheduler's claim is one atomic
//! update of due jobs that sets a lease (owner and expiry). A job whose lease has not expired
//! cannot be claimed by anyone else, and a fire is written only while its claimer still holds
//! the lease and the job is unchanged since the claim, so two schedulers never fire the same run.
//!
//! The outbox: every write takes the event describing it (`outbox`), and stores it in the same
//! atomic write as the change (the same transaction in SQLite, the same document in MongoDB).
//! The relay reads pending events in order per job, publishes them and then marks them
//! delivered; it holds the store's relay lease so that one process relays at a time.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use uuid::Uuid;

use crate::{
    domain::{Job, JobId, JobStatus, JobType, Run, RunId},
    events::Event,
};

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is busy; the operation may succeed later.
    #[error("store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A unique key (id or idempotency key) is taken.
    #[error("duplicate key")]
    DuplicateKey,
    /// A conditional write found another version (or lease) than expected.
    #[error("version conflict")]
    VersionConflict,
    /// The job does not exist.
    #[error("not found")]
    NotFound,
    /// Anything else; a bug or a corrupt store.
    #[error("store failure")]
    Internal(#[source] anyhow::Error),
}

/// An `Idempotency-Key` and the fingerprint of the request first sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// Filters of a job listing; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<JobType>,
    /// Names starting with this text.
    pub name_prefix: Option<String>,
}

/// A page of a listing: 1-based page number and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub size: u64,
}

impl PageRequest {
    pub fn offset(&self) -> u64 {
        (self.page - 1) * self.size
    }
}

/// A scheduler's hold on the jobs it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Which scheduler holds it (unique per process).
    pub owner: String,
    /// When it lapses and the jobs may be claimed again.
    pub until: DateTime<Utc>,
}

/// A recorded fire: the job as the fire left it, its run, and the event to store in the outbox.
#[derive(Debug, Clone)]
pub struct Fire {
    pub job: Job,
    pub run: Run,
    pub event: Option<Event>,
}

impl From<(Job, Run)> for Fire {
    fn from((job, run): (Job, Run)) -> Self {
        Self {
            job,
            run,
            event: None,
        }
    }
}

/// An event to store with a write, when events are relayed from the outbox.
pub type Outbox<'a> = Option<&'a Event>;

/// The job store port.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new job. With an idempotency key, fails with `DuplicateKey` if the key is taken.
    async fn insert(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError>;

    /// The job created under this idempotency key, and the key's stored fingerprint.
    async fn find_by_idempotency_key(&self, key: &str)
    -> Result<Option<(Job, String)>, StoreError>;

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// One page of jobs, newest first, and the number of all matching jobs.
    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError>;

    /// Replaces the job if its stored version is `expected_version` (else `VersionConflict`;
    /// `NotFound` if it is gone), clears any lease on it, and writes `run` (insert or replace)
    /// in the same atomic write.
    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        run: Option<&Run>,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError>;

    /// Deletes the job and its runs if its stored version is `expected_version` (else
    /// `VersionConflict`; `NotFound` if it is gone).
    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError>;

    /// The earliest time at which a job may become claimable: the earliest due time of an
    /// unleased scheduled job, or the earliest lease expiry.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Atomically leases up to `limit` scheduled jobs due at `now` that nobody holds, earliest
    /// due first, and returns them as they were claimed.
    async fn claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;

    /// Writes fires of claimed jobs: for each fire whose stored job still has the version
    /// `job.version - 1` and is held by `lease.owner`, replaces the job, releases the lease,
    /// inserts the run and stores the fire's event, in one atomic write per job. Returns the
    /// ids written.
    async fn record_fires(&self, lease: &Lease, fires: &[Fire]) -> Result<Vec<JobId>, StoreError>;

    async fn get_run(&self, job: JobId, run: RunId) -> Result<Option<Run>, StoreError>;

    /// One page of a job's runs, newest first, and the number of its runs.
    async fn list_runs(&self, job: JobId, page: PageRequest)
    -> Result<(Vec<Run>, u64), StoreError>;

    /// Takes or renews the relay lease: true if `lease.owner` holds it until `lease.until`,
    /// false while another owner's lease has not lapsed at `now`.
    async fn take_relay_lease(&self, lease: &Lease, now: DateTime<Utc>)
    -> Result<bool, StoreError>;

    /// Up to about `limit` undelivered events, oldest first; one job's events are always in
    /// the order their changes were made.
    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// Removes delivered events from the outbox. Unknown ids are ignored.
    async fn mark_delivered(&self, events: &[(JobId, Uuid)]) -> Result<(), StoreError>;
}
