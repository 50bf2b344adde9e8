//! The store as the metrics see it: [`MeteredStore`] times every operation of the store it
//! wraps (`scheduler_store_operation_duration_seconds`), and [`Counting`] refreshes the
//! gauges of what the store holds from its `census` (jobs per status, the due backlog, the
//! outbox) when a scrape asks, at most once per refresh interval.
//!
//! It decides nothing and changes nothing: every call goes to the wrapped store as it came.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::{
    domain::{Delivery, Event, Job, JobId, JobType, Run},
    jobs::{
        listing::{JobFilter, PageRequest},
        ports::{
            Census, Claimed, ClaimedStep, Due, IdempotencyKey, JobStore, JournalBounds, Journaled,
            Lease, Retention, StoreError,
        },
    },
    metrics::{Metrics, StoreOperation, scrape::Recount},
};

/// A store whose every operation is timed.
pub struct MeteredStore {
    inner: Arc<dyn JobStore>,
    metrics: Metrics,
}

impl MeteredStore {
    /// `inner`, timed into `metrics`.
    pub fn new(inner: Arc<dyn JobStore>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(&self, operation: StoreOperation, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let result = call.await;
        self.metrics.store_operation(operation, start.elapsed());
        result
    }
}

#[async_trait]
impl JobStore for MeteredStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(StoreOperation::Ping, self.inner.ping()).await
    }

    async fn insert(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let call = self.inner.insert(job, idempotency, events);
        self.timed(StoreOperation::Insert, call).await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        let call = self.inner.find_by_idempotency_key(key);
        self.timed(StoreOperation::FindByIdempotencyKey, call).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.timed(StoreOperation::Get, self.inner.get(id)).await
    }

    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        self.timed(StoreOperation::List, self.inner.list(filter, page))
            .await
    }

    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        events: &[Event],
    ) -> Result<(), StoreError> {
        let call = self.inner.update(job, expected_version, finished, events);
        self.timed(StoreOperation::Update, call).await
    }

    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let call = self.inner.delete(id, expected_version, events);
        self.timed(StoreOperation::Delete, call).await
    }

    async fn due_within(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let call = self.inner.due_within(horizon, limit);
        self.timed(StoreOperation::DueWithin, call).await
    }

    async fn claim(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ids: &[JobId],
    ) -> Result<Claimed, StoreError> {
        let call = self.inner.claim(lease, now, ids);
        self.timed(StoreOperation::Claim, call).await
    }

    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        let call = self.inner.record_steps(lease, steps);
        self.timed(StoreOperation::RecordSteps, call).await
    }

    async fn offered(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        job_types: &[JobType],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let call = self.inner.offered(delivery, now, job_types, limit);
        self.timed(StoreOperation::Offered, call).await
    }

    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        self.timed(StoreOperation::RunHistory, self.inner.run_history(job))
            .await
    }

    async fn take_relay_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let call = self.inner.take_relay_lease(lease, now);
        self.timed(StoreOperation::TakeRelayLease, call).await
    }

    async fn sequence_events(&self, limit: usize) -> Result<usize, StoreError> {
        let call = self.inner.sequence_events(limit);
        self.timed(StoreOperation::SequenceEvents, call).await
    }

    async fn read_journal(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError> {
        let call = self.inner.read_journal(after, job, limit);
        self.timed(StoreOperation::ReadJournal, call).await
    }

    async fn journal_bounds(&self) -> Result<JournalBounds, StoreError> {
        let call = self.inner.journal_bounds();
        self.timed(StoreOperation::JournalBounds, call).await
    }

    async fn trim_journal(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let call = self.inner.trim_journal(retention, floor, now);
        self.timed(StoreOperation::TrimJournal, call).await
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        self.timed(StoreOperation::Cursor, self.inner.cursor(name))
            .await
    }

    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        let call = self.inner.set_cursor(name, seq);
        self.timed(StoreOperation::SetCursor, call).await
    }

    async fn census(&self, now: DateTime<Utc>) -> Result<Census, StoreError> {
        self.timed(StoreOperation::Census, self.inner.census(now))
            .await
    }
}

/// Counts what a store holds into the gauges when a scrape asks, at most once per `every`:
/// an idle replica nobody scrapes counts nothing, and scrapes however frequent cost at most
/// one census per interval.
pub struct Counting {
    store: Arc<dyn JobStore>,
    every: Duration,
    /// When the last count started. Held across a count, so scrapes that arrive together
    /// wait for one count and all render it.
    last: tokio::sync::Mutex<Option<Instant>>,
}

/// The longest a scrape waits for the census; a slower count keeps the last values.
const MOST_WAIT: Duration = Duration::from_secs(5);

impl Counting {
    /// Counts `store`, at most once per `every`.
    pub fn new(store: Arc<dyn JobStore>, every: Duration) -> Self {
        Self {
            store,
            every,
            last: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl Recount for Counting {
    /// A failed or slow count keeps the last values and is logged at DEBUG: the scheduler's
    /// own outage log already tells of an unreachable store.
    async fn recount(&self, metrics: &Metrics) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        *last = Some(Instant::now());
        let now = Utc::now();
        match tokio::time::timeout(MOST_WAIT, self.store.census(now)).await {
            Ok(Ok(census)) => {
                let age = |at: Option<DateTime<Utc>>| {
                    at.and_then(|at| (now - at).to_std().ok())
                        .unwrap_or_default()
                };
                metrics.jobs_counted(&census.jobs);
                metrics.due_counted(census.due, age(census.oldest_due));
                metrics.outbox_counted(census.outbox_pending, age(census.oldest_event));
            }
            Ok(Err(error)) => {
                tracing::debug!(error = ?error, "the store could not be counted for the metrics");
            }
            Err(_) => tracing::debug!(
                waited = ?MOST_WAIT,
                "the store's census took too long; the metrics keep the last count"
            ),
        }
    }
}
