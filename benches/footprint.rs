//! Footprint: what the release binary costs at rest, per call, and per open client.
//!
//! On the embedded store, and on MongoDB too when `MONGODB_URI` is set (then with the CPU of
//! the database server beside the service's, when it runs on this machine):
//! - gRPC create and get at 1, 16, 64 and 256 in flight, and REST at 16: calls per second,
//!   p50 / p99 / p99.9 latency, and the CPU the service and the database server spent per call;
//! - idle CPU of the service and the database server, empty and with the jobs created stored;
//! - on the embedded store, the resident memory each open HTTP/1.1 keep-alive connection,
//!   HTTP/2 (gRPC) connection and event stream adds, 500 of each held open at once.
//!
//! - on MongoDB, the database CPU per create and per get of ours against the older service's
//!   store work (one insert, one read by `_id`) on the same server, alternating five times.
//!
//! Run with `./scripts/with-mongo.sh cargo bench --bench footprint` (`-- --quick`: 10 s idle
//! windows and fewer calls; `-- --against-older`: only that last comparison). It prints
//! figures and asserts nothing about speed.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use scheduler::grpc::pb::{self, jobs_service_client::JobsServiceClient};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

mod support;
use support::{
    drive_paced,
    process::{Binary, cpu_seconds, find_process, raise_open_file_limit, status_kib},
    quantile,
    wire::{WireCounter, round_trips_line},
};

/// The `jobData` of every job created here: an email, as the EMAIL type requires.
fn email() -> Value {
    json!({
        "SourceAddress": "reports@example.com",
        "DestinationAddress": "team@example.com",
        "Subject": "Weekly report",
        "Message": "Attached."
    })
}

/// A REST body for a job due far ahead.
fn rest_job(name: &str) -> Value {
    json!({
        "name": name,
        "jobType": "EMAIL",
        "jobData": email(),
        "schedule": {"runAt": "2099-01-01T00:00:00Z"},
    })
}

/// The binary under test, and the database server's process when it is known.
struct Service {
    binary: Binary,
    database: Option<u32>,
    /// The proxy it reaches its database through, counting round trips, if any.
    wire: Option<Arc<WireCounter>>,
}

impl Service {
    /// Starts the binary with `flags`, room for 1,000 event streams, and waits until it answers.
    async fn start(flags: &[String], database: Option<u32>) -> Service {
        let mut command = Binary::command();
        command
            .args(["--max-event-streams", "1000"])
            .args(["--max-event-streams-per-client", "1000"])
            .args(flags);
        let binary = Binary::start(command).await;
        Service {
            binary,
            database,
            wire: None,
        }
    }

    fn base(&self) -> String {
        self.binary.base()
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.binary.pid, "VmRSS")
    }

    /// The resident memory once the process has settled after its start, in KiB.
    async fn settled_rss_kib(&self) -> u64 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.rss_kib()
    }
}

/// What [`measured`] reads the CPU of: the service (when it is a process of its own) and the
/// database server (when it runs on this machine); and the service's database round trips,
/// when it reaches its server through a counting proxy.
#[derive(Clone)]
struct Meter {
    service: Option<u32>,
    database: Option<u32>,
    wire: Option<Arc<WireCounter>>,
}

impl Meter {
    fn of(service: &Service) -> Meter {
        Meter {
            service: Some(service.binary.pid),
            database: service.database,
            wire: service.wire.clone(),
        }
    }

    fn cpu(&self) -> (Option<f64>, Option<f64>) {
        (
            self.service.map(cpu_seconds),
            self.database.map(cpu_seconds),
        )
    }
}

