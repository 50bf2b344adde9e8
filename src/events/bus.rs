//! The in-process fan-out of journaled events to this process's watchers, bounded per
//! subscriber (see `events`).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::Notify;

use crate::{
    domain::JobId,
    jobs::{listing::Weight, ports::Journaled},
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
    /// Signalled when a subscription is made, so an idle feed starts reading.
    arrived: Notify,
}

/// One subscriber's side of the bus.
struct Slot {
    /// Only this job's events, or every job's.
    only: Option<JobId>,
    /// Where the feed had read up to before the first event it handed on after this slot was
    /// made, whether the slot wanted that event or not. The feed hands on every event after it
    /// in order, so what a subscriber may have missed lies before it.
    first_prev: Mutex<Option<u64>>,
    pending: Mutex<Pending>,
    /// Signalled on every event queued and when the subscriber is cut off.
    ready: Notify,
}

/// An event the feed handed on, and where the feed had read up to before the first event it
/// handed on to this subscriber: every event after that place reaches the subscriber (if it
/// wants it) in order, so one that has read up to there misses nothing by taking this next.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) journaled: Arc<Journaled>,
    pub(crate) prev: u64,
}

/// What a subscriber has not read yet.
#[derive(Default)]
struct Pending {
    /// Where the feed started reading, when it started after this subscriber came and before
    /// handing it any event: told before the events.
    start: Option<u64>,
    events: VecDeque<(Live, usize)>,
    bytes: usize,
    /// Events it missed; nonzero once it was cut off.
    missed: u64,
    /// Whether it has been told it was cut off.
    told: bool,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Watched {
    /// The next event it asked for, at its place in the journal.
    Event(Arc<Journaled>),
    /// The events after `after` up to `resumes_after` are no longer kept (its cursor is older
    /// than the retention window, or not of this journal): it should read the state again
    /// from the listing and the ledger. Events go on from `resumes_after`.
    Gap {
        /// The cursor the watcher came with.
        after: u64,
        /// Where the events go on from.
        resumes_after: u64,
    },
    /// It fell this many events behind and was cut off; it should reconnect from its last
    /// event. Always the last item of a subscription.
    Lagged(u64),
}

/// What a subscription receives from the bus.
#[derive(Debug, Clone)]
pub(crate) enum Received {
    Live(Live),
    /// The feed started reading after this place, once this subscriber was there: it hands on
    /// every event after it, and one before it that the subscriber wants is in the journal.
    Start(u64),
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
                arrived: Notify::new(),
            }),
        }
    }

    /// A live subscription to the events of job `only`, or of every job, from now on.
    pub fn subscribe(&self, only: Option<JobId>) -> Subscription {
        let slot = Arc::new(Slot {
            only,
            first_prev: Mutex::new(None),
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
        });
        locked(&self.hub.subscribers).push(slot.clone());
        self.hub.arrived.notify_one();
        Subscription {
            hub: self.hub.clone(),
            slot,
        }
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        locked(&self.hub.subscribers).len()
    }

    /// Resolves once there is a subscriber (at once if there is one already).
    pub(crate) async fn someone_listens(&self) {
        loop {
            let arrived = self.hub.arrived.notified();
            if self.subscribers() > 0 {
                return;
            }
            arrived.await;
        }
    }

    /// Tells every subscriber that has had no event yet that the feed starts reading after
    /// `place`: a watcher that looked at the journal before the feed did reads what lies
    /// between itself, at once, not when the next event comes.
    pub(crate) fn start(&self, place: u64) {
        for slot in locked(&self.hub.subscribers).iter() {
            let mut first = locked(&slot.first_prev);
            if first.is_none() {
                *first = Some(place);
                locked(&slot.pending).start = Some(place);
                slot.ready.notify_one();
            }
        }
    }

    /// Hands on a journaled event to every subscriber that wants it; `prev` is the place the
    /// feed had read up to before it.
    pub(crate) fn publish(&self, journaled: Journaled, prev: u64) {
        // What the event holds, about: its texts, the job's data counted whole though the
        // events of one job share it.
        let size = journaled.weight();
        let journaled = Arc::new(journaled);
        let limits = self.hub.limits;
        for slot in locked(&self.hub.subscribers).iter() {
            let prev = *locked(&slot.first_prev).get_or_insert(prev);
            if slot.only.is_some_and(|id| id != journaled.event.job.id) {
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
                let live = Live {
                    journaled: journaled.clone(),
                    prev,
                };
                pending.events.push_back((live, size));
                pending.bytes += size;
            }
            drop(pending);
            slot.ready.notify_one();
        }
    }
}

