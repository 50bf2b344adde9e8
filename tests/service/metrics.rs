//! `GET /metrics` after real workloads: fires, their lag and ledger records counted; a step the
//! store refused counted as a claim conflict and not as a fire; Kafka results by outcome, a
//! dead letter among them; requests labelled by route template, never by raw path; every
//! family with its help; the scrape passes the real `promtool check metrics`; and the kit
//! (`deploy/`) queries only metrics a real scrape has, with rules `promtool check rules` passes.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scheduler::{
    config::Config,
    domain::{Delivery, Event, Job, JobId, JobType, Run},
    grpc::pb,
    jobs::{
        JobFilter, PageRequest,
        ports::{
            Census, Claimed, ClaimedStep, Due, IdempotencyKey, JobStore, JournalBounds, Journaled,
            Lease, Retention, StoreError,
        },
    },
    store::sqlite::SqliteStore,
};
use serde_json::{Value, json};

use crate::support::{
    TestApp, email_job, id_of, in_millis,
    kafka::{TestTopics, brokers, produce},
    scrape::{Scrape, run_promtool},
    sms_job,
};

/// Scrapes until `ready` holds, for up to 30 s.
async fn scrape_until(app: &TestApp, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = Scrape::of(app).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A service whose store gauges are counted every 100 ms.
fn counted_often(mut config: Config) -> Config {
    config.metrics_refresh_ms = 100;
    config
}

/// The id of the job's newest run.
async fn newest_run(app: &TestApp, id: &str) -> String {
    app.runs(id).await[0]["runId"]
        .as_str()
        .expect("a run id")
        .to_owned()
}

#[tokio::test]
async fn a_scrape_after_a_workload_counts_fires_lag_records_and_requests_by_route_template() {
    let app = TestApp::spawn_with(counted_often(Config::for_tests())).await;
    // Due a second before it is created: it fires at once, a second late.
    let job = app
        .create_job(&email_job("metered", &in_millis(-1000)))
        .await;
    let id = id_of(&job);
    app.job_with_status(&id, "RUNNING").await;
    let run = newest_run(&app, &id).await;
    let (status, _) = app
        .post_json(
            &format!("/api/v1/jobs/{id}/runs/{run}/result"),
            &json!({"status": "SUCCEEDED"}),
        )
        .await;
    assert_eq!(status, 200);
    app.create_job(&email_job("later", &in_millis(3_600_000)))
        .await;
    let missing = app.http.get(app.url("/no/such/path")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let mut grpc = app.grpc().await;
    grpc.get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .expect("the gRPC read answers");

    let scrape = scrape_until(&app, "the gauges to count both jobs", |s| {
        s.value("scheduler_jobs", &[("status", "SUCCEEDED")]) == 1.0
            && s.value("scheduler_jobs", &[("status", "SCHEDULED")]) == 1.0
    })
    .await;
    let count = |name: &str, labels: &[(&str, &str)]| scrape.value(name, labels);
    assert_eq!(count("scheduler_runs_total", &[("status", "RUNNING")]), 1.0);
    assert_eq!(
        count("scheduler_runs_total", &[("status", "SUCCEEDED")]),
        1.0
    );
    assert_eq!(count("scheduler_runs_total", &[("status", "FAILED")]), 0.0);
    assert_eq!(
        count("scheduler_fire_lag_seconds_count", &[("kind", "once")]),
        1.0
    );
    let lag = count("scheduler_fire_lag_seconds_sum", &[("kind", "once")]);
    assert!((1.0..30.0).contains(&lag), "fired a second late: {lag} s");
    assert_eq!(
        count(
            "scheduler_fire_lag_seconds_bucket",
            &[("kind", "once"), ("le", "0.5")]
        ),
        0.0,
        "a second late is beyond the half-second bucket"
    );
    assert_eq!(
        count(
            "scheduler_run_duration_seconds_count",
            &[("status", "SUCCEEDED")]
        ),
        1.0
    );
    assert!(count("scheduler_claims_total", &[]) >= 1.0);
    assert_eq!(count("scheduler_claim_conflicts_total", &[]), 0.0);
    assert_eq!(count("scheduler_due_jobs", &[]), 0.0);

    let get = [
        ("http_request_method", "GET"),
        ("http_route", "/api/v1/jobs/{id}"),
        ("http_response_status_code", "200"),
    ];
    assert!(count("http_server_request_duration_seconds_count", &get) >= 1.0);
    let created = [
        ("http_request_method", "POST"),
        ("http_route", "/api/v1/jobs"),
        ("http_response_status_code", "201"),
    ];
    assert_eq!(
        count("http_server_request_duration_seconds_count", &created),
        2.0
    );
    let unmatched = [("http_route", ""), ("http_response_status_code", "404")];
    assert_eq!(
        count("http_server_request_duration_seconds_count", &unmatched),
        1.0
    );
    let rpc = [
        ("rpc_method", "proto.JobsService/GetJob"),
        ("rpc_grpc_status_code", "0"),
    ];
    assert_eq!(count("rpc_server_call_duration_seconds_count", &rpc), 1.0);
    assert!(
        count(
            "scheduler_store_operation_duration_seconds_count",
            &[("operation", "claim")]
        ) >= 1.0
    );
    assert!(
        count(
            "scheduler_store_operation_duration_seconds_count",
            &[("operation", "census")]
        ) >= 1.0
    );
    let build = [("version", env!("CARGO_PKG_VERSION")), ("store", "memory")];
    assert_eq!(count("scheduler_build_info", &build), 1.0);
    assert!(count("process_resident_memory_bytes", &[]) > 1e6);
    assert!(count("process_open_fds", &[]) > 0.0);
    assert!(scrape.names().contains("process_cpu_seconds_total"));

    for sample in &scrape.samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains(&id) && !value.contains(&run) && !value.contains("/no/such"),
                "a label holds an id or a raw path: {sample:?}"
            );
        }
    }
    for (family, help) in scrape.help() {
        assert!(help.len() > 20, "{family} says too little: {help:?}");
    }
    let (passed, printed) = run_promtool(&["check", "metrics"], &scrape.text);
    assert!(
        passed,
        "promtool check metrics:\n{printed}\n{}",
        scrape.text
    );
    app.stop().await;
}

