//! Benchmark of the whole service: create and get throughput over REST and gRPC with a fixed
//! concurrency, and the fire lag of 1,000 jobs due at one instant. The engine figures: how fast
//! one scheduler claims, settles and records due jobs through the store port; the fire lag of
//! 1,000 and of 10,000 jobs due within one second, on one replica and on three replicas sharing
//! one store (three `Application`s in this process; the in-memory store cannot be shared, so it
//! has one replica only), with the runs each replica fired and a check that no run fired twice;
//! and the resident memory of the real `scheduler` binary over an embedded store holding none,
//! 10,000 and 1,000,000 future jobs (MongoDB: none, 10,000 and 100,000, and 1,000,000 only if
//! inserting them would take at most three minutes). With `KAFKA_BROKERS` set, also the Kafka
//! path: events per second through the outbox to the broker, the fire lag from due time to the
//! run message's broker timestamp, and how fast results are applied.
//!
//! Run with `cargo bench --bench service`. Flags (after `--`): `--quick` for a smaller run (500
//! requests per figure instead of 4,000, 2,000 jobs due in one second instead of 10,000, 50,000
//! stored jobs instead of 1,000,000, and 20,000 instead of 100,000 on MongoDB), `--kafka-only`
//! for the Kafka figures alone, `--engine-only` for the engine figures alone. It prints
//! figures; it asserts nothing about speed, only that no run fired twice. Each store is
//! measured in a fresh service on a free loopback port, as a client would see it. MongoDB
//! figures need `MONGODB_URI`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use scheduler::{
    app::Application,
    config::{Config, StoreKind},
    domain::{EventKind, Job, JobInput, JobSpec, Limits, RunId},
    events::Watched,
    grpc::pb::{self, jobs_service_client::JobsServiceClient},
    jobs::ports::{Claim, ClaimedStep, JobStore, Lease},
    store::{mongo::MongoStore, sqlite::SqliteStore},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;
use support::{drive_with, percentiles};

const CONCURRENCY: usize = 16;

/// Concurrent inserts when filling MongoDB for the memory figures.
const FILL_CONCURRENCY: usize = 32;

/// How long the `scheduler` binary runs before its memory is read.
const SETTLE: Duration = Duration::from_secs(5);

fn email_job(name: &str, run_at: &str) -> Value {
    json!({
        "name": name,
        "jobType": "EMAIL",
        "jobData": {
            "SourceAddress": "reports@example.com",
            "DestinationAddress": "team@example.com",
            "Subject": "Weekly report",
            "Message": "Attached."
        },
        "schedule": {"runAt": run_at}
    })
}

/// The checked form of `email_job`.
fn email_spec(name: &str, run_at: DateTime<Utc>) -> JobSpec {
    let at = run_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let input: JobInput = serde_json::from_value(email_job(name, &at)).unwrap();
    input.parse().unwrap()
}

fn report(label: &str, count: usize, elapsed: Duration, latencies: Vec<f64>) {
    report_at(label, count, CONCURRENCY, elapsed, latencies);
}

/// Prints requests per second and the latency percentiles of `count` calls made from
/// `concurrency` callers; returns the requests per second.
fn report_at(
    label: &str,
    count: usize,
    concurrency: usize,
    elapsed: Duration,
    latencies: Vec<f64>,
) -> f64 {
    let (p50, p99, max) = percentiles(latencies);
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "{label:<34} {rate:>8.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   max {max:>7.2} ms   ({count} requests, {concurrency} concurrent)",
    );
    rate
}

/// Runs `count` calls of `call(i)` from `CONCURRENCY` tasks; returns elapsed time and latencies.
async fn drive<F, Fut>(count: usize, call: F) -> (Duration, Vec<f64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    drive_with(CONCURRENCY, count, call).await
}

/// One running `Application` in this process.
struct Running {
    app_addr: std::net::SocketAddr,
    jobs: scheduler::jobs::Jobs,
    events: scheduler::events::EventStreams,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The data directory, shared by the replicas of one store.
    _data: Arc<tempfile::TempDir>,
}

impl Running {
    /// Stops the service and waits (up to 30 s) until its scheduler has stopped.
    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => println!("the service stopped with an error: {error:#}"),
            Ok(Err(error)) => println!("the service task failed: {error}"),
            Err(_) => println!("the service did not stop within 30 s"),
        }
    }
}

/// The service's settings for `store`: a fresh data directory, or a fresh MongoDB database on
/// the server at `MONGODB_URI`.
fn config_for(store: StoreKind, data: &tempfile::TempDir) -> Config {
    let mut config = Config::for_tests();
    config.store = Some(store);
    config.data_dir = data.path().to_owned();
    config.database_name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    config
}

async fn start(store: StoreKind) -> Running {
    start_replicas(store, 1).await.pop().unwrap()
}

/// `replicas` services in this process on one fresh store (the same data directory, or the
/// same MongoDB database), each with its own port, scheduler and event bus, as separate
/// processes would be. The in-memory store cannot be shared: one replica only.
async fn start_replicas(store: StoreKind, replicas: usize) -> Vec<Running> {
    assert!(store != StoreKind::Memory || replicas == 1);
    let data = Arc::new(tempfile::tempdir().unwrap());
    let config = config_for(store, &data);
    let mut running = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        let app = Application::build(config.clone()).await.unwrap();
        let shutdown = CancellationToken::new();
        running.push(Running {
            app_addr: app.local_addr(),
            jobs: app.jobs(),
            events: app.events(),
            shutdown: shutdown.clone(),
            task: tokio::spawn(app.run(shutdown)),
            _data: data.clone(),
        });
    }
    running
}

