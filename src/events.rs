//! The in-process event bus: the live [`EventSink`] adapter, and the one stream that feeds both
//! the SSE endpoint and the gRPC watch.
//!
//! Each event is held once, behind an `Arc`, however many subscribers have it pending. What a
//! subscriber may have pending is bounded by count and by bytes ([`BufferLimits`]); one that
//! falls further behind (a client that stopped reading) is cut off: its pending events are
//! dropped at once, it is told how many it missed ([`Watched::Lagged`]), and its stream ends.
//! So a stalled client holds at most its limit, and the memory comes back the moment it is cut
//! off, not when it leaves. The bus keeps nothing for subscribers that are not connected.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{Event, JobId},
    jobs::{listing::Weight, ports::EventSink},
};

/// How much one subscriber may have pending before it is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// Events.
    pub events: usize,
    /// Bytes of memory the pending events hold (each counted whole, though shared).
    pub bytes: usize,
}

/// The in-process event bus.
#[derive(Clone)]
pub struct EventBus {
    hub: Arc<Hub>,
}

/// The subscribers, and what each may hold.
struct Hub {
    limits: BufferLimits,
    subscribers: Mutex<Vec<Arc<Slot>>>,
}

/// One subscriber's side of the bus.
struct Slot {
    /// Only this job's events, or every job's.
    only: Option<JobId>,
    pending: Mutex<Pending>,
    /// Signalled on every event queued and when the subscriber is cut off.
    ready: Notify,
}

