//! How a job moves with time: fires, timeouts, retries, misfires and overlaps; the operations
//! are in [`super::operations`].
//!
//! Every transition is a pure function of the job and the time, returning a [`Step`]: the job
//! as it leaves it, the runs it finished (for the ledger) and what happened (for the events).
//! The scheduler and the use cases store a step in one atomic write, so a step happens
//! completely or not at all, and a replica that lost its claim cannot store its step.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};

use super::{Job, PendingRetry};
use crate::domain::{
    audit::Audit,
    delivery::Delivery,
    event::{Event, EventKind},
    ids::RunId,
    policy::{JobStatus, MisfirePolicy, OverlapPolicy, RunStatus, name_of},
    run::Run,
    time::truncate,
};

/// Bounds and defaults of the engine, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A due time older than this when the scheduler gets to it counts as missed (downtime),
    /// and the misfire policy decides; a younger one simply fires late.
    pub misfire_threshold: Duration,
    /// Most missed times one catch-up fires (`FIRE_ALL`) or records (`MISSED`) at once.
    pub max_catch_up: usize,
    /// Most runs of one job open at once (`ALLOW` overlap); a fire beyond is `SKIPPED`.
    pub max_open_runs: usize,
    /// Where a run goes when its job chose no way and has no webhook: Kafka when brokers are
    /// configured, else pulling workers.
    pub default_delivery: Delivery,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            misfire_threshold: Duration::seconds(60),
            max_catch_up: 100,
            max_open_runs: 100,
            default_delivery: Delivery::Pull,
        }
    }
}

/// Most due times looked at in one step; a schedule further behind than this (a per-second
/// cron after a long outage) jumps to the present.
const MAX_DUE_SCAN: usize = 10_000;

/// A job's transition: the job after it, the runs it finished, and what happened.
#[derive(Debug, Clone)]
pub struct Step {
    /// The job as the transition leaves it, its version one above the job it started from.
    pub job: Job,
    /// Runs that reached a final status in this step, for the ledger.
    pub finished: Vec<Run>,
    /// In order: `Run` for each fired run, `Finished` for each finished one, or a job event
    /// (`Paused`, `Resumed`, `Cancelled`) with no run.
    pub happened: Vec<(EventKind, Option<Run>)>,
    /// Who caused the step through the API, if anyone: on its events and records.
    pub audit: Audit,
}

impl Step {
    pub(super) fn new(job: &Job) -> Self {
        Self {
            job: job.clone(),
            finished: Vec::new(),
            happened: Vec::new(),
            audit: Audit::default(),
        }
    }

    /// The step as caused by `audit`'s actor: the job's `updatedBy`, the runs it fired or
    /// recorded, and its events name them.
    pub fn attributed(mut self, audit: &Audit) -> Self {
        let stamp = |run: &mut Run| {
            run.actor.clone_from(&audit.actor);
            run.reason.clone_from(&audit.reason);
            run.trace.clone_from(&audit.trace);
        };
        let fired: Vec<RunId> = self.fired().collect();
        self.job
            .open_runs
            .iter_mut()
            .filter(|run| fired.contains(&run.run_id))
            .for_each(stamp);
        self.finished.iter_mut().for_each(stamp);
        self.happened
            .iter_mut()
            .filter_map(|(_, run)| run.as_mut())
            .for_each(stamp);
        self.job.updated_by.clone_from(&audit.actor);
        self.job.trace.clone_from(&audit.trace);
        self.audit = audit.clone();
        self
    }

    /// Whether the step fires a run.
    pub fn fires(&self) -> bool {
        self.happened
            .iter()
            .any(|(kind, _)| *kind == EventKind::Run)
    }

    /// The step as made in the trace `trace` names (a fire's own): its events and the runs
    /// it fires carry it. Who caused the step is left as it is.
    pub fn traced(mut self, trace: Option<String>) -> Self {
        let fired: Vec<RunId> = self.fired().collect();
        self.job
            .open_runs
            .iter_mut()
            .filter(|run| fired.contains(&run.run_id))
            .for_each(|run| run.trace.clone_from(&trace));
        self.happened
            .iter_mut()
            .filter(|(kind, _)| *kind == EventKind::Run)
            .filter_map(|(_, run)| run.as_mut())
            .for_each(|run| run.trace.clone_from(&trace));
        self.audit.trace = trace;
        self
    }

