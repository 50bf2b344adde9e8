//! What the MongoDB store's event sequencer keeps between rounds, shared by the store's
//! clones: the jobs this process wrote events to (read by `_id` in the next round), and of
//! those, the ones whose whole outbox this process knows as its write left it (used as they
//! are, with no read); when it last looked for every pending event, the newest place it gave
//! and the events it journaled last (which the relay reads next). See `journal` for how a
//! round uses them.
//!
//! Every pending event is looked for either by a scan of its own or, while this process holds
//! the relay lease, by the scheduler's window read, whose query then also finds every job with
//! pending events (`schedule::window`): a round that follows such a read by less than
//! [`SCAN_EVERY`] reads the jobs it found by `_id` and scans nothing, so an idle replica's one
//! query a second serves the scheduler and the relay. Each read is used by one round at most; a
//! round with no fresh read scans as before. Another replica's event stored just after a read is
//! found by the next read or scan.
//!
//! A round with nothing of this process's to journal looks for the others' (a scan, or a
//! window read's look) at most every relay poll while the last look found some, and once a
//! second while it found none; without that pace, every such round of a relay busy with its
//! own writes would scan. A look can find a new document before its write's answer has
//! reached this process: the write's note then comes after a round journaled its events, and
//! is dropped, as the jobs recent rounds journaled are kept with the `version` and `fence`
//! they were read at (about two seconds of them).
//!
//! A write knows the whole outbox it leaves when the document held no pending event before
//! it: a new document, or a step whose claim read the document with an empty outbox (every
//! write that adds an event moves `version` or `fence`, which the step's guard names, so none
//! came between). What is known is the document's `_id`, `version`, `fence`, `outbox` and
//! `outboxAt` as the write left them; the round's emptying of the outbox is guarded by them,
//! so a document written again since gets only the journaled events pulled.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bson::{Bson, Document, doc, oid::ObjectId};

use crate::jobs::ports::Journaled;

/// How often, at the least, the sequencer looks for every pending event while this process
/// keeps writing its own: how late another replica's event can be journaled then, beyond the
/// relay's own poll.
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Most jobs noted as holding this process's events before the next scan takes over.
const MOST_NOTED: usize = 20_000;

/// Most bytes of known outboxes kept; past that, a write is noted by its id alone.
const MOST_KNOWN_BYTES: usize = 16 * 1024 * 1024;

/// Most claims remembered as having read an empty outbox; past that they are forgotten (a
/// claim whose step never comes, given back or outlived, is remembered until then).
const MOST_CLEAN_CLAIMS: usize = 100_000;

/// What the sequencer keeps between rounds (shared by the store's clones).
#[derive(Clone, Default)]
pub(super) struct Sequencing(Arc<Mutex<SequencingState>>);

#[derive(Default)]
struct SequencingState {
    /// Jobs this process stored events in since a round last read them.
    written: HashSet<ObjectId>,
    /// Of `written`, the documents whose pending events this process knows whole, as its
    /// write left them (`_id`, `version`, `fence`, `outbox`, `outboxAt`), with their bytes.
    known: HashMap<ObjectId, (Document, usize)>,
    /// The bytes of `known`'s outboxes.
    known_bytes: usize,
    /// Jobs this process claimed whose document held no pending event, with the claim's
    /// fencing token.
    clean: HashMap<ObjectId, u64>,
    /// Some were not noted (too many): the next round scans.
    overflowed: bool,
    /// The newest place this process gave, while no other sequencer has given one since
    /// and every event this process found pending was then journaled once.
    head: Option<u64>,
    /// The events of this process's last journal insert, which the relay reads next.
    recent: Vec<Journaled>,
    /// When the last scan for every pending event ran (or a window read looked at them all).
    scanned: Option<Instant>,
    /// What the last window read found pending, when it looked at every pending event since
    /// the last round: when, and each job's oldest pending time and id.
    look: Option<(Instant, Vec<(bson::DateTime, ObjectId)>)>,
    /// Until when this process holds the relay lease, as its last take of it said.
    relay_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The jobs whose events recent rounds journaled, as each round read them: a note of the
    /// write that left them pending, arriving after a round took its events (a scan or a
    /// window read ran between the write and its note), is dropped instead of journaling
    /// them twice. Two generations of about [`SCAN_EVERY`]: the newer first.
    journaled_lately: [HashMap<ObjectId, Stamp>; 2],
    /// When the newer generation began.
    lately_since: Option<Instant>,
    /// How long after a look a round with nothing noted looks again: the first while the
    /// last look found other processes' events, the second while it found none. Zero both
    /// (the default): every such round looks.
    pace: (Duration, Duration),
    /// Whether the last look found events this process did not note.
    others_came: bool,
}

