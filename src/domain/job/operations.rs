//! The operations on a job (pause, resume, trigger, cancel) and a run's result, as pure
//! functions of the job and the time. Each returns the [`Step`] to store, or why it is refused.

use chrono::{DateTime, Duration, Utc};

use super::{
    Job,
    lifecycle::{Limits, Step},
};
use crate::domain::{
    event::EventKind,
    ids::RunId,
    policy::{JobStatus, OverlapPolicy, RunStatus, name_of},
    run::RunResult,
    time::truncate,
};

/// An operation that does not fit the job's state: why, as a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Why a result could not close a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotClosed {
    /// No run was named and none is open.
    #[error("the job has no open run")]
    NoOpenRun,
    /// The named run is not open: it finished already, or the job never had it. The caller
    /// looks it up in the ledger.
    #[error("the run is not open")]
    NotOpen(RunId),
}

impl Job {
    /// Closes an open run with its result (without a run id, the oldest open run); a failure
    /// retries while attempts remain.
    pub fn finish_run(
        &self,
        run_id: Option<RunId>,
        result: &RunResult,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Result<Step, NotClosed> {
        let run_id = match run_id {
            Some(id) => id,
            None => self.open_runs.first().ok_or(NotClosed::NoOpenRun)?.run_id,
        };
        let position = self
            .open_runs
            .iter()
            .position(|r| r.run_id == run_id)
            .ok_or(NotClosed::NotOpen(run_id))?;
        let mut step = Step::new(self);
        let mut run = step.job.open_runs.remove(position);
        run.lease = None;
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
    pub fn pause(&self, now: DateTime<Utc>) -> Result<Step, Refused> {
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
    pub fn resume(
        &self,
        now: DateTime<Utc>,
        limits: &Limits,
        jitter: f64,
    ) -> Result<Step, Refused> {
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
    pub fn trigger(&self, now: DateTime<Utc>, limits: &Limits) -> Result<Step, Refused> {
        if self.status == JobStatus::Cancelled {
            return Err(transition("trigger", self.status));
        }
        if !self.open_runs.is_empty() && self.overlap_policy == OverlapPolicy::Skip {
            return Err(Refused(
                "a run of the job is still open and its overlap policy is SKIP".into(),
            ));
        }
        if self.open_runs.len() >= limits.max_open_runs {
            return Err(Refused(format!(
                "{} runs of the job are already open",
                self.open_runs.len()
            )));
        }
        let at = truncate(now);
        if self.open_run(self.run_id(at, 1)).is_some() {
            return Err(Refused(
                "the job was triggered this very millisecond".into(),
            ));
        }
        let mut step = Step::new(self);
        step.fire(at, 1, now, limits.default_delivery);
        Ok(step.done(now, None))
    }

    /// Cancels: open runs and waiting retries are recorded `CANCELLED`, nothing fires again.
    pub fn cancel(&self, now: DateTime<Utc>) -> Result<Step, Refused> {
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

fn transition(operation: &str, status: JobStatus) -> Refused {
    Refused(format!(
        "cannot {operation} a job that is {}",
        name_of(&status)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        audit::Audit,
        job::fixtures::{at, every_minute, statuses},
    };

    #[test]
    fn an_attributed_step_names_its_actor_on_the_job_the_records_it_makes_and_its_events() {
        let job = every_minute("2030-01-01T00:00:30Z");
        let audit = Audit::with_reason(Some("olga".into()), Some("rerun".into())).unwrap();
        let limits = Limits::default();
        let triggered = job
            .trigger(at("2030-01-01T00:00:40Z"), &limits)
            .unwrap()
            .attributed(&audit);
        assert_eq!(triggered.job.updated_by.as_deref(), Some("olga"));
        let run = &triggered.job.open_runs[0];
        assert_eq!(
            (run.actor.as_deref(), run.reason.as_deref()),
            (Some("olga"), Some("rerun"))
        );
        let cancelled = triggered
            .job
            .cancel(at("2030-01-01T00:00:50Z"))
            .unwrap()
            .attributed(&Audit::by(Some("ana".into())));
        assert_eq!(cancelled.finished[0].actor.as_deref(), Some("ana"));
        assert_eq!(
            cancelled.finished[0].reason, None,
            "each record has its own reason"
        );
        for event in cancelled.events() {
            assert_eq!(event.actor.as_deref(), Some("ana"), "{:?}", event.kind);
            if let Some(run) = &event.run {
                assert_eq!(run.actor.as_deref(), Some("ana"));
            }
        }
        let by_scheduler = cancelled
            .job
            .settle(at("2030-01-01T00:10:00Z"), &limits, 0.5);
        assert!(by_scheduler.events().iter().all(|e| e.actor.is_none()));
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
            statuses(&resumed.finished, &resumed.job),
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