/// How long after the last call the CPU is still counted as the calls': the work a call
/// leaves behind (the relay journaling its event, the window read it moved) belongs to it,
/// and must not be counted against the calls measured next.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs `count` calls from `concurrency` tasks and prints their rate, latency and the CPU
/// the service and the database server spent per call, from the first call to [`SETTLE`]
/// after the last (and, in brackets, until the last call answered).
async fn measured<F, Fut>(
    meter: Meter,
    label: &str,
    (concurrency, rate): (usize, Option<f64>),
    count: usize,
    call: F,
) where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let trips = meter.wire.as_ref().map(|wire| wire.counts());
    let before = meter.cpu();
    let (elapsed, mut latencies) = drive_paced(concurrency, count, rate, call).await;
    let answered = meter.cpu();
    tokio::time::sleep(SETTLE).await;
    let settled = meter.cpu();
    let trips = match (trips, &meter.wire) {
        (Some(before), Some(wire)) => {
            let line = round_trips_line(&before, &wire.counts(), count as f64);
            format!("; database round trips per call {line}")
        }
        _ => String::new(),
    };
    latencies.sort_by(|a, b| a.total_cmp(b));
    let ms = |b: Option<f64>, a: Option<f64>| b.zip(a).map(|(b, a)| (a - b) * 1e3 / count as f64);
    // Per call of one process (`0` the service, `1` the database server): until settled, and
    // in brackets until the last call answered.
    let per_call = |what: &str, process: usize| {
        let at = |cpu: (Option<f64>, Option<f64>)| [cpu.0, cpu.1][process];
        match (ms(at(before), at(settled)), ms(at(before), at(answered))) {
            (Some(all), Some(during)) => format!(" {what} {all:.3} ms ({during:.3})"),
            _ => format!(" {what} -"),
        }
    };
    let load = match rate {
        Some(rate) => format!("{concurrency:>3} in flight, paced to {rate:.0}/s:"),
        None => format!("{concurrency:>3} in flight"),
    };
    println!(
        "{label:<38} {load} {:>7.0}/s  p50 {:>6.2}  p99 {:>6.2}  p99.9 {:>6.2} ms  CPU per call:{},{}{trips}",
        count as f64 / elapsed.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999),
        per_call("service", 0),
        per_call("database", 1),
    );
}

/// gRPC creates of jobs due far ahead, then as many gets of them.
async fn grpc_calls(service: &Service, label: &str, load: (usize, Option<f64>), count: usize) {
    let client = JobsServiceClient::connect(service.base()).await.unwrap();
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    {
        let (client, ids) = (client.clone(), ids.clone());
        let create = move |i: usize| {
            let (mut client, ids) = (client.clone(), ids.clone());
            async move {
                let request = pb::CreateJobRequest {
                    name: format!("footprint {i}"),
                    schedule_time: Some(prost_types::Timestamp {
                        seconds: 4_070_908_800,
                        nanos: 0,
                    }),
                    job_type: pb::JobType::Email as i32,
                    job_data: email().to_string(),
                    ..Default::default()
                };
                let id = client.create_job(request).await.unwrap().into_inner().id;
                ids.lock().unwrap().push(id);
            }
        };
        let label = format!("{label} gRPC create");
        measured(Meter::of(service), &label, load, count, create).await;
    }
    let ids = Arc::new(ids.lock().unwrap().clone());
    let get = move |i: usize| {
        let mut client = client.clone();
        let id = ids[i % ids.len()].clone();
        async move {
            client.get_job(pb::GetJobRequest { id }).await.unwrap();
        }
    };
    let label = format!("{label} gRPC get");
    measured(Meter::of(service), &label, load, count, get).await;
}

/// REST creates of jobs due far ahead, then as many gets of them.
async fn rest_calls(service: &Service, label: &str, concurrency: usize, count: usize) {
    let load = (concurrency, None);
    let (http, base) = (reqwest::Client::new(), service.base());
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    {
        let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
        let create = move |i: usize| {
            let body = rest_job(&format!("footprint {i}"));
            let request = http.post(format!("{base}/api/v1/jobs")).json(&body).send();
            let ids = ids.clone();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), 201);
                let job: Value = response.json().await.unwrap();
                let id = job["id"].as_str().unwrap().to_owned();
                ids.lock().unwrap().push(id);
            }
        };
        let label = format!("{label} REST create");
        measured(Meter::of(service), &label, load, count, create).await;
    }
    let ids = Arc::new(ids.lock().unwrap().clone());
    let get = move |i: usize| {
        let url = format!("{base}/api/v1/jobs/{}", ids[i % ids.len()]);
        let request = http.get(url).send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    };
    let label = format!("{label} REST get");
    measured(Meter::of(service), &label, load, count, get).await;
}

