//! Tests of the whole service over real sockets, REST and gRPC on one port, against real
//! MongoDB-wire, Kafka and etcd servers; the shared helpers are in [`support`].
//!
//! One test binary (modules below), so the suite links once.

mod access;
mod access_audit;
mod access_keys;
mod access_policy;
mod adopt;
mod architecture;
mod bad_input;
mod bad_time;
mod compose;
mod discovery;
mod engine;
mod fire;
mod grpc;
mod grpc_edge;
mod kafka;
mod limits;
mod memory;
mod metrics;
mod mongo;
mod openapi;
mod process;
mod pull;
mod readme;
mod replicas;
mod rest;
mod rest_edge;
mod shutdown;
mod store;
mod stored_format;
mod streams;
mod support;
mod tls;
mod traces;
mod webhooks;
