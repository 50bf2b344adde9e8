//! gRPC messages to the use cases' typed inputs, and the domain back to messages.
//!
//! Every request is destructured field by field, so a field added to the proto is a compile
//! error here until someone decides what it means. Errors name fields by their REST path
//! (`jobType`); `status` turns them into proto names (`job_type`). proto3 has no "absent" for
//! scalars: 0 and the empty string mean "not given".

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::pb;
use crate::{
    domain::{
        FieldError, Invalid, JOB_ID_EXPECTED, Job, JobId, JobInput, JobStatus, JobType,
        MisfirePolicy, OverlapPolicy, PolicyInput, Preview, Run, RunId, RunResult, RunStatus,
        ScheduleFields, ScheduleInput, data::exact_integers, field::Errors, format_time,
        from_timestamp,
    },
    jobs::{JobFilter, JobReplacement, Page, PageRequest, claims::ClaimedRun, ports::Journaled},
};

/// A time as a protobuf timestamp.
pub(crate) fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A request timestamp as the RFC 3339 text a [`ScheduleInput`] holds, checked by the same
/// rule as a REST time (years 0001 to 9999, `nanos` below 1e9), so the text always parses.
fn time_text(field: &str, t: &prost_types::Timestamp) -> Result<String, Invalid> {
    from_timestamp(t.seconds, t.nanos)
        .map(format_time)
        .map_err(|message| Invalid::field(field, message))
}

fn job_type(code: i32) -> Result<JobType, Invalid> {
    JobType::from_code(code)
        .ok_or_else(|| Invalid::field("jobType", format!("{code} is not a known job type")))
}

/// `job_data` is JSON text; empty means an empty object.
fn job_data(text: &str) -> Result<Value, Invalid> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let value =
        serde_json::from_str(text).map_err(|_| Invalid::field("jobData", "must be JSON text"))?;
    exact_integers(text, "jobData")?;
    Ok(value)
}

