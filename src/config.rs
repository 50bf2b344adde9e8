//! Configuration from flags and environment variables (every flag has one).
//!
//! A bad value stops start-up with one line naming the setting.
//!
//! Longer than 600 lines because it is one concern, written out: every setting is a field with
//! its doc (the `--help` text), range and environment variable, and the tests of how they
//! combine sit beside them.

use std::{net::IpAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{
    auth::AuthSettings,
    discovery::DiscoverySettings,
    domain::Limits,
    kafka::{KafkaSettings, TopicSpec, Topics},
    serve::ServeSettings,
    store::mongo::MongoSettings,
    throttle::{RateLimit, StreamLimit},
    tls::TlsFiles,
};

/// Where jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded SQLite store in `--data-dir`: durable, nothing to install.
    Embedded,
    /// An in-memory SQLite store: everything is lost at exit. For tests and demos.
    Memory,
    /// MongoDB, from `MONGODB_URI` or the `DATABASE_*` parts.
    Mongodb,
}

pub use crate::telemetry::LogFormat;

/// The service's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "scheduler",
    version,
    about = "A durable job scheduler: REST and gRPC on one port"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SCHEDULER_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port for REST and gRPC (HTTP/1.1 and HTTP/2 cleartext on one socket, or both over TLS
    /// with `--tls-cert-file`); 0 picks a free one.
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    pub port: u16,
    /// PEM certificate chain, the server's certificate first. With `--tls-key-file`, the port
    /// speaks TLS only (ALPN `h2` and `http/1.1`); both files are re-read on SIGHUP and when
    /// they change.
    #[arg(long, env = "SCHEDULER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate in `--tls-cert-file`.
    #[arg(long, env = "SCHEDULER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Job store; by default MongoDB when one is configured, else the embedded store.
    #[arg(long, env = "SCHEDULER_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Directory of the embedded store.
    #[arg(long, env = "SCHEDULER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Largest request body (REST) or message (gRPC) in bytes: 1 KiB to 64 MiB.
    #[arg(long, env = "SCHEDULER_MAX_BODY_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: usize,
    /// Longest a request may take to answer, in seconds (1 to 3600): 408 on REST,
    /// DEADLINE_EXCEEDED on gRPC. The event streams are exempt.
    #[arg(long, env = "SCHEDULER_REQUEST_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_seconds: u64,
    /// After SIGTERM, how long requests in flight may take to finish before the process exits
    /// anyway, closing what is still open (a stalled client, a health watch), in seconds
    /// (1 to 3600).
    #[arg(long, env = "SCHEDULER_SHUTDOWN_GRACE_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_seconds: u64,
    /// Events one event-stream client (SSE or gRPC watch) may have pending, unread, before it
    /// is cut off with a `lagged` notice (SSE) or DATA_LOSS (gRPC): 16 to 1,048,576.
    #[arg(long, env = "SCHEDULER_STREAM_BUFFER_EVENTS", default_value_t = 16 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=1024 * 1024))]
    pub stream_buffer_events: usize,
    /// Bytes of memory the events one event-stream client has pending may hold before it is
    /// cut off, in bytes: 1 MiB to 1 GiB. Events are shared between clients, so this bounds
    /// what all stalled clients together hold, too.
    #[arg(long, env = "SCHEDULER_STREAM_BUFFER_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024 * 1024..=1024 * 1024 * 1024))]
    pub stream_buffer_bytes: usize,
    /// Longest a client may take to send a request's head, in seconds (1 to 3600); then the
    /// connection is closed. On HTTP/1.1 it also bounds the wait for the next request on a
    /// kept-alive connection.
    #[arg(long, env = "SCHEDULER_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_seconds: u64,
    /// A connection with no request in flight for this long is closed gracefully, in seconds
    /// (1 to 86400); one with a request still running (an event stream, say) stays open.
    #[arg(long, env = "SCHEDULER_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_seconds: u64,
    /// Most connections open at once (1 to 1000000); past it, new connections wait until one
    /// closes while the open ones keep being served. Keep it below the process's file
    /// descriptor limit.
    #[arg(long, env = "SCHEDULER_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Most event streams (SSE and gRPC watches together) open at once (1 to 1000000); past it
    /// a new one gets 429 / RESOURCE_EXHAUSTED with a retry hint.
    #[arg(long, env = "SCHEDULER_MAX_EVENT_STREAMS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_event_streams: u32,
    /// Most event streams one client (a token's subject, else an address) holds at once
    /// (1 to --max-event-streams).
    #[arg(long, env = "SCHEDULER_MAX_EVENT_STREAMS_PER_CLIENT", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_event_streams_per_client: u32,
    /// Most concurrent requests on one HTTP/2 connection (1 to 10000), announced to clients.
    #[arg(long, env = "SCHEDULER_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub http2_max_concurrent_streams: u32,
    /// Largest header list of an HTTP/2 request, in bytes (1024 to 1048576), announced to
    /// clients; a larger one is refused.
    #[arg(long, env = "SCHEDULER_HTTP2_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub http2_max_header_list_bytes: u32,
    /// Calls per second one client (a token's subject, else an address) may make on average
    /// (1 to 1000000); past it, 429 / RESOURCE_EXHAUSTED with a retry hint. Off when unset;
    /// health checks are never limited.
    #[arg(long, env = "SCHEDULER_RATE_LIMIT_PER_SECOND",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_per_second: Option<u32>,
    /// Calls one client may make at once before the rate applies (1 to 1000000); by default
    /// one second's worth. Needs --rate-limit-per-second.
    #[arg(long, env = "SCHEDULER_RATE_LIMIT_BURST", requires = "rate_limit_per_second",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: Option<u32>,
    /// How long a scheduler's claim on due jobs holds, in seconds (1 to 3600), before another
    /// may take them: longer than a fire batch takes, shorter than a dead replica's jobs should
    /// wait.
    #[arg(long, env = "SCHEDULER_LEASE_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,
    /// Due jobs claimed per store round trip.
    #[arg(long, env = "SCHEDULER_BATCH_SIZE", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// How often the scheduler reads the window of jobs due soon, in milliseconds: the longest
    /// before it sees a change another replica made.
    #[arg(long, env = "SCHEDULER_IDLE_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub idle_poll_ms: u64,
    /// How far ahead each window read looks, in milliseconds (at least the idle poll): the
    /// jobs due within it are fired from memory at their due times, claimed by id.
    #[arg(long, env = "SCHEDULER_LOOKAHEAD_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub lookahead_ms: u64,
    /// Finished runs kept per job in its ledger; older records are dropped.
    #[arg(long, env = "SCHEDULER_RUN_HISTORY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub run_history: u32,
    /// A fire later than this (after downtime) is a misfire, handled by the job's misfire
    /// policy; a fire less late simply happens late. In seconds.
    #[arg(long, env = "SCHEDULER_MISFIRE_THRESHOLD_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub misfire_threshold_seconds: u32,
    /// Most missed times one catch-up fires (`FIRE_ALL`) or records (`MISSED`).
    #[arg(long, env = "SCHEDULER_MAX_CATCH_UP", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_catch_up: u32,
    /// MongoDB connection string; takes precedence over the `DATABASE_*` parts.
    #[arg(long, env = "MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,
    /// MongoDB URI scheme when built from parts: `mongodb` or `mongodb+srv`.
    #[arg(long, env = "DATABASE_SCHEME", default_value = "mongodb")]
    pub database_scheme: String,
    /// MongoDB host when built from parts (`DATABASE_DOMAIN` also works).
    #[arg(long, env = "DATABASE_HOST_NAME")]
    pub database_host_name: Option<String>,
    /// MongoDB port when built from parts.
    #[arg(long, env = "DATABASE_PORT")]
    pub database_port: Option<u16>,
    /// File holding the MongoDB user name.
    #[arg(long, env = "DATABASE_USER_FILE")]
    pub database_user_file: Option<PathBuf>,
    /// File holding the MongoDB password.
    #[arg(long, env = "DATABASE_PASS_FILE")]
    pub database_pass_file: Option<PathBuf>,
    /// File holding the database name (else the URI's database, else `--database-name`).
    #[arg(long, env = "DATABASE_DB_NAME_FILE")]
    pub database_db_name_file: Option<PathBuf>,
    /// Database name when neither the URI nor a file names one.
    #[arg(long, env = "DATABASE_NAME", default_value = "jobs_db")]
    pub database_name: String,
    /// How long a MongoDB call waits for a reachable server before it fails as unavailable
    /// (503), in milliseconds.
    #[arg(long, env = "SCHEDULER_MONGODB_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub mongodb_timeout_ms: u64,
    /// Kafka bootstrap servers, comma-separated (`host:port`). Without them events stay
    /// in-process (SSE and the gRPC watch).
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Topic of creation events.
    #[arg(long, env = "TOPIC_JOB_CREATE", default_value = "topic-job-create")]
    pub topic_job_create: String,
    /// Partitions of the create topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_CREATE_PARTITIONS", default_value_t = 1, value_parser = partitions())]
    pub topic_job_create_partitions: i32,
    /// Replicas of the create topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_CREATE_REPLICAS", default_value_t = 1, value_parser = replicas())]
    pub topic_job_create_replicas: i32,
    /// Topic of every other event: updates, deletions, finished runs, pauses, resumes and
    /// cancellations.
    #[arg(long, env = "TOPIC_JOB_UPDATE", default_value = "topic-job-update")]
    pub topic_job_update: String,
    /// Partitions of the update topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_UPDATE_PARTITIONS", default_value_t = 1, value_parser = partitions())]
    pub topic_job_update_partitions: i32,
    /// Replicas of the update topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_UPDATE_REPLICAS", default_value_t = 1, value_parser = replicas())]
    pub topic_job_update_replicas: i32,
    /// Topic of run messages, which executors consume.
    #[arg(long, env = "TOPIC_JOB_RUN", default_value = "topic-job-run")]
    pub topic_job_run: String,
    /// Partitions of the run topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_RUN_PARTITIONS", default_value_t = 1, value_parser = partitions())]
    pub topic_job_run_partitions: i32,
    /// Replicas of the run topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_RUN_REPLICAS", default_value_t = 1, value_parser = replicas())]
    pub topic_job_run_replicas: i32,
    /// Topic of the executors' results, which the service consumes.
    #[arg(
        long,
        env = "TOPIC_JOB_RUN_RESULT",
        default_value = "topic-job-run-result"
    )]
    pub topic_job_run_result: String,
    /// Partitions of the result topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_RUN_RESULT_PARTITIONS", default_value_t = 1, value_parser = partitions())]
    pub topic_job_run_result_partitions: i32,
    /// Replicas of the result topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_RUN_RESULT_REPLICAS", default_value_t = 1, value_parser = replicas())]
    pub topic_job_run_result_replicas: i32,
    /// Dead-letter topic of results that cannot be applied.
    #[arg(
        long,
        env = "TOPIC_JOB_RUN_RESULT_DLQ",
        default_value = "topic-job-run-result-dlq"
    )]
    pub topic_job_run_result_dlq: String,
    /// Partitions of the dead-letter topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_RUN_RESULT_DLQ_PARTITIONS", default_value_t = 1, value_parser = partitions())]
    pub topic_job_run_result_dlq_partitions: i32,
    /// Replicas of the dead-letter topic, when the service creates it.
    #[arg(long, env = "TOPIC_JOB_RUN_RESULT_DLQ_REPLICAS", default_value_t = 1, value_parser = replicas())]
    pub topic_job_run_result_dlq_replicas: i32,
    /// Consumer group of the result consumer.
    #[arg(
        long,
        env = "TOPIC_JOB_RUN_RESULT_CONSUMER_GROUP_ID",
        default_value = "job-run-result-consumer-scheduler"
    )]
    pub topic_job_run_result_consumer_group_id: String,
    /// The CloudEvents `source` of the events this service publishes.
    #[arg(long, env = "SCHEDULER_EVENT_SOURCE", default_value = "/scheduler")]
    pub event_source: String,
    /// How often the relay (which journals events on MongoDB and publishes them to Kafka) and
    /// the event streams look for events written by other processes on the same store, in
    /// milliseconds; an idle relay backs off from it to once a second. Their own process's
    /// events wake them at once.
    #[arg(long, env = "SCHEDULER_OUTBOX_POLL_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub outbox_poll_ms: u64,
    /// Events the journal keeps for event streams to resume from (`Last-Event-ID`), at most
    /// (100 to 10,000,000); older ones are trimmed, but never one not yet published to Kafka.
    #[arg(long, env = "SCHEDULER_EVENT_RETENTION_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub event_retention_events: u64,
    /// Longest the journal keeps an event, in seconds (60 to 2,592,000, 30 days).
    #[arg(long, env = "SCHEDULER_EVENT_RETENTION_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub event_retention_seconds: u64,
    /// Longest a worker's claim (`POST /api/v1/runs:claim`, `ClaimRuns`) waits for runs, in
    /// seconds (0 to 60), whatever its `waitSeconds` asks: keep it below what proxies in front
    /// of the service allow a request to hang.
    #[arg(long, env = "SCHEDULER_CLAIM_MAX_WAIT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    pub claim_max_wait_seconds: u64,
    /// Hosts a job's webhook may call, comma-separated: `host` (any port), `host:port`, or
    /// `*.domain` (any host under it). Empty (the default): no webhook is called, and a job
    /// naming one is refused.
    #[arg(long, env = "SCHEDULER_WEBHOOK_ALLOWED_HOSTS", default_value = "")]
    pub webhook_allowed_hosts: String,
    /// Longest a webhook call may take to answer, in seconds (1 to 300); then the attempt
    /// failed.
    #[arg(long, env = "SCHEDULER_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_seconds: u64,
    /// Serve Prometheus metrics at `GET /metrics` and keep them (`false`: no registry, no
    /// endpoint, nothing observed).
    #[arg(long, env = "SCHEDULER_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// How old the gauges of what the store holds (jobs per status, the due backlog, the
    /// outbox) may be, in milliseconds: a scrape counts them again when the last count is
    /// older.
    #[arg(long, env = "SCHEDULER_METRICS_REFRESH_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub metrics_refresh_ms: u64,
    /// Access control: keys, claims and checks.
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Registration in etcd, for go-kit service discovery.
    #[command(flatten)]
    pub discovery: DiscoverySettings,
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "SCHEDULER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn partitions() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(1..=10_000)
}

