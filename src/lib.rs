//! A durable job scheduler.
//!
//! Users create jobs over REST or gRPC; the scheduler fires each one when it is due by
//! recording a run and publishing a run event, and executors report the result back. The store
//! is the truth: nothing lives only in memory. `ARCHITECTURE.md` is the map; in brief, arrows
//! point inward, from the transports and adapters to the use cases to the domain:
//!
//! - [`domain`]: the core, a leaf: jobs, schedules (cron in a time zone, with DST rules), runs,
//!   every transition as a pure function, and raw input parsed into them.
//! - [`jobs`]: the use cases, the one layer both transports call, and the ports they own
//!   (the job store with its event journal, the durable publisher).
//! - [`scheduler`]: the loop that claims due jobs and stores each one's step.
//! - [`outbox`]: the relay that journals stored events (MongoDB), publishes the journal
//!   through the publisher port and trims it.
//! - [`store`]: the store adapters (embedded SQLite, MongoDB).
//! - [`events`]: the event streams: the journal's feed into the in-process bus, and the
//!   resumable watch that feeds SSE and the gRPC stream.
//! - [`webhook`]: the caller of jobs' webhooks, signed per the Standard Webhooks spec.
//! - [`ui`]: the web dashboard, its files compiled in, served at `/ui/`.
//! - [`kafka`]: the Kafka adapters: the publisher, the result consumer, the message format.
//! - [`rest`] and [`grpc`]: the two transports, thin and mirrored.
//! - [`metrics`]: the Prometheus registry and every instrument in it, served at `/metrics`;
//!   observing is a call on its handle, which `app` gives to whatever observes something.
//! - [`telemetry`]: traces over OTLP, the W3C trace context on the wire and in the store, and
//!   the subscriber log lines go to (JSON lines name their trace).
//! - [`runtime`]: backoff, outage logging and the supervision of background tasks.
//! - [`serve`]: the accept loop of the one port, plain or TLS, and the limits on connections
//!   (header-read and idle timeouts, most connections, HTTP/2 streams and header lists).
//! - [`tls`]: TLS on the one port, and certificates reloaded when their files change.
//! - [`throttle`]: what one client may hold and how fast it may call: the limit on open event
//!   streams and the optional request rate per client.
//! - [`auth`]: access control: tokens, roles and the one table of who may call what;
//!   [`access`] applies it to every request on the port.
//! - [`discovery`]: the replica's registration in etcd, for go-kit service discovery.
//! - [`app`]: wiring and the server on one port; [`config`]: settings.
#![warn(missing_docs, unreachable_pub)]

pub mod access;
pub mod app;
pub mod auth;
pub mod config;
pub mod discovery;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod jobs;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod rest;
pub mod runtime;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod ui;
pub mod webhook;