/// The older service's store work per create and per get, made here with the driver on the
/// same server, so that the database CPU of ours has a floor measured in the same run: one
/// insert of a job document of the older service's shape (the fields `store::mongo::adopt`
/// reads) per create, and one whole-document read by `_id` per get. Its source is not at
/// hand, so this is the least it can have asked of the server; if it wrote more per create,
/// the floor is higher than printed.
async fn older_store_calls(
    uri: &str,
    database: Option<u32>,
    load: (usize, Option<f64>),
    count: usize,
) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let name = format!("footprint_older_{}", uuid::Uuid::new_v4().simple());
    let jobs = client.database(&name).collection::<bson::Document>("jobs");
    let meter = Meter {
        service: None,
        database,
        wire: None,
    };
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    {
        let (jobs, ids) = (jobs.clone(), ids.clone());
        let create = move |i: usize| {
            let (jobs, ids) = (jobs.clone(), ids.clone());
            async move {
                let now = bson::DateTime::now();
                let id = bson::oid::ObjectId::new();
                let document = bson::doc! {
                    "_id": id,
                    "name": format!("footprint {i}"),
                    "description": "",
                    "scheduleTime": bson::DateTime::from_millis(4_070_908_800_000),
                    "createdAt": now,
                    "updatedAt": now,
                    "status": 1_i32,
                    "jobType": 0_i32,
                    "jobData": email().to_string(),
                    "scheduledKey": uuid::Uuid::new_v4().to_string(),
                };
                jobs.insert_one(document).await.unwrap();
                ids.lock().unwrap().push(id);
            }
        };
        let label = "older service's insert";
        measured(meter.clone(), label, load, count, create).await;
    }
    let ids = Arc::new(ids.lock().unwrap().clone());
    let get = move |i: usize| {
        let (jobs, id) = (jobs.clone(), ids[i % ids.len()]);
        async move {
            let found = jobs.find_one(bson::doc! { "_id": id }).await.unwrap();
            assert!(found.is_some());
        }
    };
    let label = "older service's read by _id";
    measured(meter, label, load, count, get).await;
    client.database(&name).drop().await.unwrap();
}

/// The CPU the service and the database server use over `window` with no calls, as a
/// percentage of one core.
async fn idle(service: &Service, label: &str, window: Duration) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let meter = Meter::of(service);
    let before = meter.cpu();
    tokio::time::sleep(window).await;
    let after = meter.cpu();
    let percent = |b: Option<f64>, a: Option<f64>| {
        b.zip(a)
            .map(|(b, a)| (a - b) * 100.0 / window.as_secs_f64())
    };
    let database = match percent(before.1, after.1) {
        Some(used) => format!(", database server {used:.2} %"),
        None => String::new(),
    };
    println!(
        "{label:<38} idle over {} s: service {:.2} % of a core{database}",
        window.as_secs(),
        percent(before.0, after.0).unwrap_or_default(),
    );
}

/// Prints what holding `count` things open (`held`) added to the service's resident memory
/// since it was `before` KiB.
async fn per_held<T>(service: &Service, what: &str, held: Vec<T>, before: u64) {
    let count = held.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = service.rss_kib();
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{what:<38} {count} open: RSS {:.1} → {:.1} MiB, {:.1} KiB each; {:.1} MiB after they closed",
        before as f64 / 1024.0,
        open as f64 / 1024.0,
        open.saturating_sub(before) as f64 / count as f64,
        service.rss_kib() as f64 / 1024.0,
    );
}

/// A new HTTP/1.1 connection that has made `GET path` and read the head of its `200` answer.
async fn opened(service: &Service, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(&service.binary.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: footprint\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).await.unwrap();
    let head = String::from_utf8_lossy(&buffer[..read]);
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    stream
}

/// The memory each open HTTP/1.1 keep-alive connection adds, each having made one request.
async fn http1_connections(service: &Service, count: usize) {
    let before = service.settled_rss_kib().await;
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(opened(service, "/healthz").await);
    }
    per_held(
        service,
        "HTTP/1.1 keep-alive connections",
        connections,
        before,
    )
    .await;
}

/// The memory each open HTTP/2 connection adds, each having made one gRPC call.
async fn http2_connections(service: &Service, count: usize) {
    let before = service.settled_rss_kib().await;
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let mut client = JobsServiceClient::connect(service.base()).await.unwrap();
        let listed = client.list_jobs(pb::ListJobsRequest::default()).await;
        listed.unwrap();
        channels.push(client);
    }
    per_held(service, "HTTP/2 (gRPC) connections", channels, before).await;
}

