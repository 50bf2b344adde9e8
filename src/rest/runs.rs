//! `POST /api/v1/runs:claim`: workers that pull take the runs to do.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    problem::{OptionalJson, PROBLEM_JSON, Problem},
    state::AppState,
};
use crate::{
    auth::Caller,
    domain::{Delivery, JobData, JobType, format_time, input::json},
    jobs::{
        Error,
        claims::{ClaimRequest, ClaimedRun},
    },
};

/// What a worker asks for; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClaimInput {
    /// Only runs of jobs of these types; any type when absent or empty.
    #[serde(default)]
    job_types: Option<Vec<JobType>>,
    /// Most runs to take: 1 to 100, default 1.
    #[serde(default, deserialize_with = "json::optional_integer")]
    #[schema(minimum = 1, maximum = 100, example = 10)]
    max: Option<i64>,
    /// How long to wait when none is offered, in seconds: 0 to 60, default 0.
    #[serde(default, deserialize_with = "json::optional_integer")]
    #[schema(minimum = 0, maximum = 60, example = 20)]
    wait_seconds: Option<i64>,
    /// How long each run taken is held for this worker, in seconds: 1 to 3600, default 60.
    /// Past it, a run with no result is offered to another worker, with the same `runId`.
    #[serde(default, deserialize_with = "json::optional_integer")]
    #[schema(minimum = 1, maximum = 3600, example = 60)]
    lease_seconds: Option<i64>,
}

/// The runs a worker took.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ClaimedRuns {
    /// Empty when none came within the wait.
    runs: Vec<ClaimedRunView>,
}

/// A run taken, with what doing it needs. Report its result to
/// `POST /api/v1/jobs/{jobId}/runs/{runId}/result`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClaimedRunView {
    job_id: String,
    /// The job's name, for the worker's logs.
    job_name: String,
    run_id: String,
    /// 1 for the first attempt, 2 and up for retries.
    attempt: u32,
    /// The due time it is the fire of.
    scheduled_for: String,
    job_type: JobType,
    #[schema(value_type = Object)]
    job_data: JobData,
    /// When the hold lapses: past it without a result, the run is offered again.
    lease_until: String,
}

impl From<&ClaimedRun> for ClaimedRunView {
    fn from(claimed: &ClaimedRun) -> Self {
        let ClaimedRun { run, job } = claimed;
        Self {
            job_id: job.id.to_string(),
            job_name: job.name.clone(),
            run_id: run.run_id.to_string(),
            attempt: run.attempt,
            scheduled_for: format_time(run.scheduled_for),
            job_type: job.job_type,
            job_data: job.job_data.clone(),
            lease_until: run
                .lease
                .as_ref()
                .map(|lease| format_time(lease.until))
                .unwrap_or_default(),
        }
    }
}

/// Take runs to do: the open runs of jobs delivered to pulling workers (`"delivery": "pull"`,
/// or by default without Kafka or a webhook) that nobody holds, each held for this worker for
/// `leaseSeconds`; no two workers hold one run at once. Waits up to `waitSeconds` when none is
/// offered (a long poll), then answers an empty list.
#[utoipa::path(
    post, path = "/api/v1/runs:claim", tag = "runs",
    request_body(content = Option<ClaimInput>, description = "Optional: which runs, how many, how long to wait and to hold them"),
    responses(
        (status = 200, description = "The runs taken (none when none came within the wait)", body = ClaimedRuns),
        (status = 400, description = "Malformed JSON or a field out of range", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is larger than the service accepts", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not JSON (`Content-Type`)", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The job store is unavailable; retry (`Retry-After`)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJson(input): OptionalJson<ClaimInput>,
) -> Result<axum::Json<ClaimedRuns>, Error> {
    let ClaimInput {
        job_types,
        max,
        wait_seconds,
        lease_seconds,
    } = input;
    let request = ClaimRequest::parse(
        job_types.unwrap_or_default(),
        max,
        wait_seconds,
        lease_seconds,
    )?;
    let taken = state
        .jobs
        .claim_runs(
            Delivery::Pull,
            &request,
            caller.subject.as_deref(),
            &state.shutdown,
        )
        .await?;
    Ok(axum::Json(ClaimedRuns {
        runs: taken.iter().map(ClaimedRunView::from).collect(),
    }))
}
