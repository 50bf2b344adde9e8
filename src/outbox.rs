//! The relay: moves stored events into the journal where the store needs it (MongoDB),
//! publishes the journal to a durable sink (Kafka) at least once and in order, and trims the
//! journal to its retention window.
//!
//! Every change is stored with its events (see `jobs::ports`). The relay publishes the
//! journal's events after its cursor (`PUBLISHED`) to the [`Publisher`] and moves the cursor
//! past those the sink acknowledged, up to the first it refused; the rest go again next round,
//! so a sink outage fails no API call and loses nothing, and if the process dies between
//! publishing and moving the cursor the events go out again with the same ids (CloudEvents
//! `ce_id`), so consumers can drop the copies. Trimming never passes the cursor: an event
//! waits in the journal, whatever the retention, until it is published.
//!
//! One relay runs at a time per store: each process's relay takes the store's relay lease
//! before sequencing or publishing, and renews it while it works; the others wait and take
//! over when it lapses (trying it every half lease, and, at most every `poll`, when their own
//! process stores an event). It is woken by its own process's writes, and looks for events
//! written by other processes every `poll` while they come, backing off to once a second while
//! none do (so another replica's event waits at most a second to be journaled and published;
//! on MongoDB the look is usually the one the scheduler's window read made). With
//! nothing to sequence or publish (the embedded store without Kafka) it only trims, every
//! `trim_every`, and takes no lease; otherwise only the lease holder trims, every
//! `trim_every` while events come and every sixth while none do.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::Utc;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    jobs::ports::{JobStore, Journaled, Lease, PUBLISHED, Publisher, Retention, StoreError},
    runtime::{Backoff, Outage},
};

/// How the relay behaves.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Events read per store round trip.
    pub batch_size: usize,
    /// How often to look for events written by other processes, and to retry the lease.
    pub poll: Duration,
    /// How long the relay lease holds without renewal.
    pub lease: Duration,
    /// First wait after the sink or the store failed; doubles with each further failure.
    pub first_backoff: Duration,
    /// Longest wait between attempts while the sink or the store fails.
    pub max_backoff: Duration,
    /// How much of the journal is kept.
    pub retention: Retention,
    /// How often the journal is trimmed.
    pub trim_every: Duration,
    /// Whether stored events need the relay to give them their places in the journal (the
    /// MongoDB store).
    pub sequences: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll: Duration::from_millis(200),
            lease: Duration::from_secs(10),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retention: Retention {
                events: 10_000,
                age: chrono::Duration::hours(1),
            },
            trim_every: Duration::from_secs(10),
            sequences: false,
        }
    }
}

/// The durable sink a relay publishes to, set once the sink is ready (Kafka's topics exist):
/// until then events wait in the journal.
pub type SinkSlot = Arc<OnceLock<Arc<dyn Publisher>>>;

/// One process's relay.
pub struct Relay {
    store: Arc<dyn JobStore>,
    /// The durable sink, when one is configured.
    sink: Option<SinkSlot>,
    /// Notified whenever this process stores an event.
    wake: Arc<Notify>,
    /// Notified when it journaled events, for this process's event feed.
    journaled: Arc<Notify>,
    /// Unique per process: who holds the relay lease.
    owner: String,
    settings: RelaySettings,
}

/// Longest wait between two looks of an idle relay for other processes' events.
const QUIET_POLL: Duration = Duration::from_secs(1);

/// How many `trim_every`s apart a relay that moved no event trims (a minute by default):
/// only events aging out can be dropped then, and the retention's age is an hour by default.
const QUIET_TRIM: u32 = 6;

/// What one round of the relay did.
enum Round {
    /// Another process holds the relay lease.
    NotLeader,
    /// Nothing was pending.
    Idle,
    /// Some events were journaled; more may be pending.
    Busy,
    /// Some events went out; more may be pending.
    Published,
    /// The sink refused some events; they stay pending.
    SinkFailed(anyhow::Error),
}

