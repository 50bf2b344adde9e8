//! The scheduler loop: fires due jobs. The store is the truth; nothing is kept in memory.
//!
//! The loop sleeps until the store's earliest due time (at most `idle_poll`, so changes made by
//! other processes on the same store are seen), or until a create or update wakes it. Then it
//! claims due jobs in batches with a lease, records each fire (a run with a deterministic id and
//! the job set RUNNING) only while it still holds the lease, and publishes a run event per fire.
//! If the process dies after the claim, the lease lapses and another loop claims the jobs again.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    events::{Event, EventKind, EventRoute},
    store::{Fire, JobStore, Lease, StoreError},
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
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            batch_size: 200,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_secs(1),
            error_backoff: Duration::from_millis(100),
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
}

impl Scheduler {
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
        }
    }

    /// Runs until `shutdown` is cancelled; a fire batch under way is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(owner = %self.owner, "scheduler started");
        let mut backoff = self.settings.error_backoff;
        let mut failing = false;
        while !shutdown.is_cancelled() {
            let wait = match self.tick().await {
                Ok(wait) => {
                    if failing {
                        tracing::info!("job store reachable again; scheduling resumed");
                        failing = false;
                    }
                    backoff = self.settings.error_backoff;
                    wait
                }
                Err(error) => {
                    if !failing {
                        tracing::error!(error = ?error, "scheduler cannot reach the job store; retrying with backoff");
                        failing = true;
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.settings.idle_poll * 10);
                    wait
                }
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

    /// Claims, records and publishes one batch of due fires; returns how many were claimed.
    pub async fn fire_due(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let lease = Lease {
            owner: self.owner.clone(),
            until: now
                + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX),
        };
        let claimed = self
            .store
            .claim_due(&lease, now, self.settings.batch_size)
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let fired_at = Utc::now();
        let fires: Vec<Fire> = claimed
            .iter()
            .map(|job| {
                let (job, run) = job.fired(fired_at);
                // Made here only when it goes into the outbox; else once the fire is written.
                let event = self
                    .events
                    .uses_outbox()
                    .then(|| Event::new(EventKind::Run, job.clone(), Some(run.clone())));
                Fire { job, run, event }
            })
            .collect();
        let written: std::collections::HashSet<_> = self
            .store
            .record_fires(&lease, &fires)
            .await?
            .into_iter()
            .collect();
        let events = fires
            .into_iter()
            .filter(|fire| written.contains(&fire.job.id))
            .map(|Fire { job, run, event }| {
                tracing::debug!(job = %job.id, run = %run.run_id, "fired");
                event.unwrap_or_else(|| Event::new(EventKind::Run, job, Some(run)))
            });
        self.events.stored(events).await;
        Ok(claimed.len())
    }
}