async fn rest_throughput(service: &Running, label: &str, count: usize) {
    rest_at(service, label, count, CONCURRENCY).await;
}

/// REST creates, then as many gets of what was created, from `concurrency` callers; the
/// creates and the gets per second.
async fn rest_at(service: &Running, label: &str, count: usize, concurrency: usize) -> (f64, f64) {
    let http = reqwest::Client::new();
    let base = format!("http://{}", service.app_addr);
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
    let (elapsed, latencies) = {
        let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
        drive_with(concurrency, count, move |i| {
            let request = http
                .post(format!("{base}/api/v1/jobs"))
                .json(&email_job(&format!("bench {i}"), "2099-01-01T00:00:00Z"))
                .send();
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
    };
    let created = report_at(
        &format!("{label} REST create"),
        count,
        concurrency,
        elapsed,
        latencies,
    );
    let ids = Arc::new(ids.lock().unwrap().clone());
    let (elapsed, latencies) = drive_with(concurrency, count, move |i| {
        let request = http
            .get(format!("{base}/api/v1/jobs/{}", ids[i % ids.len()]))
            .send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    })
    .await;
    let got = report_at(
        &format!("{label} REST get"),
        count,
        concurrency,
        elapsed,
        latencies,
    );
    (created, got)
}

/// REST create and get at 1, 16, 64 and 256 in flight on each store, each store in a fresh
/// service, one after the other in this run; then each durable store's rates as a ratio of
/// the in-memory store's at the same depth.
async fn depth_figures(count: usize, mongodb: bool) {
    let mut stores = vec![
        (StoreKind::Memory, "memory"),
        (StoreKind::Embedded, "embedded"),
    ];
    if mongodb {
        stores.push((StoreKind::Mongodb, "mongodb"));
    }
    let depths = [1, 16, 64, 256];
    let mut rates = Vec::new();
    for &(store, label) in &stores {
        let service = start(store).await;
        let mut at_depth = Vec::new();
        for depth in depths {
            // One caller makes fewer calls: its figure is latency-bound.
            let calls = if depth == 1 { count / 4 } else { count };
            at_depth.push(
                rest_at(
                    &service,
                    &format!("{label} {depth:>3} in flight"),
                    calls,
                    depth,
                )
                .await,
            );
        }
        service.stop().await;
        rates.push(at_depth);
    }
    for (i, &(_, label)) in stores.iter().enumerate().skip(1) {
        let ratios: Vec<String> = depths
            .iter()
            .enumerate()
            .map(|(d, depth)| {
                format!(
                    "{depth} in flight: create {:.2}, get {:.2}",
                    rates[i][d].0 / rates[0][d].0,
                    rates[i][d].1 / rates[0][d].1
                )
            })
            .collect();
        println!("{label} / memory   {}", ratios.join("; "));
    }
}

async fn grpc_throughput(service: &Running, label: &str, count: usize) {
    let client = JobsServiceClient::connect(format!("http://{}", service.app_addr))
        .await
        .unwrap();
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
    let (elapsed, latencies) = {
        let (client, ids) = (client.clone(), ids.clone());
        drive(count, move |i| {
            let mut client = client.clone();
            let ids = ids.clone();
            async move {
                let id = client
                    .create_job(pb::CreateJobRequest {
                        name: format!("bench {i}"),
                        schedule_time: Some(prost_types::Timestamp {
                            seconds: 4_070_908_800,
                            nanos: 0,
                        }),
                        job_type: pb::JobType::Sms as i32,
                        job_data: "{}".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .id;
                ids.lock().unwrap().push(id);
            }
        })
        .await
    };
    report(&format!("{label} gRPC create"), count, elapsed, latencies);
    let ids = Arc::new(ids.lock().unwrap().clone());
    let (elapsed, latencies) = drive(count, move |i| {
        let mut client = client.clone();
        let id = ids[i % ids.len()].clone();
        async move {
            client.get_job(pb::GetJobRequest { id }).await.unwrap();
        }
    })
    .await;
    report(&format!("{label} gRPC get"), count, elapsed, latencies);
}

/// What the listener of `fire_lag` sees on the first replica's event stream.
enum Seen {
    /// A run event: the run, and the lag from its due time in ms.
    Run(RunId, f64),
    /// A listener fell behind and lost this many events.
    Lost(u64),
}

/// Creates `count` jobs (through the first replica) due within one second (`spread`) or at one
/// instant, far enough ahead that every create is stored before the first is due, and
/// measures the lag from each due time to its run event on the first replica's event stream
/// (every replica's events reach it through the shared journal). A run fired twice fails the
/// benchmark.
async fn fire_lag(replicas: &[Running], label: &str, count: usize, spread: bool) {
    // Generous for creates from many callers at once (thousands a second on every store);
    // a run that overruns says so.
    let lead = Duration::from_secs(8) + Duration::from_micros(800) * count as u32;
    // Listen from before the first create, and drain the buses while the jobs are created
    // (their creation events would otherwise fill the bus buffer).
    let (seen, mut sightings) = tokio::sync::mpsc::unbounded_channel();
    let stream = replicas[0]
        .events
        .open(None, None, CancellationToken::new())
        .await
        .unwrap();
    let listeners = vec![tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(watched) = futures::StreamExt::next(&mut stream).await {
            let sighting = match watched {
                Watched::Event(journaled) if journaled.event.kind == EventKind::Run => {
                    let received = Utc::now();
                    let run = journaled.event.run.as_ref().unwrap();
                    let lag = (received - run.scheduled_for).num_microseconds().unwrap();
                    Seen::Run(run.run_id, lag as f64 / 1e3)
                }
                Watched::Lagged(lost) => Seen::Lost(lost),
                _ => continue,
            };
            if seen.send(sighting).is_err() {
                break;
            }
        }
    })];

    let due = Utc::now() + chrono::Duration::from_std(lead).unwrap();
    let due = due - chrono::Duration::nanoseconds(due.timestamp_subsec_nanos() as i64);
    let created_in = create_due(&replicas[0].jobs, count, due, spread, "lag").await;
    let overran = Utc::now() >= due;

    let mut lags = Vec::with_capacity(count);
    let mut runs = HashSet::with_capacity(count);
    let (mut duplicates, mut lost) = (0, 0);
    // Slow stores fire a few hundred jobs a second: wait longer for more jobs.
    let wait = Duration::from_secs(60).max(Duration::from_millis(10) * count as u32);
    let deadline = Instant::now() + lead + wait;
    while lags.len() < count {
        let Ok(Some(sighting)) = tokio::time::timeout_at(deadline.into(), sightings.recv()).await
        else {
            break;
        };
        match sighting {
            Seen::Run(run, lag) => {
                if !runs.insert(run) {
                    duplicates += 1;
                }
                lags.push(lag);
            }
            Seen::Lost(n) => lost += n,
        }
    }
    for listener in listeners {
        listener.abort();
    }
    let fired = lags.len();
    let (p50, p99, max) = percentiles(lags);
    println!(
        "{label:<34} fire lag p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   max {max:>7.2} ms   ({fired}/{count} fired, due {}; {} replicas; duplicates: {duplicates}; created in {:.1} s, {} s ahead)",
        if spread {
            "across one second"
        } else {
            "at one instant"
        },
        replicas.len(),
        created_in.as_secs_f64(),
        lead.as_secs(),
    );
    if overran {
        println!(
            "{label}: note: creating the jobs took past the first due time, so the lag includes that overrun"
        );
    }
    if lost > 0 {
        println!("{label}: note: a listener fell behind and lost {lost} events");
    }
    assert_eq!(duplicates, 0, "{label}: a run fired more than once");
}

/// Creates `count` jobs named `name i`, due at `due` or, with `spread`, evenly across the
/// second from it, from `CONCURRENCY` callers; returns how long that took.
async fn create_due(
    jobs: &scheduler::jobs::Jobs,
    count: usize,
    due: DateTime<Utc>,
    spread: bool,
    name: &'static str,
) -> Duration {
    let jobs = jobs.clone();
    drive(count, move |i| {
        let offset = if spread { (i * 1000 / count) as i64 } else { 0 };
        let at = (due + chrono::Duration::milliseconds(offset))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let input: JobInput =
            serde_json::from_value(email_job(&format!("{name} {i}"), &at)).unwrap();
        let jobs = jobs.clone();
        async move {
            jobs.create(input, None, &Default::default()).await.unwrap();
        }
    })
    .await
    .0
}

/// The fire lag of `count` jobs due across one second on `replicas` fresh services sharing
/// one fresh store.
async fn replicated_fire_lag(store: StoreKind, label: &str, count: usize, replicas: usize) {
    let label = format!(
        "{label} {count} due, {replicas} replica{}",
        if replicas == 1 { "" } else { "s" }
    );
    if store == StoreKind::Memory && replicas > 1 {
        println!("{label:<34} not measured: an in-memory store cannot be shared between instances");
        return;
    }
    let services = start_replicas(store, replicas).await;
    fire_lag(&services, &label, count, true).await;
    for service in services {
        service.stop().await;
    }
}

/// A store of `kind` opened directly, on a fresh data directory or MongoDB database.
async fn open_store(kind: StoreKind, config: &Config) -> Arc<dyn JobStore> {
    match kind {
        StoreKind::Embedded => Arc::new(SqliteStore::open(&config.data_dir).unwrap()),
        StoreKind::Memory => Arc::new(SqliteStore::in_memory().unwrap()),
        StoreKind::Mongodb => Arc::new(
            MongoStore::connect(config.mongo_settings().await.unwrap())
                .await
                .unwrap(),
        ),
    }
}

/// Store-level figures without HTTP: insert throughput, then how fast one scheduler claims,
/// settles (fires) and records due jobs in batches of 200.
async fn claim_throughput(store_kind: StoreKind, label: &str, count: usize) {
    let data = tempfile::tempdir().unwrap();
    let config = config_for(store_kind, &data);
    let store = open_store(store_kind, &config).await;
    let now = Utc::now();
    let spec = email_spec("claim", now - chrono::Duration::seconds(1));
    let start = Instant::now();
    for i in 0..count {
        let job = Job::new(
            JobSpec {
                name: format!("claim {i}"),
                ..spec.clone()
            },
            now,
        );
        store.insert(&job, None, &[]).await.unwrap();
    }
    let inserted = start.elapsed();
    let lease = Lease {
        owner: "bench".into(),
        until: now + chrono::Duration::minutes(10),
    };
    let limits = Limits::default();
    let start = Instant::now();
    let mut fired = 0;
    loop {
        let claims = store.claim_due(&lease, Utc::now(), 200).await.unwrap();
        if claims.is_empty() {
            break;
        }
        let now = Utc::now();
        let steps: Vec<ClaimedStep> = claims
            .into_iter()
            .map(|Claim { job, token }| {
                let step = job.settle(now, &limits, 0.5);
                ClaimedStep {
                    token,
                    job: step.job,
                    finished: step.finished,
                    events: vec![],
                }
            })
            .collect();
        fired += store.record_steps(&lease, &steps).await.unwrap().len();
    }
    let claimed = start.elapsed();
    println!(
        "{label:<34} store insert {:>8.0} jobs/s (one at a time)   claim+fire {:>8.0} jobs/s ({fired} claimed, settled and recorded in batches of 200)",
        count as f64 / inserted.as_secs_f64(),
        fired as f64 / claimed.as_secs_f64(),
    );
}

/// Latency of listing the newest page of 20 jobs.
async fn list_latency(service: &Running, label: &str, count: usize) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/jobs?page=1&size=20", service.app_addr);
    let (elapsed, latencies) = drive(count, move |_| {
        let request = http.get(&url).send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    })
    .await;
    report(
        &format!("{label} REST list (page of 20)"),
        count,
        elapsed,
        latencies,
    );
}

/// The resident memory (VmRSS) of a process (`"self"` or a pid), in MiB.
fn rss_mib(process: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The `scheduler` binary: the one Cargo built for this benchmark, else the release build in
/// the target directory (built if missing).
fn scheduler_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_scheduler") {
        return path.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("target/release/scheduler");
    if !path.exists() {
        println!("building the scheduler binary: cargo build --release --bin scheduler");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "scheduler"])
            .current_dir(root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --release failed");
    }
    path
}

