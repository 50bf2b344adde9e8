//! The real `scheduler` binary: durability across SIGKILL, a graceful exit on SIGTERM, and
//! start-up refusing bad settings.

use std::{process::Command, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scheduler::{
    app::Application,
    config::Config,
    domain::{Delivery, Event, Job, JobId, JobType, Run},
    jobs::{
        JobFilter, PageRequest,
        ports::{
            Census, Claimed, ClaimedStep, Due, IdempotencyKey, JobStore, JournalBounds, Journaled,
            Lease, Retention, StoreError,
        },
    },
    store::sqlite::SqliteStore,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{
    Failures, Service, at, email_job, eventually, id_of, in_millis, job_from,
    process::scheduler_command,
};

#[tokio::test]
async fn job_created_before_a_sigkill_still_fires_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let due = in_millis(3_000);

    let mut first = Service::start(data.path()).await;
    let id = id_of(&first.create_job(&email_job("survives a crash", &due)).await);
    first.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    first.child.wait().unwrap();
    drop(first);
    let killed_at = chrono::Utc::now();

    // Restart after the due time: the job fires from the store, not from a lost timer.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let second = Service::start(data.path()).await;
    let job = eventually("the job to fire after the restart", || {
        let request = http.get(second.url(&format!("/api/v1/jobs/{id}"))).send();
        async move {
            let job: Value = request.await.ok()?.json().await.ok()?;
            (job["status"] == "RUNNING").then_some(job)
        }
    })
    .await;
    assert_eq!(job["name"], "survives a crash");
    let runs: Value = second.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
    assert_eq!(runs["totalCount"], 1);
    assert_eq!(
        runs["runs"][0]["scheduledFor"], job["schedule"]["runAt"],
        "the run is for the stored due time"
    );
    let fired_at = at(runs["runs"][0]["firedAt"].as_str().unwrap());
    assert!(
        fired_at > killed_at,
        "the first process fired it before the kill"
    );
}

#[tokio::test]
async fn sigterm_stops_the_service_gracefully() {
    let data = tempfile::tempdir().unwrap();
    let mut service = Service::start(data.path()).await;
    let status = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually("the service to exit", || {
        let exited = service.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn a_setting_out_of_its_range_stops_start_up_with_a_line_naming_it() {
    let mut failures = Failures::new();
    for (flag, env, value) in [
        ("--lease-seconds", "SCHEDULER_LEASE_SECONDS", "0"),
        ("--lease-seconds", "SCHEDULER_LEASE_SECONDS", "99999999999"),
        (
            "--request-timeout-seconds",
            "SCHEDULER_REQUEST_TIMEOUT_SECONDS",
            "0",
        ),
        ("--max-body-bytes", "SCHEDULER_MAX_BODY_BYTES", "0"),
        ("--batch-size", "SCHEDULER_BATCH_SIZE", "0"),
        (
            "--event-retention-events",
            "SCHEDULER_EVENT_RETENTION_EVENTS",
            "0",
        ),
        (
            "--event-retention-seconds",
            "SCHEDULER_EVENT_RETENTION_SECONDS",
            "5",
        ),
    ] {
        for (how, mut command) in [
            ("flag", scheduler_command(&[flag, value])),
            ("environment", scheduler_command(&[])),
        ] {
            if how == "environment" {
                command.env(env, value);
            }
            let row = format!("{how} {flag}={value}");
            let output = command.output().expect("the binary runs");
            failures.expect(&row, !output.status.success(), "it started");
            let stderr = String::from_utf8_lossy(&output.stderr);
            failures.expect(&row, stderr.contains(flag), format!("not named: {stderr}"));
        }
    }
    failures.assert_none("settings out of range");
}

/// A store whose claims panic: the scheduler task dies at its first look for due jobs.
struct PanickingStore(SqliteStore);

#[async_trait]
impl JobStore for PanickingStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
    async fn insert(
        &self,
        job: &Job,
        key: Option<&IdempotencyKey>,
        outbox: &[Event],
    ) -> Result<(), StoreError> {
        self.0.insert(job, key, outbox).await
    }
    async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        self.0.find_by_idempotency_key(key).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.0.get(id).await
    }
    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        self.0.list(filter, page).await
    }
    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        outbox: &[Event],
    ) -> Result<(), StoreError> {
        self.0.update(job, expected_version, finished, outbox).await
    }
    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        outbox: &[Event],
    ) -> Result<(), StoreError> {
        self.0.delete(id, expected_version, outbox).await
    }
    async fn due_within(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        self.0.due_within(horizon, limit).await
    }
    async fn claim(
        &self,
        _lease: &Lease,
        _now: DateTime<Utc>,
        _ids: &[JobId],
    ) -> Result<Claimed, StoreError> {
        panic!("a bug in the store adapter")
    }
    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        self.0.record_steps(lease, steps).await
    }
    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        self.0.run_history(job).await
    }
    async fn take_relay_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.0.take_relay_lease(lease, now).await
    }
    async fn offered(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        job_types: &[JobType],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.0.offered(delivery, now, job_types, limit).await
    }
    async fn sequence_events(&self, limit: usize) -> Result<usize, StoreError> {
        self.0.sequence_events(limit).await
    }
    async fn read_journal(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError> {
        self.0.read_journal(after, job, limit).await
    }
    async fn journal_bounds(&self) -> Result<JournalBounds, StoreError> {
        self.0.journal_bounds().await
    }
    async fn trim_journal(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.0.trim_journal(retention, floor, now).await
    }
    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        self.0.cursor(name).await
    }
    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.0.set_cursor(name, seq).await
    }
    async fn census(&self, now: DateTime<Utc>) -> Result<Census, StoreError> {
        self.0.census(now).await
    }
}

