//! The ports the use cases own: the job store (with its event journal) and the durable event
//! publisher. Adapters implement them in `store` and `kafka`; which ones run is chosen once,
//! in `app`.
//!
//! The store is shaped for a document store as much as for SQL: every write touches one job and
//! its runs, conditional writes compare `version`, and the scheduler's claim is one atomic
//! update of due jobs that sets a lease (owner and expiry) and increments the job's fencing
//! token. A job whose lease has not expired cannot be claimed by anyone else, and a step is
//! written only while its claimer still holds the lease with the same token and the job is
//! unchanged since the claim, so two schedulers never fire the same run.
//!
//! A job's open runs live in the job itself; the ledger of finished runs (results, timeouts,
//! skipped, missed and cancelled fires) is appended by the same write and bounded per job.
//!
//! The journal: every write takes the events describing it and stores them in the same atomic
//! write as the change (the same transaction in SQLite, the same document in MongoDB). Stored
//! events get a place in one order that every process sharing the store sees alike (`seq`,
//! from 1, without holes): the embedded store gives it in the write itself, MongoDB when the
//! holder of the relay lease moves a document's pending events into its journal collection
//! ([`JobStore::sequence_events`]). The journal is what event streams resume from and what
//! the relay publishes to Kafka (tracking how far it got with a named cursor); it is trimmed
//! to a retention window, never past what the relay has yet to publish.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::listing::{JobFilter, PageRequest, Weight};
use crate::domain::{Delivery, Event, Job, JobId, JobStatus, JobType, Run};

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
    /// The key the client sent.
    pub key: String,
    /// [`JobSpec::fingerprint`](crate::domain::JobSpec::fingerprint) of the first request.
    pub fingerprint: String,
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
    /// The job as claimed.
    pub job: Job,
    /// Increases on every claim of the job; a step is stored only while the job's token is
    /// still this one, so a replica whose claim was superseded can store nothing.
    pub token: u64,
}

impl Weight for Claim {
    fn weight(&self) -> usize {
        self.job.weight()
    }
}

/// A job the look-ahead read found: when it may first be claimed (its due time, or the end
/// of the lease on it when that is later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The job.
    pub job: JobId,
    /// When a claim of it may first succeed.
    pub at: DateTime<Utc>,
}

/// What a claim by ids took.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The jobs taken, earliest due first.
    pub claims: Vec<Claim>,
    /// Jobs given back unread because the claim's byte budget was spent: still due.
    pub deferred: Vec<JobId>,
}

/// What the scheduler stores for a claimed job: the job as its step left it, the runs it
/// finished (appended to the ledger) and the events that describe it (for the journal).
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    /// The fencing token of the claim the step was settled under.
    pub token: u64,
    /// The job after the step (its version one above the claimed job's).
    pub job: Job,
    /// Runs the step finished, for the ledger.
    pub finished: Vec<Run>,
    /// Events to store with the step.
    pub events: Vec<Event>,
}

/// An event in the journal, at its place in the order every process shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Journaled {
    /// Its place: from 1, one more than the event journaled before it.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

impl Weight for Journaled {
    fn weight(&self) -> usize {
        self.event.weight()
    }
}

/// The ends of the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalBounds {
    /// The oldest event kept (those before it were trimmed); `head + 1` when none is kept.
    pub first: u64,
    /// The newest event's place; 0 before the first event.
    pub head: u64,
}

/// How much of the journal is kept: an event goes once it is more than `events` behind the
/// newest or older than `age`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events kept at most.
    pub events: u64,
    /// Longest an event is kept.
    pub age: chrono::Duration,
}

/// The cursor of the relay's publishing to Kafka: the journal's place up to which every event
/// was published. The census counts the events after it as pending.
pub const PUBLISHED: &str = "kafka";

/// A count of what a store holds, for the metrics' gauges. Each part is one cheap query on
/// an index (a count per status, a range of the due-time index, the pending events), never a scan of
/// every job's document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// Live jobs per status; a status with none may be left out.
    pub jobs: Vec<(JobStatus, u64)>,
    /// Jobs due now (`Job::due_at`) that nobody holds: what the schedulers have yet to claim.
    pub due: u64,
    /// The earliest due time among those.
    pub oldest_due: Option<DateTime<Utc>>,
    /// Events stored and not yet delivered: not yet journaled (MongoDB), or journaled after
    /// the [`PUBLISHED`] cursor, while there is one.
    pub outbox_pending: u64,
    /// When the oldest of those was stored (its event's time).
    pub oldest_event: Option<DateTime<Utc>>,
}

/// Finished runs kept per job when no other bound is configured.
pub const DEFAULT_RUN_HISTORY: usize = 100;

