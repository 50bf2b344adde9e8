//! The JSON REST API under `/api/v1`, health endpoints, the metrics, the OpenAPI document and
//! Swagger UI.
//!
//! Handlers only convert: query parameters and headers ([`params`]), bodies through the
//! extractors of [`problem`], results into views ([`views`]); every rule is the use cases'. Each
//! error becomes a problem document in one place ([`problem`]).

mod events;
mod examples;
mod health;
mod jobs;
mod params;
pub(crate) mod problem;
mod runs;
mod schemas;
mod security;
mod state;
pub(crate) mod views;

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use tower::{ServiceBuilder, timeout::TimeoutLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub(crate) use self::problem::Problem;
pub use self::state::{AppState, RestSettings, Shared};
use self::{examples::Examples, security::Security};

/// The OpenAPI document of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Scheduler",
        description = "Durable job scheduler: create jobs that fire at a time, follow their runs, report results.",
        license(name = "MIT")
    ),
    paths(
        jobs::create, jobs::list, jobs::get, jobs::update, jobs::delete,
        jobs::pause, jobs::resume, jobs::trigger, jobs::cancel, jobs::preview,
        jobs::list_runs, jobs::report_result, runs::claim, events::events, health::healthz,
        health::readyz, health::metrics
    ),
    components(schemas(
        schemas::NewJob, schemas::EmailJobInput, schemas::SmsJobInput, schemas::EmailJobData,
        schemas::JsonValue,
        schemas::JobPatch, crate::domain::ScheduleInput, crate::domain::JobType,
        crate::domain::JobStatus, crate::domain::RunStatus, crate::domain::FieldError,
        crate::domain::RetryInput, crate::domain::RetryPolicy, crate::domain::MisfirePolicy,
        crate::domain::OverlapPolicy, views::PreviewView, views::FireTimeView,
        views::JobView, views::ScheduleView, views::JobPage, views::RunView, views::RunPage,
        views::ResultInput, views::ResultStatus, views::OperationInput, views::EventView,
        views::WebhookView, crate::domain::WebhookInput, crate::domain::Delivery,
        runs::ClaimInput, runs::ClaimedRuns, runs::ClaimedRunView,
        schemas::EventMessage, problem::Problem
    )),
    modifiers(&Security, &Examples),
    tags(
        (name = "jobs", description = "Create, read, change and delete jobs"),
        (name = "runs", description = "A job's executions and their results"),
        (name = "schedule", description = "Check a schedule's next fire times"),
        (name = "events", description = "Live lifecycle and run events"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The REST side of the service: `/api/v1`, health, docs, and a problem-shaped 404 for
/// everything else.
pub fn router(state: AppState, settings: &RestSettings) -> Router {
    let api = Router::new()
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route(
            "/jobs/{id}",
            get(jobs::get).patch(jobs::update).delete(jobs::delete),
        )
        .route("/jobs/{id}/pause", post(jobs::pause))
        .route("/jobs/{id}/resume", post(jobs::resume))
        .route("/jobs/{id}/trigger", post(jobs::trigger))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/schedule/preview", get(jobs::preview))
        .route("/jobs/{id}/runs", get(jobs::list_runs))
        .route("/jobs/{id}/runs/{runId}/result", post(jobs::report_result))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(problem::timed_out))
                .layer(TimeoutLayer::new(settings.request_timeout)),
        )
        // Long-lived: a stream, and a claim that waits up to a minute for runs.
        .route("/events", get(events::events))
        .route("/runs:claim", post(runs::claim));
    let mut root = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if state.metrics.is_on() {
        root = root.route("/metrics", get(health::metrics));
    }
    root.with_state(state)
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", ApiDoc::openapi()))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            settings.max_body_bytes,
            problem::announced_too_large,
        ))
        .layer(axum::middleware::from_fn(problem::uri_too_long))
        .layer(TraceLayer::new_for_http())
}