/// A real embedded store with a concurrent writer timed in: right after the first claim that
/// takes a job, the job is changed (as an API update racing the fire would), so the claim's
/// step no longer matches the stored version and the store refuses it.
struct RacedStore {
    inner: SqliteStore,
    raced: AtomicBool,
}

#[async_trait]
impl JobStore for RacedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn insert(
        &self,
        job: &Job,
        key: Option<&IdempotencyKey>,
        outbox: &[Event],
    ) -> Result<(), StoreError> {
        self.inner.insert(job, key, outbox).await
    }
    async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        self.inner.find_by_idempotency_key(key).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        self.inner.list(filter, page).await
    }
    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        outbox: &[Event],
    ) -> Result<(), StoreError> {
        self.inner
            .update(job, expected_version, finished, outbox)
            .await
    }
    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        outbox: &[Event],
    ) -> Result<(), StoreError> {
        self.inner.delete(id, expected_version, outbox).await
    }
    async fn due_within(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        self.inner.due_within(horizon, limit).await
    }
    async fn claim(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ids: &[JobId],
    ) -> Result<Claimed, StoreError> {
        let claimed = self.inner.claim(lease, now, ids).await?;
        let claims = &claimed.claims;
        if !claims.is_empty() && !self.raced.swap(true, Ordering::SeqCst) {
            for claim in claims {
                let mut changed = claim.job.clone();
                changed.description = "changed while it was claimed".into();
                changed.touch(Utc::now());
                self.inner
                    .update(&changed, claim.job.version, &[], &[])
                    .await?;
            }
        }
        Ok(claimed)
    }
    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        self.inner.record_steps(lease, steps).await
    }
    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        self.inner.run_history(job).await
    }
    async fn take_relay_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.take_relay_lease(lease, now).await
    }
    async fn offered(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        job_types: &[JobType],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.inner.offered(delivery, now, job_types, limit).await
    }
    async fn sequence_events(&self, limit: usize) -> Result<usize, StoreError> {
        self.inner.sequence_events(limit).await
    }
    async fn read_journal(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError> {
        self.inner.read_journal(after, job, limit).await
    }
    async fn journal_bounds(&self) -> Result<JournalBounds, StoreError> {
        self.inner.journal_bounds().await
    }
    async fn trim_journal(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.trim_journal(retention, floor, now).await
    }
    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        self.inner.cursor(name).await
    }
    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.inner.set_cursor(name, seq).await
    }
    async fn census(&self, now: DateTime<Utc>) -> Result<Census, StoreError> {
        self.inner.census(now).await
    }
}

