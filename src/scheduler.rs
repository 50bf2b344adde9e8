//! The scheduler loop: fires due jobs. The store is the truth; memory holds only hints.
//!
//! Every `idle_poll` (one query a second by default), the loop reads the window: every job
//! that may become claimable within `lookahead`, as ids and due times only, kept as
//! [`DueHints`]. At each hinted due time it claims those jobs by id, in a fixed number of
//! store round trips per batch, settles each one (`Job::settle`: fires, timeouts, retries,
//! misfires, overlaps), stores each step only while its claim still holds, and hands on the
//! step's events. A step's next due time, and those of this process's creates and updates,
//! become hints with no query; another replica's changes are seen at the next window read, at
//! most `idle_poll` later. A hint for a job that changed or that another replica took simply
//! fails its claim. If the process dies after a claim, the lease lapses, the next window read
//! of any replica finds the job again, and the runs it fires have the same ids.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Job, Limits, policy::name_of},
    jobs::{
        EventRoute,
        hints::DueHints,
        ports::{Claim, Claimed, ClaimedStep, JobStore, Lease, StoreError},
    },
    metrics::{Metrics, runs::Origin},
    runtime::{Backoff, Outage},
    telemetry,
};

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Jobs claimed per batch.
    pub batch_size: usize,
    /// How long a claim holds before others may take the jobs.
    pub lease: Duration,
    /// How often the window is read: the longest before another replica's change is seen.
    pub idle_poll: Duration,
    /// How far ahead a window read looks; at least `idle_poll`, so that a job due after the
    /// next read is already hinted when its time comes.
    pub lookahead: Duration,
    /// Most jobs one window read takes; when more are due, the next read follows as soon as
    /// the hints it gave are spent.
    pub window_jobs: usize,
    /// First wait after a store error; doubles up to `idle_poll * 10`.
    pub error_backoff: Duration,
    /// Misfire threshold and catch-up bounds.
    pub limits: Limits,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            batch_size: 200,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_secs(1),
            lookahead: Duration::from_secs(5),
            window_jobs: 10_000,
            error_backoff: Duration::from_millis(100),
            limits: Limits::default(),
        }
    }
}

/// One scheduler process's loop.
pub struct Scheduler {
    store: Arc<dyn JobStore>,
    events: EventRoute,
    hints: Arc<DueHints>,
    /// Unique per process: who holds the leases this loop takes.
    owner: String,
    settings: SchedulerSettings,
    /// Where claims, refused steps, fires and their lag are counted.
    metrics: Metrics,
}

/// When the window is read next.
#[derive(Debug, Clone, Copy)]
struct NextRead {
    /// At the latest then.
    at: DateTime<Utc>,
    /// Or as soon as no hint is due, when the last read was cut at `window_jobs`.
    when_spent: bool,
}

impl Scheduler {
    /// A loop over `store`, handing events to `events`, with the due times this process's
    /// writes make coming in through `hints`.
    pub fn new(
        store: Arc<dyn JobStore>,
        events: EventRoute,
        hints: Arc<DueHints>,
        settings: SchedulerSettings,
    ) -> Self {
        Self {
            store,
            events,
            hints,
            owner: format!("scheduler-{}", uuid::Uuid::new_v4()),
            settings,
            metrics: Metrics::off(),
        }
    }

