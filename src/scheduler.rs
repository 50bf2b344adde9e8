//! The scheduler loop: fires due jobs. The store is the truth; nothing is kept in memory.
//!
//! The loop sleeps until the store's earliest due time (at most `idle_poll`, so changes made by
//! other processes on the same store are seen), or until a change wakes it. Then it claims due
//! jobs in batches with a lease and a fencing token, settles each one (`Job::settle`: fires,
//! timeouts, retries, misfires, overlaps) and stores each step only while its claim still
//! holds, then hands on the step's events. If the process dies after the claim, the lease
//! lapses and another loop claims the jobs again; the runs it fires have the same ids.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Job, Limits, policy::name_of},
    jobs::{
        EventRoute,
        ports::{Claim, ClaimedStep, JobStore, Lease, StoreError},
    },
    metrics::{Metrics, runs::Origin},
    runtime::{Backoff, Outage},
    telemetry,
};

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Jobs claimed per store round trip.
    pub batch_size: usize,
    /// How long a claim holds before others may take the jobs.
    pub lease: Duration,
    /// Longest sleep without looking at the store.
    pub idle_poll: Duration,
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
            error_backoff: Duration::from_millis(100),
            limits: Limits::default(),
        }
    }
}

/// One scheduler process's loop.
pub struct Scheduler {
    store: Arc<dyn JobStore>,
    events: EventRoute,
    wake: Arc<Notify>,
    /// Unique per process: who holds the leases this loop takes.
    owner: String,
    settings: SchedulerSettings,
    /// Where claims, refused steps, fires and their lag are counted.
    metrics: Metrics,
}

impl Scheduler {
    /// A loop over `store`, handing events to `events`, woken early by `wake`.
    pub fn new(
        store: Arc<dyn JobStore>,
        events: EventRoute,
        wake: Arc<Notify>,
        settings: SchedulerSettings,
    ) -> Self {
        Self {
            store,
            events,
            wake,
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
        while !shutdown.is_cancelled() {
            let wait = match self.tick().await {
                Ok(wait) => {
                    outage.recovered();
                    wait
                }
                Err(error) => outage.failed(&error),
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => {}
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// Fires one batch of due jobs and returns how long to wait before the next look.
    async fn tick(&self) -> Result<Duration, StoreError> {
        let fired = self.fire_due().await?;
        if fired >= self.settings.batch_size {
            return Ok(Duration::ZERO);
        }
        let now = Utc::now();
        // A due time already past means another loop claimed or holds those jobs just now:
        // look again shortly rather than spin.
        let wait = match self.store.next_due().await? {
            Some(due) => (due - now).to_std().unwrap_or(Duration::from_millis(1)),
            None => self.settings.idle_poll,
        };
        Ok(wait.min(self.settings.idle_poll))
    }

    /// Claims one batch of due jobs, settles each (fires, timeouts, retries, misfires) and
    /// stores the steps while the claims hold; returns how many jobs were claimed.
    pub async fn fire_due(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
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
        let lease = Lease {
            owner: self.owner.clone(),
            until,
        };
        let claims = self
            .store
            .claim_due(&lease, now, self.settings.batch_size)
            .await?;
        if claims.is_empty() {
            return Ok(0);
        }
        let claimed = claims.len();
        let now = Utc::now();
        let mut events = Vec::with_capacity(claimed);
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
                let step_events = step.events();
                let stored = self.events.outbox(&step_events).to_vec();
                events.push((job, step_events));
                ClaimedStep {
                    token,
                    job: step.job,
                    finished: step.finished,
                    events: stored,
                }
            })
            .collect();
        let written: std::collections::HashSet<_> = self
            .store
            .record_steps(&lease, &steps)
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
        let events = events
            .into_iter()
            .filter(|(job, _)| written.contains(&job.id))
            .flat_map(|(job, events)| {
                self.metrics.stored(&job, &events, origin);
                events
            });
        self.events.stored(events).await;
        Ok(claimed)
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
