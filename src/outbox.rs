//! The outbox relay: publishes stored events to a durable sink, at least once, in order per job.
//!
//! Every change is stored with its event (see `jobs::ports`). The relay reads pending events in store
//! order, hands them to the [`Publisher`], and removes from the outbox only those the sink
//! acknowledged. A sink outage fails no API call: events wait in the store and go out when the
//! sink is back. If the process dies between publishing and marking, the events go out again
//! with the same ids (CloudEvents `ce_id`), so consumers can drop the copies.
//!
//! One relay runs at a time per store: each process's relay takes the store's relay lease
//! before reading, and renews it while it works. The others wait and take over when it lapses.
//! The relay is woken by its own process's writes, and looks every `poll` for events written by
//! other processes.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Event, JobId},
    jobs::ports::{JobStore, Lease, Publisher, StoreError},
    runtime::{Backoff, Outage},
};

/// How the relay behaves.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Events read per store round trip.
    pub batch_size: usize,
    /// How often to look for events written by other processes, and to retry the lease.
    pub poll: Duration,
    /// How long the relay lease holds without renewal.
    pub lease: Duration,
    /// First wait after the sink or the store failed; doubles with each further failure.
    pub first_backoff: Duration,
    /// Longest wait between attempts while the sink or the store fails.
    pub max_backoff: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll: Duration::from_millis(200),
            lease: Duration::from_secs(10),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// One process's relay.
pub struct Relay {
    store: Arc<dyn JobStore>,
    publisher: Arc<dyn Publisher>,
    /// Notified whenever this process stores an event.
    wake: Arc<Notify>,
    /// Unique per process: who holds the relay lease.
    owner: String,
    settings: RelaySettings,
}

/// What one round of the relay did.
enum Round {
    /// Another process holds the relay lease.
    NotLeader,
    /// Nothing was pending.
    Idle,
    /// Some events went out; more may be pending.
    Published,
    /// The sink refused some events; they stay pending.
    SinkFailed(anyhow::Error),
}

impl Relay {
    /// A relay from `store` to `publisher`, woken by `wake` when this process stores events.
    pub fn new(
        store: Arc<dyn JobStore>,
        publisher: Arc<dyn Publisher>,
        wake: Arc<Notify>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            store,
            publisher,
            wake,
            owner: format!("relay-{}", uuid::Uuid::new_v4()),
            settings,
        }
    }

    /// Runs until `shutdown` is cancelled; then gives up the lease so another process takes
    /// over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = || Backoff::new(self.settings.first_backoff, self.settings.max_backoff);
        let mut sink = Outage::new(
            "cannot publish events; they wait in the outbox and are retried",
            "publishing events again",
            backoff(),
        );
        let mut store = Outage::new(
            "the outbox relay cannot reach the job store; retrying",
            "the outbox relay reaches the job store again",
            backoff(),
        );
        let mut leader = false;
        let mut held_until = None;
        while !shutdown.is_cancelled() {
            let wait = match self.round(&mut held_until).await {
                Ok(round) => {
                    store.recovered();
                    let is_leader = !matches!(round, Round::NotLeader);
                    if is_leader != leader {
                        tracing::info!(owner = %self.owner, leader = is_leader, "outbox relay lease");
                        leader = is_leader;
                    }
                    match round {
                        Round::SinkFailed(error) => sink.failed(&error),
                        Round::Published => {
                            sink.recovered();
                            Duration::ZERO
                        }
                        Round::Idle => {
                            sink.recovered();
                            self.settings.poll
                        }
                        Round::NotLeader => self.settings.poll,
                    }
                }
                Err(error) => store.failed(&error),
            };
            if wait.is_zero() {
                continue;
            }
            // While failing, the backoff decides when to try again, not this process's writes.
            let failing = sink.is_failing() || store.is_failing();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified(), if !failing => {}
                () = shutdown.cancelled() => {}
            }
        }
        if leader {
            let now = Utc::now();
            let release = Lease {
                owner: self.owner.clone(),
                until: now,
            };
            if let Err(error) = self.store.take_relay_lease(&release, now).await {
                tracing::warn!(error = ?error, "could not give up the outbox relay lease; it lapses by itself");
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Takes or renews the lease (renewing only once half of it has passed, so a busy relay
    /// does not write to the store for every batch), publishes one batch and marks what the
    /// sink acknowledged.
    async fn round(
        &self,
        held_until: &mut Option<chrono::DateTime<Utc>>,
    ) -> Result<Round, StoreError> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        if held_until.is_none_or(|until| until - now < lease / 2) {
            *held_until = None;
            let until = now + lease;
            let taken = Lease {
                owner: self.owner.clone(),
                until,
            };
            if !self.store.take_relay_lease(&taken, now).await? {
                return Ok(Round::NotLeader);
            }
            *held_until = Some(until);
        }
        let events = self.store.pending_events(self.settings.batch_size).await?;
        if events.is_empty() {
            return Ok(Round::Idle);
        }
        let results = self.publisher.publish(&events).await;
        let (delivered, failure) = acknowledged(&events, results);
        self.store.mark_delivered(&delivered).await?;
        Ok(match failure {
            Some(error) => Round::SinkFailed(error),
            None => Round::Published,
        })
    }
}

/// The events that may be marked delivered: acknowledged, and with no earlier event of the
/// same job unacknowledged (that one goes out again first, then these again, in order).
fn acknowledged(
    events: &[Event],
    results: Vec<anyhow::Result<()>>,
) -> (Vec<(JobId, uuid::Uuid)>, Option<anyhow::Error>) {
    let mut blocked: HashSet<JobId> = HashSet::new();
    let mut delivered = Vec::with_capacity(events.len());
    let mut failure = None;
    for (event, result) in events.iter().zip(results) {
        let job = event.job.id;
        match result {
            Ok(()) if !blocked.contains(&job) => delivered.push((job, event.id)),
            Ok(()) => {}
            Err(error) => {
                blocked.insert(job);
                failure.get_or_insert(error);
            }
        }
    }
    (delivered, failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Job, JobInput};

    fn event_of(job: &Job) -> Event {
        Event::new(EventKind::Updated, job.clone(), None)
    }

    #[test]
    fn a_failed_event_holds_back_the_later_events_of_its_job_only() {
        let input: JobInput = serde_json::from_value(serde_json::json!({
            "name": "report", "jobType": "SMS", "jobData": {},
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }))
        .unwrap();
        let a = Job::new(input.clone().parse().unwrap(), Utc::now());
        let b = Job::new(input.parse().unwrap(), Utc::now());
        let events = vec![event_of(&a), event_of(&b), event_of(&a), event_of(&b)];
        let results = vec![Err(anyhow::anyhow!("timed out")), Ok(()), Ok(()), Ok(())];
        let (delivered, failure) = acknowledged(&events, results);
        assert_eq!(delivered, vec![(b.id, events[1].id), (b.id, events[3].id)]);
        assert!(failure.is_some());
    }
}
