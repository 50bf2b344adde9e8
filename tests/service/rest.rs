//! REST flows over a real socket.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{Failures, TestApp, email_job, id_of, in_millis};

#[tokio::test]
async fn created_job_is_returned_with_location_and_etag_and_can_be_read_back() {
    let app = TestApp::spawn().await;
    let response = app
        .post_job(&email_job("weekly report", "2030-01-01T09:00:00Z"))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["status"], "SCHEDULED");
    assert_eq!(job["scheduleTime"], "2030-01-01T09:00:00.000Z");
    assert_eq!(job["schedule"]["runAt"], "2030-01-01T09:00:00.000Z");
    assert_eq!(job["version"], 1);

    let read = app.get_job(job["id"].as_str().unwrap()).await;
    assert_eq!(read, job);
}

#[tokio::test]
async fn missing_job_is_404() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/v1/jobs/65f1c0ffee0123456789abcd"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_status_type_and_name() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        app.create_job(&email_job(&format!("report {i}"), "2030-01-01T09:00:00Z"))
            .await;
    }
    app.create_job(&json!({
        "name": "sms reminder", "jobType": "SMS", "jobData": {"to": "+100"},
        "schedule": {"runAt": "2030-01-01T09:00:00Z"}
    }))
    .await;

    let page: Value = app.get_json("/api/v1/jobs?page=2&size=2").await;
    assert_eq!(page["totalCount"], 6);
    assert_eq!(page["totalPages"], 3);
    assert_eq!(page["page"], 2);
    assert_eq!(page["size"], 2);
    assert_eq!(page["hasMore"], true);
    let names: Vec<_> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("report 3"), json!("report 2")]);

    let mut failures = Failures::new();
    for (query, expected) in [
        ("jobType=SMS", 1),
        ("jobType=email", 5),
        ("status=SCHEDULED", 6),
        ("status=RUNNING", 0),
        ("name=report", 5),
        ("name=sms", 1),
        ("name=report%204", 1),
    ] {
        let page: Value = app.get_json(&format!("/api/v1/jobs?{query}")).await;
        failures.expect_eq(query, page["totalCount"].clone(), json!(expected));
    }
    failures.assert_none("listing filters");
}

#[tokio::test]
async fn merge_patch_changes_only_the_given_fields_and_bumps_the_version() {
    let app = TestApp::spawn().await;
    let job = app
        .create_job(&email_job("weekly report", "2030-01-01T09:00:00Z"))
        .await;
    let id = job["id"].as_str().unwrap();
    let response = app
        .http
        .patch(app.url(&format!("/api/v1/jobs/{id}")))
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "\"1\"")
        .body(r#"{"description": null, "jobData": {"Subject": "New subject"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["description"], "");
    assert_eq!(patched["jobData"]["Subject"], "New subject");
    assert_eq!(patched["jobData"]["Message"], "Attached.");
    assert_eq!(patched["name"], "weekly report");
    assert_eq!(patched["version"], 2);
}

#[tokio::test]
async fn stale_if_match_is_412_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let job = app
        .create_job(&email_job("weekly report", "2030-01-01T09:00:00Z"))
        .await;
    let id = job["id"].as_str().unwrap();
    let patch = |if_match: &'static str| {
        app.http
            .patch(app.url(&format!("/api/v1/jobs/{id}")))
            .header("content-type", "application/json")
            .header("if-match", if_match)
            .body(r#"{"name": "renamed job"}"#)
            .send()
    };
    assert_eq!(patch("\"1\"").await.unwrap().status(), 200);
    let stale = patch("\"1\"").await.unwrap();
    assert_eq!(stale.status(), 412);
    // If-Match compares strongly: a weak tag never matches.
    assert_eq!(patch("W/\"2\"").await.unwrap().status(), 412);
    assert_eq!(app.get_job(id).await["version"], 2);
}

#[tokio::test]
async fn deleted_job_is_gone() {
    let app = TestApp::spawn().await;
    let job = app
        .create_job(&email_job("weekly report", "2030-01-01T09:00:00Z"))
        .await;
    let url = app.url(&format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()));
    assert_eq!(app.http.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(app.http.delete(&url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_job_and_rejects_another_body() {
    let app = TestApp::spawn().await;
    let send = |body: Value| {
        app.http
            .post(app.url("/api/v1/jobs"))
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
    };
    let first = send(email_job("weekly report", "2030-01-01T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(email_job("weekly report", "2030-01-01T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let other = send(email_job("another report", "2030-01-01T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn unknown_paths_are_404_problems_not_grpc_errors() {
    let app = TestApp::spawn().await;
    let mut failures = Failures::new();
    for path in ["/nope", "/api/v1/nope", "/proto.JobsService"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        failures.expect_eq(path, response.status().as_u16(), 404);
        failures.expect_eq(
            path,
            response.headers().get("content-type").cloned(),
            Some("application/problem+json".parse().unwrap()),
        );
        failures.expect(
            path,
            response.headers().get("grpc-status").is_none(),
            "a grpc-status header",
        );
    }
    failures.assert_none("unknown paths");
}

#[tokio::test]
async fn wrong_method_is_a_405_problem() {
    let app = TestApp::spawn().await;
    let response = app.http.put(app.url("/api/v1/jobs")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn health_readiness_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let mut failures = Failures::new();
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/swagger-ui", "swagger"),
        ("/swagger-ui/", "swagger"),
        ("/api-docs/openapi.json", "\"openapi\""),
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        failures.expect_eq(path, response.status().as_u16(), 200);
        let body = response.text().await.unwrap_or_default();
        failures.expect(
            path,
            body.to_lowercase().contains(needle),
            format!("no {needle} in {body:.200}"),
        );
    }
    failures.assert_none("health and docs");
}

#[tokio::test]
async fn event_stream_carries_lifecycle_and_run_events_as_sse() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();

    let job = app.create_job(&email_job("sse job", &in_millis(200))).await;
    let id = id_of(&job);

    let mut text = String::new();
    let wanted = ["event: scheduler.job.created", "event: scheduler.job.run"];
    let read = async {
        while !wanted.iter().all(|w| text.contains(w)) {
            let chunk = body.next().await.expect("stream open").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("both events arrive");
    let run_data = text
        .split("\n\n")
        .find(|block| block.contains("event: scheduler.job.run"))
        .and_then(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .expect("a run event with data");
    let event: Value = serde_json::from_str(run_data).unwrap();
    assert_eq!(event["jobId"], id.as_str());
    assert_eq!(event["job"]["status"], "RUNNING");
    assert_eq!(event["run"]["status"], "RUNNING");
    assert_eq!(event["run"]["scheduledFor"], job["scheduleTime"]);
}

#[tokio::test]
async fn graceful_shutdown_ends_open_event_streams() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    app.stop().await;
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
}

#[tokio::test]
async fn request_slower_than_the_timeout_gets_408_and_stores_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = scheduler::config::Config::for_tests();
    config.request_timeout_seconds = 1;
    let app = TestApp::spawn_with(config).await;
    // A body that never finishes arriving.
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let mut response = vec![0; 1024];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        socket.read(&mut response),
    )
    .await
    .expect("an answer before the test gives up")
    .unwrap();
    let head = String::from_utf8_lossy(&response[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(app.job_count().await, 0);
}