fn replicas() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(1..=100)
}

impl Config {
    /// The engine's bounds and defaults: a run goes to Kafka when brokers are configured,
    /// else to pulling workers, unless its job says otherwise or has a webhook.
    pub fn limits(&self) -> Limits {
        let default_delivery = match self.kafka_settings() {
            Some(_) => crate::domain::Delivery::Kafka,
            None => crate::domain::Delivery::Pull,
        };
        Limits {
            misfire_threshold: chrono::Duration::seconds(i64::from(self.misfire_threshold_seconds)),
            max_catch_up: self.max_catch_up as usize,
            default_delivery,
            ..Limits::default()
        }
    }

    /// The hosts webhooks may call; an error naming the setting when an entry is not a host.
    pub fn webhook_hosts(&self) -> anyhow::Result<crate::jobs::webhooks::AllowedHosts> {
        crate::jobs::webhooks::AllowedHosts::parse(&self.webhook_allowed_hosts).map_err(|why| {
            anyhow::anyhow!("--webhook-allowed-hosts (SCHEDULER_WEBHOOK_ALLOWED_HOSTS): {why}")
        })
    }

    /// How much of the event journal is kept.
    pub fn retention(&self) -> crate::jobs::ports::Retention {
        crate::jobs::ports::Retention {
            events: self.event_retention_events,
            age: chrono::Duration::seconds(
                i64::try_from(self.event_retention_seconds).unwrap_or(i64::MAX),
            ),
        }
    }