#[tokio::test]
async fn a_panicking_background_task_stops_the_service_with_an_error() {
    let inner = SqliteStore::in_memory().unwrap();
    // A job due now: the scheduler's claim of it panics.
    let mut due = job_from(email_job("due now", &in_millis(60_000)));
    due.schedule_time = Some(Utc::now());
    inner.insert(&due, None, &[]).await.unwrap();
    let store = Arc::new(PanickingStore(inner));
    let app = Application::with_store(Config::for_tests(), store)
        .await
        .unwrap();
    let addr = app.local_addr();
    let ended = tokio::time::timeout(Duration::from_secs(20), app.run(CancellationToken::new()))
        .await
        .expect("the service stopped by itself");
    let error = format!("{:#}", ended.unwrap_err());
    assert!(error.contains("scheduler task panicked"), "{error}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

/// The JSON log lines of `log` whose message is `message` and whose job is `job`.
fn lines_of(log: &std::path::Path, message: &str, job: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == message && line["fields"]["job_id"] == job)
        .collect()
}

#[tokio::test]
async fn each_fire_timeout_and_retry_leaves_one_info_line_and_client_errors_none_at_error() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("log");
    let flags = [
        "--store",
        "embedded",
        "--data-dir",
        &data.path().display().to_string(),
        "--log-format",
        "json",
    ]
    .map(String::from);
    let service = Service::start_env(&flags, &[("RUST_LOG", "info".to_owned())], Some(&log)).await;
    let mut body = email_job("logged", &in_millis(0));
    body["runTimeoutSeconds"] = 1.into();
    body["retry"] = serde_json::json!({"maxAttempts": 2, "backoffSeconds": 0});
    body["jobData"]["Message"] = "a secret of the job".into();
    let id = id_of(&service.create_job(&body).await);

    // Attempt 1 fires and times out; attempt 2 is the retry, and times out too.
    let finished = eventually("both attempts to time out", || async {
        let finished = lines_of(&log, "run finished", &id);
        (finished.len() >= 2).then_some(finished)
    })
    .await;
    let fired = lines_of(&log, "run fired", &id);
    let retried = lines_of(&log, "run retried", &id);
    assert_eq!((fired.len(), retried.len(), finished.len()), (1, 1, 2));
    let field = |line: &Value, name: &str| line["fields"][name].clone();
    assert_eq!(field(&fired[0], "attempt"), 1);
    assert_eq!(field(&retried[0], "attempt"), 2);
    for (attempt, line) in [1, 2].into_iter().zip(&finished) {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(field(line, "status"), "TIMED_OUT", "{line}");
        assert_eq!(field(line, "attempt"), attempt, "{line}");
    }
    // Each run's end names the run its fire named; the two attempts are two runs.
    assert_eq!(field(&fired[0], "run_id"), field(&finished[0], "run_id"));
    assert_eq!(field(&retried[0], "run_id"), field(&finished[1], "run_id"));
    assert_ne!(field(&fired[0], "run_id"), field(&retried[0], "run_id"));
    // Client errors on both protocols are the client's, not the service's: no ERROR line.
    let missing = "65f1c0ffee0123456789abcd";
    let response = reqwest::get(service.url(&format!("/api/v1/jobs/{missing}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let mut grpc =
        scheduler::grpc::pb::jobs_service_client::JobsServiceClient::connect(service.url(""))
            .await
            .unwrap();
    let refused = grpc
        .get_job(scheduler::grpc::pb::GetJobRequest { id: missing.into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let refused = grpc
        .get_job(scheduler::grpc::pb::GetJobRequest {
            id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // The log is written as lines come; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("a secret of the job"), "job data in the log");
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .collect();
    assert!(
        errors.is_empty(),
        "client errors logged as ERROR: {errors:?}"
    );
    drop(service);
}
