//! `GET /healthz`, `GET /readyz` and `GET /metrics`.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{
    problem::{PROBLEM_JSON, Problem},
    state::AppState,
};

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Up", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the store and, when configured, the Kafka brokers answer, and the service is
/// not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "The store or the Kafka brokers are unreachable, or the service is shutting down", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down",
        )
        .into_response();
    }
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

/// `GET /metrics`: every metric in the Prometheus text format (absent with `--metrics false`).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The metrics, in the Prometheus text exposition format (version 0.0.4)", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(recount) = &state.recount {
        recount.recount(&state.metrics).await;
    }
    let text = state.metrics.render();
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
