//! How a job moves: fires, timeouts, retries, misfires, overlaps, and the operations pause,
//! resume, trigger, cancel and a run's result.
//!
//! Every transition is a pure function of the job and the time, returning a [`Step`]: the job
//! as it leaves it, the runs it finished (for the ledger) and what happened (for the events).
//! The scheduler and the use cases store a step in one atomic write, so a step happens
//! completely or not at all, and a replica that lost its claim cannot store its step.

use chrono::{DateTime, Duration, Utc};

use crate::{
    domain::{
        Job, JobStatus, MisfirePolicy, OverlapPolicy, PendingRetry, Run, RunId, RunResult,
        RunStatus, name_of, truncate,
    },
    error::Error,
    events::{Event, EventKind},
};

/// Bounds of the engine, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A due time older than this when the scheduler gets to it counts as missed (downtime),
    /// and the misfire policy decides; a younger one simply fires late.
    pub misfire_threshold: Duration,
    /// Most missed times one catch-up fires (`FIRE_ALL`) or records (`MISSED`) at once.
    pub max_catch_up: usize,
    /// Most runs of one job open at once (`ALLOW` overlap); a fire beyond is `SKIPPED`.
    pub max_open_runs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            misfire_threshold: Duration::seconds(60),
            max_catch_up: 100,
            max_open_runs: 100,
        }
    }
}

/// Most due times looked at in one step; a schedule further behind than this (a per-second
/// cron after a long outage) jumps to the present.
const MAX_DUE_SCAN: usize = 10_000;

/// A job's transition: the job after it, the runs it finished, and what happened.
#[derive(Debug, Clone)]
pub struct Step {
    pub job: Job,
    /// Runs that reached a final status in this step, for the ledger.
    pub finished: Vec<Run>,
    /// In order: `Run` for each fired run, `Finished` for each finished one, or a job event
    /// (`Paused`, `Resumed`, `Cancelled`) with no run.
    pub happened: Vec<(EventKind, Option<Run>)>,
}

impl Step {
    fn new(job: &Job) -> Self {
        Self {
            job: job.clone(),
            finished: Vec::new(),
            happened: Vec::new(),
        }
    }

    /// The events that describe the step, each with the job as the step left it.
    pub fn events(&self) -> Vec<Event> {
        self.happened
            .iter()
            .map(|(kind, run)| Event::new(*kind, self.job.clone(), run.clone()))
            .collect()
    }

    fn fire(&mut self, scheduled_for: DateTime<Utc>, attempt: u32, now: DateTime<Utc>) {
        let run = Run {
            run_id: RunId::derive(self.job.id, scheduled_for, attempt),
            job_id: self.job.id,
            scheduled_for,
            fired_at: Some(truncate(now)),
            attempt,
            status: RunStatus::Running,
            finished_at: None,
            error: None,
            output: None,
        };
        self.job.open_runs.push(run.clone());
        self.happened.push((EventKind::Run, Some(run)));
    }

    /// Records an expected fire that did not happen.
    fn record(
        &mut self,
        scheduled_for: DateTime<Utc>,
        attempt: u32,
        status: RunStatus,
        why: String,
        now: DateTime<Utc>,
    ) {
        let run = Run {
            run_id: RunId::derive(self.job.id, scheduled_for, attempt),
            job_id: self.job.id,
            scheduled_for,
            fired_at: None,
            attempt,
            status,
            finished_at: Some(truncate(now)),
            error: Some(why),
            output: None,
        };
        self.finish(run);
    }

    fn finish(&mut self, run: Run) {
        self.finished.push(run.clone());
        self.happened.push((EventKind::Finished, Some(run)));
    }

