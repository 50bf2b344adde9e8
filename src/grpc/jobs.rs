//! gRPC handlers of `proto.JobsService`: convert messages to use-case inputs and results back.

use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::pb;
use crate::{
    domain::{
        Job, JobId, JobInput, JobType, MisfirePolicy, OverlapPolicy, Run, RunId, RunResult,
        RunStatus, Schedule, ScheduleInput, format_time,
    },
    error::{Error, decode_value},
    events::{Event, EventBus},
    jobs::{JobChange, Jobs, page_request, preview},
    schedule::{DstShift, ScheduleFields},
    store::JobFilter,
};

/// The `JobsService` implementation.
pub struct JobsGrpc {
    jobs: Jobs,
    bus: EventBus,
    /// Ends open watch streams when the service shuts down.
    shutdown: CancellationToken,
}

impl JobsGrpc {
    pub fn new(jobs: Jobs, bus: EventBus, shutdown: CancellationToken) -> Self {
        Self {
            jobs,
            bus,
            shutdown,
        }
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A request timestamp as the RFC 3339 text the shared input parser reads.
fn time_text(field: &str, t: &prost_types::Timestamp) -> Result<String, Error> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .map(format_time)
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

fn job_type_name(code: i32) -> Result<Value, Error> {
    JobType::from_code(code)
        .map(|t| json!(t))
        .ok_or_else(|| Error::invalid("jobType", format!("{code} is not a known job type")))
}

/// `job_data` is JSON text; empty means an empty object.
fn job_data_value(text: &str) -> Result<Value, Error> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text).map_err(|_| Error::invalid("jobData", "must be JSON text"))
}

fn pb_schedule(schedule: &Schedule) -> pb::JobSchedule {
    let fields = ScheduleFields::from(schedule);
    pb::JobSchedule {
        run_at: fields.run_at.map(timestamp),
        cron: fields.cron.unwrap_or_default(),
        timezone: fields.timezone.unwrap_or_default(),
        interval_seconds: fields.interval_seconds.unwrap_or_default() as i64,
        start_at: fields.start_at.map(timestamp),
    }
}

fn pb_policy(job: &Job) -> pb::JobPolicy {
    pb::JobPolicy {
        max_attempts: Some(job.retry.max_attempts as i32),
        backoff_seconds: Some(job.retry.backoff_seconds as i32),
        run_timeout_seconds: Some(job.run_timeout_seconds as i32),
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

/// A schedule message in the REST shape the shared input parser reads; `None` when empty.
fn schedule_value(schedule: &pb::JobSchedule) -> Result<Option<Value>, Error> {
    let mut fields = serde_json::Map::new();
    if let Some(t) = &schedule.run_at {
        fields.insert("runAt".into(), json!(time_text("schedule.run_at", t)?));
    }
    if !schedule.cron.is_empty() {
        fields.insert("cron".into(), json!(schedule.cron));
    }
    if !schedule.timezone.is_empty() {
        fields.insert("timezone".into(), json!(schedule.timezone));
    }
    if schedule.interval_seconds != 0 {
        fields.insert("intervalSeconds".into(), json!(schedule.interval_seconds));
    }
    if let Some(t) = &schedule.start_at {
        fields.insert("startAt".into(), json!(time_text("schedule.start_at", t)?));
    }
    Ok((!fields.is_empty()).then_some(Value::Object(fields)))
}

/// The given policy fields in the REST shape; `stored` fills the retry fields left unset, so
/// an update that sets one keeps the other.
fn policy_fields(
    policy: &pb::JobPolicy,
    stored: Option<&Job>,
) -> Result<serde_json::Map<String, Value>, Error> {
    let mut fields = serde_json::Map::new();
    if policy.max_attempts.is_some() || policy.backoff_seconds.is_some() {
        let defaults = stored.map(|j| j.retry).unwrap_or_default();
        fields.insert(
            "retry".into(),
            json!({
                "maxAttempts": policy.max_attempts.map(i64::from).unwrap_or(i64::from(defaults.max_attempts)),
                "backoffSeconds": policy.backoff_seconds.map(i64::from).unwrap_or(i64::from(defaults.backoff_seconds)),
            }),
        );
    }
    if let Some(timeout) = policy.run_timeout_seconds {
        fields.insert("runTimeoutSeconds".into(), json!(timeout));
    }
    match pb::MisfirePolicy::try_from(policy.misfire_policy) {
        Ok(pb::MisfirePolicy::Unspecified) => {}
        Ok(pb::MisfirePolicy::FireOnce) => {
            fields.insert("misfirePolicy".into(), json!(MisfirePolicy::FireOnce));
        }
        Ok(pb::MisfirePolicy::Skip) => {
            fields.insert("misfirePolicy".into(), json!(MisfirePolicy::Skip));
        }
        Ok(pb::MisfirePolicy::FireAll) => {
            fields.insert("misfirePolicy".into(), json!(MisfirePolicy::FireAll));
        }
        Err(_) => return Err(Error::invalid("misfirePolicy", "is not a known policy")),
    }
    match pb::OverlapPolicy::try_from(policy.overlap_policy) {
        Ok(pb::OverlapPolicy::Unspecified) => {}
        Ok(pb::OverlapPolicy::Skip) => {
            fields.insert("overlapPolicy".into(), json!(OverlapPolicy::Skip));
        }
        Ok(pb::OverlapPolicy::Allow) => {
            fields.insert("overlapPolicy".into(), json!(OverlapPolicy::Allow));
        }
        Err(_) => return Err(Error::invalid("overlapPolicy", "is not a known policy")),
    }
    Ok(fields)
}

/// The schedule of a create or update: `schedule_time` (one-shot, the older clients' way) or
/// the `schedule` message, not both.
fn request_schedule(
    schedule_time: Option<&prost_types::Timestamp>,
    schedule: Option<&pb::JobSchedule>,
) -> Result<Option<Value>, Error> {
    let recurring = schedule.map(schedule_value).transpose()?.flatten();
    match (schedule_time, recurring) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "schedule",
            "give schedule_time or schedule, not both",
        )),
        (Some(t), None) => Ok(Some(json!({ "runAt": time_text("schedule_time", t)? }))),
        (None, recurring) => Ok(recurring),
    }
}

