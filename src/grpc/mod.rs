//! The gRPC API: `proto.JobsService` (the older service's five calls, wire-exact, plus the added
//! ones), reflection v1 and v1alpha, and `grpc.health.v1`, as one axum router that shares the
//! REST port.
//!
//! Handlers ([`jobs`]) only convert ([`convert`]) and call the use cases; errors become
//! statuses in one place ([`status`]).

mod convert;
mod edge;
pub(crate) use self::edge::is_grpc_call;
mod health;
mod jobs;
pub mod pb;
mod status;

use std::time::Duration;

use axum::Router;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use self::jobs::JobsGrpc;
use crate::{events::EventStreams, jobs::Jobs, throttle::StreamLimit};

/// The gRPC services as an axum router without a fallback, to merge into the REST router.
/// A call that takes longer than `timeout` (or its `grpc-timeout`) to answer ends with
/// DEADLINE_EXCEEDED (a stream's answer is its first headers, so open watches are not cut);
/// the rest of the protocol's edge is in [`edge`]. The watch shares `streams` with SSE; health
/// watches end once health has turned NOT_SERVING at shutdown ([`health`]).
pub async fn router(
    jobs: Jobs,
    events: EventStreams,
    shutdown: tokio_util::sync::CancellationToken,
    streams: StreamLimit,
    max_message_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Router> {
    let service = pb::jobs_service_server::JobsServiceServer::new(JobsGrpc::new(
        jobs,
        events,
        shutdown.clone(),
        streams,
    ))
    .max_decoding_message_size(max_message_bytes);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::jobs_service_server::JobsServiceServer<JobsGrpc>>()
        .await;
    // Health turns NOT_SERVING the moment shutdown starts, so balancers watching it stop
    // sending calls while those in flight finish; then the watches end, having said so.
    let watches_end = tokio_util::sync::CancellationToken::new();
    let said_not_serving = watches_end.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        health_reporter
            .set_not_serving::<pb::jobs_service_server::JobsServiceServer<JobsGrpc>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        said_not_serving.cancel();
    });

    // Reflection serves our calls, health, and the `google.rpc` error details our statuses
    // carry (`BadRequest`, `RetryInfo`), so a generic client such as grpcurl can decode them.
    let described = || {
        [
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .fold(
            tonic_reflection::server::Builder::configure(),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let reflection_v1 = described().build_v1()?;
    let reflection_v1alpha = described().build_v1alpha()?;

    Ok(tonic::service::Routes::new(service)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        // Without this an unknown REST path would answer 200 with grpc-status 12.
        .reset_fallback()
        .layer(axum::middleware::from_fn_with_state(
            watches_end,
            health::end_watches,
        ))
        .layer(axum::middleware::from_fn_with_state(timeout, edge::edge))
        // A call answered with a non-OK code (NOT_FOUND, INVALID_ARGUMENT) is an ordinary
        // answer, not a failure to log as an error; the use cases log the server's own faults.
        .layer(
            TraceLayer::new_for_grpc()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        ))
}