/// A nonzero number: proto3's way of saying it was given.
fn given(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

/// A nonempty text.
fn text(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// A schedule message; `None` when it gives nothing.
fn schedule_input(schedule: pb::JobSchedule) -> Result<Option<ScheduleInput>, Invalid> {
    let pb::JobSchedule {
        run_at,
        cron,
        timezone,
        interval_seconds,
        start_at,
    } = schedule;
    let mut errors = Errors::new();
    let mut time = |field: &str, t: Option<prost_types::Timestamp>| {
        t.and_then(|t| errors.take(time_text(field, &t)))
    };
    let input = ScheduleInput {
        run_at: time("schedule.run_at", run_at),
        start_at: time("schedule.start_at", start_at),
        cron: text(cron),
        timezone: text(timezone),
        interval_seconds: given(interval_seconds),
    };
    errors.finish(|| Some((input != ScheduleInput::default()).then_some(input)))
}

/// The schedule of a create or update: `schedule_time` (a one-shot, the older clients' way) or
/// the `schedule` message.
fn request_schedule(
    schedule_time: Option<prost_types::Timestamp>,
    schedule: Option<pb::JobSchedule>,
) -> Result<Option<ScheduleInput>, Invalid> {
    let one_shot = schedule_time
        .map(|t| time_text("schedule_time", &t))
        .transpose()?
        .map(|run_at| ScheduleInput {
            run_at: Some(run_at),
            ..ScheduleInput::default()
        });
    let recurring = schedule.map(schedule_input).transpose()?.flatten();
    ScheduleInput::either(one_shot, recurring)
}

impl TryFrom<pb::JobPolicy> for PolicyInput {
    type Error = Invalid;

    fn try_from(policy: pb::JobPolicy) -> Result<Self, Invalid> {
        let pb::JobPolicy {
            max_attempts,
            backoff_seconds,
            run_timeout_seconds,
            misfire_policy,
            overlap_policy,
        } = policy;
        let mut errors = Errors::new();
        let misfire_policy = match pb::MisfirePolicy::try_from(misfire_policy) {
            Ok(pb::MisfirePolicy::Unspecified) => None,
            Ok(pb::MisfirePolicy::FireOnce) => Some(MisfirePolicy::FireOnce),
            Ok(pb::MisfirePolicy::Skip) => Some(MisfirePolicy::Skip),
            Ok(pb::MisfirePolicy::FireAll) => Some(MisfirePolicy::FireAll),
            Err(_) => {
                errors.push("misfirePolicy", "is not a known policy");
                None
            }
        };
        let overlap_policy = match pb::OverlapPolicy::try_from(overlap_policy) {
            Ok(pb::OverlapPolicy::Unspecified) => None,
            Ok(pb::OverlapPolicy::Skip) => Some(OverlapPolicy::Skip),
            Ok(pb::OverlapPolicy::Allow) => Some(OverlapPolicy::Allow),
            Err(_) => {
                errors.push("overlapPolicy", "is not a known policy");
                None
            }
        };
        errors.finish(|| {
            Some(Self {
                max_attempts: max_attempts.map(i64::from),
                backoff_seconds: backoff_seconds.map(i64::from),
                run_timeout_seconds: run_timeout_seconds.map(i64::from),
                misfire_policy,
                overlap_policy,
            })
        })
    }
}

/// What CreateJob and UpdateJob both carry: the older service's five fields, and the added
/// schedule and policy.
fn carried(
    name: String,
    description: String,
    type_code: i32,
    data: &str,
    (schedule_time, schedule): (Option<prost_types::Timestamp>, Option<pb::JobSchedule>),
    policy: Option<pb::JobPolicy>,
) -> Result<JobReplacement, Invalid> {
    let mut errors = Errors::new();
    let job_type = errors.take(job_type(type_code));
    let job_data = errors.take(job_data(data));
    let schedule = errors.take(request_schedule(schedule_time, schedule));
    let policy = errors.take(policy.map(PolicyInput::try_from).transpose());
    errors.finish(|| {
        Some(JobReplacement {
            name,
            description,
            job_type: job_type?,
            job_data: job_data?,
            schedule: schedule?,
            policy: policy?.unwrap_or_default(),
        })
    })
}

impl TryFrom<pb::CreateJobRequest> for JobInput {
    type Error = Invalid;

    fn try_from(request: pb::CreateJobRequest) -> Result<Self, Invalid> {
        let pb::CreateJobRequest {
            name,
            description,
            schedule_time,
            job_type,
            job_data,
            schedule,
            policy,
        } = request;
        let JobReplacement {
            name,
            description,
            job_type,
            job_data,
            schedule,
            policy,
        } = carried(
            name,
            description,
            job_type,
            &job_data,
            (schedule_time, schedule),
            policy,
        )?;
        let schedule =
            schedule.ok_or_else(|| Invalid::field("schedule_time", "is required (or schedule)"))?;
        let mut input = JobInput {
            name,
            description: Some(description),
            job_type,
            job_data,
            schedule,
            retry: None,
            run_timeout_seconds: None,
            misfire_policy: None,
            overlap_policy: None,
            delivery: None,
            webhook: None,
        };
        policy.lay_over(&mut input);
        Ok(input)
    }
}

impl TryFrom<pb::UpdateJobRequest> for (JobId, JobReplacement) {
    type Error = Invalid;

    fn try_from(request: pb::UpdateJobRequest) -> Result<Self, Invalid> {
        let pb::UpdateJobRequest {
            id,
            name,
            description,
            schedule_time,
            job_type,
            job_data,
            schedule,
            policy,
        } = request;
        let mut errors = Errors::new();
        let id = errors.take(JobId::parse(&id));
        let replacement = errors.take(carried(
            name,
            description,
            job_type,
            &job_data,
            (schedule_time, schedule),
            policy,
        ));
        errors.finish(|| Some((id?, replacement?)))
    }
}

impl TryFrom<pb::ReportRunResultRequest> for (JobId, Option<RunId>, RunResult) {
    type Error = Invalid;

    fn try_from(request: pb::ReportRunResultRequest) -> Result<Self, Invalid> {
        let pb::ReportRunResultRequest {
            job_id,
            run_id,
            status,
            error,
            output,
        } = request;
        let id = JobId::parse(&job_id)?;
        let run = text(run_id).map(|id| RunId::parse(&id)).transpose()?;
        let status = match pb::RunStatus::try_from(status) {
            Ok(pb::RunStatus::Succeeded) => RunStatus::Succeeded,
            Ok(pb::RunStatus::Failed) => RunStatus::Failed,
            _ => {
                return Err(Invalid::field(
                    "status",
                    "must be RUN_STATUS_SUCCEEDED or RUN_STATUS_FAILED",
                ));
            }
        };
        Ok((
            id,
            run,
            RunResult::parse(status, Some(error), Some(output))?,
        ))
    }
}

impl TryFrom<pb::PreviewScheduleRequest> for (ScheduleInput, Option<i64>, Option<String>) {
    type Error = Invalid;

    fn try_from(request: pb::PreviewScheduleRequest) -> Result<Self, Invalid> {
        let pb::PreviewScheduleRequest {
            schedule,
            count,
            from,
        } = request;
        let schedule = schedule
            .map(schedule_input)
            .transpose()?
            .flatten()
            .unwrap_or_default();
        let from = from.map(|t| time_text("from", &t)).transpose()?;
        Ok((schedule, given(i64::from(count)), from))
    }
}

/// A page request of a listing call; 0 means the default.
pub(crate) fn page_request(page: i64, size: i64) -> Result<PageRequest, Invalid> {
    PageRequest::parse(given(page), given(size))
}

/// The filter of a listing call, as REST's query parameters give it: status 0 and an empty
/// name prefix mean any; an unknown status or type number is refused by name.
pub(crate) fn list_filter(
    status: i32,
    job_type: Option<i32>,
    name_prefix: String,
    due_before: Option<prost_types::Timestamp>,
) -> Result<JobFilter, Invalid> {
    let status = match status {
        0 => None,
        code => Some(JobStatus::from_code(code).ok_or_else(|| {
            Invalid::field("status", format!("{code} is not a known job status"))
        })?),
    };
    let due_before = due_before
        .map(|t| {
            from_timestamp(t.seconds, t.nanos).map_err(|why| Invalid::field("due_before", why))
        })
        .transpose()?;
    Ok(JobFilter {
        status,
        job_type: job_type.map(self::job_type).transpose()?,
        name_prefix: Some(name_prefix).filter(|p| !p.is_empty()),
        due_before,
    })
}

/// A job id that may be empty (all jobs).
pub(crate) fn optional_job_id(raw: String) -> Result<Option<JobId>, Invalid> {
    // Named as the request names it (`job_id`), not as a path's `id`.
    let parse =
        |raw: &str| JobId::parse_text(raw).ok_or_else(|| Invalid::field("jobId", JOB_ID_EXPECTED));
    text(raw).map(|id| parse(&id)).transpose()
}

fn schedule_message(fields: ScheduleFields) -> pb::JobSchedule {
    let ScheduleFields {
        run_at,
        cron,
        timezone,
        interval_seconds,
        start_at,
    } = fields;
    pb::JobSchedule {
        run_at: run_at.map(timestamp),
        cron: cron.unwrap_or_default(),
        timezone: timezone.unwrap_or_default(),
        interval_seconds: interval_seconds
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or_default(),
        start_at: start_at.map(timestamp),
    }
}

fn policy_message(job: &Job) -> pb::JobPolicy {
    let small = |n: u32| Some(i32::try_from(n).unwrap_or(i32::MAX));
    pb::JobPolicy {
        max_attempts: small(job.retry.max_attempts),
        backoff_seconds: small(job.retry.backoff_seconds),
        run_timeout_seconds: small(job.run_timeout_seconds),
        misfire_policy: match job.misfire_policy {
            MisfirePolicy::FireOnce => pb::MisfirePolicy::FireOnce,
            MisfirePolicy::Skip => pb::MisfirePolicy::Skip,
            MisfirePolicy::FireAll => pb::MisfirePolicy::FireAll,
        } as i32,
        overlap_policy: match job.overlap_policy {
            OverlapPolicy::Skip => pb::OverlapPolicy::Skip,
            OverlapPolicy::Allow => pb::OverlapPolicy::Allow,
        } as i32,
    }
}

impl From<&Job> for pb::Job {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.to_string(),
            name: job.name.clone(),
            description: job.description.clone(),
            schedule: Some(schedule_message(ScheduleFields::from(&job.schedule))),
            policy: Some(policy_message(job)),
            schedule_time: job.next_fire().map(timestamp),
            created_time: Some(timestamp(job.created_at)),
            updated_time: Some(timestamp(job.updated_at)),
            status: job.status.code(),
            job_type: job.job_type.code(),
            job_data: job.job_data.text().to_owned(),
            version: i64::try_from(job.version).unwrap_or(i64::MAX),
            created_by: job.created_by.clone().unwrap_or_default(),
            updated_by: job.updated_by.clone().unwrap_or_default(),
        }
    }
}

