//! What the metrics cost a request: REST create and get against two `scheduler` processes (the
//! release binary) on the in-memory store (the store that adds the least of its own, so the
//! difference shows most), both with JSON log lines as in production, one with metrics on
//! (the default) and one with `--metrics false`, alternated as `support::compare` does. The
//! process with metrics is scraped once a second meanwhile, as Prometheus would (more often
//! than its usual 15 s), and the scrapes count in its CPU.
//!
//! Run with `cargo bench --bench metrics` (`-- --quick` for 2,000 calls per figure instead of
//! 20,000; `-- --control` for the noise floor: both processes with metrics, so any ratio away
//! from 1 is the machine's). It prints figures and asserts nothing about speed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod support;
use support::{
    compare::{CONCURRENCY, compare},
    process::Binary,
};

/// The service on the in-memory store, with metrics or without.
async fn start(metrics: bool) -> Binary {
    let mut command = Binary::command();
    command.args(["--store", "memory", "--log-format", "json"]);
    command.args(["--metrics", if metrics { "true" } else { "false" }]);
    Binary::start(command).await
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let control = std::env::args().any(|a| a == "--control");
    let count = if quick { 2_000 } else { 20_000 };
    println!(
        "metrics benchmark: {} cores, concurrency {CONCURRENCY}, {count} calls per figure",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (on, off) = (start(true).await, start(control).await);
    if control {
        println!("control run: the \"off\" process has metrics on too");
    }
    // A scraper on the process with metrics, once a second, as Prometheus would.
    let scraping = CancellationToken::new();
    let scraper = {
        let (url, stop) = (format!("{}/metrics", on.base()), scraping.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut scrapes = 0u32;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return scrapes,
                }
                let text = http.get(&url).send().await.unwrap().text().await.unwrap();
                assert!(text.contains("http_server_request_duration_seconds"));
                scrapes += 1;
            }
        })
    };
    compare("metrics", &on, &off, count).await;
    scraping.cancel();
    let scrapes = scraper.await.unwrap();
    println!("({scrapes} scrapes of the process with metrics meanwhile)");
}
