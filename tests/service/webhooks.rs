//! Webhooks: each run of a job with a webhook is POSTed to it, signed per the Standard Webhooks
//! spec; the target's answer (2xx, `FAILED`, 202, another status, none in time, a redirect)
//! decides the run's end; only allowed hosts are called, and a job naming another is refused;
//! the secret is never shown again.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Failures, Service, TestApp, eventually, id_of, in_millis, sms_job};

/// A secret of the Standard Webhooks shape.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One call the target received.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A local HTTP server that records every call and answers by its path.
struct Target {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Target {
    async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/hook/{kind}", post(answer))
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, calls }
    }

    fn url(&self, kind: &str) -> String {
        format!("http://{}/hook/{kind}", self.addr)
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn calls_to(&self, kind: &str) -> Vec<Call> {
        let path = format!("/hook/{kind}");
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

async fn answer(
    State(calls): State<Arc<Mutex<Vec<Call>>>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    calls.lock().unwrap().push(Call {
        path: format!("/hook/{kind}"),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
    });
    match kind.as_str() {
        "ok" => StatusCode::OK.into_response(),
        "output" => axum::Json(json!({"status": "SUCCEEDED", "output": "sent 3"})).into_response(),
        "refused" => {
            axum::Json(json!({"status": "FAILED", "error": "mailbox full"})).into_response()
        }
        "broken" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(4)).await;
            StatusCode::OK.into_response()
        }
        "redirect" => (StatusCode::FOUND, [("location", "/hook/landing")]).into_response(),
        "accepted" => StatusCode::ACCEPTED.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A service that may call `target`, with calls timing out after 1 s.
async fn service_for(target: &Target) -> TestApp {
    let mut config = scheduler::config::Config::for_tests();
    config.webhook_allowed_hosts = target.host();
    config.webhook_timeout_seconds = 1;
    TestApp::spawn_with(config).await
}

/// A job due at once whose runs are POSTed to `url`, with two attempts.
fn hooked(name: &str, url: &str) -> Value {
    sms_job(
        name,
        json!({"runAt": in_millis(0)}),
        json!({
            "webhook": {"url": url, "headers": {"X-Team": "ops"}, "secret": SECRET},
            "retry": {"maxAttempts": 2, "backoffSeconds": 0},
        }),
    )
}

/// The Standard Webhooks signature of a call, computed here from the spec.
fn expected_signature(call: &Call) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{}",
        call.headers["webhook-id"], call.headers["webhook-timestamp"], call.body
    );
    mac.update(signed.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[tokio::test]
async fn each_run_is_posted_signed_and_the_target_s_answer_decides_how_it_ends() {
    let target = Target::start().await;
    let app = service_for(&target).await;
    let mut ids = HashMap::new();
    for kind in [
        "ok", "output", "refused", "broken", "slow", "redirect", "accepted",
    ] {
        let job = app
            .create_job(&hooked(&format!("calls {kind}"), &target.url(kind)))
            .await;
        assert_eq!(job["webhook"]["url"], target.url(kind));
        ids.insert(kind, id_of(&job));
    }
    // How each ends: the run statuses newest first, and the job's status.
    let ends = [
        ("ok", vec!["SUCCEEDED"], "SUCCEEDED"),
        ("output", vec!["SUCCEEDED"], "SUCCEEDED"),
        ("refused", vec!["FAILED", "FAILED"], "FAILED"),
        ("broken", vec!["FAILED", "FAILED"], "FAILED"),
        ("slow", vec!["FAILED", "FAILED"], "FAILED"),
        ("redirect", vec!["FAILED", "FAILED"], "FAILED"),
    ];
    let mut failures = Failures::new();
    for (kind, runs, status) in &ends {
        let id = &ids[kind];
        let job = app.job_with_status(id, status).await;
        let listed = app.runs(id).await;
        let statuses: Vec<&str> = listed.iter().filter_map(|r| r["status"].as_str()).collect();
        failures.expect_eq(*kind, statuses, runs.clone());
        failures.expect(
            *kind,
            listed.iter().all(|r| r["delivery"] == "webhook"),
            "delivery",
        );
        failures.expect_eq(
            format!("{kind}: calls"),
            target.calls_to(kind).len(),
            runs.len(),
        );
        let error = listed[0]["error"].as_str().unwrap_or_default().to_owned();
        let expected_error = match *kind {
            "refused" => "mailbox full",
            "broken" => "the webhook answered 503",
            "slow" => "the webhook did not answer within 1 s",
            "redirect" => "the webhook answered 302 (redirects are not followed)",
            _ => "",
        };
        failures.expect_eq(format!("{kind}: error"), error.as_str(), expected_error);
        failures.expect(*kind, job["webhook"]["signed"] == true, "signed");
    }
    failures.expect_eq(
        "output",
        app.runs(&ids["output"]).await[0]["output"].as_str(),
        Some("sent 3"),
    );
    failures.expect(
        "redirect",
        target.calls_to("landing").is_empty(),
        "a redirect was followed",
    );
    // 202: the run stays open for the target to report, and is not called again.
    let accepted = &ids["accepted"];
    eventually("the accepted call", || async {
        (!target.calls_to("accepted").is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = app.runs(accepted).await;
    failures.expect_eq(
        "accepted: open",
        open[0]["status"].as_str(),
        Some("RUNNING"),
    );
    failures.expect_eq("accepted: calls", target.calls_to("accepted").len(), 1);
    let (status, _) = app
        .post_json(
            &format!(
                "/api/v1/jobs/{accepted}/runs/{}/result",
                open[0]["runId"].as_str().unwrap()
            ),
            &json!({"status": "SUCCEEDED"}),
        )
        .await;
    failures.expect_eq("accepted: reported", status, 200);
    app.job_with_status(accepted, "SUCCEEDED").await;

    // Every call: signed per the spec, the run's id as webhook-id, the job's header, the run
    // and the job in the body, never the secret.
    for call in target.calls.lock().unwrap().iter() {
        let body: Value = serde_json::from_str(&call.body).unwrap();
        failures.expect_eq(
            &call.path,
            call.headers["webhook-id"].as_str(),
            body["run"]["runId"].as_str().unwrap(),
        );
        failures.expect_eq(
            &call.path,
            call.headers["webhook-signature"].clone(),
            expected_signature(call),
        );
        let sent: i64 = call.headers["webhook-timestamp"].parse().unwrap();
        failures.expect(
            &call.path,
            (chrono::Utc::now().timestamp() - sent).abs() < 60,
            "timestamp",
        );
        failures.expect_eq(&call.path, call.headers["x-team"].as_str(), "ops");
        failures.expect_eq(
            &call.path,
            call.headers["content-type"].as_str(),
            "application/json",
        );
        failures.expect_eq(&call.path, body["type"].as_str(), Some("scheduler.job.run"));
        failures.expect_eq(
            &call.path,
            body["job"]["id"].as_str(),
            body["run"]["jobId"].as_str(),
        );
        failures.expect(
            &call.path,
            !call.body.contains("whsec_"),
            "the secret was sent",
        );
    }
    failures.assert_none("webhook answers");
}

#[tokio::test]
async fn a_webhook_the_service_may_not_call_is_refused_and_nothing_is_stored() {
    let target = Target::start().await;
    let open = TestApp::spawn().await;
    let allowed = service_for(&target).await;
    let rows: Vec<(&TestApp, Value, &str)> = vec![
        (&open, json!({"url": target.url("ok")}), "webhook.url"),
        (
            &allowed,
            json!({"url": "http://169.254.169.254/latest"}),
            "webhook.url",
        ),
        (
            &allowed,
            json!({"url": "http://localhost:1/x"}),
            "webhook.url",
        ),
        (
            &allowed,
            json!({"url": "file:///etc/passwd"}),
            "webhook.url",
        ),
        (
            &allowed,
            json!({"url": target.url("ok"), "secret": "hunter2"}),
            "webhook.secret",
        ),
        (
            &allowed,
            json!({"url": target.url("ok"), "headers": {"Host": "evil"}}),
            "webhook.headers.Host",
        ),
        (
            &allowed,
            json!({"url": target.url("ok"), "extra": 1}),
            "webhook.extra",
        ),
        (&allowed, json!("not an object"), "webhook"),
    ];
    let mut failures = Failures::new();
    for (app, webhook, field) in &rows {
        let body = sms_job(
            "refused",
            json!({"runAt": in_millis(0)}),
            json!({"webhook": webhook}),
        );
        let response = app.post_job(&body).await;
        let row = webhook.to_string();
        failures.expect_eq(&row, response.status().as_u16(), 400);
        let problem: Value = response.json().await.unwrap_or_default();
        failures.expect_eq(&row, problem["errors"][0]["field"].as_str(), Some(*field));
        failures.expect(
            &row,
            !problem.to_string().contains("hunter2"),
            "the secret echoed",
        );
    }
    // A webhook delivery needs a webhook.
    let response = allowed
        .post_job(&sms_job(
            "no hook",
            json!({"runAt": in_millis(0)}),
            json!({"delivery": "webhook"}),
        ))
        .await;
    failures.expect_eq(
        "delivery webhook without one",
        response.status().as_u16(),
        400,
    );
    failures.assert_none("refused webhooks");
    assert_eq!(open.job_count().await, 0);
    assert_eq!(allowed.job_count().await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        target.calls.lock().unwrap().is_empty(),
        "nothing was called"
    );
}

#[tokio::test]
async fn the_secret_is_written_once_and_never_shown_by_a_read_an_event_or_a_log() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.txt");
    let service = Service::start_env(
        &[
            "--store".into(),
            "embedded".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--webhook-allowed-hosts".into(),
            target.host(),
            "--log-format".into(),
            "json".into(),
        ],
        &[("RUST_LOG", "debug".to_owned())],
        Some(&log),
    )
    .await;
    let http = reqwest::Client::new();
    let mut events = crate::support::EventClient::open(&service.url("/api/v1/events"), None).await;
    let job = service
        .create_job(&sms_job(
            "secretive",
            json!({"runAt": in_millis(300)}),
            json!({"webhook": {"url": target.url("ok"), "headers": {"Authorization": "Bearer t0ps3cret"}, "secret": SECRET}}),
        ))
        .await;
    let id = id_of(&job);
    let mut seen = vec![job.to_string()];
    // The secret stays with the job: a change of the URL keeps it, and calls are signed.
    let patched = http
        .patch(service.url(&format!("/api/v1/jobs/{id}")))
        .json(&json!({"webhook": {"url": target.url("output")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    seen.push(patched.text().await.unwrap());
    eventually("the call", || async {
        (!target.calls_to("output").is_empty()).then_some(())
    })
    .await;
    let call = target.calls_to("output")[0].clone();
    assert_eq!(call.headers["webhook-signature"], expected_signature(&call));
    assert_eq!(call.headers["authorization"], "Bearer t0ps3cret");
    for path in [
        format!("/api/v1/jobs/{id}"),
        "/api/v1/jobs".to_owned(),
        format!("/api/v1/jobs/{id}/runs"),
    ] {
        seen.push(
            http.get(service.url(&path))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    for message in events.take(3).await {
        seen.push(message.data.to_string());
    }
    let mut client =
        scheduler::grpc::pb::jobs_service_client::JobsServiceClient::connect(service.url(""))
            .await
            .unwrap();
    let grpc = client
        .get_job(scheduler::grpc::pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("{grpc:?}"));
    seen.push(std::fs::read_to_string(&log).unwrap());
    for text in &seen {
        assert!(
            !text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "the secret shown: {text}"
        );
        assert!(!text.contains("t0ps3cret"), "a header value shown: {text}");
    }
    let read: Value = serde_json::from_str(&seen[2]).unwrap();
    assert_eq!(read["webhook"]["headerNames"], json!(["Authorization"]));
    assert_eq!(read["webhook"]["signed"], true);
}

/// Takes runs from `base` and reports each SUCCEEDED until `stop`; with `vanish_after`, takes
/// that many batches more and then vanishes without reporting them (as a killed worker).
fn pulling_worker(
    base: Arc<Mutex<String>>,
    done: Arc<Mutex<Vec<String>>>,
    vanish_after: Option<usize>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut batches = 0;
        while !stop.is_cancelled() {
            let url = format!("{}/api/v1/runs:claim", base.lock().unwrap());
            let answer = http
                .post(url)
                .json(&json!({"max": 2, "waitSeconds": 1, "leaseSeconds": 3}))
                .send()
                .await;
            let Ok(answer) = answer else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let runs: Value = answer.json().await.unwrap_or_default();
            let runs = runs["runs"].as_array().cloned().unwrap_or_default();
            if runs.is_empty() {
                continue;
            }
            batches += 1;
            if vanish_after.is_some_and(|n| batches > n) {
                return;
            }
            for run in runs {
                let url = format!(
                    "{}/api/v1/jobs/{}/runs/{}/result",
                    base.lock().unwrap(),
                    run["jobId"].as_str().unwrap(),
                    run["runId"].as_str().unwrap()
                );
                let reported = http
                    .post(url)
                    .json(&json!({"status": "SUCCEEDED"}))
                    .send()
                    .await;
                if reported.is_ok_and(|r| r.status() == 200) {
                    done.lock()
                        .unwrap()
                        .push(run["runId"].as_str().unwrap().to_owned());
                }
            }
        }
    })
}

#[tokio::test]
async fn without_kafka_pulling_workers_and_a_webhook_get_every_run_through_a_replica_restart_and_a_worker_kill()
 {
    const EACH: usize = 30;
    let target = Target::start().await;
    let data = tempfile::tempdir().unwrap();
    let flags: Vec<String> = [
        "--store",
        "embedded",
        "--data-dir",
        &data.path().display().to_string(),
        "--webhook-allowed-hosts",
        &target.host(),
        "--webhook-timeout-seconds",
        "1",
        "--lease-seconds",
        "2",
        "--idle-poll-ms",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a = Service::start_args(&flags).await;
    let mut b = Service::start_args(&flags).await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..2 * EACH {
        let due = in_millis(2_000 + (i as i64 * 3_000) / (2 * EACH) as i64);
        let extra = if i % 2 == 0 {
            json!({"webhook": {"url": target.url("ok")}})
        } else {
            json!({})
        };
        let base = if i % 4 < 2 { a.url("") } else { b.url("") };
        let job: Value = http
            .post(format!("{base}/api/v1/jobs"))
            .json(&sms_job(
                &format!("delivered {i}"),
                json!({"runAt": due}),
                extra,
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push((i % 2 == 0, id_of(&job)));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let done = Arc::new(Mutex::new(Vec::new()));
    let on_a = Arc::new(Mutex::new(a.url("")));
    let on_b = Arc::new(Mutex::new(b.url("")));
    let steady = pulling_worker(on_a.clone(), done.clone(), None, stop.clone());
    let doomed = pulling_worker(on_b.clone(), done.clone(), Some(2), stop.clone());
    // Mid-way: the second replica is killed and started again; the worker that vanished is
    // replaced by one on the restarted replica.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    b = Service::start_args(&flags).await;
    *on_b.lock().unwrap() = b.url("");
    let replacement = pulling_worker(on_b.clone(), done.clone(), None, stop.clone());
    for (by_webhook, id) in &ids {
        eventually(&format!("job {id} to succeed"), || {
            let request = http.get(a.url(&format!("/api/v1/jobs/{id}"))).send();
            async move {
                let job: Value = request.await.ok()?.json().await.ok()?;
                (job["status"] == "SUCCEEDED").then_some(())
            }
        })
        .await;
        let runs: Value = a.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
        assert_eq!(runs["totalCount"], 1, "job {id} ran once: {runs}");
        let delivery = if *by_webhook { "webhook" } else { "pull" };
        assert_eq!(runs["runs"][0]["delivery"], delivery);
    }
    stop.cancel();
    for worker in [steady, doomed, replacement] {
        let _ = worker.await;
    }
    // Each pulled run finished once, by one worker.
    let done = done.lock().unwrap().clone();
    let finished: std::collections::HashSet<_> = done.iter().collect();
    assert_eq!((done.len(), finished.len()), (EACH, EACH), "{done:?}");
    // The webhook got every run; a copy (same webhook-id) only if a replica died mid-call.
    let mut per_run: HashMap<String, usize> = HashMap::new();
    for call in target.calls_to("ok") {
        *per_run
            .entry(call.headers["webhook-id"].clone())
            .or_default() += 1;
    }
    assert_eq!(per_run.len(), EACH, "every webhook run called");
    let copies: usize = per_run.values().map(|n| n - 1).sum();
    assert!(per_run.values().all(|n| *n <= 2), "{per_run:?}");
    println!("webhook calls: {} runs, {copies} copies", per_run.len());
}
