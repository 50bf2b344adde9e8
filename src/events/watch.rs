//! A watch: the events of the journal after a client's cursor, then the live ones, in the
//! journal's order, each once.
//!
//! It subscribes to the bus first, so nothing the feed hands on from then is missed, then
//! reads the journal from the cursor until it has read everything stored (catching up), then
//! takes the bus's events: one at or before where it has read is a copy and is skipped. The
//! feed hands on every event in order from where it had read before the first one this
//! subscription got (`prev`); when that is beyond where the watch has read (the feed started
//! reading after the watch looked, or read ahead while the watch was catching up), the watch
//! reads the stretch between from the journal first, once. A feed that starts reading tells
//! the watches that had no event yet where it starts, so one it started after reads that
//! stretch at once, not only when the next event comes. A cursor older than the journal's first kept event
//! (trimmed by the retention window), or beyond its head (another store's), gets one
//! [`Watched::Gap`] first; the client should then read the state from the listing and the
//! ledger.

use std::sync::Arc;

use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::bus::{EventBus, Received, Subscription, Watched};
use crate::{
    domain::JobId,
    jobs::ports::{JobStore, StoreError},
};

/// Events read per journal round trip while catching up.
const PAGE: usize = 100;

/// What opens watches: the store's journal and this process's bus.
#[derive(Clone)]
pub struct EventStreams {
    store: Arc<dyn JobStore>,
    bus: EventBus,
}

impl EventStreams {
    /// Watches over `store`'s journal and `bus`.
    pub fn new(store: Arc<dyn JobStore>, bus: EventBus) -> Self {
        Self { store, bus }
    }

    /// The bus, for what watches it directly.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// The events of job `only` (or of every job) after place `since`, or from now on without
    /// one, until `shutdown` is cancelled, the watcher is cut off, or the journal cannot be
    /// read (the stream ends, logged; the client resumes from its cursor). Subscribes and
    /// reads where the journal stands before it answers, so an event stored after the call
    /// is never missed.
    pub async fn open(
        &self,
        only: Option<JobId>,
        since: Option<u64>,
        shutdown: CancellationToken,
    ) -> Result<impl Stream<Item = Watched> + Send + use<>, StoreError> {
        let subscription = self.bus.subscribe(only);
        let bounds = self.store.journal_bounds().await?;
        let (start, gap) = match since {
            None => (bounds.head, None),
            Some(after) if after + 1 < bounds.first || after > bounds.head => {
                let resumes_after = bounds.first - 1;
                (
                    resumes_after,
                    Some(Watched::Gap {
                        after,
                        resumes_after,
                    }),
                )
            }
            Some(after) => (after, None),
        };
        let reader = Reader {
            store: self.store.clone(),
            only,
            read_up_to: start,
        };
        Ok(stream(reader, subscription, gap, since.is_some(), shutdown))
    }
}

/// What a watch has read, and from where it reads more.
struct Reader {
    store: Arc<dyn JobStore>,
    only: Option<JobId>,
    /// The place up to which everything it watches has been yielded.
    read_up_to: u64,
}

impl Reader {
    /// The next page after where it has read up to; empty once it has read everything.
    async fn page(&mut self) -> Result<Vec<Watched>, StoreError> {
        let page = self
            .store
            .read_journal(self.read_up_to, self.only, PAGE)
            .await?;
        if let Some(last) = page.last() {
            self.read_up_to = last.seq;
        }
        Ok(page
            .into_iter()
            .map(|journaled| Watched::Event(Arc::new(journaled)))
            .collect())
    }
}

fn stream(
    mut reader: Reader,
    mut subscription: Subscription,
    gap: Option<Watched>,
    catch_up: bool,
    shutdown: CancellationToken,
) -> impl Stream<Item = Watched> + Send {
    async_stream::stream! {
        if let Some(gap) = gap {
            yield gap;
        }
        // Reading from the journal: until it has nothing more, or until `target` is read.
        // Either way everything up to `target` is then read (a read that found nothing more
        // read past it), so the place read up to moves there.
        let mut target = catch_up.then_some(u64::MAX);
        loop {
            while let Some(up_to) = target {
                let page = tokio::select! {
                    page = reader.page() => page,
                    () = shutdown.cancelled() => return,
                };
                match page {
                    Ok(page) => {
                        let done = page.is_empty() || reader.read_up_to >= up_to;
                        for watched in page {
                            yield watched;
                        }
                        if done {
                            if up_to != u64::MAX {
                                reader.read_up_to = reader.read_up_to.max(up_to);
                            }
                            target = None;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = ?error, "an event stream could not read the journal; it ends, and its client resumes from its last event");
                        return;
                    }
                }
            }
            let received = tokio::select! {
                r = subscription.recv() => r,
                () = shutdown.cancelled() => return,
            };
            match received {
                Some(Received::Live(live)) => {
                    if live.prev > reader.read_up_to {
                        // The stretch up to this event, read from the journal (this event
                        // with it, when the watch wants it).
                        target = Some(live.journaled.seq);
                        continue;
                    }
                    if live.journaled.seq <= reader.read_up_to {
                        continue;
                    }
                    reader.read_up_to = live.journaled.seq;
                    yield Watched::Event(live.journaled);
                }
                // The feed started after a place this watch has not read to: the stretch
                // between is read from the journal now.
                Some(Received::Start(place)) => {
                    if place > reader.read_up_to {
                        target = Some(place);
                    }
                }
                Some(Received::Lagged(missed)) => {
                    yield Watched::Lagged(missed);
                    return;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::{
        domain::{Event, EventKind, Job, JobInput},
        events::bus::BufferLimits,
        store::sqlite::SqliteStore,
    };

    #[tokio::test]
    async fn a_watch_the_feed_started_after_reads_what_lies_between_without_waiting_for_more() {
        let store: Arc<dyn JobStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let bus = EventBus::new(BufferLimits {
            events: 100,
            bytes: usize::MAX,
        });
        let streams = EventStreams::new(store.clone(), bus.clone());
        // The watch looks at the journal (empty), then an event is stored, then the feed
        // starts reading after it: the watch must get that event though no other comes.
        let watch = streams
            .open(None, None, CancellationToken::new())
            .await
            .unwrap();
        let input: JobInput = serde_json::from_value(serde_json::json!({
            "name": "stored between", "jobType": "SMS", "jobData": {"To": "+100"},
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }))
        .unwrap();
        let job = Job::new(input.parse().unwrap(), chrono::Utc::now());
        let event = Event::new(EventKind::Created, job.clone(), None);
        store.insert(&job, None, &[event]).await.unwrap();
        let head = store.journal_bounds().await.unwrap().head;
        bus.start(head);
        let mut watch = Box::pin(watch);
        let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the event stored before the feed started came");
        match first {
            Some(Watched::Event(journaled)) => {
                assert_eq!(journaled.seq, head);
                assert_eq!(journaled.event.job.id, job.id);
            }
            other => panic!("{other:?}"),
        }
    }
}
