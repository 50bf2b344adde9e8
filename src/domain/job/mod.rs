//! The job: its fields, its schedule's place, its open runs and waiting retries; and how it
//! moves ([`lifecycle`]: fires, timeouts, retries, misfires, overlaps; [`operations`]: pause,
//! resume, trigger, cancel and a run's result; [`leases`]: workers' holds on open runs).

#[cfg(test)]
mod fixtures;
pub mod leases;
pub mod lifecycle;
pub mod operations;

use super::{
    data::JobData,
    delivery::{Delivery, Webhook},
    ids::{JobId, RunId},
    input::JobSpec,
    policy::{JobStatus, JobType, MisfirePolicy, OverlapPolicy, RetryPolicy, RunStatus},
    run::Run,
    schedule::Schedule,
    time::truncate,
};
use chrono::{DateTime, Utc};

/// An attempt waiting for its backoff to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRetry {
    /// When the attempt fires.
    pub due: DateTime<Utc>,
    /// The fire it retries (with `attempt`, this gives the new run its id).
    pub scheduled_for: DateTime<Utc>,
    /// The attempt it will be: 2 or more.
    pub attempt: u32,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Made by the service at creation.
    pub id: JobId,
    /// 3 to 250 characters, trimmed.
    pub name: String,
    /// Up to 500 characters; may be empty.
    pub description: String,
    /// Which executors act on its runs.
    pub job_type: JobType,
    /// A JSON object; its shape is checked per job type.
    pub job_data: JobData,
    /// When it fires, anchored at creation (an interval always has its start).
    pub schedule: Schedule,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Seconds a run may stay open without a result before it is `TIMED_OUT`.
    pub run_timeout_seconds: u32,
    /// What it does with fires missed while the service was down or it was paused.
    pub misfire_policy: MisfirePolicy,
    /// What it does when due while its previous run is open.
    pub overlap_policy: OverlapPolicy,
    /// Where its runs go, when it chose; else by [`Delivery::of`].
    pub delivery: Option<Delivery>,
    /// Where its runs are POSTed, when they go by webhook.
    pub webhook: Option<Webhook>,
    /// The schedule's next regular fire: where the schedule stands, kept while paused; `None`
    /// once a one-shot has fired or the job is cancelled.
    pub schedule_time: Option<DateTime<Utc>>,
    /// Where it is in its life.
    pub status: JobStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Increases on every change; guards conditional writes.
    pub version: u64,
    /// Runs fired and not yet finished, oldest first. Kept in the job so that one atomic write
    /// fires, finishes or times them out together with the job's state.
    pub open_runs: Vec<Run>,
    /// Attempts waiting for their backoff, earliest first.
    pub retries: Vec<PendingRetry>,
    /// The attempt number the next regular fire records: 1, unless the job was rescheduled to a
    /// due time its ledger still holds runs of (then the next number those runs leave free).
    /// Only numbering: that run ids are never reused rests on `reschedules`, not on the ledger.
    pub next_attempt: u32,
    /// How often an update changed the schedule: part of every run id ([`RunId::derive`]), so
    /// a job moved back to a due time it already fired for never fires an id again, even after
    /// the ledger has dropped the earlier runs. Stored with the job; 0 for jobs stored before
    /// it existed (their ids are unchanged).
    pub reschedules: u32,
    /// Who created it: the creating token's `sub`; `None` without auth.
    pub created_by: Option<String>,
    /// Who made its last change through the API (an update or an operation); `None` without
    /// auth. The scheduler's own steps leave it as it is.
    pub updated_by: Option<String>,
    /// The W3C `traceparent` of the request that created it or made its last change, while
    /// tracing is on: each fire's own trace links to it.
    pub trace: Option<String>,
}

impl Job {
    /// A job made from a checked spec, scheduled for its first due time.
    pub fn new(spec: JobSpec, now: DateTime<Utc>) -> Self {
        let now = truncate(now);
        let schedule = spec.schedule.anchored(now);
        Self {
            id: JobId::generate(),
            name: spec.name,
            description: spec.description,
            job_type: spec.job_type,
            job_data: spec.job_data,
            schedule_time: schedule.first_due(now),
            schedule,
            retry: spec.retry,
            run_timeout_seconds: spec.run_timeout_seconds,
            misfire_policy: spec.misfire_policy,
            overlap_policy: spec.overlap_policy,
            delivery: spec.delivery,
            webhook: spec.webhook,
            status: JobStatus::Scheduled,
            created_at: now,
            updated_at: now,
            version: 1,
            open_runs: Vec::new(),
            retries: Vec::new(),
            next_attempt: 1,
            reschedules: 0,
            created_by: None,
            updated_by: None,
            trace: None,
        }
    }

