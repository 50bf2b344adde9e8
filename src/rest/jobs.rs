//! REST handlers of `/api/v1/jobs`: convert JSON to use-case inputs and results back.

use std::convert::Infallible;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{self, Sse},
    },
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    problem::{ApiJson, ApiPath, ApiQuery, Problem},
};
use crate::{
    domain::{
        Job, JobId, JobInput, JobStatus, JobType, MisfirePolicy, OverlapPolicy, RetryPolicy, Run,
        RunId, RunResult, RunStatus, Schedule, ScheduleInput, format_time,
    },
    error::{Error, decode_value},
    events::Event,
    jobs::{JobChange, page_request},
    schedule::{DstShift, Preview, ScheduleFields},
    store::JobFilter,
};

/// A job as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// 24-hex-digit ObjectId.
    #[schema(example = "65f1c0ffee0123456789abcd")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub job_type: JobType,
    #[schema(value_type = Object)]
    pub job_data: Value,
    pub schedule: ScheduleView,
    pub retry: RetryPolicy,
    pub run_timeout_seconds: u32,
    pub misfire_policy: MisfirePolicy,
    pub overlap_policy: OverlapPolicy,
    /// The next fire (regular or retry); null when nothing is due. While paused, where the
    /// schedule stands.
    pub schedule_time: Option<String>,
    pub status: JobStatus,
    pub created_at: String,
    pub updated_at: String,
    /// Increases on every change; sent as `ETag`, honoured in `If-Match`.
    pub version: u64,
}

/// When the job fires: the fields of its kind only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// The one fire of a one-shot job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// The interval's first fire (set from the creation time when none was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
}

impl From<&Schedule> for ScheduleView {
    fn from(schedule: &Schedule) -> Self {
        let fields = ScheduleFields::from(schedule);
        Self {
            run_at: fields.run_at.map(format_time),
            cron: fields.cron,
            timezone: fields.timezone,
            interval_seconds: fields.interval_seconds,
            start_at: fields.start_at.map(format_time),
        }
    }
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.to_string(),
            name: job.name.clone(),
            description: job.description.clone(),
            job_type: job.job_type,
            job_data: Value::Object(job.job_data.clone()),
            schedule: ScheduleView::from(&job.schedule),
            retry: job.retry,
            run_timeout_seconds: job.run_timeout_seconds,
            misfire_policy: job.misfire_policy,
            overlap_policy: job.overlap_policy,
            schedule_time: job.next_fire().map(format_time),
            status: job.status,
            created_at: format_time(job.created_at),
            updated_at: format_time(job.updated_at),
            version: job.version,
        }
    }
}

/// One execution of a job, or an expected fire that did not happen.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// Deterministic from job id, due time and attempt.
    pub run_id: String,
    pub job_id: String,
    pub scheduled_for: String,
    /// Null for `SKIPPED`, `MISSED`, and retries `CANCELLED` before they fired.
    pub fired_at: Option<String>,
    pub attempt: u32,
    pub status: RunStatus,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub output: Option<String>,
}

impl From<&Run> for RunView {
    fn from(run: &Run) -> Self {
        Self {
            run_id: run.run_id.to_string(),
            job_id: run.job_id.to_string(),
            scheduled_for: format_time(run.scheduled_for),
            fired_at: run.fired_at.map(format_time),
            attempt: run.attempt,
            status: run.status,
            finished_at: run.finished_at.map(format_time),
            error: run.error.clone(),
            output: run.output.clone(),
        }
    }
}

/// The next fire times of a schedule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    pub schedule: ScheduleView,
    pub times: Vec<FireTimeView>,
}

/// One previewed fire.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FireTimeView {
    /// The instant, UTC.
    #[schema(example = "2026-03-29T01:00:00.000Z")]
    pub time: String,
    /// The same instant on the schedule's wall clock, with its offset.
    #[schema(example = "2026-03-29T03:00:00+02:00")]
    pub local_time: String,
    /// True when the asked-for local time does not exist (the clock jumps over it), so the fire
    /// moved to the first valid instant after it.
    pub dst_shifted: bool,
    /// `NONE`, `SKIPPED` (moved past a jump), or `REPEATED` (a local time that occurs twice:
    /// fires at its first occurrence only).
    #[schema(example = "SKIPPED")]
    pub dst: String,
    /// The local time the schedule asked for.
    #[schema(example = "2026-03-29T02:30:00")]
    pub requested_local_time: String,
}