    /// The same loop, counting what it claims and stores into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` is cancelled; a fire batch under way is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(owner = %self.owner, "scheduler started");
        let mut outage = Outage::new(
            "the scheduler cannot reach the job store; retrying with backoff",
            "the job store is reachable again; scheduling resumed",
            Backoff::new(self.settings.error_backoff, self.settings.idle_poll * 10),
        );
        let mut next_read = NextRead {
            at: Utc::now(),
            when_spent: false,
        };
        while !shutdown.is_cancelled() {
            let wait = match self.tick(&mut next_read).await {
                Ok(wait) => {
                    outage.recovered();
                    wait
                }
                Err(error) => {
                    // Whatever failed, the window is read again before the hints are trusted.
                    next_read.at = Utc::now();
                    outage.failed(&error)
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.hints.earlier() => {}
                () = shutdown.cancelled() => {}
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// Reads the window when it is time, fires one batch of due hints, and returns how long to
    /// wait before the next look.
    async fn tick(&self, next_read: &mut NextRead) -> Result<Duration, StoreError> {
        let now = Utc::now();
        let spent = self.hints.earliest().is_none_or(|at| at > now);
        if now >= next_read.at || (next_read.when_spent && spent) {
            *next_read = self.read_window(now).await?;
        }
        if self.fire_hinted().await? {
            return Ok(Duration::ZERO);
        }
        let now = Utc::now();
        if next_read.when_spent && self.hints.earliest().is_none_or(|at| at > now) {
            return Ok(Duration::ZERO);
        }
        let until = self
            .hints
            .earliest()
            .map_or(next_read.at, |at| at.min(next_read.at));
        // Rounded up to the next millisecond: a claim at a hint's time must find the job due,
        // and the stores keep times to the millisecond.
        Ok((until - now)
            .to_std()
            .map_or(Duration::ZERO, |wait| wait + Duration::from_millis(1)))
    }

    /// One window read: everything that may become claimable within the lookahead.
    async fn read_window(&self, now: DateTime<Utc>) -> Result<NextRead, StoreError> {
        let lookahead =
            chrono::Duration::from_std(self.settings.lookahead.max(self.settings.idle_poll))
                .unwrap_or(chrono::Duration::MAX);
        let horizon = now
            .checked_add_signed(lookahead)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let limit = self.settings.window_jobs.max(self.settings.batch_size);
        let found = self.store.due_within(horizon, limit).await?;
        let cut = found.len() >= limit;
        // A cut read is complete only up to the last due time it saw.
        let complete = match found.last() {
            Some(last) if cut => last.at.min(horizon),
            _ => horizon,
        };
        self.hints.read(&found, complete);
        let poll = chrono::Duration::from_std(self.settings.idle_poll).unwrap_or(lookahead);
        Ok(NextRead {
            at: now + poll,
            when_spent: cut,
        })
    }

    /// Claims the jobs hinted due now, one batch, and fires them. Returns whether to look
    /// again at once: the batch was full, or due jobs were given back for the claim's byte
    /// budget (and hinted again).
    async fn fire_hinted(&self) -> Result<bool, StoreError> {
        let now = Utc::now();
        let ids = self.hints.take_due(now, self.settings.batch_size);
        if ids.is_empty() {
            return Ok(false);
        }
        let lease = self.lease(now)?;
        let Claimed { claims, deferred } = self.store.claim(&lease, now, &ids).await?;
        for job in &deferred {
            self.hints.offer(*job, Some(now));
        }
        self.settle(&lease, claims).await?;
        Ok(ids.len() >= self.settings.batch_size || !deferred.is_empty())
    }

    /// A lease from `now` for the configured time.
    fn lease(&self, now: DateTime<Utc>) -> Result<Lease, StoreError> {
        // The configured lease is bounded (see `config`); a lease beyond what times can hold
        // would be a bug, refused as a store fault rather than an overflow.
        let until = chrono::Duration::from_std(self.settings.lease)
            .ok()
            .and_then(|lease| now.checked_add_signed(lease))
            .ok_or_else(|| {
                StoreError::Internal(anyhow::anyhow!(
                    "a lease of {:?} cannot be expressed",
                    self.settings.lease
                ))
            })?;
        Ok(Lease {
            owner: self.owner.clone(),
            until,
        })
    }

    /// Settles each claimed job (fires, timeouts, retries, misfires), stores the steps while
    /// the claims hold, hints the jobs' next due times and hands on the events.
    async fn settle(&self, lease: &Lease, claims: Vec<Claim>) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let claimed = claims.len();
        let now = Utc::now();
        let mut before = Vec::with_capacity(claimed);
        let mut fires = Vec::new();
        let steps: Vec<ClaimedStep> = claims
            .into_iter()
            .map(|Claim { job, token }| {
                let mut step = job.settle(now, &self.settings.limits, rand::random());
                if telemetry::is_on() && step.fires() {
                    let span = fire_span(&job);
                    step = step.traced(telemetry::traceparent_of(&span));
                    fires.push((job.id, span));
                }
                let events = step.events();
                before.push(job);
                ClaimedStep {
                    token,
                    job: step.job,
                    finished: step.finished,
                    events,
                }
            })
            .collect();
        let written: std::collections::HashSet<_> = self
            .store
            .record_steps(lease, &steps)
            .await?
            .into_iter()
            .collect();
        // A fire span ends with its write; a refused one fired nothing.
        for (id, span) in fires {
            span.record("scheduler.step.stored", written.contains(&id));
        }
        // A step the store refused lost its claim (fence, lease or version): counted apart.
        self.metrics
            .claimed(claimed, claimed.saturating_sub(written.len()));
        let origin = Origin::Scheduler {
            misfire_threshold: self.settings.limits.misfire_threshold,
        };
        for step in steps.iter().filter(|step| written.contains(&step.job.id)) {
            self.hints.offer(step.job.id, step.job.due_at());
        }
        for (job, step) in before.iter().zip(&steps) {
            if written.contains(&job.id) {
                self.metrics.stored(job, &step.events, origin);
                self.events.stored(&step.events);
            }
        }
        Ok(())
    }
}

/// The span of a fire: the root of a trace of its own (a fire is caused by time, not by the
/// request that last changed the job, which it links to instead). Its run messages carry it,
/// so an executor's work and its result join this trace.
fn fire_span(job: &Job) -> tracing::Span {
    let job_type = name_of(&job.job_type);
    let span = tracing::info_span!(
        parent: None,
        "fire",
        otel.name = format!("fire {job_type}"),
        otel.kind = "internal",
        scheduler.job.id = %job.id,
        scheduler.job.type = job_type,
        scheduler.step.stored = tracing::field::Empty,
    );
    telemetry::link(&span, job.trace.as_deref());
    span
}
