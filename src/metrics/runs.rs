//! What a stored step tells the metrics: the runs it fired and how late, the ledger records it
//! wrote and how long their runs took, and the misfires among them.
//!
//! The scheduler and the use cases call [`Metrics::stored`] once a step's write succeeded, with
//! the job as it was before the step (its pending retries say when a retry was due) and the
//! step's events, which name every fired run (`Run`) and every ledger record (`Finished`).

use chrono::{DateTime, Utc};

use super::{FireKind, Metrics, policy_index, status_index};
use crate::domain::{Event, EventKind, Job, Run, RunStatus, Schedule};

/// What made a stored step.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// The scheduler settled a claimed job (or a resume caught up, with a threshold of zero):
    /// a regular fire older than `misfire_threshold` was a misfire, fired late by its policy.
    Scheduler {
        /// The configured misfire threshold.
        misfire_threshold: chrono::Duration,
    },
    /// A trigger through the API: its run's kind is `trigger`.
    Trigger,
    /// Any other operation (pause, resume, cancel) or an executor's result.
    Operation,
}

impl Metrics {
    /// A step was stored: counts its fires (and their lag, from due to now) and its ledger
    /// records (and their runs' durations), and its misfires.
    pub fn stored(&self, before: &Job, events: &[Event], origin: Origin) {
        let Some(m) = &self.0 else { return };
        let now = Utc::now();
        for event in events {
            let Some(run) = &event.run else { continue };
            match event.kind {
                EventKind::Run => {
                    m.runs[status_index(RunStatus::Running)].inc();
                    let (kind, due) = fire_of(before, run, origin);
                    m.fire_lag[kind as usize].observe(seconds(now, due));
                    if let Origin::Scheduler { misfire_threshold } = origin
                        && matches!(kind, FireKind::Cron | FireKind::Interval)
                        && run
                            .fired_at
                            .is_some_and(|fired| fired - run.scheduled_for > misfire_threshold)
                    {
                        m.misfires[policy_index(before.misfire_policy)].inc();
                    }
                }
                EventKind::Finished => {
                    m.runs[status_index(run.status)].inc();
                    if run.status == RunStatus::Missed {
                        m.misfires[policy_index(before.misfire_policy)].inc();
                    }
                    if let (Some(fired), Some(finished)) = (run.fired_at, run.finished_at) {
                        m.run_duration[status_index(run.status)].observe(seconds(finished, fired));
                    }
                }
                _ => {}
            }
        }
    }
}

/// What made a fired run due, and when it was due: a retry when its backoff passed, a trigger
/// when it was asked for, else its job's schedule at its due time.
fn fire_of(before: &Job, run: &Run, origin: Origin) -> (FireKind, DateTime<Utc>) {
    if run.attempt > 1 {
        let due = before
            .retries
            .iter()
            .find(|r| r.scheduled_for == run.scheduled_for && r.attempt == run.attempt)
            .map_or(run.scheduled_for, |r| r.due);
        return (FireKind::Retry, due);
    }
    let kind = match (origin, &before.schedule) {
        (Origin::Trigger, _) => FireKind::Trigger,
        (_, Schedule::RunAt(_)) => FireKind::Once,
        (_, Schedule::Cron(_)) => FireKind::Cron,
        (_, Schedule::Interval { .. }) => FireKind::Interval,
    };
    (kind, run.scheduled_for)
}

/// Seconds from `from` to `to`, never negative.
fn seconds(to: DateTime<Utc>, from: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(i64::MAX).max(0) as f64) / 1e6
}
