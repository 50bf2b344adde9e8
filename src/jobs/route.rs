//! Where the use cases and the scheduler hand their events on.

use std::sync::Arc;

use tokio::sync::Notify;

use super::ports::EventSink;
use crate::domain::{Event, EventKind};

/// An event always goes to the live sink once its change is stored. When a durable sink
/// (Kafka) is configured, the event is also stored in the outbox with the change itself, and
/// the relay is woken to publish it.
#[derive(Clone)]
pub struct EventRoute {
    live: Arc<dyn EventSink>,
    /// Wakes the outbox relay; `None` when no durable sink is configured.
    relay: Option<Arc<Notify>>,
}

impl EventRoute {
    /// Events go to `live` only.
    pub fn live_only(live: Arc<dyn EventSink>) -> Self {
        Self { live, relay: None }
    }

    /// Events go to `live`, and through the outbox to the relay that `relay` wakes.
    pub fn with_outbox(live: Arc<dyn EventSink>, relay: Arc<Notify>) -> Self {
        Self {
            live,
            relay: Some(relay),
        }
    }

    /// What to store in the outbox with the change `events` describe: all of them, or none
    /// when no durable sink is configured.
    pub fn outbox<'a>(&self, events: &'a [Event]) -> &'a [Event] {
        if self.relay.is_some() { events } else { &[] }
    }

    /// Whether events are stored in the outbox.
    pub fn uses_outbox(&self) -> bool {
        self.relay.is_some()
    }

    /// Hands on events whose changes (and outbox entries) are stored.
    pub async fn stored(&self, events: impl IntoIterator<Item = Event>) {
        if let Some(relay) = &self.relay {
            relay.notify_one();
        }
        for event in events {
            log_run(&event);
            self.live.publish(event).await;
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