#[tokio::test]
async fn a_step_the_store_refused_after_its_claim_counts_as_a_conflict_and_not_as_a_fire() {
    let store = Arc::new(RacedStore {
        inner: SqliteStore::in_memory().unwrap(),
        raced: AtomicBool::new(false),
    });
    let app = TestApp::spawn_with_store(Config::for_tests(), store.clone()).await;
    let job = app.create_job(&email_job("raced", &in_millis(-10))).await;
    let id = id_of(&job);
    let fired = app.job_with_status(&id, "RUNNING").await;
    assert!(store.raced.load(Ordering::SeqCst), "the race was run");
    assert_eq!(fired["description"], "changed while it was claimed");
    assert_eq!(
        app.runs(&id).await.len(),
        1,
        "fired once, by the next claim"
    );

    let scrape = Scrape::of(&app).await;
    assert_eq!(scrape.value("scheduler_claim_conflicts_total", &[]), 1.0);
    assert_eq!(scrape.value("scheduler_claims_total", &[]), 2.0);
    assert_eq!(
        scrape.value("scheduler_runs_total", &[("status", "RUNNING")]),
        1.0,
        "the refused step fired nothing"
    );
    assert_eq!(
        scrape.value("scheduler_fire_lag_seconds_count", &[("kind", "once")]),
        1.0
    );
    app.stop().await;
}

