//! Benchmark of the whole service: create and get throughput over REST and gRPC with a fixed
//! concurrency, and the fire lag of 1,000 jobs due in the same second. With `KAFKA_BROKERS`
//! set, also the Kafka path: events per second through the outbox to the broker, the fire lag
//! from due time to the run message's broker timestamp, and how fast results are applied.
//!
//! Run with `cargo bench --bench service` (add `-- --quick` for a smaller run, `-- --kafka-only`
//! for the Kafka figures alone). It prints
//! figures; it asserts nothing about speed. Each store is measured in a fresh service on a free
//! loopback port, as a client would see it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use scheduler::{
    app::Application,
    config::{Config, StoreKind},
    domain::{Job, JobInput},
    events::EventKind,
    grpc::pb::{self, jobs_service_client::JobsServiceClient},
    store::{Fire, JobStore, Lease, mongo::MongoStore, sqlite::SqliteStore},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 16;

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

/// Latency percentiles of a sample, in milliseconds.
fn percentiles(mut sample: Vec<f64>) -> (f64, f64, f64) {
    if sample.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    sample.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), *sample.last().unwrap())
}

fn report(label: &str, count: usize, elapsed: Duration, latencies: Vec<f64>) {
    let (p50, p99, max) = percentiles(latencies);
    println!(
        "{label:<34} {:>8.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   max {max:>7.2} ms   ({count} requests, {CONCURRENCY} concurrent)",
        count as f64 / elapsed.as_secs_f64()
    );
}

