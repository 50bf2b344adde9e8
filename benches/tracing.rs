//! What tracing costs a request: REST create and get against two `scheduler` processes (the
//! release binary) on the in-memory store, both with metrics on (the default) and JSON log
//! lines (as in production), one tracing
//! every request (`OTEL_EXPORTER_OTLP_ENDPOINT` set, the default parent-based always-on
//! sampler, so every root span is sampled) and one without, alternated as
//! `support::compare` does. The traced one exports over OTLP/HTTP (protobuf) to a sink in this
//! process that reads each export and answers 200, so the figure is the service's own cost
//! and not a collector's.
//!
//! Run with `cargo bench --bench tracing` (`-- --quick` for 1,000 calls per figure instead of
//! 5,000; `-- --control` for the noise floor: neither process traces). It prints figures and
//! asserts nothing about speed.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};

mod support;
use support::{
    compare::{CONCURRENCY, compare},
    process::free_port,
};

/// A service process, killed when dropped.
struct Process {
    child: Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(otlp: Option<&str>) -> Process {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_scheduler"));
    command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--store", "memory", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::null());
    if let Some(endpoint) = otlp {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    let process = Process {
        child: command.spawn().expect("the binary starts"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{}/healthz", process.base)).send().await
            && r.status() == 200
        {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the service did not start");
}

/// The OTLP sink: counts exports and their bytes.
async fn sink() -> (String, Arc<(AtomicU64, AtomicU64)>) {
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(counts): State<Arc<(AtomicU64, AtomicU64)>>, body: Bytes| async move {
                    counts.0.fetch_add(1, Ordering::Relaxed);
                    counts.1.fetch_add(body.len() as u64, Ordering::Relaxed);
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                },
            ),
        )
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), counts)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let control = std::env::args().any(|a| a == "--control");
    let count = if quick { 1_000 } else { 5_000 };
    println!(
        "tracing benchmark: {} cores, concurrency {CONCURRENCY}, {count} calls per figure",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (endpoint, counts) = sink().await;
    let traced = start((!control).then_some(endpoint.as_str())).await;
    let plain = start(None).await;
    if control {
        println!("control run: the \"on\" process does not trace either");
    }
    compare("tracing", &traced.base, &plain.base, count).await;
    // The last batch goes out within the exporter's delay (5 s by default).
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!(
        "({} OTLP exports, {:.1} MiB, reached the sink)",
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
    );
}
