//! The scheduler's look-ahead: the due times of the jobs that may need it soon, kept in
//! memory as hints, so that it claims each job by id at its due time instead of asking the
//! store "what is due now?" on every wake.
//!
//! Hints are filled by the scheduler's window read (every job that may be claimable up to the
//! window's horizon) and by this process's own writes: a create, an update or a step whose
//! due time falls inside the window adds its hint directly, with no query. The store stays
//! the truth: a hint for a job that has changed since, or that another replica claimed, fails
//! its claim and is dropped. A due time moved later leaves a stale hint behind, which costs
//! one failed claim; a due time moved earlier by another replica is seen at the next window
//! read.

use std::{collections::BTreeSet, sync::Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::ports::Due;
use crate::domain::JobId;

/// The hints, shared by the use cases (which offer) and the scheduler (which takes).
#[derive(Debug, Default)]
pub struct DueHints {
    state: Mutex<Window>,
    /// Wakes the scheduler when a hint earlier than every other arrives.
    earlier: Notify,
}

#[derive(Debug, Default)]
struct Window {
    /// Due times and jobs, earliest first.
    due: BTreeSet<(DateTime<Utc>, JobId)>,
    /// Up to when the hints are complete: the last window read's horizon. `None` before the
    /// first read, when every offer is kept.
    horizon: Option<DateTime<Utc>>,
}

impl DueHints {
    /// No hints yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A job this process just wrote, and its due time (`Job::due_at`): kept when it falls
    /// inside the window (a later one is found by a later window read), and wakes the
    /// scheduler when it is the earliest.
    pub fn offer(&self, job: JobId, due: Option<DateTime<Utc>>) {
        let Some(due) = due else {
            return;
        };
        let earliest = {
            let mut window = self.lock();
            if window.horizon.is_some_and(|horizon| due > horizon) {
                return;
            }
            let earliest = window.due.first().is_none_or(|(first, _)| due < *first);
            window.due.insert((due, job));
            earliest
        };
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Merges a window read: `found` is everything claimable up to `horizon`, as the store
    /// saw it. Hints offered meanwhile are kept.
    pub fn read(&self, found: &[Due], horizon: DateTime<Utc>) {
        let mut window = self.lock();
        window.due.extend(found.iter().map(|due| (due.at, due.job)));
        window.horizon = Some(horizon);
    }

    /// Removes and returns up to `limit` jobs hinted due at `now`, earliest first, each once.
    pub fn take_due(&self, now: DateTime<Utc>, limit: usize) -> Vec<JobId> {
        let mut window = self.lock();
        let mut taken = Vec::new();
        while taken.len() < limit {
            match window.due.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            if let Some((_, job)) = window.due.pop_first()
                && !taken.contains(&job)
            {
                taken.push(job);
            }
        }
        taken
    }

    /// The earliest hinted due time.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.lock().due.first().map(|(at, _)| *at)
    }

    /// How many hints are held (stale ones included), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Whether no hint is held, for tests.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when a hint earlier than every other is offered.
    pub async fn earlier(&self) {
        self.earlier.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding the lock leaves plain data in a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn id(n: u8) -> JobId {
        JobId::parse(&format!("{n:024x}")).unwrap()
    }

    #[test]
    fn hints_are_taken_earliest_first_once_due() {
        let hints = DueHints::new();
        let now = Utc::now();
        let found = [
            Due {
                job: id(2),
                at: now + Duration::seconds(2),
            },
            Due {
                job: id(1),
                at: now - Duration::seconds(1),
            },
        ];
        hints.read(&found, now + Duration::seconds(5));
        hints.offer(id(3), Some(now));
        assert_eq!(hints.earliest(), Some(now - Duration::seconds(1)));
        assert_eq!(hints.take_due(now, 10), vec![id(1), id(3)]);
        assert!(hints.take_due(now, 10).is_empty());
        assert_eq!(hints.take_due(now + Duration::seconds(2), 10), vec![id(2)]);
        assert!(hints.is_empty());
    }

    #[test]
    fn an_offer_beyond_the_window_or_without_a_due_time_is_left_to_the_next_read() {
        let hints = DueHints::new();
        let now = Utc::now();
        hints.read(&[], now + Duration::seconds(5));
        hints.offer(id(1), Some(now + Duration::seconds(6)));
        hints.offer(id(2), None);
        assert!(hints.is_empty());
        hints.offer(id(3), Some(now + Duration::seconds(5)));
        assert_eq!(hints.len(), 1);
    }

    #[test]
    fn a_job_hinted_twice_is_taken_once_and_a_batch_stops_at_its_limit() {
        let hints = DueHints::new();
        let now = Utc::now();
        hints.offer(id(1), Some(now - Duration::seconds(2)));
        hints.offer(id(1), Some(now - Duration::seconds(1)));
        hints.offer(id(2), Some(now));
        hints.offer(id(3), Some(now));
        assert_eq!(hints.take_due(now, 2), vec![id(1), id(2)]);
        assert_eq!(hints.take_due(now, 2), vec![id(3)]);
    }

    #[tokio::test]
    async fn only_an_earlier_hint_wakes_the_scheduler() {
        let hints = DueHints::new();
        let now = Utc::now();
        hints.offer(id(1), Some(now));
        hints.earlier().await; // the permit the first offer stored
        hints.offer(id(2), Some(now + Duration::seconds(1)));
        let woken = tokio::time::timeout(std::time::Duration::from_millis(20), hints.earlier());
        assert!(woken.await.is_err(), "a later hint woke the scheduler");
    }
}
