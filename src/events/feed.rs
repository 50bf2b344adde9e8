//! The feed: one per process, it reads the journal on from where it got and hands each event
//! to the bus, while anyone in this process watches.
//!
//! It reads when this process stores events (the use cases and the scheduler wake it), and
//! every `poll` for the events other processes sharing the store wrote. With nobody watching
//! it reads nothing: when the first watcher comes it starts at the journal's head and tells the
//! watchers so, and each event it hands on says where it had read up to before (`prev`), so a
//! watcher that came in between reads that stretch from the journal itself.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bus::EventBus;
use crate::{
    jobs::ports::{JobStore, StoreError},
    runtime::{Backoff, Outage},
};

/// Events read per journal round trip.
const PAGE: usize = 256;

/// One process's feed from the journal to its bus.
pub struct Feed {
    store: Arc<dyn JobStore>,
    bus: EventBus,
    /// Notified whenever this process stores events (or journals them, on MongoDB).
    wake: Arc<Notify>,
    /// How often to look for other processes' events while anyone watches.
    poll: Duration,
}

impl Feed {
    /// A feed from `store`'s journal into `bus`, woken by `wake`.
    pub fn new(store: Arc<dyn JobStore>, bus: EventBus, wake: Arc<Notify>, poll: Duration) -> Self {
        Self {
            store,
            bus,
            wake,
            poll,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut outage = Outage::new(
            "the event feed cannot read the journal; event streams wait",
            "the event feed reads the journal again",
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        );
        // Where it has read up to; `None` while nobody watches.
        let mut read_up_to: Option<u64> = None;
        while !shutdown.is_cancelled() {
            if self.bus.subscribers() == 0 {
                read_up_to = None;
                tokio::select! {
                    () = self.bus.someone_listens() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let wait = match self.round(&mut read_up_to).await {
                Ok(more) => {
                    outage.recovered();
                    if more {
                        continue;
                    }
                    self.poll
                }
                Err(error) => outage.failed(&error),
            };
            let failing = outage.is_failing();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified(), if !failing => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// Reads one page after where it got and hands it on; whether there may be more.
    async fn round(&self, read_up_to: &mut Option<u64>) -> Result<bool, StoreError> {
        let after = match *read_up_to {
            Some(after) => after,
            None => {
                let head = self.store.journal_bounds().await?.head;
                self.bus.start(head);
                head
            }
        };
        *read_up_to = Some(after);
        let page = self.store.read_journal(after, None, PAGE).await?;
        // A page may stop short at its byte budget: only an empty one says the feed is done.
        let more = !page.is_empty();
        let mut prev = after;
        for journaled in page {
            let seq = journaled.seq;
            self.bus.publish(journaled, prev);
            prev = seq;
        }
        *read_up_to = Some(prev);
        Ok(more)
    }
}