/// The `scheduler` binary as a child process; killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `flags` on a free port, lets its scheduler run for `SETTLE`, asks
/// for the newest page of 20 jobs, and returns its resident memory in MiB and the listing's
/// total count.
async fn binary_rss(flags: &[String]) -> (f64, u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut child = Child(
        Command::new(scheduler_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(flags)
            .env("RUST_LOG", "warn")
            .env_remove("KAFKA_BROKERS")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the scheduler binary starts"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the scheduler binary exited at start: {status}");
        }
        let ready = http.get(format!("{base}/healthz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the scheduler binary did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE.saturating_sub(started.elapsed())).await;
    let response = http
        .get(format!("{base}/api/v1/jobs?page=1&size=20"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    let rss = rss_mib(&child.0.id().to_string());
    (rss, page["totalCount"].as_u64().unwrap())
}

/// One job due in a year, for the memory figures.
fn future_job(spec: &JobSpec, i: usize, now: DateTime<Utc>) -> Job {
    Job::new(
        JobSpec {
            name: format!("future {i}"),
            ..spec.clone()
        },
        now,
    )
}

/// Adds `count` future jobs to the embedded store in `dir` (created if new), in transactions
/// of 50,000 jobs each.
async fn fill_sqlite(dir: &Path, count: usize) {
    const CHUNK: usize = 50_000;
    let store = SqliteStore::open(dir).unwrap();
    let now = Utc::now();
    let spec = email_spec("future", now + chrono::Duration::days(365));
    for start in (0..count).step_by(CHUNK) {
        let jobs = (start..(start + CHUNK).min(count))
            .map(|i| future_job(&spec, i, now))
            .collect();
        store.insert_many(jobs).await.unwrap();
    }
}

/// Adds `count` future jobs to `store` through `JobStore::insert`, `FILL_CONCURRENCY` at a
/// time; returns how long it took.
async fn fill_store(store: &Arc<dyn JobStore>, count: usize) -> Duration {
    let now = Utc::now();
    let spec = Arc::new(email_spec("future", now + chrono::Duration::days(365)));
    let store = store.clone();
    drive_with(FILL_CONCURRENCY, count, move |i| {
        let job = future_job(&spec, i, now);
        let store = store.clone();
        async move {
            store.insert(&job, None, &[]).await.unwrap();
        }
    })
    .await
    .0
}

/// Formats the memory figures: RSS at each size, and the largest against the empty store and
/// against the one before it.
fn memory_line(label: &str, figures: &[(usize, f64)], extra: &str) {
    let sizes: Vec<String> = figures
        .iter()
        .map(|(n, rss)| match n {
            0 => format!("empty {rss:.1} MiB"),
            n => format!("{n} jobs {rss:.1} MiB"),
        })
        .collect();
    let ratios = match figures {
        [(0, empty), .., (before, previous), (last, largest)] if *before > 0 => format!(
            "{last}/empty {:.2}x, {last}/{before} {:.2}x",
            largest / empty,
            largest / previous
        ),
        _ => String::new(),
    };
    println!(
        "{label:<34} {}   {ratios}   (binary's VmRSS after {} s of its scheduler and one GET of a page of 20{extra})",
        sizes.join(", "),
        SETTLE.as_secs()
    );
}

/// Checks the listing saw the jobs stored.
fn check_count(label: &str, expected: usize, listed: u64) {
    if listed != expected as u64 {
        println!("{label}: note: the listing counted {listed} jobs, {expected} were stored");
    }
}

/// Resident memory of the `scheduler` binary on an embedded store holding each of `sizes`
/// future jobs (ascending; the store is filled up to each in turn).
async fn binary_memory_embedded(sizes: &[usize]) {
    let label = "embedded binary RSS";
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--store".to_owned(),
        "embedded".to_owned(),
        "--data-dir".to_owned(),
        data.path().display().to_string(),
    ];
    let mut stored = 0;
    let mut figures = Vec::new();
    let mut filled_in = Duration::ZERO;
    for &size in sizes {
        let dir = data.path().to_owned();
        let add = size - stored;
        let start = Instant::now();
        fill_sqlite(&dir, add).await;
        filled_in += start.elapsed();
        stored = size;
        let (rss, listed) = binary_rss(&flags).await;
        check_count(label, size, listed);
        figures.push((size, rss));
    }
    let file_mib = std::fs::metadata(data.path().join("jobs.db"))
        .map_or(f64::NAN, |m| m.len() as f64 / (1024.0 * 1024.0));
    let extra = format!(
        "; filled directly in {:.1} s, store file {file_mib:.0} MiB",
        filled_in.as_secs_f64()
    );
    memory_line(label, &figures, &extra);
}

/// Resident memory of the `scheduler` binary on MongoDB holding each of `sizes` future jobs,
/// inserted through the store port; `largest` too when inserting up to it takes at most
/// `budget` at the rate measured.
async fn binary_memory_mongo(sizes: &[usize], largest: usize, budget: Duration) {
    let label = "mongodb binary RSS";
    let data = tempfile::tempdir().unwrap();
    let config = config_for(StoreKind::Mongodb, &data);
    let store = open_store(StoreKind::Mongodb, &config).await;
    let flags = [
        "--store".to_owned(),
        "mongodb".to_owned(),
        "--database-name".to_owned(),
        config.database_name.clone(),
    ];
    let (mut stored, mut inserted, mut inserting) = (0, 0, Duration::ZERO);
    let mut figures = Vec::new();
    let mut skipped = String::new();
    for size in sizes.iter().copied().chain([largest]) {
        let add = size - stored;
        if size == largest && inserted > 0 {
            let rate = inserted as f64 / inserting.as_secs_f64();
            let projected = add as f64 / rate;
            if projected > budget.as_secs_f64() {
                skipped = format!(
                    "; {largest} not measured: inserting {add} more at {rate:.0} jobs/s would take {projected:.0} s on this server"
                );
                break;
            }
        }
        inserting += fill_store(&store, add).await;
        inserted += add;
        stored = size;
        let (rss, listed) = binary_rss(&flags).await;
        check_count(label, size, listed);
        figures.push((size, rss));
    }
    let extra = format!(
        "; inserted through the store port, {FILL_CONCURRENCY} at a time, at {:.0} jobs/s{skipped}",
        inserted as f64 / inserting.as_secs_f64()
    );
    memory_line(label, &figures, &extra);
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `-- --quick` makes a smaller run.
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let value_of = |name: &str| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let (quick, kafka_only, engine_only, window, depth) = (
        flag("--quick"),
        flag("--kafka-only"),
        flag("--engine-only"),
        flag("--window"),
        flag("--depth"),
    );
    let modes = [kafka_only, engine_only, window, depth];
    if modes.iter().filter(|on| **on).count() > 1 {
        eprintln!("--kafka-only, --engine-only, --window and --depth exclude each other");
        std::process::exit(2);
    }
    if depth {
        let count = if quick { 1_000 } else { 4_000 };
        depth_figures(count, std::env::var_os("MONGODB_URI").is_some()).await;
        return;
    }
    if window {
        let Ok(brokers) = std::env::var("KAFKA_BROKERS") else {
            eprintln!("--window needs KAFKA_BROKERS (./scripts/bench.sh provides one)");
            std::process::exit(2);
        };
        // `--store <name>` measures that store alone; `--stored <n,...>` sets the counts.
        let only = value_of("--store");
        let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);
        let stored: Vec<usize> = match value_of("--stored") {
            Some(list) => list
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("--stored takes counts, e.g. 10000,100000")
                })
                .collect(),
            None if quick => vec![10_000],
            None => vec![10_000, 100_000],
        };
        if wanted("memory") {
            window_figures(&brokers, StoreKind::Memory, "memory", 0).await;
        }
        for &n in &stored {
            if wanted("embedded") {
                window_figures(&brokers, StoreKind::Embedded, "embedded", n).await;
            }
            if wanted("mongodb") && std::env::var_os("MONGODB_URI").is_some() {
                window_figures(&brokers, StoreKind::Mongodb, "mongodb", n).await;
            }
        }
        return;
    }
    let count = if quick { 500 } else { 4000 };
    // Jobs due in the same second, and future jobs stored, for the engine figures.
    let many_due = if quick { 2_000 } else { 10_000 };
    let (stored_few, stored_many) = if quick {
        (2_000, 50_000)
    } else {
        (10_000, 1_000_000)
    };
    let mongo_stored = if quick { 20_000 } else { 100_000 };
    println!(
        "scheduler benchmark: {} cores, concurrency {CONCURRENCY}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut stores = vec![
        (StoreKind::Embedded, "embedded"),
        (StoreKind::Memory, "memory"),
    ];
    if !engine_only {
        match std::env::var("KAFKA_BROKERS") {
            Ok(brokers) => {
                kafka_path(&brokers, StoreKind::Embedded, "embedded", count).await;
                kafka_path(&brokers, StoreKind::Memory, "memory", count).await;
            }
            Err(_) => {
                println!(
                    "KAFKA_BROKERS is not set: no Kafka figures (./scripts/bench.sh provides one)"
                )
            }
        }
    }
    if kafka_only {
        return;
    }
    let mongodb = std::env::var_os("MONGODB_URI").is_some();
    if mongodb {
        stores.push((StoreKind::Mongodb, "mongodb"));
    } else {
        println!("MONGODB_URI is not set: no MongoDB figures (./scripts/bench.sh provides one)");
    }
    // `--engine-only --lag-only` measures only the fire lag, of `--store <name>` alone if
    // given, for the counts `--due <n,...>` (default 1,000 and 10,000) and `--replicas <n,...>`
    // (default 1 and 3).
    let lag_only = flag("--lag-only");
    let list = |name: &str, default: Vec<usize>| match value_of(name) {
        Some(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("a list of counts, e.g. 1000,10000"))
            .collect(),
        None => default,
    };
    let dues = list("--due", vec![1000, many_due]);
    let replica_counts = list("--replicas", vec![1, 3]);
    if let Some(only) = value_of("--store") {
        stores.retain(|(_, label)| *label == only);
    }
    for &(store, label) in &stores {
        if lag_only {
            for &due in &dues {
                for &replicas in &replica_counts {
                    replicated_fire_lag(store, label, due, replicas).await;
                }
            }
            continue;
        }
        claim_throughput(store, label, count).await;
        if !engine_only {
            let service = start(store).await;
            rest_throughput(&service, label, count).await;
            list_latency(&service, label, count / 4).await;
            grpc_throughput(&service, label, count).await;
            let lag_label = format!("{label} 1000 due");
            fire_lag(std::slice::from_ref(&service), &lag_label, 1000, false).await;
            service.stop().await;
            println!("{label}: process RSS {:.1} MiB", rss_mib("self"));
        }
        for due in [1000, many_due] {
            for replicas in [1, 3] {
                replicated_fire_lag(store, label, due, replicas).await;
            }
        }
    }
    if lag_only {
        return;
    }
    binary_memory_embedded(&[0, stored_few, stored_many]).await;
    if mongodb {
        let budget = Duration::from_secs(180);
        binary_memory_mongo(&[0, stored_few, mongo_stored], stored_many, budget).await;
    }
}