impl From<&Run> for pb::Run {
    fn from(run: &Run) -> Self {
        Self {
            run_id: run.run_id.to_string(),
            job_id: run.job_id.to_string(),
            scheduled_for: Some(timestamp(run.scheduled_for)),
            fired_at: run.fired_at.map(timestamp),
            attempt: i32::try_from(run.attempt).unwrap_or(i32::MAX),
            status: match run.status {
                RunStatus::Running => pb::RunStatus::Running,
                RunStatus::Succeeded => pb::RunStatus::Succeeded,
                RunStatus::Failed => pb::RunStatus::Failed,
                RunStatus::TimedOut => pb::RunStatus::TimedOut,
                RunStatus::Skipped => pb::RunStatus::Skipped,
                RunStatus::Missed => pb::RunStatus::Missed,
                RunStatus::Cancelled => pb::RunStatus::Cancelled,
            } as i32,
            finished_at: run.finished_at.map(timestamp),
            error: run.error.clone().unwrap_or_default(),
            output: run.output.clone().unwrap_or_default(),
            actor: run.actor.clone().unwrap_or_default(),
            reason: run.reason.clone().unwrap_or_default(),
        }
    }
}

impl From<&Journaled> for pb::Event {
    fn from(journaled: &Journaled) -> Self {
        let event = &journaled.event;
        Self {
            id: event.id.to_string(),
            r#type: event.kind.ce_type().to_owned(),
            time: Some(timestamp(event.time)),
            job_id: event.job.id.to_string(),
            job: Some(pb::Job::from(&event.job)),
            run: event.run.as_ref().map(pb::Run::from),
            actor: event.actor.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            seq: journaled.seq,
            gap: None,
        }
    }
}

