//! Workers that pull: `POST /api/v1/runs:claim` (and gRPC `ClaimRuns`) hands each open run to
//! one worker at a time, held for its lease; a run whose worker was killed is offered again
//! after the lease with the same run id; a malformed claim is a 400 naming its field and takes
//! nothing; where a run goes follows the job's `delivery`.

use std::{
    collections::{HashMap, HashSet},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::support::{Failures, Service, TestApp, eventually, id_of, in_millis, kafka, sms_job};
use scheduler::grpc::pb;

/// Claims over REST: the status and the runs.
async fn claim(http: &reqwest::Client, base: &str, body: Value) -> (u16, Vec<Value>) {
    let response = http
        .post(format!("{base}/api/v1/runs:claim"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or_default();
    let runs = answer["runs"].as_array().cloned().unwrap_or_default();
    (status, runs)
}

/// Reports a run's result over REST; the status.
async fn report(http: &reqwest::Client, base: &str, run: &Value, status: &str) -> u16 {
    let url = format!(
        "{base}/api/v1/jobs/{}/runs/{}/result",
        run["jobId"].as_str().unwrap(),
        run["runId"].as_str().unwrap()
    );
    http.post(url)
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A one-shot job due in `millis`.
fn due_in(name: &str, millis: i64, extra: Value) -> Value {
    sms_job(name, json!({"runAt": in_millis(millis)}), extra)
}

#[tokio::test]
async fn competing_workers_each_take_every_run_once_and_finish_it() {
    const JOBS: usize = 40;
    let app = TestApp::spawn().await;
    let base = app.url("");
    let mut ids = HashSet::new();
    for i in 0..JOBS {
        ids.insert(id_of(
            &app.create_job(&due_in(
                &format!("pulled {i}"),
                800 + i as i64 * 20,
                json!({}),
            ))
            .await,
        ));
    }
    let taken = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (base, taken) = (base.clone(), taken.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                loop {
                    let (status, runs) = claim(
                        &http,
                        &base,
                        json!({"jobTypes": ["SMS"], "max": 3, "waitSeconds": 2, "leaseSeconds": 30}),
                    )
                    .await;
                    assert_eq!(status, 200);
                    if runs.is_empty() && taken.lock().unwrap().len() >= JOBS {
                        return;
                    }
                    for run in runs {
                        assert!(run["leaseUntil"].is_string(), "{run}");
                        assert_eq!(run["jobType"], "SMS");
                        assert_eq!(run["jobData"]["To"], "+100");
                        taken
                            .lock()
                            .unwrap()
                            .push((worker, run["runId"].as_str().unwrap().to_owned()));
                        assert_eq!(report(&http, &base, &run, "SUCCEEDED").await, 200);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker)
            .await
            .expect("the workers finish")
            .unwrap();
    }
    let taken = taken.lock().unwrap().clone();
    let unique: HashSet<_> = taken.iter().map(|(_, run)| run.clone()).collect();
    assert_eq!(taken.len(), JOBS, "every run taken once: {taken:?}");
    assert_eq!(unique.len(), JOBS);
    let per_worker: HashMap<usize, usize> = taken.iter().fold(HashMap::new(), |mut n, (w, _)| {
        *n.entry(*w).or_default() += 1;
        n
    });
    println!("runs per worker: {per_worker:?}");
    for id in &ids {
        let job = app.get_job(id).await;
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
        let runs = app.runs(id).await;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["delivery"], "pull");
    }
}

#[tokio::test]
async fn a_run_whose_worker_was_killed_is_offered_again_after_its_lease_with_the_same_id() {
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(data.path()).await;
    let job = service
        .create_job(&due_in("killed worker", 300, json!({})))
        .await;
    let id = id_of(&job);
    // A worker process that takes the run, holds it for 3 s, and is killed before it reports.
    let out = data.path().join("taken.json");
    let mut worker = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "curl -sf -X POST {} -H 'content-type: application/json' \
             -d '{{\"waitSeconds\": 20, \"leaseSeconds\": 3}}' > {} && sleep 600",
            service.url("/api/v1/runs:claim"),
            out.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let taken: Value = eventually("the worker to take the run", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        async move { serde_json::from_str::<Value>(&text).ok() }
    })
    .await;
    let run = taken["runs"][0].clone();
    assert_eq!(run["jobId"], id.as_str());
    worker.kill().unwrap();
    worker.wait().unwrap();

    // While its hold lasts, nobody else gets it.
    let http = reqwest::Client::new();
    let base = service.url("");
    let (status, runs) = claim(&http, &base, json!({"waitSeconds": 0})).await;
    assert_eq!((status, runs.len()), (200, 0), "held by the killed worker");
    let job_now: Value = service.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
    assert_eq!(job_now["runs"][0]["leaseUntil"], run["leaseUntil"]);
    // Then it is offered again, as the same run.
    let (status, again) = claim(&http, &base, json!({"waitSeconds": 20})).await;
    assert_eq!(status, 200);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["runId"], run["runId"]);
    assert_eq!(again[0]["attempt"], 1);
    assert_eq!(report(&http, &base, &again[0], "SUCCEEDED").await, 200);
    let job: Value = service.get_json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "SUCCEEDED");
}

#[tokio::test]
async fn a_malformed_claim_is_a_400_naming_its_field_and_takes_nothing() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let id = id_of(&app.create_job(&due_in("waiting", 0, json!({}))).await);
    app.job_with_status(&id, "RUNNING").await;
    let http = reqwest::Client::new();
    let rows: [(Value, &str); 10] = [
        (json!({"max": 0}), "max"),
        (json!({"max": 101}), "max"),
        (json!({"max": "ten"}), "max"),
        (json!({"waitSeconds": -1}), "waitSeconds"),
        (json!({"waitSeconds": 61}), "waitSeconds"),
        (json!({"leaseSeconds": 0}), "leaseSeconds"),
        (json!({"leaseSeconds": 3601}), "leaseSeconds"),
        (json!({"jobTypes": ["FAX"]}), "jobTypes[0]"),
        (json!({"jobTypes": "SMS"}), "jobTypes"),
        (json!({"maxRuns": 1}), "maxRuns"),
    ];
    let mut failures = Failures::new();
    for (body, field) in rows {
        let row = body.to_string();
        let response = http
            .post(format!("{base}/api/v1/runs:claim"))
            .json(&body)
            .send()
            .await
            .unwrap();
        failures.expect_eq(&row, response.status().as_u16(), 400);
        let problem: Value = response.json().await.unwrap_or_default();
        let named = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["field"].as_str().is_some_and(|f| f.starts_with(field)));
        failures.expect(&row, named, format!("{field} not named: {problem}"));
    }
    let text = http
        .post(format!("{base}/api/v1/runs:claim"))
        .header("content-type", "text/plain")
        .body("max=1")
        .send()
        .await
        .unwrap();
    failures.expect_eq("text body", text.status().as_u16(), 415);
    failures.assert_none("malformed claims");
    // Nothing was taken: the run is still offered, to a claim with no body at all.
    let response = http
        .post(format!("{base}/api/v1/runs:claim"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let runs: Value = response.json().await.unwrap();
    assert_eq!(runs["runs"][0]["jobId"], id.as_str());
}

#[tokio::test]
async fn a_grpc_worker_takes_runs_of_its_type_and_a_bad_claim_is_invalid_argument() {
    let app = TestApp::spawn().await;
    let email = id_of(
        &app.create_job(&crate::support::email_job("mail", &in_millis(0)))
            .await,
    );
    let sms = id_of(&app.create_job(&due_in("text", 0, json!({}))).await);
    app.job_with_status(&email, "RUNNING").await;
    app.job_with_status(&sms, "RUNNING").await;
    let mut client = app.grpc().await;
    let taken = client
        .claim_runs(pb::ClaimRunsRequest {
            job_types: vec![pb::JobType::Email as i32],
            max: Some(10),
            wait_seconds: Some(1),
            lease_seconds: Some(30),
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].job_id, email);
    assert!(taken[0].job_data.contains("DestinationAddress"));
    assert!(taken[0].lease_until.is_some());
    use tonic_types::StatusExt;
    let refused = client
        .claim_runs(pb::ClaimRunsRequest {
            wait_seconds: Some(600),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = refused
        .get_error_details()
        .bad_request()
        .expect("field violations")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["wait_seconds"]);
    // The SMS run is still there for a REST worker.
    let (_, runs) = claim(&reqwest::Client::new(), &app.url(""), json!({})).await;
    assert_eq!(runs[0]["jobId"], sms.as_str());
}

#[tokio::test]
async fn with_kafka_a_run_goes_to_kafka_unless_its_job_says_pull() {
    let brokers = kafka::brokers();
    let topics = kafka::TestTopics::new();
    let data = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--store".to_owned(),
        "embedded".to_owned(),
        "--data-dir".to_owned(),
        data.path().display().to_string(),
    ];
    flags.extend(topics.flags(&brokers));
    let service = Service::start_args(&flags).await;
    let to_kafka = id_of(
        &service
            .create_job(&due_in("to kafka", 200, json!({})))
            .await,
    );
    let pulled = id_of(
        &service
            .create_job(&due_in("pulled", 200, json!({"delivery": "pull"})))
            .await,
    );
    let http = reqwest::Client::new();
    let (_, runs) = claim(&http, &service.url(""), json!({"waitSeconds": 20})).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["jobId"], pulled.as_str());
    // Kafka's executors get the one that goes to Kafka, and never the pulled one: its finish
    // (reported here) reaches the update topic, its fire does not reach the run topic.
    assert_eq!(
        report(&http, &service.url(""), &runs[0], "SUCCEEDED").await,
        200
    );
    let reader = kafka::Reader::new(&brokers, &[topics.run(), topics.update()]);
    let read = reader
        .until(Duration::from_secs(30), |read| {
            let keyed = |id: &str, topic: &str| {
                read.iter()
                    .any(|m| m.key.as_deref() == Some(id) && m.topic == topic)
            };
            keyed(&to_kafka, &topics.run()) && keyed(&pulled, &topics.update())
        })
        .await;
    let pulled_runs: Vec<_> = read
        .iter()
        .filter(|m| m.topic == topics.run() && m.key.as_deref() == Some(pulled.as_str()))
        .collect();
    assert!(pulled_runs.is_empty(), "a pulled run went to Kafka too");
    // The one on Kafka is not offered to pulling workers.
    let (_, none) = claim(&http, &service.url(""), json!({"waitSeconds": 0})).await;
    assert!(none.is_empty(), "{none:?}");
}