/// The Kafka path on `store`, with topics of its own.
async fn kafka_path(brokers: &str, store: StoreKind, label: &str, count: usize) {
    use rdkafka::{
        ClientConfig,
        consumer::{BaseConsumer, Consumer},
        producer::{FutureProducer, FutureRecord},
        util::Timeout,
    };
    let data = tempfile::tempdir().unwrap();
    let mut config = config_for(store, &data);
    let prefix = use_fresh_topics(&mut config, brokers);
    let settings = config.kafka_settings().unwrap();
    scheduler::kafka::ensure_topics(&settings).await.unwrap();
    let app = Application::build(config).await.unwrap();
    let jobs = app.jobs();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let high_watermark = |topic: String| {
        let brokers = brokers.to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()
                    .unwrap();
                consumer
                    .fetch_watermarks(&topic, 0, Timeout::After(Duration::from_secs(10)))
                    .map(|(_, high)| high)
                    .unwrap_or(0)
            })
            .await
            .unwrap()
        }
    };

    // Events through the outbox: creates as fast as 16 clients go, until the broker has them all.
    let far = "2099-01-01T00:00:00.000Z";
    let start = Instant::now();
    let creator = jobs.clone();
    drive(count, move |i| {
        let input: JobInput =
            serde_json::from_value(email_job(&format!("outbox {i}"), far)).unwrap();
        let jobs = creator.clone();
        async move {
            jobs.create(input, None, &Default::default()).await.unwrap();
        }
    })
    .await;
    let stored = start.elapsed();
    while high_watermark(settings.topics.create.name.clone()).await < count as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published = start.elapsed();
    println!(
        "{:<34} {count} creates stored in {:.2} s; all {count} events acknowledged by Kafka after {:.2} s: {:>6.0} events/s end to end",
        format!("{label} kafka outbox"),
        stored.as_secs_f64(),
        published.as_secs_f64(),
        count as f64 / published.as_secs_f64()
    );

    // Fire lag to the broker: due time to the run message's timestamp (set when produced).
    let fires = 1000;
    let reader = run_reader(
        brokers,
        &settings.topics.run.name,
        &format!("{prefix}-reader"),
    );
    let due = Utc::now() + chrono::Duration::seconds(8);
    let due = due - chrono::Duration::nanoseconds(due.timestamp_subsec_nanos() as i64);
    create_due(&jobs, fires, due, true, "kafka lag").await;
    let (lags, fired_ids) =
        read_runs(&reader, fires, Instant::now() + Duration::from_secs(60)).await;
    let got = lags.len();
    let (p50, p99, max) = percentiles(lags);
    println!(
        "{:<34} fire lag to the broker p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   max {max:>7.2} ms   ({got}/{fires} run messages, due across one second)",
        format!("{label} kafka 1000 due")
    );

    // Results: one per fired job, produced at once; time until every job is SUCCEEDED.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let start = Instant::now();
    let sends: Vec<_> = fired_ids
        .iter()
        .map(|id| {
            let payload = json!({"Id": id, "Status": 4}).to_string();
            let producer = producer.clone();
            let topic = settings.topics.run_result.name.clone();
            let id = id.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&id).payload(&payload),
                        Timeout::After(Duration::from_secs(30)),
                    )
                    .await
                    .unwrap();
            }
        })
        .collect();
    futures::future::join_all(sends).await;
    let filter = scheduler::jobs::JobFilter {
        status: Some(scheduler::domain::JobStatus::Succeeded),
        ..Default::default()
    };
    let page = scheduler::jobs::PageRequest { page: 1, size: 1 };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = jobs.list(filter.clone(), page).await.unwrap().total_count as usize;
        if done >= fired_ids.len() || Instant::now() > deadline {
            let elapsed = start.elapsed();
            println!(
                "{:<34} {done}/{} results applied in {:.2} s: {:>6.0} results/s",
                format!("{label} kafka results"),
                fired_ids.len(),
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
}

/// The topics of one benchmark service, named after a fresh prefix, and the broker in
/// `config`.
fn use_fresh_topics(config: &mut Config, brokers: &str) -> String {
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    config.kafka_brokers = Some(brokers.to_owned());
    config.topic_job_create = format!("{prefix}-create");
    config.topic_job_update = format!("{prefix}-update");
    config.topic_job_run = format!("{prefix}-run");
    config.topic_job_run_result = format!("{prefix}-result");
    config.topic_job_run_result_dlq = format!("{prefix}-dlq");
    config.topic_job_run_result_consumer_group_id = format!("{prefix}-group");
    prefix
}

/// A consumer of the run topic from its beginning.
fn run_reader(brokers: &str, topic: &str, group: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::{ClientConfig, Offset, TopicPartitionList, consumer::Consumer};
    let reader: rdkafka::consumer::StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&partitions).unwrap();
    reader
}