/// The store's gauges are counted when a scrape asks for them and at most once per
/// `--metrics-refresh-ms`: an idle replica nobody scrapes counts nothing, and scrapes that
/// arrive together share one count.
#[tokio::test]
async fn the_store_is_counted_only_when_scraped_and_once_for_scrapes_at_once() {
    let mut config = Config::for_tests();
    config.metrics_refresh_ms = 1000;
    let app = TestApp::spawn_with(config).await;
    // Longer than the refresh: an interval would have counted by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scrapes = futures::future::join_all((0..8).map(|_| Scrape::of(&app))).await;
    for scrape in &scrapes {
        assert_eq!(
            scrape.value(
                "scheduler_store_operation_duration_seconds_count",
                &[("operation", "census")]
            ),
            1.0,
            "one count, made for the first scrape and shared by the rest:\n{}",
            scrape.text
        );
        assert_eq!(
            scrape.value("scheduler_jobs", &[("status", "SCHEDULED")]),
            0.0
        );
    }
    app.create_job(&email_job("counted", &in_millis(600_000)))
        .await;
    let counted = scrape_until(&app, "the new job counted at a later scrape", |s| {
        s.value("scheduler_jobs", &[("status", "SCHEDULED")]) == 1.0
    })
    .await;
    assert!(
        counted.value(
            "scheduler_store_operation_duration_seconds_count",
            &[("operation", "census")]
        ) >= 2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn with_metrics_off_nothing_is_served_at_metrics() {
    let mut config = Config::for_tests();
    config.metrics = false;
    let app = TestApp::spawn_with(config).await;
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

/// A Kafka workload, and a scrape once its results are all counted: one job fires and its
/// run message goes out, it is read over gRPC; then its result arrives, the same again, a different one for the
/// finished run, and a message that is not JSON.
async fn scrape_after_a_kafka_workload() -> (TestApp, TestTopics, Scrape) {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let app = TestApp::spawn_with(counted_often(topics.config(&brokers))).await;
    let job = app
        .create_job(&email_job("through kafka", &in_millis(-500)))
        .await;
    let id = id_of(&job);
    app.job_with_status(&id, "RUNNING").await;
    let mut grpc = app.grpc().await;
    grpc.get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .expect("the gRPC read answers");
    let run = newest_run(&app, &id).await;
    let result = |status: i32| json!({"Id": id, "RunId": run, "Status": status}).to_string();
    for payload in [result(4), result(4), result(5), "not json".to_owned()] {
        produce(&brokers, &topics.result(), &id, Some(payload.as_bytes())).await;
    }
    let run_topic = topics.run();
    let result_topic = topics.result();
    let scrape = scrape_until(&app, "every result and the consumer lag counted", |s| {
        let outcome = |o: &str| s.value("scheduler_results_total", &[("outcome", o)]);
        outcome("applied") == 1.0
            && outcome("duplicate") == 1.0
            && outcome("ignored") == 1.0
            && outcome("dead_lettered") == 1.0
            && s.value(
                "scheduler_kafka_messages_published_total",
                &[("topic", &run_topic)],
            ) >= 1.0
            && s.matching(
                "scheduler_result_consumer_lag",
                &[("topic", &result_topic), ("partition", "0")],
            )
            .any(|lag| lag.value == 0.0)
            && s.value("scheduler_outbox_pending_events", &[]) == 0.0
    })
    .await;
    (app, topics, scrape)
}

#[tokio::test]
async fn kafka_results_count_by_outcome_a_dead_letter_among_them_and_publishes_by_topic() {
    let (app, topics, scrape) = scrape_after_a_kafka_workload().await;
    assert_eq!(
        scrape.value("scheduler_kafka_publish_errors_total", &[]),
        0.0
    );
    let sends = scrape.value("scheduler_kafka_publish_duration_seconds_count", &[]);
    let published = scrape.value("scheduler_kafka_messages_published_total", &[]);
    assert_eq!(sends, published, "every send is timed");
    assert!(
        scrape.value(
            "scheduler_kafka_messages_published_total",
            &[("topic", &topics.create())]
        ) >= 1.0
    );
    assert_eq!(
        scrape.value("scheduler_runs_total", &[("status", "SUCCEEDED")]),
        1.0,
        "the duplicate closed nothing again"
    );
    let (passed, printed) = run_promtool(&["check", "metrics"], &scrape.text);
    assert!(passed, "promtool check metrics:\n{printed}");
    app.stop().await;
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut in_label_or_string = false;
    for c in expr.chars().chain([' ']) {
        match c {
            '"' | '{' | '}' => {
                if c == '{' || (c == '"' && !in_label_or_string) {
                    in_label_or_string = true;
                } else if c == '}' {
                    in_label_or_string = false;
                }
                word.clear();
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => word.push(c),
            _ => {
                let known = ["scheduler_", "http_server_", "rpc_server_", "process_"];
                if !in_label_or_string && known.iter().any(|p| word.starts_with(p)) {
                    names.insert(word.clone());
                }
                word.clear();
            }
        }
    }
    names
}

/// Every `expr` in a JSON document, at any depth.
fn exprs_in(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs_in(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs_in(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_metrics_a_real_scrape_has() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/scheduler.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    exprs_in(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has its panels: {exprs:?}");
    let rules_file = root.join("deploy/prometheus/alerts.yml");
    let rules = std::fs::read_to_string(&rules_file).unwrap();
    let rule_docs = yaml_rust2::YamlLoader::load_from_str(&rules).expect("the rules are YAML");
    let groups = rule_docs[0]["groups"].as_vec().expect("rule groups");
    let mut alerts = 0;
    for group in groups {
        for rule in group["rules"].as_vec().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("an expr").to_owned());
            alerts += 1;
        }
    }
    assert!(alerts >= 4, "the obvious failures have alerts");

    let (app, _topics, scrape) = scrape_after_a_kafka_workload().await;
    let present = scrape.names();
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        queried.extend(metric_names(expr));
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let absent: Vec<_> = queried
        .iter()
        .filter(|name| !present.contains(name.as_str()))
        .collect();
    assert!(absent.is_empty(), "queried but not in a scrape: {absent:?}");

    let (passed, printed) = run_promtool(&["check", "rules", rules_file.to_str().unwrap()], "");
    assert!(passed, "promtool check rules:\n{printed}");
    app.stop().await;
}

#[tokio::test]
async fn a_resume_that_fires_a_time_missed_while_paused_counts_a_misfire() {
    let app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "paused every second",
            json!({"intervalSeconds": 1}),
            json!({"misfirePolicy": "FIRE_ONCE", "overlapPolicy": "ALLOW"}),
        ))
        .await;
    let id = id_of(&job);
    let (status, _) = app
        .post_json(&format!("/api/v1/jobs/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let before = Scrape::of(&app)
        .await
        .value("scheduler_misfires_total", &[("policy", "FIRE_ONCE")]);
    // Its due times pass while it is paused; resuming fires the latest once, late.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (status, _) = app
        .post_json(&format!("/api/v1/jobs/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let runs = app.runs(&id).await;
    assert!(!runs.is_empty(), "the resume fired the missed time");
    let after = Scrape::of(&app)
        .await
        .value("scheduler_misfires_total", &[("policy", "FIRE_ONCE")]);
    assert!(after >= before + 1.0, "misfires {before} -> {after}");
}