impl From<&Preview> for PreviewView {
    fn from(preview: &Preview) -> Self {
        Self {
            schedule: ScheduleView::from(&preview.schedule),
            times: preview
                .times
                .iter()
                .map(|fire| FireTimeView {
                    time: format_time(fire.at),
                    local_time: preview.local_time(fire.at),
                    dst_shifted: fire.shift == DstShift::Skipped,
                    dst: fire.shift.name().to_owned(),
                    requested_local_time: fire.local.format("%Y-%m-%dT%H:%M:%S").to_string(),
                })
                .collect(),
        }
    }
}

/// A page of jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub total_count: u64,
    pub total_pages: u64,
    pub page: u64,
    pub size: u64,
    pub has_more: bool,
    pub jobs: Vec<JobView>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub total_count: u64,
    pub total_pages: u64,
    pub page: u64,
    pub size: u64,
    pub has_more: bool,
    pub runs: Vec<RunView>,
}

/// An executor's report of how a run ended.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultInput {
    /// `SUCCEEDED` or `FAILED`.
    pub status: RunStatus,
    /// Why it failed; at most 4 KiB.
    #[serde(default)]
    pub error: Option<String>,
    /// What it produced; at most 16 KiB.
    #[serde(default)]
    pub output: Option<String>,
}

/// Listing filters and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page number, from 1.
    #[param(value_type = Option<i64>, minimum = 1)]
    page: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    size: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs of this type.
    #[param(value_type = Option<JobType>)]
    job_type: Option<String>,
    /// Only jobs whose name starts with this text.
    name: Option<String>,
}

/// Paging of a job's runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1.
    #[param(value_type = Option<i64>, minimum = 1)]
    page: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    size: Option<String>,
}

/// Filter of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events of this job.
    job_id: Option<String>,
}

fn parse_int(field: &str, raw: Option<&str>) -> Result<Option<i64>, Error> {
    raw.map(|v| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| Error::invalid(field, "must be an integer"))
    })
    .transpose()
}

/// Parses an enum from its query-string name (`SCHEDULED`, `EMAIL`).
fn parse_name<T: serde::de::DeserializeOwned>(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<T>, Error> {
    raw.map(|v| {
        decode_value::<T>(Value::String(v.trim().to_ascii_uppercase()))
            .map_err(|_| Error::invalid(field, format!("`{v}` is not a known value")))
    })
    .transpose()
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// `If-Match`: a version ETag (`"3"`), or `*` for any. A weak tag never matches (RFC 9110
/// compares If-Match strongly), so it gets 412 like a stale version.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    if text.starts_with("W/") {
        return Err(Error::VersionMismatch);
    }
    text.trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| Error::invalid("If-Match", "must be a version ETag such as \"3\""))
}

fn job_response(status: StatusCode, job: &Job) -> Response {
    let mut response = (status, axum::Json(JobView::from(job))).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(job.version));
    response
}

