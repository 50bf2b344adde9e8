//! Lifecycle and run events, the port they leave through, and the in-process bus.
//!
//! Every change the use cases make is described by one [`Event`]. The [`EventSink`] port takes
//! them; [`EventBus`] is the in-process adapter that fans them out to live subscribers (the SSE
//! endpoint and the gRPC watch). A subscriber that falls too far behind misses events and is told
//! so; the bus keeps nothing for subscribers that are not connected.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::{Job, Run};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
    /// A run was fired: executors act on this.
    Run,
    /// A run was closed by its result.
    Finished,
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
        }
    }
}

/// One event: what happened to which job, as the change left it.
#[derive(Debug, Clone, PartialEq)]
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
            time: Utc::now(),
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
