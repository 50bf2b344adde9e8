//! Jobs for the engine's unit tests.

use chrono::{DateTime, Utc};

use super::Job;
use crate::domain::{
    input::JobSpec,
    policy::{JobType, MisfirePolicy, OverlapPolicy, RetryPolicy, RunStatus},
    run::Run,
    schedule::{Schedule, cron::CronSchedule},
    time::{format_time, parse_time},
};

pub(crate) fn at(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

/// An SMS job with `schedule` and the default policies, made at `now`.
pub(crate) fn job(schedule: Schedule, now: &str) -> Job {
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
            delivery: None,
            webhook: None,
        },
        at(now),
    )
}

/// A job that fires every minute, made at `now`.
pub(crate) fn every_minute(now: &str) -> Job {
    job(
        Schedule::Cron(Box::new(CronSchedule::parse("* * * * *", "UTC").unwrap())),
        now,
    )
}

/// The due time and status of every run a step finished (`finished`) or left open in `job`.
pub(crate) fn statuses(finished: &[Run], job: &Job) -> Vec<(String, RunStatus)> {
    finished
        .iter()
        .chain(job.open_runs.iter())
        .map(|r| (format_time(r.scheduled_for), r.status))
        .collect()
}
