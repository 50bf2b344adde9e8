//! gRPC handlers of `proto.JobsService`: convert messages to use-case inputs ([`convert`]) and
//! results back; every rule is the use cases'.
//!
//! [`convert`]: super::convert

use std::pin::Pin;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    convert::{gap, list_filter, optional_job_id, page_request},
    pb,
};
use crate::{
    auth::Caller,
    domain::{Audit, Delivery, JobId, JobInput, JobType, RunId, RunResult, ScheduleInput},
    events::{EventStreams, Watched},
    jobs::{Error, JobChange, JobReplacement, Jobs, claims::ClaimRequest, if_match, preview},
    telemetry::current_traceparent,
    throttle::{Client, StreamLimit},
};

/// The `JobsService` implementation.
pub(crate) struct JobsGrpc {
    jobs: Jobs,
    events: EventStreams,
    /// Ends open watch streams when the service shuts down.
    shutdown: CancellationToken,
    /// The bound on open event streams, shared with SSE.
    streams: StreamLimit,
}

impl JobsGrpc {
    pub(crate) fn new(
        jobs: Jobs,
        events: EventStreams,
        shutdown: CancellationToken,
        streams: StreamLimit,
    ) -> Self {
        Self {
            jobs,
            events,
            shutdown,
            streams,
        }
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

/// Who makes the call, as the access guard let it through.
fn audit<T>(request: &Request<T>) -> Audit {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    Audit::by(caller.subject).in_trace(current_traceparent())
}

/// The job and the audit of an operation's request.
fn operation(request: Request<pb::JobOperationRequest>) -> Result<(JobId, Audit), Error> {
    let Audit { actor, .. } = audit(&request);
    let pb::JobOperationRequest { id, reason } = request.into_inner();
    let reason = Some(reason).filter(|r| !r.is_empty());
    let audit = Audit::with_reason(actor, reason)?.in_trace(current_traceparent());
    Ok((JobId::parse(&id)?, audit))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::jobs_service_server::JobsService for JobsGrpc {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let key = metadata(&request, "idempotency-key")?.map(str::to_owned);
        let by = audit(&request);
        let input = JobInput::try_from(request.into_inner())?;
        let created = self.jobs.create(input, key, &by).await?;
        Ok(Response::new(pb::CreateJobResponse {
            id: created.job.id.to_string(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let pb::GetJobRequest { id } = request.into_inner();
        let job = self.jobs.get(JobId::parse(&id)?).await?;
        Ok(Response::new(pb::Job::from(&job)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let pb::ListJobsRequest {
            page,
            size,
            status,
            job_type,
            name_prefix,
            due_before,
        } = request.into_inner();
        let filter = list_filter(status, job_type, name_prefix, due_before)?;
        let page = self.jobs.list(filter, page_request(page, size)?).await?;
        Ok(Response::new(pb::ListJobsResponse::from(page)))
    }

    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::UpdateJobResponse>, Status> {
        let expected = match metadata(&request, "if-match")? {
            Some(value) => if_match(value)?,
            None => None,
        };
        let by = audit(&request);
        let (id, replacement): (JobId, JobReplacement) = request.into_inner().try_into()?;
        let job = self
            .jobs
            .update(id, JobChange::Replace(Box::new(replacement)), expected, &by)
            .await?;
        Ok(Response::new(pb::UpdateJobResponse {
            message: format!("job {} updated to version {}", job.id, job.version),
        }))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let by = audit(&request);
        let pb::DeleteJobRequest { id } = request.into_inner();
        let id = JobId::parse(&id)?;
        self.jobs.delete(id, &by).await?;
        Ok(Response::new(pb::DeleteJobResponse {
            message: format!("job {id} deleted"),
        }))
    }

    async fn list_job_runs(
        &self,
        request: Request<pb::ListJobRunsRequest>,
    ) -> Result<Response<pb::ListJobRunsResponse>, Status> {
        let pb::ListJobRunsRequest {
            job_id: id,
            page,
            size,
        } = request.into_inner();
        let page = self
            .jobs
            .list_runs(JobId::parse(&id)?, page_request(page, size)?)
            .await?;
        Ok(Response::new(pb::ListJobRunsResponse::from(page)))
    }

    async fn report_run_result(
        &self,
        request: Request<pb::ReportRunResultRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let (id, run_id, result): (JobId, Option<RunId>, RunResult) =
            request.into_inner().try_into()?;
        let run = self.jobs.report_result(id, run_id, result).await?;
        Ok(Response::new(pb::Run::from(&run)))
    }

    async fn pause_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let (id, by) = operation(request)?;
        let job = self.jobs.pause(id, &by).await?;
        Ok(Response::new(pb::Job::from(&job)))
    }

    async fn resume_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let (id, by) = operation(request)?;
        let job = self.jobs.resume(id, &by).await?;
        Ok(Response::new(pb::Job::from(&job)))
    }

    async fn trigger_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let (id, by) = operation(request)?;
        let job = self.jobs.trigger(id, &by).await?;
        Ok(Response::new(pb::Job::from(&job)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobOperationRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let (id, by) = operation(request)?;
        let job = self.jobs.cancel(id, &by).await?;
        Ok(Response::new(pb::Job::from(&job)))
    }

    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> Result<Response<pb::PreviewScheduleResponse>, Status> {
        let (schedule, count, from): (ScheduleInput, Option<i64>, Option<String>) =
            request.into_inner().try_into()?;
        let preview = preview(schedule, count, from).await?;
        Ok(Response::new(pb::PreviewScheduleResponse::from(&preview)))
    }

    async fn claim_runs(
        &self,
        request: Request<pb::ClaimRunsRequest>,
    ) -> Result<Response<pb::ClaimRunsResponse>, Status> {
        let holder = audit(&request).actor;
        let pb::ClaimRunsRequest {
            job_types,
            max,
            wait_seconds,
            lease_seconds,
        } = request.into_inner();
        let job_types = job_types
            .into_iter()
            .map(|code| {
                JobType::from_code(code).ok_or_else(|| {
                    Error::invalid("job_types", "must be JOB_TYPE_EMAIL or JOB_TYPE_SMS")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claim = ClaimRequest::parse(job_types, max, wait_seconds, lease_seconds)?;
        let taken = self
            .jobs
            .claim_runs(Delivery::Pull, &claim, holder.as_deref(), &self.shutdown)
            .await?;
        Ok(Response::new(pb::ClaimRunsResponse {
            runs: taken.iter().map(pb::ClaimedRun::from).collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let client = Client::of(request.extensions());
        let pb::WatchEventsRequest { job_id, since } = request.into_inner();
        let only = optional_job_id(job_id)?;
        let permit = self.streams.acquire(client)?;
        let watch = self
            .events
            .open(only, since, self.shutdown.clone())
            .await
            .map_err(Error::from)?;
        let watch = permit.hold(watch);
        let stream = async_stream::stream! {
            for await watched in watch {
                match watched {
                    Watched::Event(journaled) => yield Ok(pb::Event::from(journaled.as_ref())),
                    Watched::Gap { after, resumes_after } => yield Ok(gap(after, resumes_after)),
                    Watched::Lagged(missed) => {
                        // Tell the watcher rather than go on with a gap it cannot see.
                        yield Err(Status::data_loss(format!(
                            "the watch fell {missed} events behind and missed them; watch again"
                        )));
                        break;
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