    /// The editable fields of the job.
    pub fn spec(&self) -> JobSpec {
        JobSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            job_type: self.job_type,
            job_data: self.job_data.clone(),
            schedule: self.schedule.clone(),
            retry: self.retry,
            run_timeout_seconds: self.run_timeout_seconds,
            misfire_policy: self.misfire_policy,
            overlap_policy: self.overlap_policy,
            delivery: self.delivery,
            webhook: self.webhook.clone(),
        }
    }

    /// The job after `spec` replaced its editable fields. A changed schedule reschedules the
    /// job from now (a past one-shot time fires at once; a finished or cancelled job is
    /// scheduled again, a paused one keeps paused at its new place); open runs stay open.
    pub fn with_spec(&self, spec: JobSpec, now: DateTime<Utc>) -> Self {
        let mut next = self.clone();
        let now = truncate(now);
        let schedule = spec.schedule.anchored(now);
        if schedule != self.schedule {
            next.schedule_time = schedule.first_due(now);
            next.next_attempt = 1;
            next.reschedules = self.reschedules.saturating_add(1);
            if next.status != JobStatus::Paused {
                next.status = JobStatus::Scheduled;
                next.refresh_status(None);
            }
        }
        next.name = spec.name;
        next.description = spec.description;
        next.job_type = spec.job_type;
        next.job_data = spec.job_data;
        next.schedule = schedule;
        next.retry = spec.retry;
        next.run_timeout_seconds = spec.run_timeout_seconds;
        next.misfire_policy = spec.misfire_policy;
        next.overlap_policy = spec.overlap_policy;
        next.delivery = spec.delivery;
        next.webhook = spec.webhook;
        next.touch(now);
        next
    }

    /// Marks a change: a new version and update time.
    pub fn touch(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = truncate(now).max(self.updated_at);
    }

    /// The next fire, regular or retry: the API's `scheduleTime`.
    pub fn next_fire(&self) -> Option<DateTime<Utc>> {
        let retry = self.retries.iter().map(|r| r.due).min();
        match (self.schedule_time, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When an open run times out.
    pub fn deadline(&self, run: &Run) -> DateTime<Utc> {
        run.fired_at.unwrap_or(run.scheduled_for)
            + chrono::Duration::seconds(i64::from(self.run_timeout_seconds))
    }

    /// When the scheduler must next look at the job: its next fire (unless paused or
    /// cancelled) or the earliest deadline of an open run. The stores index this.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        let deadline = self.open_runs.iter().map(|r| self.deadline(r)).min();
        let fire = match self.status {
            JobStatus::Paused | JobStatus::Cancelled => None,
            _ => self.next_fire(),
        };
        match (deadline, fire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sets RUNNING / SCHEDULED from the open runs and pending fires, or, for a one-shot with
    /// nothing left, SUCCEEDED or FAILED by the run that just finished. Paused and cancelled
    /// jobs keep their status.
    pub fn refresh_status(&mut self, finished: Option<RunStatus>) {
        if matches!(self.status, JobStatus::Paused | JobStatus::Cancelled) {
            return;
        }
        self.status = if !self.open_runs.is_empty() {
            JobStatus::Running
        } else if self.schedule_time.is_some() || !self.retries.is_empty() {
            JobStatus::Scheduled
        } else {
            match finished {
                Some(RunStatus::Succeeded) => JobStatus::Succeeded,
                Some(_) => JobStatus::Failed,
                None => self.status,
            }
        };
    }

    /// Looks up a run among the open ones.
    pub fn open_run(&self, run_id: RunId) -> Option<&Run> {
        self.open_runs.iter().find(|r| r.run_id == run_id)
    }

    /// When one of its open runs is first offered to the workers of `delivery` (see
    /// [`Run::offered_at`]): what the stores index, so a claim finds such jobs directly.
    pub fn offered_at(&self, delivery: Delivery) -> Option<DateTime<Utc>> {
        self.open_runs
            .iter()
            .filter_map(|run| run.offered_at(delivery))
            .min()
    }

    /// The id of attempt `attempt` of its fire due at `scheduled_for`, under its current
    /// schedule.
    pub fn run_id(&self, scheduled_for: DateTime<Utc>, attempt: u32) -> RunId {
        RunId::derive(self.id, scheduled_for, attempt, self.reschedules)
    }
}