/// A job document's state as a write left it: its `version` and `fence` (each write that
/// stores events moves one of them).
type Stamp = (Option<i64>, Option<i64>);

/// The job id and [`Stamp`] of a document that holds them.
fn stamp(document: &Document) -> Option<(ObjectId, Stamp)> {
    let number = |field| match document.get(field) {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        _ => None,
    };
    Some((
        document.get_object_id("_id").ok()?,
        (number("version"), number("fence")),
    ))
}

/// Which pending events a round reads.
pub(super) enum Pending {
    /// Every job with pending events, oldest first.
    Scan,
    /// Jobs this process wrote events to: those to read by `_id`, and the documents known
    /// as its writes left them.
    Written {
        /// Read by `_id`.
        read: Vec<ObjectId>,
        /// Used as they are.
        known: Vec<Document>,
    },
}

/// What a write left pending in the job document `id`: its guard fields and its outbox, as a
/// round would read them. `outbox` and `outbox_at` are the values the write stored.
pub(super) fn as_written(
    id: ObjectId,
    version: u64,
    fence: u64,
    outbox: Bson,
    outbox_at: Bson,
) -> Document {
    doc! {
        "_id": id,
        "version": i64::try_from(version).unwrap_or(i64::MAX),
        "fence": i64::try_from(fence).unwrap_or(i64::MAX),
        "outbox": outbox,
        "outboxAt": outbox_at,
    }
}

impl SequencingState {
    fn note(&mut self, id: ObjectId) {
        if self.written.len() < MOST_NOTED {
            self.written.insert(id);
        } else if !self.written.contains(&id) {
            self.overflowed = true;
        }
    }

    /// Takes up to `limit` of the jobs this process wrote: those to read by `_id`, and the
    /// documents known as its writes left them (less those a round journaled already).
    fn take_written(&mut self, limit: usize) -> (Vec<ObjectId>, Vec<Document>) {
        let taken: Vec<ObjectId> = self.written.iter().take(limit).copied().collect();
        let (mut read, mut known) = (Vec::new(), Vec::new());
        for id in taken {
            self.written.remove(&id);
            match self.take_known(&id) {
                Some(document) if self.was_journaled(&document) => {}
                Some(document) => known.push(document),
                None => read.push(id),
            }
        }
        (read, known)
    }

    /// Whether a recent round journaled the events of `document` as a write left it.
    fn was_journaled(&self, document: &Document) -> bool {
        stamp(document).is_some_and(|(id, stamp)| {
            let lately =
                |generation: &HashMap<ObjectId, Stamp>| generation.get(&id) == Some(&stamp);
            self.journaled_lately.iter().any(lately)
        })
    }

    /// Takes what is known of job `id`'s outbox (or forgets it: the job is read).
    fn take_known(&mut self, id: &ObjectId) -> Option<Document> {
        let (document, bytes) = self.known.remove(id)?;
        self.known_bytes = self.known_bytes.saturating_sub(bytes);
        Some(document)
    }
}