/// Create a job.
#[utoipa::path(
    post, path = "/api/v1/jobs", tag = "jobs",
    request_body = JobInput,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "The same key and body again return the first job instead of a new one")),
    responses(
        (status = 201, description = "Created", body = JobView,
            headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Invalid input", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 415, description = "Not JSON", body = Problem),
        (status = 422, description = "Idempotency key used with another body", body = Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<JobInput>,
) -> Result<Response, Error> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::invalid("Idempotency-Key", "must be visible ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let created = state.jobs.create(input, key).await?;
    let mut response = job_response(StatusCode::CREATED, &created.job);
    let location = format!("/api/v1/jobs/{}", created.job.id);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ids are hex"),
    );
    if created.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Get a job.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "24-hex-digit job id")),
    responses(
        (status = 200, description = "The job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such job", body = Problem),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    let job = state.jobs.get(JobId::parse(&id)?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "Bad paging or filter", body = Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<JobPage>, Error> {
    let page = page_request(
        parse_int("page", params.page.as_deref())?,
        parse_int("size", params.size.as_deref())?,
    )?;
    let filter = JobFilter {
        status: parse_name("status", params.status.as_deref())?,
        job_type: parse_name("jobType", params.job_type.as_deref())?,
        name_prefix: params.name,
    };
    let page = state.jobs.list(filter, page).await?;
    Ok(axum::Json(JobPage {
        total_count: page.total_count,
        total_pages: page.total_pages,
        page: page.page,
        size: page.size,
        has_more: page.has_more,
        jobs: page.items.iter().map(JobView::from).collect(),
    }))
}

/// Change a job with a JSON merge patch of its editable fields; a new schedule reschedules it.
#[utoipa::path(
    patch, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(
        ("id" = String, Path, description = "24-hex-digit job id"),
        ("If-Match" = Option<String>, Header, description = "The version (ETag) the change is based on"),
    ),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "RFC 7396 merge patch of name, description, jobType, jobData, schedule"),
    responses(
        (status = 200, description = "The changed job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Invalid change", body = Problem),
        (status = 404, description = "No such job", body = Problem),
        (status = 412, description = "Stale If-Match", body = Problem),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, Error> {
    let id = JobId::parse(&id)?;
    let expected = if_match(&headers)?;
    let job = state
        .jobs
        .update(id, JobChange::MergePatch(patch), expected)
        .await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Delete a job; a pending fire never happens.
#[utoipa::path(
    delete, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "24-hex-digit job id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such job", body = Problem),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Error> {
    state.jobs.delete(JobId::parse(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A job's runs, newest first.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/runs", tag = "runs",
    params(("id" = String, Path, description = "24-hex-digit job id"), PageParams),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Malformed id or paging", body = Problem),
        (status = 404, description = "No such job", body = Problem),
    )
)]
pub async fn list_runs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<RunPage>, Error> {
    let id = JobId::parse(&id)?;
    let page = page_request(
        parse_int("page", params.page.as_deref())?,
        parse_int("size", params.size.as_deref())?,
    )?;
    let page = state.jobs.list_runs(id, page).await?;
    Ok(axum::Json(RunPage {
        total_count: page.total_count,
        total_pages: page.total_pages,
        page: page.page,
        size: page.size,
        has_more: page.has_more,
        runs: page.items.iter().map(RunView::from).collect(),
    }))
}

/// Report how a run ended. The same result again changes nothing.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/runs/{runId}/result", tag = "runs",
    params(
        ("id" = String, Path, description = "24-hex-digit job id"),
        ("runId" = String, Path, description = "The run's UUID"),
    ),
    request_body = ResultInput,
    responses(
        (status = 200, description = "The closed run", body = RunView),
        (status = 400, description = "Invalid result", body = Problem),
        (status = 404, description = "No such job or run", body = Problem),
        (status = 409, description = "The run already finished otherwise", body = Problem),
    )
)]
pub async fn report_result(
    State(state): State<AppState>,
    ApiPath((id, run_id)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<ResultInput>,
) -> Result<axum::Json<RunView>, Error> {
    let id = JobId::parse(&id)?;
    let run_id = RunId::parse(&run_id)?;
    let result = RunResult::parse(input.status, input.error, input.output)?;
    let run = state.jobs.report_result(id, Some(run_id), result).await?;
    Ok(axum::Json(RunView::from(&run)))
}

/// Pause a job: nothing fires until it is resumed; the schedule keeps its place.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/pause", tag = "jobs",
    params(("id" = String, Path, description = "24-hex-digit job id")),
    responses(
        (status = 200, description = "The paused job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "The job is paused, cancelled or finished", body = Problem),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    let job = state.jobs.pause(JobId::parse(&id)?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Resume a paused job: times passed while paused go through its misfire policy, and the
/// schedule continues from now.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/resume", tag = "jobs",
    params(("id" = String, Path, description = "24-hex-digit job id")),
    responses(
        (status = 200, description = "The resumed job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "The job is not paused", body = Problem),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    let job = state.jobs.resume(JobId::parse(&id)?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Fire an extra run now; the schedule does not move.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/trigger", tag = "jobs",
    params(("id" = String, Path, description = "24-hex-digit job id")),
    responses(
        (status = 200, description = "The job, with its new run open", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "The job is cancelled, or a run is open and overlap is SKIP", body = Problem),
    )
)]
pub async fn trigger(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    let job = state.jobs.trigger(JobId::parse(&id)?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Cancel a job: its open run and waiting retries are cancelled, and it never fires again.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "24-hex-digit job id")),
    responses(
        (status = 200, description = "The cancelled job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "The job is cancelled or finished already", body = Problem),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    let job = state.jobs.cancel(JobId::parse(&id)?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// A schedule to preview: one of `cron` (with `timezone`), `intervalSeconds` (with `startAt`)
/// or `runAt`; `count` fire times (1 to 100, default 10) after `from` (default now).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// A cron expression: 5 fields, or 6 with seconds first.
    cron: Option<String>,
    /// IANA zone of `cron`; default UTC.
    timezone: Option<String>,
    /// Seconds between fires.
    #[param(value_type = Option<u64>)]
    interval_seconds: Option<String>,
    /// RFC 3339 start of an interval schedule.
    start_at: Option<String>,
    /// RFC 3339 time of a one-shot schedule.
    run_at: Option<String>,
    /// How many fire times, 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    count: Option<String>,
    /// RFC 3339: list fires after this time (default now).
    from: Option<String>,
}

/// The next fire times of a schedule, marking those moved or resolved by daylight saving.
#[utoipa::path(
    get, path = "/api/v1/schedule/preview", tag = "schedule",
    params(PreviewParams),
    responses(
        (status = 200, description = "The next fire times", body = PreviewView),
        (status = 400, description = "Invalid schedule or count", body = Problem),
    )
)]
pub async fn preview(
    ApiQuery(params): ApiQuery<PreviewParams>,
) -> Result<axum::Json<PreviewView>, Error> {
    let interval_seconds = parse_int("intervalSeconds", params.interval_seconds.as_deref())?
        .map(|n| {
            u64::try_from(n).map_err(|_| {
                Error::invalid("intervalSeconds", "must be a positive number of seconds")
            })
        })
        .transpose()?;
    let schedule = ScheduleInput {
        run_at: params.run_at,
        cron: params.cron,
        timezone: params.timezone,
        interval_seconds,
        start_at: params.start_at,
    };
    let count = parse_int("count", params.count.as_deref())?;
    let preview = crate::jobs::preview(&schedule, count, params.from.as_deref())?;
    Ok(axum::Json(PreviewView::from(&preview)))
}

/// An event as the SSE stream carries it in `data`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Unique per event.
    pub id: String,
    /// `scheduler.job.created`, `.updated`, `.deleted`, `.run`, `.finished`.
    #[serde(rename = "type")]
    pub kind: String,
    pub time: String,
    pub job_id: String,
    pub job: JobView,
    pub run: Option<RunView>,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        Self {
            id: event.id.to_string(),
            kind: event.kind.ce_type().to_owned(),
            time: format_time(event.time),
            job_id: event.job.id.to_string(),
            job: JobView::from(&event.job),
            run: event.run.as_ref().map(RunView::from),
        }
    }
}