fn pb_job(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        name: job.name.clone(),
        description: job.description.clone(),
        schedule: Some(pb_schedule(&job.schedule)),
        policy: Some(pb_policy(job)),
        schedule_time: job.next_fire().map(timestamp),
        created_time: Some(timestamp(job.created_at)),
        updated_time: Some(timestamp(job.updated_at)),
        status: job.status.code(),
        job_type: job.job_type.code(),
        job_data: Value::Object(job.job_data.clone()).to_string(),
        version: job.version as i64,
    }
}

fn pb_run(run: &Run) -> pb::Run {
    pb::Run {
        run_id: run.run_id.to_string(),
        job_id: run.job_id.to_string(),
        scheduled_for: Some(timestamp(run.scheduled_for)),
        fired_at: run.fired_at.map(timestamp),
        attempt: run.attempt as i32,
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
    }
}

fn pb_event(event: &Event) -> pb::Event {
    pb::Event {
        id: event.id.to_string(),
        r#type: event.kind.ce_type().to_owned(),
        time: Some(timestamp(event.time)),
        job_id: event.job.id.to_string(),
        job: Some(pb_job(&event.job)),
        run: event.run.as_ref().map(pb_run),
    }
}

/// A text metadata value, if present.
fn metadata<'a, T>(request: &'a Request<T>, key: &str) -> Result<Option<&'a str>, Error> {
    request
        .metadata()
        .get(key)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::invalid(key, "must be visible ASCII"))
        })
        .transpose()
}