/// The memory each open event stream (SSE) adds, and that one event reaches them all.
async fn event_streams(service: &Service, count: usize) {
    // Each stream is read by a task of its own, which counts the streams an event reaches.
    let before = service.settled_rss_kib().await;
    let reached = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = opened(service, "/api/v1/events").await;
        let reached = reached.clone();
        streams.push(AbortOnDrop(tokio::spawn(async move {
            let mut buffer = vec![0u8; 16 * 1024];
            let mut counted = false;
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buffer[..read]);
                if !counted && text.contains("scheduler.job.create") {
                    counted = true;
                    reached.fetch_add(1, Ordering::Relaxed);
                }
            }
        })));
    }
    let created = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", service.base()))
        .json(&rest_job("reaches every stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let waited = Instant::now();
    while reached.load(Ordering::Relaxed) < count && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "one create event reached {} of the {count} streams",
        reached.load(Ordering::Relaxed)
    );
    per_held(service, "event streams (SSE)", streams, before).await;
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every figure on one store.
async fn figures(service: &Service, label: &str, quick: bool) {
    let window = Duration::from_secs(if quick { 10 } else { 30 });
    let count = if quick { 500 } else { 2_000 };
    idle(service, &format!("{label}, empty"), window).await;
    for depth in [1, 16, 64, 256] {
        // One caller makes fewer calls: its figure is latency-bound.
        let calls = if depth == 1 { count / 4 } else { count };
        grpc_calls(service, label, (depth, None), calls).await;
    }
    rest_calls(service, label, 16, count).await;
    let stored = count * 3 + count / 4 + count;
    idle(service, &format!("{label}, {stored} jobs stored"), window).await;
}

/// Ours and the older service's store work per create and per get at 16 in flight,
/// alternating five times, so that each pair is read against its neighbours: as fast as each
/// goes, then both paced to [`PACE`] calls a second. The database server is a JVM: its first
/// rounds are also its compiler's warm-up, which is why the later ones are the figures to
/// read. Its CPU per call also falls as calls come faster (one wake-up serves more of them),
/// which the paced pair takes out of the comparison.
async fn against_older(service: &Service, uri: &str, count: usize) {
    for round in 1..=5 {
        println!("round {round}");
        for rate in [None, Some(PACE)] {
            older_store_calls(uri, service.database, (16, rate), count).await;
            grpc_calls(service, "mongodb", (16, rate), count).await;
        }
    }
}

/// The common rate of the paced comparison: about the older service's own (1,390 creates and
/// 2,379 gets a second at 16 in flight in the table).
const PACE: f64 = 2_000.0;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Only the alternating comparison with the older service's store work on MongoDB.
    let against = std::env::args().any(|a| a == "--against-older");
    raise_open_file_limit();
    println!(
        "footprint: release binary, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if against {
        // Skip the embedded store's figures.
        return mongodb_figures(quick, true).await;
    }

    let data = tempfile::tempdir().unwrap();
    let embedded = [
        "--store".to_owned(),
        "embedded".to_owned(),
        "--data-dir".to_owned(),
        data.path().display().to_string(),
    ];
    let service = Service::start(&embedded, None).await;
    figures(&service, "embedded", quick).await;
    drop(service);
    // Each kind in a process of its own, so that memory one kind freed is not reused by the
    // next and counted as nothing.
    let service = Service::start(&embedded, None).await;
    http1_connections(&service, 500).await;
    drop(service);
    let service = Service::start(&embedded, None).await;
    http2_connections(&service, 500).await;
    drop(service);
    let service = Service::start(&embedded, None).await;
    event_streams(&service, 500).await;
    drop(service);
    mongodb_figures(quick, false).await;
}

/// Every figure on MongoDB, or (`against`) only the comparison with the older service's store
/// work, when `MONGODB_URI` is set.
async fn mongodb_figures(quick: bool, against: bool) {
    let Ok(uri) = std::env::var("MONGODB_URI") else {
        println!("MONGODB_URI is not set: no MongoDB figures (./scripts/with-mongo.sh sets one)");
        return;
    };
    // The database server's process: mongo-java-server as `./scripts/with-mongo.sh` starts
    // it, found by its main class and port; a server elsewhere has no CPU figure.
    let port = uri.rsplit(':').next().unwrap_or_default();
    let port = port.split(['/', '?']).next().unwrap_or_default();
    let database = find_process(&["MongoWireServer", port]);
    if database.is_none() {
        println!("the database server is not a local mongo-java-server: no database CPU figures");
    }
    // The flags of a service on MongoDB, in a database of its own.
    let on_mongodb = || {
        vec![
            "--store".to_owned(),
            "mongodb".to_owned(),
            "--database-name".to_owned(),
            format!("footprint_{}", uuid::Uuid::new_v4().simple()),
        ]
    };
    let service = Service::start(&on_mongodb(), database).await;
    if !against {
        figures(&service, "mongodb", quick).await;
    }
    let count = if quick { 500 } else { 2_000 };
    against_older(&service, &uri, count).await;
    drop(service);
    // The same calls once more, by a service that reaches the server through a counting
    // proxy (which slows it, so its rates are not the figures above), on a database of its
    // own: the one above keeps the stopped service's relay lease until it lapses.
    let wire = Arc::new(WireCounter::start(&uri).await);
    let mut counted = on_mongodb();
    counted.extend(["--mongodb-uri".to_owned(), wire.uri()]);
    let mut service = Service::start(&counted, database).await;
    service.wire = Some(wire);
    for rate in [None, Some(PACE)] {
        grpc_calls(&service, "mongodb, counted", (16, rate), count).await;
    }
}
