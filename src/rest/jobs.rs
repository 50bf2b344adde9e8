//! REST handlers of `/api/v1/jobs` and `/api/v1/schedule/preview`: convert JSON to use-case
//! inputs and results back.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::{
    params::{
        JobPath, ListParams, PageParams, PreviewParams, RunPath, idempotency_key,
        version_precondition,
    },
    problem::{ApiJson, ApiPath, ApiQuery, OptionalJson, PROBLEM_JSON, Problem},
    schemas::{JobPatch, NewJob},
    state::AppState,
    views::{JobPage, JobView, OperationInput, PreviewView, ResultInput, RunPage, RunView},
};
use crate::{
    auth::Caller,
    domain::{Audit, Job, JobInput, RunResult},
    jobs::{Error, JobChange},
    telemetry::current_traceparent,
};

/// The job as the response body, its version as the entity tag.
fn job_response(status: StatusCode, job: &Job) -> Response {
    let mut response = (status, axum::Json(JobView::from(job))).into_response();
    // Digits between quotes: always a valid header value.
    if let Ok(tag) = HeaderValue::try_from(format!("\"{}\"", job.version)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// Create a job.
#[utoipa::path(
    post, path = "/api/v1/jobs", tag = "jobs",
    request_body = NewJob,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters: the same key and body again return \
            the first job instead of a new one; the same key with another body is 422")),
    responses(
        (status = 201, description = "Created", body = JobView,
            headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON or invalid fields, each named", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "A concurrent create with the same Idempotency-Key has not finished", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Idempotency key used with another body", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<JobInput>,
) -> Result<Response, Error> {
    let key = idempotency_key(&headers)?;
    let created = state
        .jobs
        .create(
            input,
            key,
            &Audit::by(caller.subject).in_trace(current_traceparent()),
        )
        .await?;
    let mut response = job_response(StatusCode::CREATED, &created.job);
    // An id is 24 hex digits: always a valid header value.
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", created.job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
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
    params(JobPath),
    responses(
        (status = 200, description = "The job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobPath>,
) -> Result<Response, Error> {
    let job = state.jobs.get(path.parse()?).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "Bad paging or filter", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<JobPage>, Error> {
    let (filter, page) = params.parse()?;
    let page = state.jobs.list(filter, page).await?;
    Ok(axum::Json(JobPage::from(page)))
}

/// Change a job with a JSON merge patch of its editable fields; a new schedule reschedules it.
#[utoipa::path(
    patch, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(
        JobPath,
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|W/.*|"?[0-9]{1,19}"?(\s*,\s*(W/"?[0-9]{1,19}"?|"?[0-9]{1,19}"?))*)$"#,
            description = "The version (ETag, `\"3\"`) the change is based on, or `*` for any; \
                a stale or weak tag is 412"),
    ),
    request_body(content = JobPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The changed job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id, JSON or If-Match, or the changed job has invalid fields", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The job already fired 100 times for the new schedule's due time", body = Problem, content_type = PROBLEM_JSON),
        (status = 412, description = "Stale or weak If-Match", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, Error> {
    let id = path.parse()?;
    let expected = version_precondition(&headers)?;
    let job = state
        .jobs
        .update(
            id,
            JobChange::MergePatch(patch),
            expected,
            &Audit::by(caller.subject).in_trace(current_traceparent()),
        )
        .await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Delete a job; a pending fire never happens.
#[utoipa::path(
    delete, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(JobPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
) -> Result<StatusCode, Error> {
    state
        .jobs
        .delete(
            path.parse()?,
            &Audit::by(caller.subject).in_trace(current_traceparent()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A job's runs, newest first.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/runs", tag = "runs",
    params(JobPath, PageParams),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Malformed id or paging", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<JobPath>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<RunPage>, Error> {
    let id = path.parse()?;
    let page = state.jobs.list_runs(id, params.parse()?).await?;
    Ok(axum::Json(RunPage::from(page)))
}

/// Report how a run ended. The same result again changes nothing.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/runs/{runId}/result", tag = "runs",
    params(RunPath),
    request_body = ResultInput,
    responses(
        (status = 200, description = "The closed run", body = RunView),
        (status = 400, description = "Malformed ids or JSON, or an invalid result", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job or run", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The run already finished otherwise", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn report_result(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<RunPath>,
    ApiJson(input): ApiJson<ResultInput>,
) -> Result<axum::Json<RunView>, Error> {
    let (id, run_id) = path.parse()?;
    let result = RunResult::parse(input.status.into(), input.error, input.output)?;
    let run = state.jobs.report_result(id, Some(run_id), result).await?;
    Ok(axum::Json(RunView::from(&run)))
}

/// Pause a job: nothing fires until it is resumed; the schedule keeps its place.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/pause", tag = "jobs",
    params(JobPath),
    request_body(content = Option<OperationInput>,
        description = "Optional: why, recorded with the caller on the job's events and ledger"),
    responses(
        (status = 200, description = "The paused job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The job is paused, cancelled or finished", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    OptionalJson(input): OptionalJson<OperationInput>,
) -> Result<Response, Error> {
    let audit = Audit::with_reason(caller.subject, input.reason)?.in_trace(current_traceparent());
    let job = state.jobs.pause(path.parse()?, &audit).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Resume a paused job: times passed while paused go through its misfire policy, and the
/// schedule continues from now.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/resume", tag = "jobs",
    params(JobPath),
    request_body(content = Option<OperationInput>,
        description = "Optional: why, recorded with the caller on the job's events and ledger"),
    responses(
        (status = 200, description = "The resumed job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The job is not paused", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    OptionalJson(input): OptionalJson<OperationInput>,
) -> Result<Response, Error> {
    let audit = Audit::with_reason(caller.subject, input.reason)?.in_trace(current_traceparent());
    let job = state.jobs.resume(path.parse()?, &audit).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Fire an extra run now; the schedule does not move.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/trigger", tag = "jobs",
    params(JobPath),
    request_body(content = Option<OperationInput>,
        description = "Optional: why, recorded with the caller on the job's events and ledger"),
    responses(
        (status = 200, description = "The job, with its new run open", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The job is cancelled, or a run is open and overlap is SKIP", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    OptionalJson(input): OptionalJson<OperationInput>,
) -> Result<Response, Error> {
    let audit = Audit::with_reason(caller.subject, input.reason)?.in_trace(current_traceparent());
    let job = state.jobs.trigger(path.parse()?, &audit).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Cancel a job: its open run and waiting retries are cancelled, and it never fires again.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(JobPath),
    request_body(content = Option<OperationInput>,
        description = "Optional: why, recorded with the caller on the job's events and ledger"),
    responses(
        (status = 200, description = "The cancelled job", body = JobView, headers(("ETag" = String))),
        (status = 400, description = "Malformed id", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "The job is cancelled or finished already", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    OptionalJson(input): OptionalJson<OperationInput>,
) -> Result<Response, Error> {
    let audit = Audit::with_reason(caller.subject, input.reason)?.in_trace(current_traceparent());
    let job = state.jobs.cancel(path.parse()?, &audit).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// The next fire times of a schedule, marking those moved or resolved by daylight saving.
#[utoipa::path(
    get, path = "/api/v1/schedule/preview", tag = "schedule",
    params(PreviewParams),
    responses(
        (status = 200, description = "The next fire times", body = PreviewView),
        (status = 400, description = "Invalid schedule or count", body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The request took longer than the request timeout", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn preview(
    ApiQuery(params): ApiQuery<PreviewParams>,
) -> Result<axum::Json<PreviewView>, Error> {
    let (schedule, count, from) = params.parse()?;
    let preview = crate::jobs::preview(schedule, count, from).await?;
    Ok(axum::Json(PreviewView::from(&preview)))
}
