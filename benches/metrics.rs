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

use std::{sync::Arc, time::Duration};

use scheduler::{app::Application, config::Config};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;
use support::throughput;

const CONCURRENCY: usize = 16;
/// Rounds of each side; which side goes first swaps every round.
const ROUNDS: usize = 7;

/// Requests per second, p50 and p99 in ms.
type Figure = (f64, f64, f64);

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

fn job(i: usize) -> Value {
    json!({
        "name": format!("bench {i}"), "jobType": "SMS", "jobData": {"To": "+100"},
        "schedule": {"runAt": "2099-01-01T00:00:00Z"}
    })
}

/// `count` creates; the ids created, for the gets.
async fn rest_create(
    service: &Service,
    count: usize,
    ids: Arc<std::sync::Mutex<Vec<String>>>,
) -> Figure {
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/jobs", service.base);
    throughput(CONCURRENCY, count, move |i| {
        let request = http.post(&url).json(&job(i)).send();
        let ids = ids.clone();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 201);
            let job: Value = response.json().await.unwrap();
            ids.lock()
                .unwrap()
                .push(job["id"].as_str().unwrap().to_owned());
        }
    })
    .await
}

async fn rest_get(service: &Service, count: usize, ids: Arc<Vec<String>>) -> Figure {
    let http = reqwest::Client::new();
    let base = service.base.clone();
    throughput(CONCURRENCY, count, move |i| {
        let request = http
            .get(format!("{base}/api/v1/jobs/{}", ids[i % ids.len()]))
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    })
    .await
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
    let ids = |_: &Service| Arc::new(std::sync::Mutex::new(Vec::with_capacity(count * 4)));
    let (on_ids, off_ids) = (ids(&on), ids(&off));
    // Warm both up, then alternate on, off, on, off; keep each side's best.
    rest_create(&on, count / 5, on_ids.clone()).await;
    rest_create(&off, count / 5, off_ids.clone()).await;
    let best = |a: Figure, b: Figure| if b.0 > a.0 { b } else { a };
    let mut figures = [(0.0, 0.0, 0.0); 4];
    let (mut create_ratios, mut get_ratios) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let on_first = round % 2 == 0;
        let mut created = [(0.0, 0.0, 0.0); 2];
        for side in [!on_first, on_first].map(usize::from) {
            let (service, ids) = [(&off, &off_ids), (&on, &on_ids)][side];
            created[side] = rest_create(service, count, ids.clone()).await;
        }
        let mut read = [(0.0, 0.0, 0.0); 2];
        for side in [!on_first, on_first].map(usize::from) {
            let (service, ids) = [(&off, &off_ids), (&on, &on_ids)][side];
            let ids = Arc::new(ids.lock().unwrap().clone());
            read[side] = rest_get(service, count, ids).await;
        }
        create_ratios.push(created[1].0 / created[0].0);
        get_ratios.push(read[1].0 / read[0].0);
        figures[0] = best(figures[0], created[1]);
        figures[1] = best(figures[1], created[0]);
        figures[2] = best(figures[2], read[1]);
        figures[3] = best(figures[3], read[0]);
    }
    scraping.cancel();
    let scrapes = scraper.await.unwrap();
    let labels = [
        "REST create, metrics on",
        "REST create, metrics off",
        "REST get, metrics on",
        "REST get, metrics off",
    ];
    for (label, (rate, p50, p99)) in labels.iter().zip(figures) {
        println!("{label:<26} {rate:>8.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms");
    }
    let median = |mut ratios: Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    for (call, on, off, ratios) in [
        ("create", figures[0], figures[1], create_ratios),
        ("get", figures[2], figures[3], get_ratios),
    ] {
        println!(
            "REST {call}: on/off throughput, best against best {:.3}, median of {ROUNDS} rounds {:.3}; p50 {:+.3} ms",
            on.0 / off.0,
            median(ratios),
            on.1 - off.1
        );
    }
    println!("({scrapes} scrapes of the service with metrics meanwhile)");
    on.shutdown.cancel();
    off.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
