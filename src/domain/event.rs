//! Events: what happened to a job, as the change left it. Every change the use cases and the
//! scheduler make is described by events; where they go is not the core's concern.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{audit::Audit, job::Job, run::Run, time::truncate};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A job was created.
    Created,
    /// A job's editable fields were changed.
    Updated,
    /// A job was deleted (the event carries it as it was).
    Deleted,
    /// A run was fired: executors act on this.
    Run,
    /// A run reached a final status: its result, a timeout, or a fire recorded as skipped,
    /// missed or cancelled.
    Finished,
    /// A job was paused.
    Paused,
    /// A paused job was resumed.
    Resumed,
    /// A job was cancelled.
    Cancelled,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 8] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::Run,
        Self::Finished,
        Self::Paused,
        Self::Resumed,
        Self::Cancelled,
    ];

    /// The CloudEvents `type` of the event: `scheduler.job.` and its name.
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

    /// Its name: what older consumers see in a Kafka payload's `Event` field.
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

    /// The kind of this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One event: what happened to which job, as the change left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique per event (the CloudEvents `id`).
    pub id: Uuid,
    /// What happened.
    pub kind: EventKind,
    /// When, to the millisecond.
    pub time: DateTime<Utc>,
    /// The job after the change (before it, for a deletion).
    pub job: Job,
    /// The run, for `Run` and `Finished`.
    pub run: Option<Run>,
    /// Who caused it through the API; `None` for the scheduler's own events and without auth.
    pub actor: Option<String>,
    /// Why, as that caller said.
    pub reason: Option<String>,
    /// The W3C `traceparent` of the change that made it (a request or a fire), while tracing
    /// is on: its Kafka message continues that trace.
    pub trace: Option<String>,
}

impl Event {
    /// A new event, now, with a new id.
    pub fn new(kind: EventKind, job: Job, run: Option<Run>) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind,
            time: truncate(Utc::now()),
            job,
            run,
            actor: None,
            reason: None,
            trace: None,
        }
    }

    /// The event, caused by the actor of `audit` for its reason.
    pub fn attributed(mut self, audit: &Audit) -> Self {
        self.actor.clone_from(&audit.actor);
        self.reason.clone_from(&audit.reason);
        self.trace.clone_from(&audit.trace);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_name_and_type() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.ce_type(), format!("scheduler.job.{}", kind.name()));
        }
        assert_eq!(EventKind::from_name("exploded"), None);
    }
}