impl From<&ClaimedRun> for pb::ClaimedRun {
    fn from(claimed: &ClaimedRun) -> Self {
        let ClaimedRun { run, job } = claimed;
        Self {
            job_id: job.id.to_string(),
            run_id: run.run_id.to_string(),
            attempt: i32::try_from(run.attempt).unwrap_or(i32::MAX),
            scheduled_for: Some(timestamp(run.scheduled_for)),
            job_type: job.job_type.code(),
            job_data: job.job_data.text().to_owned(),
            lease_until: run.lease.as_ref().map(|lease| timestamp(lease.until)),
            job_name: job.name.clone(),
        }
    }
}

/// The message that tells a watcher the events after `after` up to `resumes_after` are no
/// longer kept.
pub(crate) fn gap(after: u64, resumes_after: u64) -> pb::Event {
    pb::Event {
        r#type: "gap".to_owned(),
        seq: resumes_after,
        gap: Some(pb::EventGap {
            after,
            resumes_after,
        }),
        ..pb::Event::default()
    }
}

impl From<&Preview> for pb::PreviewScheduleResponse {
    fn from(preview: &Preview) -> Self {
        Self {
            times: preview
                .times
                .iter()
                .map(|fire| pb::FireTime {
                    time: Some(timestamp(fire.at)),
                    local_time: preview.local_time(fire.at),
                    dst_shifted: fire.dst_shifted(),
                    dst: fire.shift.name().to_owned(),
                    requested_local_time: fire.requested_local_time(),
                })
                .collect(),
        }
    }
}

/// A listing response: the counts of a page, and its items as messages.
macro_rules! page_message {
    ($response:ident { $items:ident: $message:ident }) => {
        impl<T> From<Page<T>> for pb::$response
        where
            for<'a> pb::$message: From<&'a T>,
        {
            fn from(page: Page<T>) -> Self {
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                Self {
                    $items: page.items.iter().map(pb::$message::from).collect(),
                    total_count: count(page.total_count),
                    total_pages: count(page.total_pages),
                    page: count(page.page),
                    size: count(page.size),
                    has_more: page.has_more,
                    truncated: page.truncated,
                }
            }
        }
    };
}

page_message!(ListJobsResponse { jobs: Job });
page_message!(ListJobRunsResponse { runs: Run });

/// The field errors a transport names by proto field: `jobData.Subject` is
/// `job_data.Subject` (the data's own keys as they are), `schedule.runAt` is `schedule_time`
/// (the older clients' one-shot time), the other schedule fields those of the `schedule`
/// message, the retry and run policies those of the `policy` message (`retry.backoffSeconds`
/// is `policy.backoff_seconds`), and header-like names (`Idempotency-Key`) their metadata keys.
pub(crate) fn proto_field(rest: &str) -> String {
    if rest == "schedule.runAt" {
        return "schedule_time".into();
    }
    if rest.contains('-') {
        return rest.to_ascii_lowercase();
    }
    let (head, tail) = rest
        .split_once('.')
        .map_or((rest, None), |(h, t)| (h, Some(t)));
    let snake_path = |path: &str| path.split('.').map(snake).collect::<Vec<_>>().join(".");
    let (head, tail) = match head {
        // The data's keys are the client's own.
        "jobData" => ("job_data".to_owned(), tail.map(str::to_owned)),
        "retry" => ("policy".to_owned(), tail.map(snake_path)),
        "runTimeoutSeconds" | "misfirePolicy" | "overlapPolicy" => {
            ("policy".to_owned(), Some(snake(head)))
        }
        _ => (snake(head), tail.map(snake_path)),
    };
    match tail {
        Some(tail) => format!("{head}.{tail}"),
        None => head,
    }
}

/// A camelCase name in snake_case.
fn snake(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// The violations of `errors`, named by proto field.
pub(crate) fn violations(errors: &[FieldError]) -> Vec<(String, String)> {
    errors
        .iter()
        .map(|f| (proto_field(&f.field), f.message.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