/// 0 means "not given" in proto3.
fn given(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::jobs_service_server::JobsService for JobsGrpc {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let key = metadata(&request, "idempotency-key")?.map(str::to_owned);
        let req = request.into_inner();
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), json!(req.name));
        fields.insert("description".into(), json!(req.description));
        fields.insert("jobType".into(), job_type_name(req.job_type)?);
        fields.insert("jobData".into(), job_data_value(&req.job_data)?);
        let schedule = request_schedule(req.schedule_time.as_ref(), req.schedule.as_ref())?
            .ok_or_else(|| Error::invalid("schedule_time", "is required (or schedule)"))?;
        fields.insert("schedule".into(), schedule);
        if let Some(policy) = &req.policy {
            fields.extend(policy_fields(policy, None)?);
        }
        let input: JobInput = decode_value(Value::Object(fields))?;
        let created = self.jobs.create(input, key).await?;
        Ok(Response::new(pb::CreateJobResponse {
            id: created.job.id.to_string(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = JobId::parse(&request.into_inner().id)?;
        let job = self.jobs.get(id).await?;
        Ok(Response::new(pb_job(&job)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let page = page_request(given(req.page), given(req.size))?;
        let page = self.jobs.list(JobFilter::default(), page).await?;
        Ok(Response::new(pb::ListJobsResponse {
            total_count: page.total_count as i64,
            total_pages: page.total_pages as i64,
            page: page.page as i64,
            size: page.size as i64,
            has_more: page.has_more,
            jobs: page.items.iter().map(pb_job).collect(),
        }))
    }

    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::UpdateJobResponse>, Status> {
        let if_match = metadata(&request, "if-match")?
            .map(|v| {
                v.trim_matches('"')
                    .parse::<u64>()
                    .map_err(|_| Error::invalid("if-match", "must be a version number"))
            })
            .transpose()?;
        let req = request.into_inner();
        let id = JobId::parse(&req.id)?;
        // The five carried fields replace the stored ones; an absent schedule_time keeps the
        // stored schedule.
        let mut patch = json!({
            "name": req.name,
            "description": req.description,
            "jobType": job_type_name(req.job_type)?,
            "jobData": job_data_value(&req.job_data)?,
        });
        if let Some(schedule) = request_schedule(req.schedule_time.as_ref(), req.schedule.as_ref())?
        {
            patch["schedule"] = schedule;
        }
        let Value::Object(mut fields) = patch else {
            unreachable!("built as an object above")
        };
        if let Some(policy) = &req.policy {
            let stored = self.jobs.get(id).await?;
            fields.extend(policy_fields(policy, Some(&stored))?);
        }
        let job = self
            .jobs
            .update(id, JobChange::Replace(fields), if_match)
            .await?;
        Ok(Response::new(pb::UpdateJobResponse {
            message: format!("job {} updated to version {}", job.id, job.version),
        }))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let id = JobId::parse(&request.into_inner().id)?;
        self.jobs.delete(id).await?;
        Ok(Response::new(pb::DeleteJobResponse {
            message: format!("job {id} deleted"),
        }))
    }

    async fn list_job_runs(
        &self,
        request: Request<pb::ListJobRunsRequest>,
    ) -> Result<Response<pb::ListJobRunsResponse>, Status> {
        let req = request.into_inner();
        let id = JobId::parse(&req.job_id)?;
        let page = page_request(given(req.page), given(req.size))?;
        let page = self.jobs.list_runs(id, page).await?;
        Ok(Response::new(pb::ListJobRunsResponse {
            total_count: page.total_count as i64,
            total_pages: page.total_pages as i64,
            page: page.page as i64,
            size: page.size as i64,
            has_more: page.has_more,
            runs: page.items.iter().map(pb_run).collect(),
        }))
    }

    async fn report_run_result(
        &self,
        request: Request<pb::ReportRunResultRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let req = request.into_inner();
        let id = JobId::parse(&req.job_id)?;
        let run_id = if req.run_id.is_empty() {
            None
        } else {
            Some(RunId::parse(&req.run_id)?)
        };
        let status = match pb::RunStatus::try_from(req.status) {
            Ok(pb::RunStatus::Succeeded) => RunStatus::Succeeded,
            Ok(pb::RunStatus::Failed) => RunStatus::Failed,
            _ => {
                return Err(Error::invalid(
                    "status",
                    "must be RUN_STATUS_SUCCEEDED or RUN_STATUS_FAILED",
                )
                .into());
            }
        };
        let result = RunResult::parse(status, Some(req.error), Some(req.output))?;
        let run = self.jobs.report_result(id, run_id, result).await?;
        Ok(Response::new(pb_run(&run)))
    }

    async fn pause_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = JobId::parse(&request.into_inner().id)?;
        Ok(Response::new(pb_job(&self.jobs.pause(id).await?)))
    }

    async fn resume_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = JobId::parse(&request.into_inner().id)?;
        Ok(Response::new(pb_job(&self.jobs.resume(id).await?)))
    }

    async fn trigger_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = JobId::parse(&request.into_inner().id)?;
        Ok(Response::new(pb_job(&self.jobs.trigger(id).await?)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = JobId::parse(&request.into_inner().id)?;
        Ok(Response::new(pb_job(&self.jobs.cancel(id).await?)))
    }

    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> Result<Response<pb::PreviewScheduleResponse>, Status> {
        let req = request.into_inner();
        let schedule = req
            .schedule
            .as_ref()
            .map(schedule_value)
            .transpose()?
            .flatten()
            .unwrap_or_else(|| json!({}));
        let input: ScheduleInput = decode_value(schedule)?;
        let from = req
            .from
            .as_ref()
            .map(|t| time_text("from", t))
            .transpose()?;
        let count = (req.count != 0).then_some(i64::from(req.count));
        let preview = preview(&input, count, from.as_deref())?;
        Ok(Response::new(pb::PreviewScheduleResponse {
            times: preview
                .times
                .iter()
                .map(|fire| pb::FireTime {
                    time: Some(timestamp(fire.at)),
                    local_time: preview.local_time(fire.at),
                    dst_shifted: fire.shift == DstShift::Skipped,
                    dst: fire.shift.name().to_owned(),
                    requested_local_time: fire.local.format("%Y-%m-%dT%H:%M:%S").to_string(),
                })
                .collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let req = request.into_inner();
        let only = if req.job_id.is_empty() {
            None
        } else {
            Some(JobId::parse(&req.job_id)?)
        };
        let mut receiver = self.bus.subscribe();
        let shutdown = self.shutdown.clone();
        let stream = async_stream::stream! {
            loop {
                let received = tokio::select! {
                    r = receiver.recv() => r,
                    () = shutdown.cancelled() => break,
                };
                match received {
                    Ok(event) => {
                        if only.is_none_or(|id| id == event.job.id) {
                            yield Ok(pb_event(&event));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Tell the watcher rather than go on with a gap it cannot see.
                        yield Err(Status::data_loss(format!(
                            "the watch fell {missed} events behind and missed them; watch again"
                        )));
                        break;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobStatus;

    #[test]
    fn proto_enums_use_the_domain_codes() {
        for code in 1..=7 {
            let status = JobStatus::from_code(code).unwrap();
            assert_eq!(pb::JobStatus::try_from(code).unwrap() as i32, status.code());
        }
        assert_eq!(pb::JobType::Email as i32, JobType::Email.code());
        assert_eq!(pb::JobType::Sms as i32, JobType::Sms.code());
    }
}