impl Subscription {
    /// The next event, waiting for one; `Lagged` once it was cut off, then `None`.
    pub(crate) async fn recv(&mut self) -> Option<Received> {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            self.slot.ready.notified().await;
        }
    }

    /// The next event without waiting: `None` when none is pending.
    pub fn try_recv(&mut self) -> Option<Arc<Journaled>> {
        loop {
            match self.try_next().flatten() {
                Some(Received::Live(live)) => return Some(live.journaled),
                Some(Received::Start(_)) => continue,
                _ => return None,
            }
        }
    }

    /// `Some(next)` when there is an answer now (`Some(None)`: the subscription has ended).
    fn try_next(&mut self) -> Option<Option<Received>> {
        let mut pending = locked(&self.slot.pending);
        if let Some(place) = pending.start.take() {
            return Some(Some(Received::Start(place)));
        }
        if let Some((live, size)) = pending.events.pop_front() {
            pending.bytes -= size;
            return Some(Some(Received::Live(live)));
        }
        if pending.missed == 0 {
            return None;
        }
        if pending.told {
            return Some(None);
        }
        pending.told = true;
        Some(Some(Received::Lagged(pending.missed)))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        locked(&self.hub.subscribers).retain(|slot| !Arc::ptr_eq(slot, &self.slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, EventKind, Job, JobInput};

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

    /// Publishes an event of `job` at place `seq`, the feed having read up to `seq - 1`.
    fn publish(bus: &EventBus, job: &Job, seq: u64) {
        let event = Event::new(EventKind::Updated, job.clone(), None);
        bus.publish(Journaled { seq, event }, seq - 1);
    }

    fn seq_of(received: Option<Received>) -> Option<u64> {
        match received {
            Some(Received::Live(live)) => Some(live.journaled.seq),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_subscription_sees_its_job_only_and_is_cut_off_when_behind() {
        let bus = EventBus::new(limits(2, usize::MAX));
        let (mine, other) = (job(1), job(1));
        let mut subscription = bus.subscribe(Some(mine.id));
        publish(&bus, &other, 1);
        publish(&bus, &mine, 2);
        assert_eq!(seq_of(subscription.recv().await), Some(2));
        for seq in 3..7 {
            publish(&bus, &mine, seq);
        }
        assert!(
            matches!(subscription.recv().await, Some(Received::Lagged(4))),
            "two held, the third cut it off, the fourth counted"
        );
        assert!(
            subscription.recv().await.is_none(),
            "a cut-off subscription ends"
        );
    }

    #[tokio::test]
    async fn a_stalled_subscriber_holds_at_most_its_bytes_and_lets_go_when_cut_off() {
        let big = job(60 * 1024);
        let bus = EventBus::new(limits(1_000, 200 * 1024));
        let mut stalled = bus.subscribe(None);
        let mut reading = bus.subscribe(None);
        let mut held = Vec::new();
        for seq in 1..4 {
            publish(&bus, &big, seq);
            let Some(Received::Live(live)) = reading.recv().await else {
                panic!("the reader reads")
            };
            held.push(live.journaled);
        }
        // One event, shared: the stalled subscriber, the reader's copies and this test hold
        // the same allocation.
        assert!(
            Arc::strong_count(&held[0]) == 2,
            "held by the stalled one and by the test"
        );
        publish(&bus, &big, 4);
        assert_eq!(seq_of(reading.recv().await), Some(4), "the reader goes on");
        assert!(
            held.iter().all(|event| Arc::strong_count(event) == 1),
            "the stalled subscriber was cut off and let go of every event"
        );
        assert!(matches!(stalled.recv().await, Some(Received::Lagged(4))));
        assert!(stalled.recv().await.is_none());
        drop(stalled);
        assert_eq!(bus.subscribers(), 1);
    }
}