impl Relay {
    /// A relay of `store`'s events to the sink in `sink` (when one is configured), woken by
    /// `wake` when this process stores events; it notifies `journaled` when it journaled some.
    pub fn new(
        store: Arc<dyn JobStore>,
        sink: Option<SinkSlot>,
        wake: Arc<Notify>,
        journaled: Arc<Notify>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            store,
            sink,
            wake,
            journaled,
            owner: format!("relay-{}", uuid::Uuid::new_v4()),
            settings,
        }
    }

    /// Runs until `shutdown` is cancelled; then gives up the lease so another process takes
    /// over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = || Backoff::new(self.settings.first_backoff, self.settings.max_backoff);
        let mut sink = Outage::new(
            "cannot publish events; they wait in the journal and are retried",
            "publishing events again",
            backoff(),
        );
        let mut store = Outage::new(
            "the relay cannot reach the job store; retrying",
            "the relay reaches the job store again",
            backoff(),
        );
        let mut leader = false;
        let mut held_until = None;
        let mut published = None;
        let mut caught_up = false;
        let mut trimmed = Instant::now();
        // Whether this relay journaled or published an event since its last trim.
        let mut moved = false;
        // While the sink fails, it is tried again when its backoff says; journaling goes on.
        let mut publish_at = Instant::now();
        let leads = self.sink.is_some() || self.settings.sequences;
        // The wait before the next look while nothing comes: `poll`, doubling while idle.
        let mut quiet = self.settings.poll;
        // Before this instant, this process's writes do not cut a wait short.
        let mut wake_from = Instant::now();
        while !shutdown.is_cancelled() {
            // Where relays take turns, the one holding the lease trims for all; while it has
            // moved no event since its last trim, only events aging out can be dropped, so it
            // trims less often.
            let trim_every = if moved || !leads {
                self.settings.trim_every
            } else {
                self.settings.trim_every * QUIET_TRIM
            };
            if trimmed.elapsed() >= trim_every && (leader || !leads) {
                trimmed = Instant::now();
                moved = false;
                self.trim(published).await;
            }
            let round = if leads {
                let publish = Instant::now() >= publish_at;
                self.round(&mut held_until, &mut published, &mut caught_up, publish)
                    .await
            } else {
                Ok(Round::Idle)
            };
            let wait = match round {
                Ok(round) => {
                    store.recovered();
                    let is_leader = !matches!(round, Round::NotLeader);
                    if is_leader != leader {
                        tracing::info!(owner = %self.owner, leader = is_leader, "outbox relay lease");
                        leader = is_leader;
                    }
                    match round {
                        Round::SinkFailed(error) => {
                            publish_at = Instant::now() + sink.failed(&error);
                            self.settings.poll
                        }
                        Round::Busy => {
                            quiet = self.settings.poll;
                            moved = true;
                            Duration::ZERO
                        }
                        Round::Published => {
                            sink.recovered();
                            moved = true;
                            quiet = self.settings.poll;
                            Duration::ZERO
                        }
                        // Nothing to do: look again later each time, up to a second. This
                        // process's writes wake it at once whatever the wait.
                        Round::Idle if leads => {
                            let wait = quiet;
                            quiet = (quiet * 2).min(self.settings.poll.max(QUIET_POLL));
                            wait
                        }
                        // Another process leads: its lease is tried again when half of a
                        // lease has passed (a dead leader's lapses by then or at the next
                        // try), or, when this process stores an event, once `poll` has passed.
                        Round::NotLeader if leads => {
                            quiet = self.settings.poll;
                            wake_from = Instant::now() + self.settings.poll;
                            (self.settings.lease / 2).max(self.settings.poll)
                        }
                        Round::Idle | Round::NotLeader => self.settings.trim_every,
                    }
                }
                Err(error) => store.failed(&error),
            };
            if wait.is_zero() {
                continue;
            }
            // While the store fails, the backoff decides when to try again, not this
            // process's writes.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = async {
                    tokio::time::sleep_until(wake_from).await;
                    self.wake.notified().await;
                }, if !store.is_failing() && leads => {}
                () = shutdown.cancelled() => {}
            }
        }
        if leader {
            let now = Utc::now();
            let release = Lease {
                owner: self.owner.clone(),
                until: now,
            };
            if let Err(error) = self.store.take_relay_lease(&release, now).await {
                tracing::warn!(error = ?error, "could not give up the outbox relay lease; it lapses by itself");
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Takes or renews the lease (renewing only once half of it has passed, so a busy relay
    /// does not write to the store for every batch), journals one batch of stored events,
    /// publishes one batch of the journal and moves the cursor past what the sink
    /// acknowledged. `published` is where the cursor stands, read once per lease;
    /// `caught_up`, that the last read of the journal after it found nothing: where the relay
    /// journals the events itself, nothing new can be there until it journals more.
    async fn round(
        &self,
        held_until: &mut Option<chrono::DateTime<Utc>>,
        published: &mut Option<u64>,
        caught_up: &mut bool,
        publish: bool,
    ) -> Result<Round, StoreError> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        if held_until.is_none_or(|until| until - now < lease / 2) {
            let taken = Lease {
                owner: self.owner.clone(),
                until: now + lease,
            };
            let held = self.store.take_relay_lease(&taken, now).await?;
            if held_until.is_none() || !held {
                // Another relay may have moved the cursor, or journaled events, while this one
                // did not hold it.
                *published = None;
                *caught_up = false;
            }
            *held_until = held.then_some(taken.until);
            if !held {
                return Ok(Round::NotLeader);
            }
        }
        let mut busy = false;
        if self.settings.sequences {
            let journaled = self.store.sequence_events(self.settings.batch_size).await?;
            if journaled > 0 {
                self.journaled.notify_one();
                busy = true;
                *caught_up = false;
            }
        }
        let idle = if busy { Round::Busy } else { Round::Idle };
        let Some(publisher) = self.sink.as_ref().and_then(|slot| slot.get()) else {
            return Ok(idle);
        };
        if !publish || (self.settings.sequences && *caught_up) {
            return Ok(idle);
        }
        let after = match *published {
            Some(after) => after,
            None => self.store.cursor(PUBLISHED).await?,
        };
        *published = Some(after);
        let events = self
            .store
            .read_journal(after, None, self.settings.batch_size)
            .await?;
        if events.is_empty() {
            *caught_up = true;
            return Ok(idle);
        }
        let batch: Vec<_> = events.iter().map(|j| j.event.clone()).collect();
        let results = publisher.publish(&batch).await;
        let (through, failure) = acknowledged(&events, results);
        if let Some(through) = through {
            self.store.set_cursor(PUBLISHED, through).await?;
            *published = Some(through);
        }
        Ok(match failure {
            Some(error) => Round::SinkFailed(error),
            None => Round::Published,
        })
    }

    /// Drops what the retention no longer keeps, but nothing the relay has yet to publish. A
    /// failure is logged and the next trim tries again.
    async fn trim(&self, published: Option<u64>) {
        let floor = match (&self.sink, published) {
            (None, _) => u64::MAX,
            (Some(_), Some(published)) => published,
            // The cursor not read yet under this lease: as stored.
            (Some(_), None) => match self.store.cursor(PUBLISHED).await {
                Ok(published) => published,
                Err(error) => {
                    tracing::debug!(error = ?error, "the journal could not be trimmed");
                    return;
                }
            },
        };
        match self
            .store
            .trim_journal(self.settings.retention, floor, Utc::now())
            .await
        {
            Ok(0) => {}
            Ok(dropped) => tracing::debug!(dropped, "journal trimmed"),
            Err(error) => tracing::debug!(error = ?error, "the journal could not be trimmed"),
        }
    }
}

/// The place up to which every event of `events` (in journal order) was acknowledged, if any
/// was, and the first refusal.
fn acknowledged(
    events: &[Journaled],
    results: Vec<anyhow::Result<()>>,
) -> (Option<u64>, Option<anyhow::Error>) {
    let mut through = None;
    for (journaled, result) in events.iter().zip(results) {
        match result {
            Ok(()) => through = Some(journaled.seq),
            Err(error) => return (through, Some(error)),
        }
    }
    (through, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{Event, EventKind, Job, JobInput},
        store::sqlite::SqliteStore,
    };

    #[tokio::test]
    async fn the_relay_trims_the_journal_on_its_own_schedule_to_the_retention() {
        let store: Arc<dyn JobStore> = Arc::new(SqliteStore::in_memory().unwrap());
        let input: JobInput = serde_json::from_value(serde_json::json!({
            "name": "trimmed", "jobType": "SMS", "jobData": {},
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }))
        .unwrap();
        for _ in 0..5 {
            let job = Job::new(input.clone().parse().unwrap(), Utc::now());
            let created = Event::new(EventKind::Created, job.clone(), None);
            store.insert(&job, None, &[created]).await.unwrap();
        }
        let relay = Relay::new(
            store.clone(),
            None,
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            RelaySettings {
                retention: Retention {
                    events: 2,
                    age: chrono::Duration::hours(1),
                },
                trim_every: Duration::from_millis(20),
                ..RelaySettings::default()
            },
        );
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(relay.run(shutdown.clone()));
        let mut bounds = store.journal_bounds().await.unwrap();
        for _ in 0..200 {
            if bounds.first == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            bounds = store.journal_bounds().await.unwrap();
        }
        shutdown.cancel();
        running.await.unwrap();
        assert_eq!((bounds.first, bounds.head), (4, 5), "the newest two kept");
    }

    #[test]
    fn the_cursor_stops_before_the_first_event_the_sink_refused() {
        let input: JobInput = serde_json::from_value(serde_json::json!({
            "name": "report", "jobType": "SMS", "jobData": {},
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }))
        .unwrap();
        let job = Job::new(input.parse().unwrap(), Utc::now());
        let events: Vec<Journaled> = (5..9)
            .map(|seq| Journaled {
                seq,
                event: Event::new(EventKind::Updated, job.clone(), None),
            })
            .collect();
        let ok = || Ok(());
        let (through, failure) = acknowledged(
            &events,
            vec![ok(), ok(), Err(anyhow::anyhow!("timed out")), ok()],
        );
        assert_eq!(through, Some(6));
        assert!(failure.is_some());
        let (through, failure) = acknowledged(
            &events,
            vec![Err(anyhow::anyhow!("down")), ok(), ok(), ok()],
        );
        assert_eq!(through, None, "nothing before the first refusal");
        assert!(failure.is_some());
        let (through, failure) = acknowledged(&events, vec![ok(), ok(), ok(), ok()]);
        assert_eq!((through, failure.is_none()), (Some(8), true));
    }
}
