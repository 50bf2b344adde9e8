//! What tracing costs a request: REST create and get against two `scheduler` processes (the
//! release binary) on the in-memory store, both with metrics on (the default) and JSON log
//! lines (as in production), one tracing
//! every request (`OTEL_EXPORTER_OTLP_ENDPOINT` set, the default parent-based always-on
//! sampler, so every root span is sampled) and one without, alternated as
//! `support::compare` does. The traced one exports over OTLP/HTTP (protobuf) to a sink in this
//! process that reads each export and answers 200, so the figure is the service's own cost
//! and not a collector's.
//!
//! Run with `cargo bench --bench tracing` (`-- --quick` for 2,000 calls per figure instead of
//! 20,000; `-- --control` for the noise floor: neither process traces). It prints figures and
//! asserts nothing about speed.

use std::{
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
    process::Binary,
};

/// The service on the in-memory store, exporting traces to `otlp` if given.
async fn start(otlp: Option<&str>) -> Binary {
    let mut command = Binary::command();
    command.args(["--store", "memory", "--log-format", "json"]);
    if let Some(endpoint) = otlp {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    Binary::start(command).await
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
    let count = if quick { 2_000 } else { 20_000 };
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
    compare("tracing", &traced, &plain, count).await;
    // The last batch goes out within the exporter's delay (5 s by default).
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!(
        "({} OTLP exports, {:.1} MiB, reached the sink)",
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
    );
}