    /// Kafka settings, when brokers are configured.
    pub fn kafka_settings(&self) -> Option<KafkaSettings> {
        let brokers = self.kafka_brokers.as_deref()?.trim();
        if brokers.is_empty() {
            return None;
        }
        let spec = |name: &str, partitions, replicas| TopicSpec {
            name: name.to_owned(),
            partitions,
            replicas,
        };
        Some(KafkaSettings {
            brokers: brokers.to_owned(),
            topics: Topics {
                create: spec(
                    &self.topic_job_create,
                    self.topic_job_create_partitions,
                    self.topic_job_create_replicas,
                ),
                update: spec(
                    &self.topic_job_update,
                    self.topic_job_update_partitions,
                    self.topic_job_update_replicas,
                ),
                run: spec(
                    &self.topic_job_run,
                    self.topic_job_run_partitions,
                    self.topic_job_run_replicas,
                ),
                run_result: spec(
                    &self.topic_job_run_result,
                    self.topic_job_run_result_partitions,
                    self.topic_job_run_result_replicas,
                ),
                dead_letter: spec(
                    &self.topic_job_run_result_dlq,
                    self.topic_job_run_result_dlq_partitions,
                    self.topic_job_run_result_dlq_replicas,
                ),
            },
            group_id: self.topic_job_run_result_consumer_group_id.clone(),
            source: self.event_source.clone(),
            outbox_poll: Duration::from_millis(self.outbox_poll_ms),
        })
    }

