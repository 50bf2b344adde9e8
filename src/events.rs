//! Lifecycle and run events, the port they leave through, and the in-process bus.
//!
//! Every change the use cases make is described by one [`Event`]. The [`EventSink`] port takes
//! them; [`EventBus`] is the in-process adapter that fans them out to live subscribers (the SSE
//! endpoint and the gRPC watch). A subscriber that falls too far behind misses events and is told
//! so; the bus keeps nothing for subscribers that are not connected.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::{
    domain::{Job, Run},
    store::Outbox,
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
    /// A run was fired: executors act on this.
    Run,
    /// A run reached a final status: its result, a timeout, or a fire recorded as skipped,
    /// missed or cancelled.
    Finished,
    Paused,
    Resumed,
    Cancelled,
}

impl EventKind {
    /// The CloudEvents `type` of the event.
    pub fn ce_type(self) -> &'static str {
        match self {
            Self::Created => "scheduler.job.created",
            Self::Updated => "scheduler.job.updated",
            Self::Deleted => "scheduler.job.deleted",
            Self::Run => "scheduler.job.run",
            Self::Finished => "scheduler.job.finished",
            Self::Paused => "scheduler.job.paused",
            Self::Resumed => "scheduler.job.resumed",
            Self::Cancelled => "scheduler.job.cancelled",
        }
    }

    /// The name older consumers see in a Kafka payload's `Event` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Run => "run",
            Self::Finished => "finished",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One event: what happened to which job, as the change left it. Events are stored in the
/// outbox as JSON of this shape, so it changes only in ways old rows still decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique per event (the CloudEvents `id`).
    pub id: Uuid,
    pub kind: EventKind,
    pub time: DateTime<Utc>,
    /// The job after the change (before it, for a deletion).
    pub job: Job,
    /// The run, for `Run` and `Finished`.
    pub run: Option<Run>,
}

impl Event {
    pub fn new(kind: EventKind, job: Job, run: Option<Run>) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind,
            time: crate::domain::truncate(Utc::now()),
            job,
            run,
        }
    }
}

/// Where events go.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn publish(&self, event: Event);
}

/// Where the use cases and the scheduler hand their events on. An event always goes to the
/// in-process sink once its change is stored. When a durable sink (Kafka) is configured, the
/// event is also stored in the outbox with the change itself, and the relay is woken to publish
/// it.
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

    /// What to store in the outbox with the change `events` describe.
    pub fn outbox<'a>(&self, events: &'a [Event]) -> Outbox<'a> {
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
            self.live.publish(event).await;
        }
    }
}

/// The in-process event bus.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// A bus that holds up to `capacity` events for each slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }

    /// A live subscription from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

#[async_trait]
impl EventSink for EventBus {
    async fn publish(&self, event: Event) {
        // No subscribers is not an error: the bus keeps nothing.
        let _ = self.sender.send(Arc::new(event));
    }
}