impl Sequencing {
    /// Notes that this process stored events in job `id`, not knowing what else its outbox
    /// holds: the next round reads it.
    pub(super) fn note(&self, id: ObjectId) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.note(id);
        state.take_known(&id);
    }

    /// Notes that this process's write left `document` (see [`as_written`]) holding these
    /// pending events and no others. A job already noted since the last round is read instead:
    /// its outbox may hold the events of both writes.
    pub(super) fn note_known(&self, document: Document) {
        let Ok(id) = document.get_object_id("_id") else {
            return;
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.was_journaled(&document) {
            return;
        }
        if state.written.contains(&id) {
            state.take_known(&id);
            return;
        }
        state.note(id);
        let bytes = document.get_array("outbox").map_or(0, |outbox| {
            outbox
                .iter()
                .filter_map(Bson::as_document)
                .map(|entry| entry.get_str("event").map_or(0, str::len) + 64)
                .sum()
        });
        if state.written.contains(&id) && state.known_bytes + bytes <= MOST_KNOWN_BYTES {
            state.known_bytes += bytes;
            state.known.insert(id, (document, bytes));
        }
    }

    /// Notes that this process claimed job `id` under `token` from a document with no
    /// pending events.
    pub(super) fn claimed_clean(&self, id: ObjectId, token: u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.clean.len() >= MOST_CLEAN_CLAIMS {
            state.clean.clear();
        }
        state.clean.insert(id, token);
    }

    /// Whether this process's claim of job `id` under `token` read a document with no pending
    /// events; asked once per claim, by its step.
    pub(super) fn was_clean(&self, id: ObjectId, token: u64) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.clean.remove(&id) == Some(token)
    }

    /// Notes until when this process holds the relay lease (`None`: it does not).
    pub(super) fn relay_lease(&self, until: Option<chrono::DateTime<chrono::Utc>>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).relay_until = until;
    }

    /// Whether this process holds the relay lease at `now`, and so runs the rounds a window
    /// read's look would serve.
    pub(super) fn leads(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.relay_until.is_some_and(|until| until > now)
    }

    /// Keeps what a window read that began `at` found pending: `(outboxAt, _id)` of every job
    /// that had pending events then. The next round reads those jobs by `_id` instead of
    /// scanning, if the read is less than [`SCAN_EVERY`] old by then.
    pub(super) fn looked(&self, at: Instant, pending: Vec<(bson::DateTime, ObjectId)>) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.look = Some((at, pending));
    }

    /// Paces the looks of rounds with nothing noted: at most every `quick` while the last
    /// look found other processes' events, every `slow` while it found none (the relay's
    /// poll, and its back-off). Without it every such round looks.
    pub(super) fn pace_looks(&self, quick: Duration, slow: Duration) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pace = (quick, slow);
    }

    /// Notes what a round journaled and emptied: `documents` as it read them, or as this
    /// process's writes left them. `looked`: the round was a scan for every pending event.
    pub(super) fn took(&self, documents: &[Document], looked: bool) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        if looked {
            state.others_came = documents
                .iter()
                .filter_map(stamp)
                .any(|(id, _)| !state.written.contains(&id));
        }
        if documents.is_empty() {
            return;
        }
        if state
            .lately_since
            .is_none_or(|since| since.elapsed() >= SCAN_EVERY)
        {
            state.journaled_lately.swap(0, 1);
            state.journaled_lately[0].clear();
            state.lately_since = Some(Instant::now());
        }
        state.journaled_lately[0].extend(documents.iter().filter_map(stamp));
    }

    /// What the next round of up to `limit` jobs reads.
    pub(super) fn next(&self, limit: usize) -> Pending {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let look = state
            .look
            .take()
            .filter(|(at, _)| at.elapsed() < SCAN_EVERY);
        if let Some((at, mut pending)) = look.filter(|_| !state.overflowed) {
            // The window read looked at every pending event since the last round: the jobs
            // it found, oldest first, and this process's writes since (which it may not have
            // seen). Past `limit`, the next round scans for the rest.
            state.scanned = Some(at);
            pending.sort();
            let mut read: Vec<ObjectId> = pending
                .into_iter()
                .map(|(_, id)| id)
                .filter(|id| !state.written.contains(id))
                .collect();
            state.others_came = !read.is_empty();
            if read.len() > limit.max(1) {
                read.truncate(limit.max(1));
                state.overflowed = true;
            }
            let (more, known) = state.take_written(limit.max(1) - read.len());
            read.extend(more);
            return Pending::Written { read, known };
        }
        let since = |gap: Duration| state.scanned.is_none_or(|scanned| scanned.elapsed() >= gap);
        let due = since(SCAN_EVERY);
        let pace = if state.others_came {
            state.pace.0
        } else {
            state.pace.1
        };
        let looks = state.written.is_empty() && since(pace);
        if state.overflowed || due || looks {
            state.overflowed = false;
            state.scanned = Some(Instant::now());
            // What is known stays known: a document the scan journals is noted by `took`,
            // and its known copy then dropped.
            return Pending::Scan;
        }
        let (read, known) = state.take_written(limit.max(1));
        Pending::Written { read, known }
    }

    /// Notes `ids` again, to be read by `_id` in the next round (a round that could not finish).
    pub(super) fn again(&self, ids: impl IntoIterator<Item = ObjectId>) {
        for id in ids {
            self.note(id);
        }
    }

    pub(super) fn head(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).head
    }

    /// Forgets the newest place (another sequencer may have given the next) and the events
    /// of the last insert.
    pub(super) fn forget(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.head = None;
        state.recent.clear();
    }

    /// Keeps what an insert journaled whole, ending at the newest place.
    pub(super) fn journaled(&self, recent: Vec<Journaled>) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.head = recent.last().map(|last| last.seq).or(state.head);
        state.recent = recent;
    }

    /// The events of the last insert from place `after + 1` on, up to `limit`, if that insert
    /// holds that place.
    pub(super) fn recent_after(&self, after: u64, limit: usize) -> Option<Vec<Journaled>> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let first = state.recent.first()?.seq;
        let skip = usize::try_from(after.checked_add(1)?.checked_sub(first)?).ok()?;
        let rest = state.recent.get(skip..).filter(|rest| !rest.is_empty())?;
        Some(rest.iter().take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new job's document as its insert left it, holding one pending event.
    fn created(id: ObjectId, version: u64) -> Document {
        let outbox = Bson::Array(vec![Bson::Document(doc! { "id": "e", "event": "{}" })]);
        as_written(
            id,
            version,
            0,
            outbox,
            Bson::DateTime(bson::DateTime::now()),
        )
    }

    fn known_of(pending: Pending) -> Vec<ObjectId> {
        match pending {
            Pending::Written { read, known } => {
                assert!(read.is_empty(), "read by `_id`: {read:?}");
                known
                    .iter()
                    .map(|document| document.get_object_id("_id").unwrap())
                    .collect()
            }
            Pending::Scan => panic!("a scan"),
        }
    }

    #[test]
    fn a_write_noted_after_a_scan_journaled_it_is_not_journaled_again() {
        let sequencing = Sequencing::default();
        let (early, late, other) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
        // `early` is noted before the scan; `late`'s note comes after it (its insert's
        // answer was slower than the scan); `other` is written again after the scan read it.
        sequencing.note_known(created(early, 1));
        assert!(matches!(sequencing.next(10), Pending::Scan));
        sequencing.took(
            &[created(early, 1), created(late, 1), created(other, 1)],
            true,
        );
        sequencing.note_known(created(late, 1));
        sequencing.note_known(created(other, 2));
        assert_eq!(known_of(sequencing.next(10)), vec![other]);
    }

    #[test]
    fn a_round_with_nothing_noted_looks_at_the_pace_set_for_what_the_last_look_found() {
        let sequencing = Sequencing::default();
        // Unpaced, every round with nothing noted looks.
        assert!(matches!(sequencing.next(10), Pending::Scan));
        sequencing.took(&[], true);
        assert!(matches!(sequencing.next(10), Pending::Scan));
        // Paced: a look that found nothing waits for the slow pace, one that found another
        // process's events for the quick one; a look that found only this process's writes
        // found no other's.
        sequencing.pace_looks(Duration::ZERO, Duration::from_secs(3600));
        sequencing.took(&[], true);
        assert!(known_of(sequencing.next(10)).is_empty());
        let mine = ObjectId::new();
        sequencing.note_known(created(mine, 1));
        assert_eq!(known_of(sequencing.next(10)), vec![mine]);
        sequencing.took(&[created(ObjectId::new(), 1)], true);
        assert!(matches!(sequencing.next(10), Pending::Scan));
        let again = ObjectId::new();
        sequencing.note_known(created(again, 1));
        sequencing.took(&[created(again, 1)], true);
        assert!(known_of(sequencing.next(10)).is_empty());
        assert!(known_of(sequencing.next(10)).is_empty());
    }
}
