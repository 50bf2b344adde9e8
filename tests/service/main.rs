//! Tests of the whole service over real sockets, REST and gRPC on one port.
//!
//! One test binary (modules below), so the suite links once.

mod bad_input;
mod compose;
mod engine;
mod fire;
mod grpc;
mod helpers;
mod kafka;
mod mongo;
mod openapi;
mod process;
mod replicas;
mod rest;
mod store;
mod stored_format;