/// What a subscriber has not read yet.
#[derive(Default)]
struct Pending {
    events: VecDeque<(Arc<Event>, usize)>,
    bytes: usize,
    /// Events it missed; nonzero once it was cut off.
    missed: u64,
    /// Whether it has been told it was cut off.
    told: bool,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Watched {
    /// The next event it asked for.
    Event(Arc<Event>),
    /// It fell this many events behind and was cut off; it should read the state again. Always
    /// the last item of a subscription.
    Lagged(u64),
}

/// A live subscription: the events published after it was made, until it is cut off.
pub struct Subscription {
    hub: Arc<Hub>,
    slot: Arc<Slot>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is left consistent at every step, so a panic elsewhere does not spoil it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EventBus {
    /// A bus whose subscribers may each have `limits` pending.
    pub fn new(limits: BufferLimits) -> Self {
        Self {
            hub: Arc::new(Hub {
                limits,
                subscribers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A live subscription to the events of job `only`, or of every job, from now on.
    pub fn subscribe(&self, only: Option<JobId>) -> Subscription {
        let slot = Arc::new(Slot {
            only,
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
        });
        locked(&self.hub.subscribers).push(slot.clone());
        Subscription {
            hub: self.hub.clone(),
            slot,
        }
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        locked(&self.hub.subscribers).len()
    }

    /// The events from now on, of job `only` or of every job, until `shutdown` is cancelled
    /// or the watcher is cut off. Subscribes at once, so nothing published after the call is
    /// missed.
    pub fn watch(
        &self,
        only: Option<JobId>,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Watched> + Send + use<> {
        let mut subscription = self.subscribe(only);
        async_stream::stream! {
            loop {
                let received = tokio::select! {
                    r = subscription.recv() => r,
                    () = shutdown.cancelled() => break,
                };
                match received {
                    Some(watched) => yield watched,
                    None => break,
                }
            }
        }
    }

    fn publish_now(&self, event: Event) {
        // What the event holds, about: its texts, the job's data counted whole though the
        // events of one job share it.
        let size = event.weight();
        let event = Arc::new(event);
        let limits = self.hub.limits;
        for slot in locked(&self.hub.subscribers).iter() {
            if slot.only.is_some_and(|id| id != event.job.id) {
                continue;
            }
            let mut pending = locked(&slot.pending);
            if pending.missed > 0 {
                pending.missed += 1;
                continue;
            }
            if pending.events.len() >= limits.events || pending.bytes + size > limits.bytes {
                // Cut off: what it holds goes now, and it learns how much it missed.
                pending.missed = pending.events.len() as u64 + 1;
                pending.events = VecDeque::new();
                pending.bytes = 0;
            } else {
                pending.events.push_back((event.clone(), size));
                pending.bytes += size;
            }
            drop(pending);
            slot.ready.notify_one();
        }
    }
}

impl Subscription {
    /// The next event, waiting for one; `Lagged` once it was cut off, then `None`.
    pub async fn recv(&mut self) -> Option<Watched> {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            self.slot.ready.notified().await;
        }
    }

    /// The next event without waiting: `None` when none is pending.
    pub fn try_recv(&mut self) -> Option<Watched> {
        self.try_next().flatten()
    }

    /// `Some(next)` when there is an answer now (`Some(None)`: the subscription has ended).
    fn try_next(&mut self) -> Option<Option<Watched>> {
        let mut pending = locked(&self.slot.pending);
        if let Some((event, size)) = pending.events.pop_front() {
            pending.bytes -= size;
            return Some(Some(Watched::Event(event)));
        }
        if pending.missed == 0 {
            return None;
        }
        if pending.told {
            return Some(None);
        }
        pending.told = true;
        Some(Some(Watched::Lagged(pending.missed)))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        locked(&self.hub.subscribers).retain(|slot| !Arc::ptr_eq(slot, &self.slot));
    }
}

#[async_trait]
impl EventSink for EventBus {
    async fn publish(&self, event: Event) {
        // No subscribers is not an error: the bus keeps nothing.
        self.publish_now(event);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::domain::{EventKind, Job, JobInput};

    fn job(data_bytes: usize) -> Job {
        let input: JobInput = serde_json::from_value(serde_json::json!({
            "name": "watched", "jobType": "SMS", "jobData": {"Note": "x".repeat(data_bytes)},
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }))
        .unwrap();
        Job::new(input.parse().unwrap(), chrono::Utc::now())
    }

    fn limits(events: usize, bytes: usize) -> BufferLimits {
        BufferLimits { events, bytes }
    }

    async fn publish(bus: &EventBus, job: &Job) {
        bus.publish(Event::new(EventKind::Updated, job.clone(), None))
            .await;
    }

    #[tokio::test]
    async fn a_watch_sees_its_job_only_is_cut_off_when_behind_and_ends_at_shutdown() {
        let bus = EventBus::new(limits(2, usize::MAX));
        let shutdown = CancellationToken::new();
        let (mine, other) = (job(1), job(1));
        let watch = bus.watch(Some(mine.id), shutdown.clone());
        futures::pin_mut!(watch);
        publish(&bus, &other).await;
        publish(&bus, &mine).await;
        let Some(Watched::Event(event)) = watch.next().await else {
            panic!("no event")
        };
        assert_eq!(event.job.id, mine.id);
        for _ in 0..4 {
            publish(&bus, &mine).await;
        }
        assert!(
            matches!(watch.next().await, Some(Watched::Lagged(4))),
            "two held, the third cut it off, the fourth counted"
        );
        assert!(watch.next().await.is_none(), "a cut-off watch ends");

        let watch = bus.watch(None, shutdown.clone());
        futures::pin_mut!(watch);
        publish(&bus, &other).await;
        shutdown.cancel();
        let rest: Vec<_> = watch.collect().await;
        assert!(rest.len() <= 1, "the watch ended");
    }

    #[tokio::test]
    async fn a_stalled_subscriber_holds_at_most_its_bytes_and_lets_go_when_cut_off() {
        let big = job(60 * 1024);
        let bus = EventBus::new(limits(1_000, 200 * 1024));
        let mut stalled = bus.subscribe(None);
        let mut reading = bus.subscribe(None);
        let mut held = Vec::new();
        for _ in 0..3 {
            publish(&bus, &big).await;
            let Some(Watched::Event(event)) = reading.recv().await else {
                panic!("the reader reads")
            };
            held.push(event);
        }
        // One event, shared: the stalled subscriber, the reader's copies and this test hold
        // the same allocation.
        assert!(
            Arc::strong_count(&held[0]) == 2,
            "held by the stalled one and by the test"
        );
        publish(&bus, &big).await;
        let event = reading.recv().await;
        assert!(
            matches!(event, Some(Watched::Event(_))),
            "the reader goes on"
        );
        assert!(
            held.iter().all(|event| Arc::strong_count(event) == 1),
            "the stalled subscriber was cut off and let go of every event"
        );
        assert!(matches!(stalled.recv().await, Some(Watched::Lagged(4))));
        assert!(stalled.recv().await.is_none());
        drop(stalled);
        assert_eq!(bus.subscribers(), 1);
    }
}