    /// The ids of the runs the step fires.
    fn fired(&self) -> impl Iterator<Item = RunId> + '_ {
        self.happened
            .iter()
            .filter(|(kind, _)| *kind == EventKind::Run)
            .filter_map(|(_, run)| run.as_ref().map(|r| r.run_id))
    }

    /// The events that describe the step, each with the job as the step left it.
    pub fn events(&self) -> Vec<Event> {
        self.happened
            .iter()
            .map(|(kind, run)| {
                Event::new(*kind, self.job.clone(), run.clone()).attributed(&self.audit)
            })
            .collect()
    }

    /// Fires attempt `attempt` of the job's fire due at `scheduled_for`, going the job's way
    /// (`default` when it chose none and has no webhook).
    pub(super) fn fire(
        &mut self,
        scheduled_for: DateTime<Utc>,
        attempt: u32,
        now: DateTime<Utc>,
        default: Delivery,
    ) {
        let mut run = Run::running(
            self.job.run_id(scheduled_for, attempt),
            self.job.id,
            scheduled_for,
            attempt,
            truncate(now),
        );
        run.delivery = Some(Delivery::of(
            self.job.delivery,
            self.job.webhook.is_some(),
            default,
        ));
        self.job.open_runs.push(run.clone());
        self.happened.push((EventKind::Run, Some(run)));
    }

    /// Records an expected fire that did not happen.
    pub(super) fn record(
        &mut self,
        scheduled_for: DateTime<Utc>,
        attempt: u32,
        status: RunStatus,
        why: String,
        now: DateTime<Utc>,
    ) {
        let run = Run {
            run_id: self.job.run_id(scheduled_for, attempt),
            job_id: self.job.id,
            scheduled_for,
            fired_at: None,
            attempt,
            status,
            finished_at: Some(truncate(now)),
            error: Some(why),
            output: None,
            actor: None,
            reason: None,
            trace: None,
            delivery: None,
            lease: None,
        };
        self.finish(run);
    }

    pub(super) fn finish(&mut self, run: Run) {
        self.finished.push(run.clone());
        self.happened.push((EventKind::Finished, Some(run)));
    }

    /// After a failed or timed-out attempt: the next attempt waits for its backoff, if the job
    /// has attempts left.
    pub(super) fn retry_after(&mut self, run: &Run, now: DateTime<Utc>, jitter: f64) -> bool {
        if run.attempt >= self.job.retry.max_attempts {
            return false;
        }
        let next = run.attempt + 1;
        let retry = PendingRetry {
            due: truncate(now + self.job.retry.delay_before(next, jitter)),
            scheduled_for: run.scheduled_for,
            attempt: next,
        };
        let at = self.job.retries.partition_point(|r| r.due <= retry.due);
        self.job.retries.insert(at, retry);
        true
    }

    pub(super) fn done(mut self, now: DateTime<Utc>, finished: Option<RunStatus>) -> Self {
        self.job.refresh_status(finished);
        self.job.touch(now);
        self
    }
}

impl Job {
    /// Everything due at `now`: open runs past their deadline time out (and retry or fail),
    /// due retries fire, and due regular fires fire, are skipped (overlap) or are handled by
    /// the misfire policy. `jitter` (0 to 1) spreads retry delays.
    pub fn settle(&self, now: DateTime<Utc>, limits: &Limits, jitter: f64) -> Step {
        let why = "the scheduler was not running at this time";
        self.settle_with(now, limits, limits.misfire_threshold, jitter, why)
    }

    /// `settle`, with the misfire threshold and the reason missed times are recorded with.
    pub(super) fn settle_with(
        &self,
        now: DateTime<Utc>,
        limits: &Limits,
        misfire_threshold: Duration,
        jitter: f64,
        why_missed: &str,
    ) -> Step {
        let mut step = Step::new(self);
        let mut last_finished = None;

        // Timeouts.
        let (expired, open): (Vec<Run>, Vec<Run>) = std::mem::take(&mut step.job.open_runs)
            .into_iter()
            .partition(|run| self.deadline(run) <= now);
        step.job.open_runs = open;
        for mut run in expired {
            run.status = RunStatus::TimedOut;
            run.finished_at = Some(truncate(now));
            run.error = Some(format!(
                "no result within {} seconds",
                self.run_timeout_seconds
            ));
            step.retry_after(&run, now, jitter);
            last_finished = Some(RunStatus::TimedOut);
            step.finish(run);
        }

        if !matches!(self.status, JobStatus::Paused | JobStatus::Cancelled) {
            // Retries whose backoff has passed.
            let due = step.job.retries.partition_point(|r| r.due <= now);
            for retry in step.job.retries.drain(..due).collect::<Vec<_>>() {
                step.fire(
                    retry.scheduled_for,
                    retry.attempt,
                    now,
                    limits.default_delivery,
                );
            }
            // Regular fires.
            if let Some(first) = step.job.schedule_time.filter(|t| *t <= now) {
                let misfires = (misfire_threshold, why_missed);
                self.fire_schedule(&mut step, first, now, limits, misfires);
            }
        }
        step.done(now, last_finished)
    }

