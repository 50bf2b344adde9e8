//! Configuration from flags and environment variables (every flag has one).
//!
//! A bad value stops start-up with one line naming the setting.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// Where jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded SQLite store in `--data-dir`: durable, nothing to install.
    Embedded,
    /// An in-memory SQLite store: everything is lost at exit. For tests and demos.
    Memory,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

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
    /// Port for REST and gRPC (HTTP/1.1 and HTTP/2 cleartext on one socket); 0 picks a free one.
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Job store.
    #[arg(long, env = "SCHEDULER_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// Directory of the embedded store.
    #[arg(long, env = "SCHEDULER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Largest request body (REST) or message (gRPC) in bytes.
    #[arg(long, env = "SCHEDULER_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Longest a request may take to answer, in seconds: 408 on REST, DEADLINE_EXCEEDED on
    /// gRPC. The event streams are exempt.
    #[arg(long, env = "SCHEDULER_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// How long a scheduler's claim on due jobs holds, in seconds, before another may take them.
    #[arg(long, env = "SCHEDULER_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Due jobs claimed per store round trip.
    #[arg(long, env = "SCHEDULER_BATCH_SIZE", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Longest the scheduler sleeps without looking at the store, in milliseconds.
    #[arg(long, env = "SCHEDULER_IDLE_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub idle_poll_ms: u64,
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "SCHEDULER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// The settings a test uses: loopback, a free port, an in-memory store.
    pub fn for_tests() -> Self {
        Self::parse_from([
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--store",
            "memory",
        ])
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
}