/// Live lifecycle and run events as Server-Sent Events (`event:` is the type, `data:` the
/// event JSON).
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "An endless `text/event-stream` of events",
            content_type = "text/event-stream", body = EventView),
        (status = 400, description = "Malformed job id", body = Problem),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, Error> {
    let only = params.job_id.as_deref().map(JobId::parse).transpose()?;
    let mut receiver = state.bus.subscribe();
    let shutdown = state.shutdown.clone();
    let stream = async_stream::stream! {
        loop {
            let received = tokio::select! {
                r = receiver.recv() => r,
                () = shutdown.cancelled() => break,
            };
            match received {
                Ok(event) => {
                    if only.is_some_and(|id| id != event.job.id) {
                        continue;
                    }
                    let data = serde_json::to_string(&EventView::from(event.as_ref()))
                        .unwrap_or_default();
                    yield Ok(sse::Event::default()
                        .id(event.id.to_string())
                        .event(event.kind.ce_type())
                        .data(data));
                }
                Err(RecvError::Lagged(missed)) => {
                    yield Ok(sse::Event::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{missed}}}")));
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(sse::KeepAlive::default()))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the store and, when configured, the Kafka brokers answer.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "The store or the Kafka brokers are unreachable", body = Problem),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (result, detail) = match state.jobs.ready().await {
        Ok(()) => (
            state.jobs.sink_ready().await,
            "the Kafka brokers are unreachable",
        ),
        failed => (failed, "the job store is unreachable"),
    };
    match result {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(error = ?error, "not ready");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail).into_response()
        }
    }
}
