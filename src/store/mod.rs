//! The job store port, owned by the core, and its adapters.
//!
//! The trait is shaped for a document store as much as for SQL: every write touches one job and
//! its runs, conditional writes compare `version`, and the scheduler's claim is one atomic
//! update of due jobs that sets a lease (owner and expiry) and increments the job's fencing
//! token. A job whose lease has not expired cannot be claimed by anyone else, and a step is
//! written only while its claimer still holds the lease with the same token and the job is
//! unchanged since the claim, so two schedulers never fire the same run.
//!
//! A job's open runs live in the job itself; the ledger of finished runs (results, timeouts,
//! skipped, missed and cancelled fires) is appended by the same write and bounded per job.
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
    domain::{Job, JobId, JobStatus, JobType, Run},
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

/// A claimed job, with the fencing token of the claim.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: Job,
    /// Increases on every claim of the job; a step is stored only while the job's token is
    /// still this one, so a replica whose claim was superseded can store nothing.
    pub token: u64,
}

/// What the scheduler stores for a claimed job: the job as its step left it, the runs it
/// finished (appended to the ledger) and the events that describe it (for the outbox).
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    pub token: u64,
    pub job: Job,
    pub finished: Vec<Run>,
    pub events: Vec<Event>,
}

/// Events to store with a write, when events are relayed from the outbox; empty otherwise.
pub type Outbox<'a> = &'a [Event];

/// Finished runs kept per job when no other bound is configured.
pub const DEFAULT_RUN_HISTORY: usize = 100;

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
    /// `NotFound` if it is gone), clears any lease on it, and appends `finished` to its run
    /// ledger (dropping the oldest records beyond the history bound), in one atomic write.
    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
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
    /// unleased job, or the earliest lease expiry.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Atomically leases up to `limit` jobs due at `now` (`Job::due_at`) that nobody holds,
    /// earliest due first, increments each one's fencing token, and returns them as claimed.
    async fn claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Stores the steps of claimed jobs: for each step whose stored job still has the version
    /// `job.version - 1`, is held by `lease.owner` and still carries the step's token, replaces
    /// the job, releases the lease, appends the finished runs and stores the events, in one
    /// atomic write per job. Returns the ids written.
    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError>;

    /// The job's finished runs, as recorded (at most the history bound), oldest first.
    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError>;

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
