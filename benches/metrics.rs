//! What the metrics cost a request: REST create and get against two services in this process
//! on the in-memory store (the store that adds the least of its own, so the difference shows
//! most), one with metrics on (the default) and one with `--metrics false`, alternated within
//! one run (which goes first swaps every round) so the ratio compares like with like: each
//! side's best of seven rounds, and the median of the seven rounds' ratios. The service
//! with metrics is scraped once a second meanwhile, as Prometheus would (more often than its
//! usual 15 s).
//!
//! Run with `cargo bench --bench metrics` (`-- --quick` for 1,000 calls per figure instead of
//! 5,000; `-- --control` for the noise floor: both services with metrics, so any ratio away
//! from 1 is the machine's). It prints figures and asserts nothing about speed.

use std::time::Duration;

use scheduler::{app::Application, config::Config};
use tokio_util::sync::CancellationToken;

mod support;
use support::compare::{CONCURRENCY, compare};

struct Service {
    base: String,
    shutdown: CancellationToken,
}

async fn service(metrics: bool) -> Service {
    let mut config = Config::for_tests();
    config.metrics = metrics;
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    Service { base, shutdown }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let control = std::env::args().any(|a| a == "--control");
    let count = if quick { 1_000 } else { 5_000 };
    println!(
        "metrics benchmark: {} cores, concurrency {CONCURRENCY}, {count} calls per figure",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (on, off) = (service(true).await, service(control).await);
    if control {
        println!("control run: the \"off\" service has metrics on too");
    }
    // A scraper on the service with metrics, once a second, as Prometheus would.
    let scraping = CancellationToken::new();
    let scraper = {
        let (url, stop) = (format!("{}/metrics", on.base), scraping.clone());
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
    compare("metrics", &on.base, &off.base, count).await;
    scraping.cancel();
    let scrapes = scraper.await.unwrap();
    println!("({scrapes} scrapes of the service with metrics meanwhile)");
    on.shutdown.cancel();
    off.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
