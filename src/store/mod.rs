//! The job store port, owned by the core, and its adapters.
//!
//! The trait is shaped for a document store as much as for SQL: every write touches one job and
//! its runs, conditional writes compare `version`, and the scheduler's claim is one atomic
//! update of due jobs that sets a lease (owner and expiry). A job whose lease has not expired
//! cannot be claimed by anyone else, and a fire is written only while its claimer still holds
//! the lease and the job is unchanged since the claim, so two schedulers never fire the same run.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Job, JobId, JobStatus, JobType, Run, RunId};

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
    ) -> Result<(), StoreError>;

    /// Deletes the job and its runs; returns the deleted job.
    async fn delete(&self, id: JobId) -> Result<Option<Job>, StoreError>;

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

    /// Writes fires of claimed jobs: for each `(job, run)` where the stored job still has the
    /// version `job.version - 1` and is held by `lease.owner`, replaces the job, releases the
    /// lease and inserts the run, in one atomic write per job. Returns the ids written.
    async fn record_fires(
        &self,
        lease: &Lease,
        fires: &[(Job, Run)],
    ) -> Result<Vec<JobId>, StoreError>;

    async fn get_run(&self, job: JobId, run: RunId) -> Result<Option<Run>, StoreError>;

    /// One page of a job's runs, newest first, and the number of its runs.
    async fn list_runs(&self, job: JobId, page: PageRequest)
    -> Result<(Vec<Run>, u64), StoreError>;
}