/// The job store port.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new job and the events describing its creation. With an idempotency key,
    /// fails with `DuplicateKey` if the key is taken.
    async fn insert(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// The job created under this idempotency key, and the key's stored fingerprint.
    async fn find_by_idempotency_key(&self, key: &str)
    -> Result<Option<(Job, String)>, StoreError>;

    /// The job, if it exists (a deleted job does not).
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// One page of jobs, newest first, and the number of all matching jobs.
    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError>;

    /// Replaces the job if its stored version is `expected_version` (else `VersionConflict`;
    /// `NotFound` if it is gone), clears any lease on it, appends `finished` to its run
    /// ledger (dropping the oldest records beyond the history bound) and stores `events`, in
    /// one atomic write.
    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// Deletes the job and its runs if its stored version is `expected_version` (else
    /// `VersionConflict`; `NotFound` if it is gone), storing `events`.
    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// The scheduler's look-ahead read: up to `limit` jobs that may become claimable by
    /// `horizon` (due by then and unleased, or due with a lease lapsing by then), earliest due
    /// first, each with the time it may first be claimed. Only ids and times are read.
    async fn due_within(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError>;

    /// Atomically leases those of `ids` that are due at `now` (`Job::due_at`) and that nobody
    /// holds, increments each one's fencing token, and returns them as claimed, earliest due
    /// first, in a fixed number of round trips whatever the number of ids. Ids that are not
    /// claimable are left alone; a job taken but whose document would pass the claim's byte
    /// budget is given back at once and listed in `deferred`, still due.
    async fn claim(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ids: &[JobId],
    ) -> Result<Claimed, StoreError>;

    /// Leases up to `limit` of the jobs due at `now` that nobody holds, earliest due first:
    /// [`due_within`](Self::due_within) `now`, then [`claim`](Self::claim) of what it found.
    async fn claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let due: Vec<JobId> = self
            .due_within(now, limit)
            .await?
            .into_iter()
            .filter(|due| due.at <= now)
            .map(|due| due.job)
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.claim(lease, now, &due).await?.claims)
    }

    /// Stores the steps of claimed jobs: for each step whose stored job still has the version
    /// `job.version - 1`, is held by `lease.owner` and still carries the step's token, replaces
    /// the job, releases the lease, appends the finished runs and stores the events, in one
    /// atomic write per job. Returns the ids written.
    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError>;

    /// Up to `limit` jobs that have an open run going by `delivery` which nobody holds at
    /// `now`, of `job_types` (any type when empty), earliest offered first, within a claim's
    /// byte budget (at least one): what a pulling worker or the webhook caller may take, found
    /// from an index.
    async fn offered(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        job_types: &[JobType],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;

    /// The job's finished runs, as recorded (at most the history bound), oldest first.
    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError>;

    /// Takes or renews the relay lease: true if `lease.owner` holds it until `lease.until`,
    /// false while another owner's lease has not lapsed at `now`.
    async fn take_relay_lease(&self, lease: &Lease, now: DateTime<Utc>)
    -> Result<bool, StoreError>;

    /// Gives up to about `limit` stored events that have no place in the journal yet their
    /// places, one job's in the order of its changes; how many. A store may take the events
    /// this process stored first and the others' (other replicas') within about a second;
    /// a call when this process stored none since the last takes the oldest of every one, or,
    /// when a window read ([`due_within`](Self::due_within)) since the last call looked at
    /// every pending event, the oldest of those it found (the others come in a later call).
    /// Only the holder of the relay lease calls it. A store that journals every event in the
    /// write that stores it has nothing to do.
    async fn sequence_events(&self, limit: usize) -> Result<usize, StoreError>;

    /// Up to `limit` journaled events after place `after`, of every job or of `job` only, in
    /// order; fewer when they pass a page's byte budget (at least one).
    async fn read_journal(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError>;

    /// The journal's ends.
    async fn journal_bounds(&self) -> Result<JournalBounds, StoreError>;

    /// Drops the events `retention` no longer keeps at `now`, but none after place `floor`;
    /// how many went.
    async fn trim_journal(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Where the cursor `name` stands in the journal; 0 when it was never set.
    async fn cursor(&self, name: &str) -> Result<u64, StoreError>;

    /// Moves the cursor `name` to `seq`.
    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError>;

    /// Counts jobs per status, the jobs due at `now` that nobody holds and the pending
    /// events, from indexes only: cheap with a million jobs stored.
    async fn census(&self, now: DateTime<Utc>) -> Result<Census, StoreError>;
}

/// A durable event sink (the Kafka producer), fed by the relay from the journal.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes the events, in the given order per job, and says for each whether the sink
    /// acknowledged it.
    async fn publish(&self, events: &[Event]) -> Vec<anyhow::Result<()>>;

    /// Succeeds when the sink answers.
    async fn ping(&self) -> anyhow::Result<()>;
}
