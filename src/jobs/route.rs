//! What happens once a change and its events are stored: who is told.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::domain::{Event, EventKind};

/// Every event is stored with its change, in the journal (see `ports`); once it is, this
/// process's event feed and relay are woken to read it, and a run fired wakes whoever waits
/// for runs.
#[derive(Clone, Default)]
pub struct EventRoute {
    /// Wakes the feed that hands journaled events to this process's event streams.
    feed: Arc<Notify>,
    /// Wakes the relay, which journals (MongoDB) and publishes (Kafka) stored events.
    relay: Arc<Notify>,
    /// Wakes every claim waiting for runs when this process fires one.
    fired: Arc<Notify>,
}

impl EventRoute {
    /// Stored events wake `feed` and `relay`.
    pub fn new(feed: Arc<Notify>, relay: Arc<Notify>) -> Self {
        Self {
            feed,
            relay,
            fired: Arc::default(),
        }
    }

    /// Resolves once this process stores the fire of a run after the call (it listens from
    /// the call on, not from its first poll).
    pub fn runs_fired(&self) -> tokio::sync::futures::OwnedNotified {
        self.fired.clone().notified_owned()
    }

    /// Tells that events whose changes are stored with them: one INFO line per fire and end
    /// of a run, and a wake for the feed and the relay.
    pub fn stored<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let (mut any, mut fired) = (false, false);
        for event in events {
            any = true;
            fired |= event.kind == EventKind::Run;
            log_run(event);
        }
        if any {
            self.relay.notify_one();
            self.feed.notify_one();
        }
        if fired {
            self.fired.notify_waiters();
        }
    }
}

/// One INFO line for each fire (a retry when it is not the run's first attempt) and each end
/// of a run (its result, a timeout, a fire recorded as skipped, missed or cancelled), with the
/// job and run ids: what an operator greps for first. Nothing of the job's data or of the
/// executor's error and output, which may hold what a log must not.
fn log_run(event: &Event) {
    let Some(run) = &event.run else { return };
    let (job_id, run_id, attempt) = (event.job.id, run.run_id, run.attempt);
    match event.kind {
        EventKind::Run if attempt > 1 => tracing::info!(%job_id, %run_id, attempt,
            scheduled_for = %run.scheduled_for, "run retried"),
        EventKind::Run => tracing::info!(%job_id, %run_id, attempt,
            scheduled_for = %run.scheduled_for, "run fired"),
        EventKind::Finished => tracing::info!(%job_id, %run_id, attempt,
            status = %crate::domain::name_of(&run.status), reason = event.reason.as_deref(), "run finished"),
        _ => {}
    }
}
