//! The gRPC API: `proto.JobsService` (the older service's five calls, wire-exact, plus the added
//! ones), reflection v1 and v1alpha, and `grpc.health.v1`, as one axum router that shares the
//! REST port.

pub mod jobs;
pub mod status;

use axum::Router;
use tower_http::trace::TraceLayer;

use crate::{events::EventBus, jobs::Jobs};

/// Types and stubs generated from `proto/job.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("proto");

    /// The encoded descriptors of `job.proto`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/job_descriptor.bin"));
}

/// The gRPC services as an axum router without a fallback, to merge into the REST router.
pub async fn router(
    jobs: Jobs,
    bus: EventBus,
    shutdown: tokio_util::sync::CancellationToken,
    max_message_bytes: usize,
) -> anyhow::Result<Router> {
    let service =
        pb::jobs_service_server::JobsServiceServer::new(jobs::JobsGrpc::new(jobs, bus, shutdown))
            .max_decoding_message_size(max_message_bytes);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::jobs_service_server::JobsServiceServer<jobs::JobsGrpc>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    Ok(tonic::service::Routes::new(service)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        // Without this an unknown REST path would answer 200 with grpc-status 12.
        .reset_fallback()
        .layer(TraceLayer::new_for_grpc()))
}
