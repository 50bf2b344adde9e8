//! A durable job scheduler.
//!
//! Users create jobs over REST or gRPC; the scheduler fires each one when it is due by
//! recording a run and publishing a run event, and executors report the result back.
//!
//! - [`domain`]: jobs, runs, policies, and parsing raw input into them.
//! - [`schedule`]: one-shot, cron (with its time-zone and DST rules) and interval schedules.
//! - [`lifecycle`]: every transition of a job (fire, timeout, retry, misfire, overlap, pause,
//!   resume, trigger, cancel, result) as a pure function of the job and the time.
//! - [`jobs`]: the use cases, the one layer both transports call.
//! - [`store`]: the `JobStore` port (with its outbox) and its SQLite and MongoDB adapters.
//! - [`events`]: events, the `EventSink` port, the in-process bus, and `EventRoute`, which
//!   sends events to the bus and, when Kafka is configured, into the outbox.
//! - [`outbox`]: the relay that publishes stored events through the `Publisher` port.
//! - [`kafka`]: the Kafka adapters: the publisher, the result consumer, the message format.
//! - [`scheduler`]: the loop that claims and fires due jobs.
//! - [`rest`] and [`grpc`]: the two transports, thin and mirrored.
//! - [`app`]: wiring and the server on one port; [`config`]: settings.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod jobs;
pub mod kafka;
pub mod lifecycle;
pub mod outbox;
pub mod rest;
pub mod schedule;
pub mod scheduler;
pub mod store;
