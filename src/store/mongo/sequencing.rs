//! What the MongoDB store's event sequencer keeps between rounds, shared by the store's
//! clones: the jobs this process wrote events to (read by `_id` in the next round), when it
//! last looked for every pending event, the newest place it gave and the events it journaled
//! last (which the relay reads next). See `journal` for how a round uses them.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bson::oid::ObjectId;

use crate::jobs::ports::Journaled;

/// How often, at the least, the sequencer looks for every pending event while this process
/// keeps writing its own: how late another replica's event can be journaled then, beyond the
/// relay's own poll.
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Most jobs noted as holding this process's events before the next scan takes over.
const MOST_NOTED: usize = 20_000;

/// What the sequencer keeps between rounds (shared by the store's clones).
#[derive(Clone, Default)]
pub(super) struct Sequencing(Arc<Mutex<SequencingState>>);

#[derive(Default)]
struct SequencingState {
    /// Jobs this process stored events in since a round last read them.
    written: HashSet<ObjectId>,
    /// Some were not noted (too many): the next round scans.
    overflowed: bool,
    /// The newest place this process gave, while no other sequencer has given one since
    /// and every event this process found pending was then journaled once.
    head: Option<u64>,
    /// The events of this process's last journal insert, which the relay reads next.
    recent: Vec<Journaled>,
    /// When the last scan for every pending event ran.
    scanned: Option<Instant>,
}

/// Which pending events a round reads.
pub(super) enum Pending {
    /// Every job with pending events, oldest first.
    Scan,
    /// These jobs, which this process wrote events to.
    Written(Vec<ObjectId>),
}

impl Sequencing {
    /// Notes that this process stored events in job `id`.
    pub(super) fn note(&self, id: ObjectId) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.written.len() < MOST_NOTED {
            state.written.insert(id);
        } else if !state.written.contains(&id) {
            state.overflowed = true;
        }
    }

    /// What the next round of up to `limit` jobs reads.
    pub(super) fn next(&self, limit: usize) -> Pending {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .scanned
            .is_none_or(|scanned| scanned.elapsed() >= SCAN_EVERY);
        if state.overflowed || due || state.written.is_empty() {
            state.overflowed = false;
            state.scanned = Some(Instant::now());
            return Pending::Scan;
        }
        let taken: Vec<ObjectId> = state.written.iter().take(limit.max(1)).copied().collect();
        for id in &taken {
            state.written.remove(id);
        }
        Pending::Written(taken)
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
