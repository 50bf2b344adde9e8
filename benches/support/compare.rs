//! Two services side by side: REST create and get throughput of each, alternated within one
//! run (which goes first swaps every round) so the ratio compares like with like. Each side's
//! best of the rounds is reported, and the median of the rounds' ratios.
//!
//! Each service is its own process, so the CPU time it spends serving a round is read from
//! `/proc` around the round: CPU per call is the cost itself, and far steadier on a shared
//! machine than throughput, which also moves with whatever else the cores run. When the
//! service is what limits the rate, the throughput it loses is `1 - off/on` of those.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{
    process::{Binary, cpu_nanos},
    throughput,
};

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

/// CPU nanoseconds a side spent on its calls, and how many calls.
#[derive(Clone, Copy, Default)]
struct Spent {
    nanos: u64,
    calls: usize,
}

impl Spent {
    fn add(&mut self, nanos: u64, calls: usize) {
        self.nanos += nanos;
        self.calls += calls;
    }

    /// Microseconds of CPU per call.
    fn per_call(self) -> f64 {
        self.nanos as f64 / 1e3 / self.calls as f64
    }
}

/// Runs `round` against the process `pid`; what it returned, and the CPU nanoseconds the
/// process spent meanwhile.
async fn measured<T>(pid: u32, round: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = cpu_nanos(pid);
    let result = round.await;
    (result, cpu_nanos(pid).saturating_sub(before))
}

/// Compares the service `on` (with the feature) with `off`, `count` calls per figure, and
/// prints the figures under `feature`'s name.
pub async fn compare(feature: &str, on: &Binary, off: &Binary, count: usize) {
    let ids = || Arc::new(Mutex::new(Vec::with_capacity(count * 4)));
    let (on_ids, off_ids) = (ids(), ids());
    let (on_base, off_base) = (on.base(), off.base());
    // Warm both up, then alternate; keep each side's best.
    rest_create(&on_base, count / 5, on_ids.clone()).await;
    rest_create(&off_base, count / 5, off_ids.clone()).await;
    let best = |a: Figure, b: Figure| if b.0 > a.0 { b } else { a };
    let mut figures = [(0.0, 0.0, 0.0); 4];
    let (mut create_ratios, mut get_ratios) = (Vec::new(), Vec::new());
    let (mut create_cpu_ratios, mut get_cpu_ratios) = (Vec::new(), Vec::new());
    // Per side (off, on): CPU spent on creates, then on gets.
    let mut spent = [[Spent::default(); 2]; 2];
    let sides = [
        (off_base.as_str(), off.pid, &off_ids),
        (on_base.as_str(), on.pid, &on_ids),
    ];
    for round in 0..ROUNDS {
        let on_first = round % 2 == 0;
        let mut created = [(0.0, 0.0, 0.0); 2];
        let mut create_nanos = [0u64; 2];
        for side in [!on_first, on_first].map(usize::from) {
            let (base, pid, ids) = sides[side];
            let (figure, nanos) = measured(pid, rest_create(base, count, ids.clone())).await;
            (created[side], create_nanos[side]) = (figure, nanos);
            spent[side][0].add(nanos, count);
        }
        let mut read = [(0.0, 0.0, 0.0); 2];
        let mut get_nanos = [0u64; 2];
        for side in [!on_first, on_first].map(usize::from) {
            let (base, pid, ids) = sides[side];
            let ids = Arc::new(ids.lock().unwrap().clone());
            let (figure, nanos) = measured(pid, rest_get(base, count, ids)).await;
            (read[side], get_nanos[side]) = (figure, nanos);
            spent[side][1].add(nanos, count);
        }
        create_ratios.push(created[1].0 / created[0].0);
        get_ratios.push(read[1].0 / read[0].0);
        create_cpu_ratios.push(create_nanos[1] as f64 / create_nanos[0] as f64);
        get_cpu_ratios.push(get_nanos[1] as f64 / get_nanos[0] as f64);
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
    for (kind, call, ratios) in [(0, "create", create_cpu_ratios), (1, "get", get_cpu_ratios)] {
        let (on, off) = (spent[1][kind].per_call(), spent[0][kind].per_call());
        println!(
            "REST {call}: service CPU per call on {on:.1} us, off {off:.1} us, on/off {:.3} \
             (median of {ROUNDS} rounds {:.3}): {:.1} % of throughput lost where the service \
             limits the rate",
            on / off,
            median(ratios.clone()),
            (1.0 - off / on) * 100.0
        );
    }
}