    /// After a failed or timed-out attempt: the next attempt waits for its backoff, if the job
    /// has attempts left.
    fn retry_after(&mut self, run: &Run, now: DateTime<Utc>, jitter: f64) -> bool {
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

    fn done(mut self, now: DateTime<Utc>, finished: Option<RunStatus>) -> Self {
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
    fn settle_with(
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
                step.fire(retry.scheduled_for, retry.attempt, now);
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
        let mut due = vec![first];
        let mut beyond_scan = false;
        while let Some(next) = self.schedule.next_after(*due.last().expect("not empty")) {
            if next > now {
                break;
            }
            if due.len() >= MAX_DUE_SCAN {
                beyond_scan = true;
                break;
            }
            due.push(next);
        }
        step.job.schedule_time = if beyond_scan {
            self.schedule.next_after(now)
        } else {
            due.last().and_then(|t| self.schedule.next_after(*t))
        };
        let first_attempt = step.job.next_attempt;
        step.job.next_attempt = 1;
        let attempt_of = |t: DateTime<Utc>| if t == first { first_attempt } else { 1 };

        // A one-shot always fires: its past time was asked for ("a past time fires at once").
        let late = now - misfire_threshold;
        let split = if self.schedule.is_recurring() {
            due.partition_point(|t| *t < late)
        } else {
            0
        };
        let (missed, on_time) = due.split_at(split);
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
        for (i, t) in to_record[recorded_from..].iter().enumerate() {
            let mut text = format!(
                "missed: {why} (misfire policy {})",
                name_of(&self.misfire_policy)
            );
            if i == 0 && beyond_scan {
                text.push_str(&format!(
                    "; more than {MAX_DUE_SCAN} earlier missed times are not recorded one by one"
                ));
            } else if i == 0 && recorded_from > 0 {
                text.push_str(&format!(
                    "; {recorded_from} earlier missed times are not recorded one by one"
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
                step.fire(t, attempt_of(t), now);
            }
        }
    }

    /// Closes an open run with its result. `Err(None)` when the run is not open (the caller
    /// looks it up in the ledger); a failure retries while attempts remain.
    pub fn finish_run(
        &self,
        run_id: Option<RunId>,
        result: &RunResult,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Result<Step, Option<Error>> {
        let run_id = match run_id {
            Some(id) => id,
            None => {
                self.open_runs
                    .first()
                    .ok_or_else(|| Some(Error::Conflict("the job has no open run".into())))?
                    .run_id
            }
        };
        let position = self
            .open_runs
            .iter()
            .position(|r| r.run_id == run_id)
            .ok_or(None)?;
        let mut step = Step::new(self);
        let mut run = step.job.open_runs.remove(position);
        run.status = result.status;
        run.finished_at = Some(truncate(now));
        run.error = result.error.clone();
        run.output = result.output.clone();
        if run.status == RunStatus::Failed {
            step.retry_after(&run, now, jitter);
        }
        let status = run.status;
        step.finish(run);
        Ok(step.done(now, Some(status)))
    }

    /// Pauses: nothing fires until resumed; the schedule keeps its place and open runs stay
    /// open (and still time out).
    pub fn pause(&self, now: DateTime<Utc>) -> Result<Step, Error> {
        match self.status {
            JobStatus::Pending | JobStatus::Scheduled | JobStatus::Running => {}
            other => return Err(transition("pause", other)),
        }
        let mut step = Step::new(self);
        step.job.status = JobStatus::Paused;
        step.happened.push((EventKind::Paused, None));
        Ok(step.done(now, None))
    }

    /// Resumes a paused job: the times it passed while paused go through the misfire policy at
    /// once, and the schedule continues from now.
    pub fn resume(&self, now: DateTime<Utc>, limits: &Limits, jitter: f64) -> Result<Step, Error> {
        if self.status != JobStatus::Paused {
            return Err(transition("resume", self.status));
        }
        let mut resumed = self.clone();
        resumed.status = JobStatus::Scheduled;
        resumed.refresh_status(None);
        // Every due time before now passed while paused: all of them are misfires.
        let why = "the job was paused at this time";
        let mut step = resumed.settle_with(now, limits, Duration::zero(), jitter, why);
        step.happened.insert(0, (EventKind::Resumed, None));
        Ok(step)
    }

    /// Fires an extra run now, without moving the schedule.
    pub fn trigger(&self, now: DateTime<Utc>, limits: &Limits) -> Result<Step, Error> {
        if self.status == JobStatus::Cancelled {
            return Err(transition("trigger", self.status));
        }
        if !self.open_runs.is_empty() && self.overlap_policy == OverlapPolicy::Skip {
            return Err(Error::Conflict(
                "a run of the job is still open and its overlap policy is SKIP".into(),
            ));
        }
        if self.open_runs.len() >= limits.max_open_runs {
            return Err(Error::Conflict(format!(
                "{} runs of the job are already open",
                self.open_runs.len()
            )));
        }
        let at = truncate(now);
        if self.open_run(RunId::derive(self.id, at, 1)).is_some() {
            return Err(Error::Conflict(
                "the job was triggered this very millisecond".into(),
            ));
        }
        let mut step = Step::new(self);
        step.fire(at, 1, now);
        Ok(step.done(now, None))
    }

    /// Cancels: open runs and waiting retries are recorded `CANCELLED`, nothing fires again.
    pub fn cancel(&self, now: DateTime<Utc>) -> Result<Step, Error> {
        match self.status {
            JobStatus::Cancelled | JobStatus::Succeeded | JobStatus::Failed => {
                return Err(transition("cancel", self.status));
            }
            _ => {}
        }
        let mut step = Step::new(self);
        for mut run in std::mem::take(&mut step.job.open_runs) {
            run.status = RunStatus::Cancelled;
            run.finished_at = Some(truncate(now));
            run.error = Some("cancelled with its job".into());
            step.finish(run);
        }
        for retry in std::mem::take(&mut step.job.retries) {
            step.record(
                retry.scheduled_for,
                retry.attempt,
                RunStatus::Cancelled,
                "cancelled with its job before this retry fired".into(),
                now,
            );
        }
        step.job.schedule_time = None;
        step.job.status = JobStatus::Cancelled;
        step.happened.push((EventKind::Cancelled, None));
        Ok(step.done(now, None))
    }
}

fn transition(operation: &str, status: JobStatus) -> Error {
    Error::Conflict(format!(
        "cannot {operation} a job that is {}",
        name_of(&status)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{JobSpec, JobType, RetryPolicy, Schedule, parse_time},
        schedule::CronSchedule,
    };

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn job(schedule: Schedule, now: &str) -> Job {
        Job::new(
            JobSpec {
                name: "engine".into(),
                description: String::new(),
                job_type: JobType::Sms,
                job_data: Default::default(),
                schedule,
                retry: RetryPolicy::default(),
                run_timeout_seconds: 300,
                misfire_policy: MisfirePolicy::FireOnce,
                overlap_policy: OverlapPolicy::Skip,
            },
            at(now),
        )
    }

    fn every_minute(now: &str) -> Job {
        job(
            Schedule::Cron(Box::new(CronSchedule::parse("* * * * *", "UTC").unwrap())),
            now,
        )
    }

    fn statuses(step: &Step) -> Vec<(String, RunStatus)> {
        step.finished
            .iter()
            .chain(step.job.open_runs.iter())
            .map(|r| (crate::domain::format_time(r.scheduled_for), r.status))
            .collect()
    }

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
        let got = statuses(&step);
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
            statuses(&step),
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
            statuses(&step),
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

    #[test]
    fn backoff_doubles_is_capped_at_an_hour_and_jitter_stays_in_the_upper_half() {
        let policy = RetryPolicy {
            max_attempts: 100,
            backoff_seconds: 10,
        };
        assert_eq!(policy.delay_before(2, 1.0), Duration::seconds(10));
        assert_eq!(policy.delay_before(3, 1.0), Duration::seconds(20));
        assert_eq!(policy.delay_before(4, 0.0), Duration::seconds(20));
        assert_eq!(policy.delay_before(60, 1.0), Duration::seconds(3600));
    }

    #[test]
    fn pause_keeps_the_place_and_resume_applies_the_misfire_policy() {
        let job = every_minute("2030-01-01T00:00:30Z");
        let paused = job.pause(at("2030-01-01T00:00:40Z")).unwrap().job;
        assert_eq!(paused.due_at(), None);
        assert_eq!(paused.schedule_time, Some(at("2030-01-01T00:01:00Z")));
        assert!(paused.pause(at("2030-01-01T00:00:41Z")).is_err());

        let resumed = paused
            .resume(at("2030-01-01T00:03:30Z"), &Limits::default(), 0.5)
            .unwrap();
        assert_eq!(resumed.happened[0].0, EventKind::Resumed);
        assert_eq!(
            statuses(&resumed),
            vec![
                ("2030-01-01T00:01:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:02:00.000Z".into(), RunStatus::Missed),
                ("2030-01-01T00:03:00.000Z".into(), RunStatus::Running),
            ]
        );
        assert_eq!(resumed.job.version, paused.version + 1);
        assert!(
            resumed
                .job
                .resume(at("2030-01-01T00:03:31Z"), &Limits::default(), 0.5)
                .is_err()
        );
    }

    #[test]
    fn cancel_closes_open_runs_and_waiting_retries_and_nothing_fires_again() {
        let mut job = every_minute("2030-01-01T00:00:30Z");
        job.retry.max_attempts = 3;
        let fired = job
            .settle(at("2030-01-01T00:01:00Z"), &Limits::default(), 0.5)
            .job;
        let cancelled = fired.cancel(at("2030-01-01T00:01:05Z")).unwrap();
        assert_eq!(cancelled.job.status, JobStatus::Cancelled);
        assert_eq!(cancelled.finished[0].status, RunStatus::Cancelled);
        assert_eq!(cancelled.job.due_at(), None);
        assert!(cancelled.job.cancel(at("2030-01-01T00:01:06Z")).is_err());
        assert!(
            cancelled
                .job
                .trigger(at("2030-01-01T00:01:06Z"), &Limits::default())
                .is_err()
        );
    }

    #[test]
    fn trigger_adds_a_run_without_moving_the_schedule() {
        let job = every_minute("2030-01-01T00:00:30Z");
        let triggered = job
            .trigger(at("2030-01-01T00:00:40Z"), &Limits::default())
            .unwrap();
        assert_eq!(triggered.job.open_runs.len(), 1);
        assert_eq!(triggered.job.schedule_time, job.schedule_time);
        // Overlap SKIP: a second trigger while the run is open is refused.
        assert!(
            triggered
                .job
                .trigger(at("2030-01-01T00:00:41Z"), &Limits::default())
                .is_err()
        );
    }
}
