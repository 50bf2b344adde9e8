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
    domain::{Job, JobId, JobInput, JobType, Run, RunId, RunResult, RunStatus, format_time},
    error::{Error, decode_value},
    events::{Event, EventBus},
    jobs::{JobChange, Jobs, page_request},
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

fn pb_job(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        name: job.name.clone(),
        description: job.description.clone(),
        schedule_time: job.schedule_time.map(timestamp),
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
        fired_at: Some(timestamp(run.fired_at)),
        attempt: run.attempt as i32,
        status: match run.status {
            RunStatus::Running => pb::RunStatus::Running,
            RunStatus::Succeeded => pb::RunStatus::Succeeded,
            RunStatus::Failed => pb::RunStatus::Failed,
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
        let schedule = match &req.schedule_time {
            Some(t) => json!({ "runAt": time_text("schedule_time", t)? }),
            None => return Err(Error::invalid("schedule_time", "is required").into()),
        };
        fields.insert("schedule".into(), schedule);
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
        if let Some(t) = &req.schedule_time {
            patch["schedule"] = json!({ "runAt": time_text("schedule_time", t)? });
        }
        let Value::Object(fields) = patch else {
            unreachable!("built as an object above")
        };
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