    /// Fires (or records) every regular due time from `first` up to `now`, then moves the
    /// schedule to its next time after now.
    fn fire_schedule(
        &self,
        step: &mut Step,
        first: DateTime<Utc>,
        now: DateTime<Utc>,
        limits: &Limits,
        (misfire_threshold, why): (Duration, &str),
    ) {
        // Missed times are counted, and only the latest kept: what any policy fires or records
        // of them is at most `max_catch_up` fired and `max_catch_up` recorded before those.
        let keep = 2 * limits.max_catch_up + 1;
        let late = now - misfire_threshold;
        let recurring = self.schedule.is_recurring();
        let (mut missed, mut on_time) = (VecDeque::with_capacity(keep), Vec::new());
        let (mut scanned, mut not_kept, mut beyond_scan) = (0, 0, false);
        let mut next = Some(first);
        while let Some(t) = next.filter(|t| *t <= now) {
            if scanned >= MAX_DUE_SCAN {
                beyond_scan = true;
                break;
            }
            scanned += 1;
            // A one-shot always fires: its past time was asked for ("a past time fires at once").
            if recurring && t < late {
                missed.push_back(t);
                if missed.len() > keep {
                    missed.pop_front();
                    not_kept += 1;
                }
            } else {
                on_time.push(t);
            }
            next = self.schedule.next_after(t);
        }
        // The first time after the last due one is the first after now: straight from now
        // when the scan stopped short.
        step.job.schedule_time = if beyond_scan {
            self.schedule.next_after(now)
        } else {
            next
        };
        let first_attempt = step.job.next_attempt;
        step.job.next_attempt = 1;
        let attempt_of = |t: DateTime<Utc>| if t == first { first_attempt } else { 1 };

        let missed = Vec::from(missed);
        let on_time = on_time.as_slice();
        let (to_fire, to_record): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) =
            match (self.misfire_policy, missed.is_empty()) {
                (_, true) => (on_time.to_vec(), Vec::new()),
                (MisfirePolicy::Skip, false) => (on_time.to_vec(), missed.to_vec()),
                (MisfirePolicy::FireOnce, false) if on_time.is_empty() => (
                    missed[missed.len() - 1..].to_vec(),
                    missed[..missed.len() - 1].to_vec(),
                ),
                (MisfirePolicy::FireOnce, false) => (on_time.to_vec(), missed.to_vec()),
                (MisfirePolicy::FireAll, false) => {
                    let cut = missed.len().saturating_sub(limits.max_catch_up);
                    let mut fire = missed[cut..].to_vec();
                    fire.extend_from_slice(on_time);
                    (fire, missed[..cut].to_vec())
                }
            };
        let recorded_from = to_record.len().saturating_sub(limits.max_catch_up);
        let unrecorded = recorded_from + not_kept;
        for (i, t) in to_record[recorded_from..].iter().enumerate() {
            let mut text = format!(
                "missed: {why} (misfire policy {})",
                name_of(&self.misfire_policy)
            );
            if i == 0 && beyond_scan {
                text.push_str(&format!(
                    "; more than {MAX_DUE_SCAN} earlier missed times are not recorded one by one"
                ));
            } else if i == 0 && unrecorded > 0 {
                text.push_str(&format!(
                    "; {unrecorded} earlier missed times are not recorded one by one"
                ));
            }
            step.record(*t, attempt_of(*t), RunStatus::Missed, text, now);
        }
        for t in to_fire {
            let open = step.job.open_runs.len();
            if open > 0 && self.overlap_policy == OverlapPolicy::Skip {
                step.record(
                    t,
                    attempt_of(t),
                    RunStatus::Skipped,
                    "skipped: the previous run was still open (overlap policy SKIP)".into(),
                    now,
                );
            } else if open >= limits.max_open_runs {
                step.record(
                    t,
                    attempt_of(t),
                    RunStatus::Skipped,
                    format!("skipped: {open} runs of the job were already open"),
                    now,
                );
            } else {
                step.fire(t, attempt_of(t), now, limits.default_delivery);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        job::fixtures::{at, every_minute, job, statuses},
        policy::RetryPolicy,
        run::RunResult,
        schedule::Schedule,
    };

    #[test]
    fn a_due_cron_fire_opens_a_run_and_moves_the_schedule() {
        let job = every_minute("2030-01-01T00:00:30Z");
        assert_eq!(job.schedule_time, Some(at("2030-01-01T00:01:00Z")));
        let step = job.settle(at("2030-01-01T00:01:00.004Z"), &Limits::default(), 0.5);
        assert_eq!(step.job.status, JobStatus::Running);
        assert_eq!(step.job.open_runs.len(), 1);
        assert_eq!(step.job.schedule_time, Some(at("2030-01-01T00:02:00Z")));
        assert_eq!(step.happened[0].0, EventKind::Run);
    }

    #[test]
    fn after_downtime_fire_once_runs_the_latest_and_records_the_rest_missed() {
        let job = every_minute("2030-01-01T00:00:30Z");
        let step = job.settle(at("2030-01-01T00:05:30Z"), &Limits::default(), 0.5);
        let got = statuses(&step.finished, &step.job);
        assert_eq!(
            got,
            vec![
                ("2030-01-01T00:01:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:02:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:03:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:04:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:05:00.000Z".into(), RunStatus::Running),
            ]
        );
        assert_eq!(step.job.schedule_time, Some(at("2030-01-01T00:06:00Z")));
    }

    #[test]
    fn after_downtime_skip_records_every_time_missed_and_fire_all_fires_them_in_order() {
        let mut skip = every_minute("2030-01-01T00:00:30Z");
        skip.misfire_policy = MisfirePolicy::Skip;
        let step = skip.settle(at("2030-01-01T00:03:30Z"), &Limits::default(), 0.5);
        // 00:03 is 30 s late, within the misfire threshold: it fires late, not missed.
        assert_eq!(
            statuses(&step.finished, &step.job),
            vec![
                ("2030-01-01T00:01:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:02:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:03:00.000Z".into(), RunStatus::Running),
            ]
        );

        let mut all = every_minute("2030-01-01T00:00:30Z");
        all.misfire_policy = MisfirePolicy::FireAll;
        all.overlap_policy = OverlapPolicy::Allow;
        let limits = Limits {
            max_catch_up: 1,
            ..Limits::default()
        };
        let step = all.settle(at("2030-01-01T00:03:30Z"), &limits, 0.5);
        assert_eq!(
            statuses(&step.finished, &step.job),
            vec![
                ("2030-01-01T00:01:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:02:00.000Z".into(), RunStatus::Running),
                ("2030-01-01T00:03:00.000Z".into(), RunStatus::Running),
            ]
        );
    }

    #[test]
    fn a_fire_due_while_the_previous_run_is_open_is_skipped_under_overlap_skip() {
        let job = every_minute("2030-01-01T00:00:30Z");
        let first = job.settle(at("2030-01-01T00:01:00Z"), &Limits::default(), 0.5);
        let second = first
            .job
            .settle(at("2030-01-01T00:02:00Z"), &Limits::default(), 0.5);
        assert_eq!(second.finished.len(), 1);
        assert_eq!(second.finished[0].status, RunStatus::Skipped);
        assert_eq!(second.job.open_runs.len(), 1);

        let mut allow = first.job.clone();
        allow.overlap_policy = OverlapPolicy::Allow;
        let both = allow.settle(at("2030-01-01T00:02:00Z"), &Limits::default(), 0.5);
        assert_eq!(both.job.open_runs.len(), 2);
    }

    #[test]
    fn a_timed_out_run_retries_with_a_new_run_id_after_its_backoff_then_fails() {
        let mut one_shot = job(
            Schedule::RunAt(at("2030-01-01T00:00:00Z")),
            "2029-12-31T00:00:00Z",
        );
        one_shot.retry = RetryPolicy {
            max_attempts: 2,
            backoff_seconds: 10,
        };
        one_shot.run_timeout_seconds = 60;
        let fired = one_shot.settle(at("2030-01-01T00:00:00Z"), &Limits::default(), 0.5);
        let first = fired.job.open_runs[0].clone();
        assert_eq!(fired.job.due_at(), Some(at("2030-01-01T00:01:00Z")));

        let timed_out = fired
            .job
            .settle(at("2030-01-01T00:01:00Z"), &Limits::default(), 1.0);
        assert_eq!(timed_out.finished[0].status, RunStatus::TimedOut);
        assert_eq!(timed_out.job.status, JobStatus::Scheduled);
        // Jitter 1.0 takes the whole delay: 10 s.
        assert_eq!(timed_out.job.next_fire(), Some(at("2030-01-01T00:01:10Z")));

        let retried = timed_out
            .job
            .settle(at("2030-01-01T00:01:10Z"), &Limits::default(), 0.5);
        let second = &retried.job.open_runs[0];
        assert_eq!(
            (second.attempt, second.scheduled_for),
            (2, first.scheduled_for)
        );
        assert_ne!(second.run_id, first.run_id);

        let result = RunResult::parse(RunStatus::Failed, Some("bounced".into()), None).unwrap();
        let failed = retried
            .job
            .finish_run(None, &result, at("2030-01-01T00:01:20Z"), 0.5)
            .unwrap();
        assert_eq!(failed.job.status, JobStatus::Failed);
        assert!(failed.job.retries.is_empty());
        assert_eq!(failed.job.due_at(), None);
    }
}
