//! Types and stubs generated from `proto/job.proto` (by `build.rs`, with protox).
#![allow(clippy::all, missing_docs, unreachable_pub)]

tonic::include_proto!("proto");

/// The encoded descriptors of `job.proto`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/job_descriptor.bin"));