    /// The settings a test uses: loopback, a free port, an in-memory store, and no
    /// registration in etcd nor Kafka unless the test asks (whatever `ETCD_ENDPOINTS` and
    /// `KAFKA_BROKERS` say).
    pub fn for_tests() -> Self {
        Self::parse_from([
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--store",
            "memory",
            "--etcd-endpoints",
            "",
            "--kafka-brokers",
            "",
        ])
    }

    /// The TLS files, when TLS is configured; an error naming the missing setting when only
    /// one of the two is set (serving plain text then would be a silent downgrade).
    pub fn tls_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "--tls-key-file (SCHEDULER_TLS_KEY_FILE) is not set: --tls-cert-file needs it"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--tls-cert-file (SCHEDULER_TLS_CERT_FILE) is not set: --tls-key-file needs it"
            ),
        }
    }

    /// The accept loop's limits; an error naming the settings when they contradict each other.
    pub fn serve_settings(&self) -> anyhow::Result<ServeSettings> {
        if self.max_event_streams_per_client > self.max_event_streams {
            anyhow::bail!(
                "--max-event-streams-per-client (SCHEDULER_MAX_EVENT_STREAMS_PER_CLIENT) is {}, \
                 more than --max-event-streams (SCHEDULER_MAX_EVENT_STREAMS), {}",
                self.max_event_streams_per_client,
                self.max_event_streams
            );
        }
        Ok(ServeSettings {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            max_connections: self.max_connections as usize,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_max_header_list_bytes: self.http2_max_header_list_bytes,
        })
    }

    /// The limit on open event streams.
    pub fn stream_limit(&self) -> StreamLimit {
        StreamLimit::new(
            self.max_event_streams as usize,
            self.max_event_streams_per_client as usize,
        )
    }

    /// The request rate per client, when one is set.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let rate = NonZeroU32::new(self.rate_limit_per_second?)?;
        let burst = self
            .rate_limit_burst
            .and_then(NonZeroU32::new)
            .unwrap_or(rate);
        Some(RateLimit::new(rate, burst))
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// The store to use: the one asked for, else MongoDB when configured, else embedded.
    pub fn store_kind(&self) -> StoreKind {
        self.store.unwrap_or(if self.mongodb_configured() {
            StoreKind::Mongodb
        } else {
            StoreKind::Embedded
        })
    }

    fn mongodb_configured(&self) -> bool {
        self.mongodb_uri.is_some() || self.database_host().is_some()
    }

    fn database_host(&self) -> Option<String> {
        self.database_host_name
            .clone()
            .or_else(|| std::env::var("DATABASE_DOMAIN").ok())
            .filter(|h| !h.is_empty())
    }

    /// MongoDB settings from `MONGODB_URI` or the `DATABASE_*` parts. Secrets are read from
    /// their files and put in the driver's credential, never into a string that is logged;
    /// errors name the setting, never its value.
    pub async fn mongo_settings(&self) -> anyhow::Result<MongoSettings> {
        use anyhow::{Context, bail};
        use mongodb::options::{ClientOptions, Credential};

        let read = |path: &PathBuf, setting: &str| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
            Ok(text.trim().to_owned())
        };
        let mut options = if let Some(uri) = &self.mongodb_uri {
            ClientOptions::parse(uri).await.map_err(|_| {
                anyhow::anyhow!("MONGODB_URI is not a valid MongoDB connection string")
            })?
        } else {
            let Some(host) = self.database_host() else {
                bail!("no MongoDB configured: set MONGODB_URI or DATABASE_HOST_NAME");
            };
            let address = match self.database_port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            };
            let uri = format!("{}://{address}/", self.database_scheme);
            let mut options = ClientOptions::parse(&uri).await.map_err(|_| {
                anyhow::anyhow!("DATABASE_SCHEME, DATABASE_HOST_NAME or DATABASE_PORT is invalid")
            })?;
            if let Some(user_file) = &self.database_user_file {
                let password = match &self.database_pass_file {
                    Some(path) => Some(read(path, "DATABASE_PASS_FILE")?),
                    None => None,
                };
                options.credential = Some(
                    Credential::builder()
                        .username(read(user_file, "DATABASE_USER_FILE")?)
                        .password(password)
                        .build(),
                );
            }
            options
        };
        let database = match &self.database_db_name_file {
            Some(path) => read(path, "DATABASE_DB_NAME_FILE")?,
            None => options
                .default_database
                .clone()
                .unwrap_or_else(|| self.database_name.clone()),
        };
        if database.is_empty() {
            bail!("the MongoDB database name is empty");
        }
        let timeout = Duration::from_millis(self.mongodb_timeout_ms);
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("scheduler".into());
        Ok(MongoSettings { options, database })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings from these flags alone: what the environment says (the test script sets
    /// MONGODB_URI) must not leak in.
    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["scheduler"];
        all.extend_from_slice(args);
        let mut config = Config::parse_from(all);
        if !args.contains(&"--mongodb-uri") {
            config.mongodb_uri = None;
        }
        if !args.contains(&"--database-host-name") {
            config.database_host_name = None;
        }
        config
    }

    #[tokio::test]
    async fn database_parts_and_secret_files_build_the_mongodb_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (user, pass, name) = (
            file("user", "scheduler\n"),
            file("pass", "s3cret-pa55\n"),
            file("db", "jobs_prod\n"),
        );
        let config = parse(&[
            "--database-host-name",
            "db.internal",
            "--database-port",
            "27018",
            "--database-user-file",
            &user,
            "--database-pass-file",
            &pass,
            "--database-db-name-file",
            &name,
        ]);
        assert_eq!(config.store_kind(), StoreKind::Mongodb);
        let settings = config.mongo_settings().await.unwrap();
        assert_eq!(settings.database, "jobs_prod");
        assert_eq!(settings.options.hosts[0].to_string(), "db.internal:27018");
        let credential = settings.options.credential.as_ref().unwrap();
        assert_eq!(credential.username.as_deref(), Some("scheduler"));
        assert_eq!(credential.password.as_deref(), Some("s3cret-pa55"));
        assert!(
            !format!("{:?}", settings.options).contains("s3cret"),
            "the password shows in the options' debug output"
        );
    }

    #[tokio::test]
    async fn the_uri_wins_and_names_the_database_or_the_default_does() {
        let config = parse(&[
            "--mongodb-uri",
            "mongodb://u:p@h1:1,h2:2/reports",
            "--database-host-name",
            "ignored",
        ]);
        let settings = config.mongo_settings().await.unwrap();
        assert_eq!(settings.database, "reports");
        assert_eq!(settings.options.hosts.len(), 2);
        let config = parse(&["--mongodb-uri", "mongodb://h1"]);
        assert_eq!(config.mongo_settings().await.unwrap().database, "jobs_db");
    }

    #[tokio::test]
    async fn a_bad_uri_is_named_without_echoing_its_secret() {
        let config = parse(&["--mongodb-uri", "mongodb://user:s3cret@/?bogus=%"]);
        let Err(error) = config.mongo_settings().await else {
            panic!("a bad URI was accepted")
        };
        let error = error.to_string();
        assert!(error.contains("MONGODB_URI"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn tls_needs_both_files_and_names_the_missing_one() {
        assert_eq!(parse(&[]).tls_files().unwrap(), None);
        let both = parse(&["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"]);
        let files = both.tls_files().unwrap().expect("TLS is on");
        assert_eq!((files.cert, files.key), ("c.pem".into(), "k.pem".into()));
        for (args, missing) in [
            (
                ["--tls-cert-file", "c.pem"],
                "--tls-key-file (SCHEDULER_TLS_KEY_FILE)",
            ),
            (
                ["--tls-key-file", "k.pem"],
                "--tls-cert-file (SCHEDULER_TLS_CERT_FILE)",
            ),
        ] {
            let error = parse(&args).tls_files().unwrap_err().to_string();
            assert!(error.starts_with(missing), "{error}");
        }
    }

    #[test]
    fn the_limits_default_to_sane_values_and_refuse_nonsense() {
        let serve = parse(&[]).serve_settings().unwrap();
        assert_eq!(serve.header_read_timeout, Duration::from_secs(10));
        assert_eq!(serve.idle_timeout, Duration::from_secs(60));
        assert_eq!(serve.max_connections, 4096);
        assert_eq!(serve.http2_max_concurrent_streams, 200);
        assert_eq!(serve.http2_max_header_list_bytes, 16 * 1024);
        assert!(
            parse(&[]).rate_limit().is_none(),
            "no rate limit unless asked"
        );
        for zero in [
            "--header-read-timeout-seconds",
            "--idle-timeout-seconds",
            "--max-connections",
            "--max-event-streams",
            "--max-event-streams-per-client",
            "--http2-max-concurrent-streams",
            "--http2-max-header-list-bytes",
            "--rate-limit-per-second",
        ] {
            let refused = Config::try_parse_from(["scheduler", zero, "0"]);
            assert!(refused.is_err(), "{zero} 0 was accepted");
        }
        let burst_alone = Config::try_parse_from(["scheduler", "--rate-limit-burst", "5"])
            .expect_err("a burst without a rate");
        assert!(
            burst_alone.to_string().contains("--rate-limit-per-second"),
            "{burst_alone}"
        );
        let error = parse(&[
            "--max-event-streams",
            "5",
            "--max-event-streams-per-client",
            "6",
        ])
        .serve_settings()
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with(
                "--max-event-streams-per-client (SCHEDULER_MAX_EVENT_STREAMS_PER_CLIENT)"
            ),
            "{error}"
        );
    }

    #[test]
    fn the_scheduler_timings_take_their_ranges_and_refuse_the_rest() {
        let config = parse(&[]);
        assert_eq!((config.idle_poll_ms, config.lookahead_ms), (1000, 5000));
        let taken = parse(&["--idle-poll-ms", "10", "--lookahead-ms", "600000"]);
        assert_eq!((taken.idle_poll_ms, taken.lookahead_ms), (10, 600_000));
        for (flag, value) in [
            ("--lookahead-ms", "9"),
            ("--lookahead-ms", "600001"),
            ("--lookahead-ms", "-1"),
            ("--lookahead-ms", "5s"),
            ("--idle-poll-ms", "9"),
            ("--idle-poll-ms", "60001"),
        ] {
            let refused = Config::try_parse_from(["scheduler", &format!("{flag}={value}")])
                .expect_err("an out-of-range timing");
            assert!(
                refused.to_string().contains(flag),
                "{flag} {value}: {refused}"
            );
        }
    }

    #[test]
    fn without_a_database_the_embedded_store_is_used() {
        assert_eq!(parse(&[]).store_kind(), StoreKind::Embedded);
        assert_eq!(
            parse(&["--store", "memory", "--mongodb-uri", "mongodb://h"]).store_kind(),
            StoreKind::Memory
        );
    }
}
