//! The in-process event bus: the live [`EventSink`] adapter, and the one stream that feeds both
//! the SSE endpoint and the gRPC watch.
//!
//! The bus fans events out to live subscribers. A subscriber that falls too far behind misses
//! events and is told so ([`Watched::Lagged`]); the bus keeps nothing for subscribers that are
//! not connected.

use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Event, JobId},
    jobs::ports::EventSink,
};

/// The in-process event bus.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Watched {
    /// The next event it asked for.
    Event(Arc<Event>),
    /// It fell this many events behind and missed them; it should read the state again.
    Lagged(u64),
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

    /// The events from now on, of job `only` or of every job, until `shutdown` is cancelled.
    /// Subscribes at once, so nothing stored after the call is missed.
    pub fn watch(
        &self,
        only: Option<JobId>,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Watched> + Send + use<> {
        let mut receiver = self.subscribe();
        async_stream::stream! {
            loop {
                let received = tokio::select! {
                    r = receiver.recv() => r,
                    () = shutdown.cancelled() => break,
                };
                match received {
                    Ok(event) if only.is_none_or(|id| id == event.job.id) => {
                        yield Watched::Event(event);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => yield Watched::Lagged(missed),
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
}

#[async_trait]
impl EventSink for EventBus {
    async fn publish(&self, event: Event) {
        // No subscribers is not an error: the bus keeps nothing.
        let _ = self.sender.send(Arc::new(event));
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::domain::{EventKind, Job, JobInput};

    fn job() -> Job {
        let input: JobInput = serde_json::from_value(serde_json::json!({
            "name": "watched", "jobType": "SMS", "jobData": {},
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }))
        .unwrap();
        Job::new(input.parse().unwrap(), chrono::Utc::now())
    }

    #[tokio::test]
    async fn a_watch_sees_its_job_only_is_told_of_a_lag_and_ends_at_shutdown() {
        let bus = EventBus::new(2);
        let shutdown = CancellationToken::new();
        let (mine, other) = (job(), job());
        let watch = bus.watch(Some(mine.id), shutdown.clone());
        futures::pin_mut!(watch);
        for job in [&other, &mine] {
            bus.publish(Event::new(EventKind::Updated, job.clone(), None))
                .await;
        }
        let Some(Watched::Event(event)) = watch.next().await else {
            panic!("no event")
        };
        assert_eq!(event.job.id, mine.id);
        for _ in 0..3 {
            bus.publish(Event::new(EventKind::Updated, mine.clone(), None))
                .await;
        }
        assert!(matches!(watch.next().await, Some(Watched::Lagged(1))));
        shutdown.cancel();
        let rest: Vec<_> = watch.collect().await;
        assert!(rest.len() <= 2, "the watch ended");
    }
}