/// Up to `count` run messages, read until `deadline`: each one's lag from its due time to its
/// broker timestamp (set when produced), in milliseconds, and its job id.
async fn read_runs(
    reader: &rdkafka::consumer::StreamConsumer,
    count: usize,
    deadline: Instant,
) -> (Vec<f64>, Vec<String>) {
    let (lags, ids, _) = read_runs_due(reader, count, deadline).await;
    (lags, ids)
}

/// As [`read_runs`], with each run's due time too.
async fn read_runs_due(
    reader: &rdkafka::consumer::StreamConsumer,
    count: usize,
    deadline: Instant,
) -> (Vec<f64>, Vec<String>, Vec<DateTime<Utc>>) {
    use rdkafka::Message;
    let mut lags = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    let mut due = Vec::with_capacity(count);
    while lags.len() < count && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout_at(deadline.into(), reader.recv()).await else {
            break;
        };
        let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let scheduled =
            scheduler::domain::parse_time(value["ScheduledFor"].as_str().unwrap()).unwrap();
        let produced = message.timestamp().to_millis().unwrap();
        lags.push((produced - scheduled.timestamp_millis()) as f64);
        ids.push(value["Id"].as_str().unwrap().to_owned());
        due.push(scheduled);
    }
    (lags, ids, due)
}

