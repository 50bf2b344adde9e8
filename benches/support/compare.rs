//! Two services side by side: REST create and get throughput of each, alternated within one
//! run (which goes first swaps every round) so the ratio compares like with like. Each side's
//! best of the rounds is reported, and the median of the rounds' ratios.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::throughput;

/// Concurrent callers.
pub const CONCURRENCY: usize = 16;
/// Rounds of each side.
pub const ROUNDS: usize = 7;

/// Requests per second, p50 and p99 in ms.
pub type Figure = (f64, f64, f64);

fn job(i: usize) -> Value {
    json!({
        "name": format!("bench {i}"), "jobType": "SMS", "jobData": {"To": "+100"},
        "schedule": {"runAt": "2099-01-01T00:00:00Z"}
    })
}

/// `count` creates against `base`; the ids created are added to `ids`, for the gets.
async fn rest_create(base: &str, count: usize, ids: Arc<Mutex<Vec<String>>>) -> Figure {
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/jobs");
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

async fn rest_get(base: &str, count: usize, ids: Arc<Vec<String>>) -> Figure {
    let http = reqwest::Client::new();
    let base = base.to_owned();
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

/// Compares the service at `on` (with the feature) with the one at `off`, `count` calls per
/// figure, and prints the figures under `feature`'s name.
pub async fn compare(feature: &str, on: &str, off: &str, count: usize) {
    let ids = || Arc::new(Mutex::new(Vec::with_capacity(count * 4)));
    let (on_ids, off_ids) = (ids(), ids());
    // Warm both up, then alternate; keep each side's best.
    rest_create(on, count / 5, on_ids.clone()).await;
    rest_create(off, count / 5, off_ids.clone()).await;
    let best = |a: Figure, b: Figure| if b.0 > a.0 { b } else { a };
    let mut figures = [(0.0, 0.0, 0.0); 4];
    let (mut create_ratios, mut get_ratios) = (Vec::new(), Vec::new());
    let sides = [(off, &off_ids), (on, &on_ids)];
    for round in 0..ROUNDS {
        let on_first = round % 2 == 0;
        let mut created = [(0.0, 0.0, 0.0); 2];
        for side in [!on_first, on_first].map(usize::from) {
            let (base, ids) = sides[side];
            created[side] = rest_create(base, count, ids.clone()).await;
        }
        let mut read = [(0.0, 0.0, 0.0); 2];
        for side in [!on_first, on_first].map(usize::from) {
            let (base, ids) = sides[side];
            let ids = Arc::new(ids.lock().unwrap().clone());
            read[side] = rest_get(base, count, ids).await;
        }
        create_ratios.push(created[1].0 / created[0].0);
        get_ratios.push(read[1].0 / read[0].0);
        figures[0] = best(figures[0], created[1]);
        figures[1] = best(figures[1], created[0]);
        figures[2] = best(figures[2], read[1]);
        figures[3] = best(figures[3], read[0]);
    }
    let labels = [
        format!("REST create, {feature} on"),
        format!("REST create, {feature} off"),
        format!("REST get, {feature} on"),
        format!("REST get, {feature} off"),
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
}