/// Runs `count` calls of `call(i)` from `CONCURRENCY` tasks; returns elapsed time and latencies.
async fn drive<F, Fut>(count: usize, call: F) -> (Duration, Vec<f64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (worker..count).step_by(CONCURRENCY) {
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

struct Running {
    app_addr: std::net::SocketAddr,
    jobs: scheduler::jobs::Jobs,
    bus: scheduler::events::EventBus,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
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
    let data = tempfile::tempdir().unwrap();
    let config = config_for(store, &data);
    let app = Application::build(config).await.unwrap();
    let running = Running {
        app_addr: app.local_addr(),
        jobs: app.jobs(),
        bus: app.events(),
        shutdown: CancellationToken::new(),
        _data: data,
    };
    tokio::spawn(app.run(running.shutdown.clone()));
    running
}

async fn rest_throughput(service: &Running, label: &str, count: usize) {
    let http = reqwest::Client::new();
    let base = format!("http://{}", service.app_addr);
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
    let (elapsed, latencies) = {
        let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
        drive(count, move |i| {
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
    report(&format!("{label} REST create"), count, elapsed, latencies);
    let ids = Arc::new(ids.lock().unwrap().clone());
    let (elapsed, latencies) = drive(count, move |i| {
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
    report(&format!("{label} REST get"), count, elapsed, latencies);
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
                        description: String::new(),
                        schedule_time: Some(prost_types::Timestamp {
                            seconds: 4_070_908_800,
                            nanos: 0,
                        }),
                        job_type: pb::JobType::Sms as i32,
                        job_data: "{}".into(),
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

/// Creates `count` jobs due within one second (`spread`) or at one instant, and measures the
/// lag from each due time to its run event.
async fn fire_lag(service: &Running, label: &str, count: usize, spread: bool) {
    let mut events = service.bus.subscribe();
    // Far enough ahead that every create is stored before the first is due.
    let due = Utc::now() + chrono::Duration::seconds(8);
    let due = due - chrono::Duration::nanoseconds(due.timestamp_subsec_nanos() as i64);
    let jobs = service.jobs.clone();
    drive(count, move |i| {
        let offset = if spread { (i * 1000 / count) as i64 } else { 0 };
        let at = (due + chrono::Duration::milliseconds(offset))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let input: JobInput = serde_json::from_value(email_job(&format!("lag {i}"), &at)).unwrap();
        let jobs = jobs.clone();
        async move {
            jobs.create(input, None).await.unwrap();
        }
    })
    .await;
    let created_by = Utc::now();
    if created_by >= due {
        println!("{label}: creating {count} jobs took past their due time; lag not measured");
        return;
    }
    let mut lags = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.len() < count && Instant::now() < deadline {
        let Ok(Ok(event)) = tokio::time::timeout_at(deadline.into(), events.recv()).await else {
            break;
        };
        if event.kind != EventKind::Run {
            continue;
        }
        let received = Utc::now();
        let run = event.run.as_ref().unwrap();
        lags.push((received - run.scheduled_for).num_microseconds().unwrap() as f64 / 1e3);
    }
    let fired = lags.len();
    let (p50, p99, max) = percentiles(lags);
    println!(
        "{label:<34} fire lag p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   max {max:>7.2} ms   ({fired}/{count} fired, due {})",
        if spread {
            "across one second"
        } else {
            "at one instant"
        }
    );
}

/// Store-level figures without HTTP: insert throughput, then how fast one scheduler claims
/// and fires due jobs in batches of 200.
async fn claim_throughput(store_kind: StoreKind, label: &str, count: usize) {
    let data = tempfile::tempdir().unwrap();
    let config = config_for(store_kind, &data);
    let store: Arc<dyn JobStore> = match store_kind {
        StoreKind::Embedded => Arc::new(SqliteStore::open(&config.data_dir).unwrap()),
        StoreKind::Memory => Arc::new(SqliteStore::in_memory().unwrap()),
        StoreKind::Mongodb => Arc::new(
            MongoStore::connect(config.mongo_settings().await.unwrap())
                .await
                .unwrap(),
        ),
    };
    let now = Utc::now();
    let at =
        (now - chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let start = Instant::now();
    for i in 0..count {
        let input: JobInput =
            serde_json::from_value(email_job(&format!("claim {i}"), &at)).unwrap();
        let job = Job::new(input.parse().unwrap(), now);
        store.insert(&job, None, None).await.unwrap();
    }
    let inserted = start.elapsed();
    let lease = Lease {
        owner: "bench".into(),
        until: now + chrono::Duration::minutes(10),
    };
    let start = Instant::now();
    let mut fired = 0;
    loop {
        let claimed = store.claim_due(&lease, Utc::now(), 200).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        let fires: Vec<Fire> = claimed
            .iter()
            .map(|job| job.fired(Utc::now()).into())
            .collect();
        fired += store.record_fires(&lease, &fires).await.unwrap().len();
    }
    let claimed = start.elapsed();
    println!(
        "{label:<34} store insert {:>8.0} jobs/s (one at a time)   claim+fire {:>8.0} jobs/s ({fired} in batches of 200)",
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

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `-- --quick` makes a smaller run.
    let quick = std::env::args().any(|a| a == "--quick");
    let count = if quick { 500 } else { 4000 };
    println!(
        "scheduler benchmark: {} cores, concurrency {CONCURRENCY}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut stores = vec![
        (StoreKind::Embedded, "embedded"),
        (StoreKind::Memory, "memory"),
    ];
    let kafka_only = std::env::args().any(|a| a == "--kafka-only");
    match std::env::var("KAFKA_BROKERS") {
        Ok(brokers) => {
            kafka_path(&brokers, StoreKind::Embedded, "embedded", count).await;
            kafka_path(&brokers, StoreKind::Memory, "memory", count).await;
        }
        Err(_) => {
            println!("KAFKA_BROKERS is not set: no Kafka figures (./scripts/bench.sh provides one)")
        }
    }
    if kafka_only {
        return;
    }
    if std::env::var_os("MONGODB_URI").is_some() {
        stores.push((StoreKind::Mongodb, "mongodb"));
    } else {
        println!("MONGODB_URI is not set: no MongoDB figures (./scripts/bench.sh provides one)");
    }
    for (store, label) in stores {
        claim_throughput(store, label, count).await;
        let service = start(store).await;
        rest_throughput(&service, label, count).await;
        list_latency(&service, label, count / 4).await;
        grpc_throughput(&service, label, count).await;
        fire_lag(&service, &format!("{label} 1000 due"), 1000, true).await;
        fire_lag(&service, &format!("{label} 1000 due"), 1000, false).await;
        service.shutdown.cancel();
        println!("{label}: process RSS {:.1} MiB", rss_mib());
    }
}

/// The Kafka path on `store`, with topics of its own.
async fn kafka_path(brokers: &str, store: StoreKind, label: &str, count: usize) {
    use rdkafka::{
        ClientConfig, Message, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer, StreamConsumer},
        producer::{FutureProducer, FutureRecord},
        util::Timeout,
    };
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let data = tempfile::tempdir().unwrap();
    let mut config = config_for(store, &data);
    config.kafka_brokers = Some(brokers.to_owned());
    config.topic_job_create = format!("{prefix}-create");
    config.topic_job_update = format!("{prefix}-update");
    config.topic_job_run = format!("{prefix}-run");
    config.topic_job_run_result = format!("{prefix}-result");
    config.topic_job_run_result_dlq = format!("{prefix}-dlq");
    config.topic_job_run_result_consumer_group_id = format!("{prefix}-group");
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
            jobs.create(input, None).await.unwrap();
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
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{prefix}-reader"))
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(&settings.topics.run.name, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&partitions).unwrap();
    let due = Utc::now() + chrono::Duration::seconds(8);
    let due = due - chrono::Duration::nanoseconds(due.timestamp_subsec_nanos() as i64);
    let creator = jobs.clone();
    drive(fires, move |i| {
        let at = (due + chrono::Duration::milliseconds((i * 1000 / fires) as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let input: JobInput =
            serde_json::from_value(email_job(&format!("kafka lag {i}"), &at)).unwrap();
        let jobs = creator.clone();
        async move {
            jobs.create(input, None).await.unwrap();
        }
    })
    .await;
    let mut lags = Vec::with_capacity(fires);
    let mut fired_ids = Vec::with_capacity(fires);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.len() < fires && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout_at(deadline.into(), reader.recv()).await else {
            break;
        };
        let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let scheduled =
            scheduler::domain::parse_time(value["ScheduledFor"].as_str().unwrap()).unwrap();
        let produced = message.timestamp().to_millis().unwrap();
        lags.push((produced - scheduled.timestamp_millis()) as f64);
        fired_ids.push(value["Id"].as_str().unwrap().to_owned());
    }
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
    let filter = scheduler::store::JobFilter {
        status: Some(scheduler::domain::JobStatus::Succeeded),
        ..Default::default()
    };
    let page = scheduler::store::PageRequest { page: 1, size: 1 };
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