/// How many store operations the service at `addr` has made so far, and the seconds they
/// took, by operation, from its `/metrics`; and its Kafka sends (`kafka_send`).
async fn store_operations(
    addr: std::net::SocketAddr,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = "scheduler_store_operation_duration_seconds_";
    let mut operations = std::collections::BTreeMap::new();
    // Beside them, the Kafka sends (each message, from the producer to the acknowledgement).
    for (kind, index) in [("count", 0), ("sum", 1)] {
        let name = format!("scheduler_kafka_publish_duration_seconds_{kind} ");
        if let Some(value) = text
            .lines()
            .find_map(|line| line.strip_prefix(name.as_str()))
            .and_then(|value| value.trim().parse::<f64>().ok())
        {
            let entry: &mut (f64, f64) = operations.entry("kafka_send".to_owned()).or_default();
            if index == 0 {
                entry.0 = value;
            } else {
                entry.1 = value;
            }
        }
    }
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(series) else {
            continue;
        };
        let Some((kind, rest)) = rest.split_once("{operation=\"") else {
            continue;
        };
        let Some((operation, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let entry: &mut (f64, f64) = operations.entry(operation.to_owned()).or_default();
        match kind {
            "count" => entry.0 = value,
            "sum" => entry.1 = value,
            _ => {}
        }
    }
    operations
}

/// The store operations made between two readings, per `per` (fires, or seconds): the total,
/// and each operation's share with the mean time one took.
fn operations_line(
    before: &std::collections::BTreeMap<String, (f64, f64)>,
    after: &std::collections::BTreeMap<String, (f64, f64)>,
    per: f64,
) -> String {
    let mut parts = Vec::new();
    let mut total = 0.0;
    for (operation, (count, seconds)) in after {
        let (count_before, seconds_before) = before.get(operation).copied().unwrap_or_default();
        let made = count - count_before;
        if made > 0.0 {
            total += made;
            let mean = (seconds - seconds_before) / made * 1e3;
            parts.push(format!("{operation} {:.3} of {mean:.1} ms", made / per));
        }
    }
    format!("{:.3} ({})", total / per, parts.join(", "))
}

/// The database round trips idle replicas make per second, each counted by a proxy between
/// it and the server (`support::wire`), by command: first one alone (holding the relay
/// lease), then a second beside it (which does not). They run only for this count: the
/// proxy's hop would add to every figure measured after it.
async fn idle_round_trips(config: &Config, label: &str) {
    let uri = config
        .mongodb_uri
        .as_deref()
        .expect("MONGODB_URI names the server");
    let shutdown = CancellationToken::new();
    let (mut tasks, mut counters) = (Vec::new(), Vec::new());
    for replica in ["leading the relay", "beside it"] {
        counters.push(support::wire::WireCounter::start(uri).await);
        let counter = counters.last().unwrap();
        let mut proxied = config.clone();
        proxied.mongodb_uri = Some(counter.uri());
        let app = Application::build(proxied).await.unwrap();
        let jobs = app.jobs();
        tasks.push(tokio::spawn(app.run(shutdown.clone())));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = counter.counts();
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after = counter.counts();
        println!(
            "{label:<34} idle database round trips per second, {replica}: {}",
            support::wire::round_trips_line(&before, &after, 20.0)
        );
        if counters.len() == 1 {
            calls_round_trips(&jobs, counter, label).await;
        }
    }
    shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
}

/// The database round trips of a create (with the relay's journaling of its event) and of a
/// get, on the replica behind `counter`, 2,000 of each at 16 in flight; the creates are due in
/// an hour, so nothing fires meanwhile.
async fn calls_round_trips(
    jobs: &scheduler::jobs::Jobs,
    counter: &support::wire::WireCounter,
    label: &str,
) {
    const CALLS: usize = 2_000;
    let created = Arc::new(std::sync::Mutex::new(Vec::with_capacity(CALLS)));
    let before = counter.counts();
    let (from, made) = (jobs.clone(), created.clone());
    let due = (Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    drive(CALLS, move |i| {
        let (jobs, made) = (from.clone(), made.clone());
        let input: JobInput =
            serde_json::from_value(email_job(&format!("counted {i}"), &due)).unwrap();
        async move {
            let job = jobs
                .create(input, None, &Default::default())
                .await
                .unwrap()
                .job;
            made.lock().unwrap().push(job.id);
        }
    })
    .await;
    // The relay's journaling of the last events, and a window read or two, count too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = counter.counts();
    println!(
        "{label:<34} database round trips per create, 16 in flight: {}",
        support::wire::round_trips_line(&before, &after, CALLS as f64)
    );
    let ids: Vec<scheduler::domain::JobId> = created.lock().unwrap().clone();
    let before = counter.counts();
    let from = jobs.clone();
    drive(CALLS, move |i| {
        let (jobs, id) = (from.clone(), ids[i]);
        async move {
            jobs.get(id).await.unwrap();
        }
    })
    .await;
    let after = counter.counts();
    println!(
        "{label:<34} database round trips per get, 16 in flight: {}",
        support::wire::round_trips_line(&before, &after, CALLS as f64)
    );
}

/// The fire path with `stored` future jobs in the store, through Kafka: the store operations
/// an idle replica makes per second; the lag from due time to the run message's broker
/// timestamp of 500 jobs due across one second, with the store operations per fire; and how
/// long 10,000 jobs due at one instant take to all reach the broker. Checks each run reached
/// the broker once.
async fn window_figures(brokers: &str, store: StoreKind, label: &str, stored: usize) {
    let data = tempfile::tempdir().unwrap();
    let mut config = config_for(store, &data);
    // The store's gauges are counted when `/metrics` is scraped; this bench scrapes only to
    // read the operation counts, so it counts them once (the first scrape, whose census is
    // timed below) and not again in the middle of the fires, as a Prometheus scrape could.
    config.metrics_refresh_ms = 3_600_000;
    let prefix = use_fresh_topics(&mut config, brokers);
    let settings = config.kafka_settings().unwrap();
    scheduler::kafka::ensure_topics(&settings).await.unwrap();
    let filled = Instant::now();
    match store {
        StoreKind::Embedded => fill_sqlite(&config.data_dir, stored).await,
        _ => {
            fill_store(&open_store(store, &config).await, stored).await;
        }
    }
    let filled = filled.elapsed();
    let label = format!("{label} {stored} stored");
    if store == StoreKind::Mongodb {
        idle_round_trips(&config, &label).await;
    }
    let app = Application::build(config).await.unwrap();
    let (addr, jobs) = (app.local_addr(), app.jobs());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));

    // Idle: what the replica asks the store in ten quiet seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = store_operations(addr).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = store_operations(addr).await;
    println!(
        "{label:<34} idle store operations per second {} (filled in {:.1} s)",
        operations_line(&before, &after, 10.0),
        filled.as_secs_f64()
    );
    if let Some((1.0, seconds)) = before.get("census") {
        println!(
            "{label:<34} one census (a scrape's count of the gauges) took {:.1} ms",
            seconds * 1e3
        );
    }

    let reader = run_reader(brokers, &settings.topics.run.name, &format!("{prefix}-r"));
    for (count, spread) in [(500, true), (10_000, false)] {
        let lead = Duration::from_secs(8).max(Duration::from_millis(3) * count as u32);
        let due = Utc::now() + chrono::Duration::from_std(lead).unwrap();
        let due = due - chrono::Duration::nanoseconds(due.timestamp_subsec_nanos() as i64);
        let created_in = create_due(&jobs, count, due, spread, "window").await;
        let overran = Utc::now() >= due - chrono::Duration::milliseconds(200);
        // The creates' own operations (inserts, their events' relay) are done before the fires.
        let settle = (due - chrono::Duration::milliseconds(200) - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(settle).await;
        let before = store_operations(addr).await;
        let wait = Duration::from_secs(60).max(Duration::from_millis(10) * count as u32);
        let (lags, ids, dues) = read_runs_due(&reader, count, Instant::now() + wait).await;
        let all_in = Utc::now() - due;
        // Where in the second the slowest fires were due: a tail at its start is a cold path,
        // one spread through it is the store's pauses.
        let mut slowest: Vec<(f64, i64)> = lags
            .iter()
            .zip(&dues)
            .map(|(lag, at)| (*lag, (*at - due).num_milliseconds()))
            .collect();
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        let slowest: Vec<String> = slowest
            .iter()
            .take(8)
            .map(|(lag, at)| format!("{lag:.0} ms at +{at} ms"))
            .collect();
        // Let the relay finish marking the last events delivered before counting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = store_operations(addr).await;
        let fired = lags.len();
        let unique: HashSet<&String> = ids.iter().collect();
        let duplicates = fired - unique.len();
        let (p50, p99, max) = percentiles(lags);
        println!(
            "{:<34} fire lag to the broker p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   max {max:>7.2} ms   ({fired}/{count} run messages, due {}; duplicates: {duplicates}; last {:.2} s after the due time; created in {:.1} s)",
            format!("{label} {count} due"),
            if spread {
                "across one second"
            } else {
                "at one instant"
            },
            all_in.num_milliseconds() as f64 / 1e3,
            created_in.as_secs_f64(),
        );
        println!(
            "{:<34} store operations per fire {}",
            format!("{label} {count} due"),
            operations_line(&before, &after, fired.max(1) as f64)
        );
        if spread {
            println!(
                "{:<34} slowest fires (lag, when due in the second from {}): {}",
                format!("{label} {count} due"),
                due.format("%H:%M:%S%.3f"),
                slowest.join(", ")
            );
        }
        if overran {
            println!(
                "{label}: note: creating the jobs took past their due time, so the lag includes that overrun"
            );
        }
        assert_eq!(duplicates, 0, "{label}: a run reached the broker twice");
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}
