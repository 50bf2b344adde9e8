//! What the benchmarks share: driving a call from concurrent tasks and reading percentiles,
//! comparing two services' REST throughput ([`compare`]), reading a running process
//! ([`process`]), and counting what a service asks its MongoDB-wire server ([`wire`]).

#[allow(dead_code)] // only the benchmarks that compare two services use it
pub mod compare;
#[allow(dead_code)] // each benchmark reads what it needs of a process
pub mod process;
#[allow(dead_code)] // only the benchmarks that count database round trips use it
pub mod wire;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// p50, p99 and max of a sample, in its unit; NaN for an empty one.
pub fn percentiles(mut sample: Vec<f64>) -> (f64, f64, f64) {
    if sample.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    sample.sort_by(|a, b| a.total_cmp(b));
    let at = |q| quantile(&sample, q);
    (at(0.5), at(0.99), *sample.last().unwrap())
}

/// The `q` quantile (0 to 1) of a sorted, non-empty sample, by the nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs `count` calls of `call(i)` from `concurrency` tasks; the elapsed time and each call's
/// latency in milliseconds.
pub async fn drive_with<F, Fut>(concurrency: usize, count: usize, call: F) -> (Duration, Vec<f64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    drive_paced(concurrency, count, None, call).await
}

/// As [`drive_with`], and with `rate` (calls per second) no call starts before its turn,
/// call `i` at `i / rate` seconds: the same load for services of different speeds. A call's
/// latency is counted from when it starts.
pub async fn drive_paced<F, Fut>(
    concurrency: usize,
    count: usize,
    rate: Option<f64>,
    call: F,
) -> (Duration, Vec<f64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (worker..count).step_by(concurrency) {
                    if let Some(rate) = rate {
                        let turn = start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(turn.into()).await;
                    }
                    let t = Instant::now();
                    call(i).await;
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (start.elapsed(), latencies)
}

/// Runs `count` calls from `concurrency` tasks, as [`drive_with`]: requests per second, and
/// p50 and p99 in milliseconds.
#[allow(dead_code)] // not every benchmark that shares this module reports these three
pub async fn throughput<F, Fut>(concurrency: usize, count: usize, call: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (elapsed, latencies) = drive_with(concurrency, count, call).await;
    let (p50, p99, _) = percentiles(latencies);
    (count as f64 / elapsed.as_secs_f64(), p50, p99)
}
