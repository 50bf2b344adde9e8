//! The gRPC protocol's edge, spoken raw over HTTP/2 (and HTTP/1.1): what is not a gRPC call is
//! answered as HTTP, `grpc-timeout` is honoured, and a request message that cannot be read gets
//! the contract's code, never INTERNAL. Nothing is stored by any of them.

use std::time::Duration;

use axum::body::Bytes;
use scheduler::grpc::pb;
use tonic::Code;

use crate::support::{Failures, TestApp};

/// Sends one gRPC-framed `message` (or none, leaving the stream open) to `method` over a fresh
/// HTTP/2 connection; the answer's HTTP status and headers.
async fn raw_call(
    app: &TestApp,
    method: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    message: Option<&[u8]>,
) -> http::Response<h2::RecvStream> {
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let mut request =
        http::Request::post(format!("http://{}/proto.JobsService/{method}", app.addr))
            .header("content-type", content_type)
            .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let (response, mut body) = h2.send_request(request.body(()).unwrap(), false).unwrap();
    if let Some(message) = message {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        body.send_data(Bytes::from(frame), true).unwrap();
    } else {
        // Keep the request stream open: its message never arrives.
        std::mem::forget(body);
    }
    tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("an answer before the test gives up")
        .unwrap()
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_invalid_argument_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut failures = Failures::new();
    // Field 1 (name) as a length-delimited string running past the end; a varint that never
    // ends; a wrong wire type for field 1.
    for (what, bytes) in [
        ("a truncated string", &[0x0a, 0x10, b'a'][..]),
        ("an endless varint", &[0x50, 0xff, 0xff, 0xff][..]),
        ("a wrong wire type", &[0x0d, 0x01][..]),
    ] {
        let response = raw_call(&app, "CreateJob", "application/grpc", &[], Some(bytes)).await;
        failures.expect_eq(
            what,
            response
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some((Code::InvalidArgument as i32).to_string()),
        );
    }
    failures.assert_none("malformed messages");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let oversized = pb::CreateJobRequest {
        name: "too big".into(),
        job_type: pb::JobType::Sms as i32,
        job_data: format!(r#"{{"Note":"{}"}}"#, "x".repeat(400 * 1024)),
        ..Default::default()
    };
    let status = client.create_job(oversized).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_client_deadline_shorter_than_the_servers_ends_the_call_in_time() {
    let app = TestApp::spawn().await;
    let response = raw_call(
        &app,
        "CreateJob",
        "application/grpc",
        &[("grpc-timeout", "300m")],
        None,
    )
    .await;
    assert_eq!(
        response.headers()["grpc-status"],
        (Code::DeadlineExceeded as i32).to_string().as_str()
    );
    let response = raw_call(
        &app,
        "GetJob",
        "application/grpc",
        &[("grpc-timeout", "soon")],
        Some(&[]),
    )
    .await;
    assert_eq!(
        response.headers()["grpc-status"],
        (Code::InvalidArgument as i32).to_string().as_str(),
        "a malformed grpc-timeout"
    );
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn what_is_not_a_grpc_call_is_answered_as_http() {
    let app = TestApp::spawn().await;
    let response = raw_call(&app, "GetJob", "text/plain", &[], Some(b"hello")).await;
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    let response = app
        .http
        .post(app.url("/proto.JobsService/CreateJob"))
        .header("content-type", "application/grpc")
        .body(vec![0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 505);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_list_page_stays_within_what_a_default_grpc_client_accepts_and_says_it_was_cut() {
    let app = TestApp::spawn().await;
    let data = serde_json::json!({"Note": "n".repeat(60 * 1024)});
    for i in 0..80 {
        app.create_job(&crate::support::sms_job(
            &format!("big {i}"),
            serde_json::json!({"intervalSeconds": 3600}),
            serde_json::json!({"jobData": data}),
        ))
        .await;
    }
    // The generated client keeps tonic's default limit of 4 MiB per message.
    let mut client = app.grpc().await;
    let page = client
        .list_jobs(pb::ListJobsRequest {
            page: 1,
            size: 100,
            ..Default::default()
        })
        .await
        .expect("the page fits the client's limit")
        .into_inner();
    assert!(page.truncated);
    assert_eq!((page.total_count, page.size), (80, 100));
    assert!(
        page.jobs.len() > 1 && page.jobs.len() < 80,
        "{}",
        page.jobs.len()
    );
    let small = client
        .list_jobs(pb::ListJobsRequest {
            page: 1,
            size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!small.truncated && small.jobs.len() == 10);
}
