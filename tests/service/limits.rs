//! The limits that keep the service up, each reached over real sockets while the rest of the
//! API keeps answering: the header-read and idle timeouts, the most connections, the most
//! event streams (in total and per client), HTTP/2's stream and header-list limits, and the
//! optional request rate per client. Clients are told apart by their loopback address
//! (127.0.0.1, 127.0.0.2, ...), as the service keys an anonymous caller.

use std::{net::IpAddr, time::Duration};

use scheduler::{config::Config, grpc::pb};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tonic::{Code, transport::Channel};

use crate::support::{TestApp, eventually, sms_job};

/// Generous bound on anything that should happen promptly: an outcome, not a timing.
const PATIENCE: Duration = Duration::from_secs(20);

/// The loopback address of client `n`.
fn client(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// An HTTP client that connects from client `n`'s address.
fn http_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(client(n))
        .build()
        .unwrap()
}

/// A gRPC channel to the service from client `n`'s address.
async fn channel_from(app: &TestApp, n: u8) -> Channel {
    Channel::from_shared(app.url(""))
        .unwrap()
        .local_address(Some(client(n)))
        .connect()
        .await
        .expect("gRPC connects")
}

/// A raw TCP connection from client 1.
async fn raw(app: &TestApp) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((client(1), 0).into()).unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// Sends `GET /healthz` on a kept-alive HTTP/1.1 connection and reads the answer's status line.
async fn healthz_on(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nok") {
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Whether the server closes `tcp` (end of file or a reset) within [`PATIENCE`].
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    read.is_ok()
}

/// The test settings with these limits set.
fn config(set: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::for_tests();
    set(&mut config);
    config
}

/// Opens `GET /api/v1/events` as `http`, returning the response whatever its status.
async fn open_events(app: &TestApp, http: &reqwest::Client) -> reqwest::Response {
    http.get(app.url("/api/v1/events")).send().await.unwrap()
}

/// Asserts a response is a 429 problem with `Retry-After`, and returns the problem.
async fn assert_too_many(response: reqwest::Response, what: &str) -> Value {
    assert_eq!(response.status(), 429, "{what}");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 429, "{what}: {problem}");
    problem
}

/// Asserts a gRPC status is RESOURCE_EXHAUSTED with `retry-after` metadata.
fn assert_exhausted(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{what}: retry-after {retry_after}");
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(config(|c| {
        c.header_read_timeout_seconds = 1;
        c.idle_timeout_seconds = 3600;
    }))
    .await;
    let mut stalled = raw(&app).await;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-never: ends")
        .await
        .unwrap();
    let mut prompt = raw(&app).await;
    assert_eq!(healthz_on(&mut prompt).await, "HTTP/1.1 200 OK");
    assert!(
        closed_by_server(&mut stalled).await,
        "a half-sent head is still open 20 s after a 1 s header-read timeout"
    );
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_one_with_an_open_stream_is_not() {
    let app = TestApp::spawn_with(config(|c| {
        c.idle_timeout_seconds = 1;
        c.header_read_timeout_seconds = 3600;
    }))
    .await;
    let streaming = http_from(2);
    let mut events = open_events(&app, &streaming).await;
    assert_eq!(events.status(), 200);

    // An HTTP/2 connection that made one call and then nothing.
    let tcp = raw(&app).await;
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let driven = tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::get(format!("http://{}/healthz", app.addr))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    // A connection that never sends a byte.
    let mut silent = raw(&app).await;

    assert!(
        tokio::time::timeout(PATIENCE, driven).await.is_ok(),
        "an idle HTTP/2 connection is still open 20 s after a 1 s idle timeout"
    );
    assert!(
        closed_by_server(&mut silent).await,
        "a silent connection is still open 20 s after a 1 s idle timeout"
    );

    // The stream, open all along, still delivers.
    let job = app
        .create_job(&sms_job(
            "streamed",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let mut seen = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !seen.contains(&id) {
            let chunk = events.chunk().await.unwrap().expect("the stream is open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the open stream delivers the new job's event");
}

#[tokio::test]
async fn past_the_most_connections_a_new_one_waits_while_the_open_ones_are_served() {
    let app = TestApp::spawn_with(config(|c| c.max_connections = 2)).await;
    let mut first = raw(&app).await;
    let mut second = raw(&app).await;
    assert_eq!(healthz_on(&mut first).await, "HTTP/1.1 200 OK");
    assert_eq!(healthz_on(&mut second).await, "HTTP/1.1 200 OK");

    let mut third = raw(&app).await;
    let waiting = tokio::spawn(async move {
        let status = healthz_on(&mut third).await;
        (status, third)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the third connection was served");
    assert_eq!(
        healthz_on(&mut first).await,
        "HTTP/1.1 200 OK",
        "an open connection keeps being served"
    );

    drop(second);
    let (status, _third) = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the waiting connection is served once one closes")
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn past_the_most_event_streams_a_new_one_is_told_to_retry_while_the_api_answers() {
    let app = TestApp::spawn_with(config(|c| {
        c.max_event_streams = 3;
        c.max_event_streams_per_client = 2;
    }))
    .await;
    let (one, two, three) = (http_from(1), http_from(2), http_from(3));

    // Client 1: an SSE stream and a gRPC watch, its two.
    let sse = open_events(&app, &one).await;
    assert_eq!(sse.status(), 200);
    let mut watching = pb::jobs_service_client::JobsServiceClient::new(channel_from(&app, 1).await);
    let watch = watching
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("a second stream for client 1");
    let problem = assert_too_many(open_events(&app, &one).await, "client 1's third").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 2"),
        "{problem}"
    );
    let refused = watching
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect_err("client 1's third, as a gRPC watch");
    assert_exhausted(&refused, "client 1's third, as a gRPC watch");

    // Client 2 takes the last one; then nobody gets one, however few they hold.
    let other = open_events(&app, &two).await;
    assert_eq!(other.status(), 200);
    let problem = assert_too_many(open_events(&app, &three).await, "the fourth in all").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 3"),
        "{problem}"
    );
    let mut third = pb::jobs_service_client::JobsServiceClient::new(channel_from(&app, 3).await);
    let refused = third
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect_err("the fourth in all, as a gRPC watch");
    assert_exhausted(&refused, "the fourth in all, as a gRPC watch");

    // The rest of the API answers everyone.
    for path in ["/healthz", "/readyz", "/api/v1/jobs"] {
        let status = three.get(app.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
    third
        .list_jobs(pb::ListJobsRequest {
            page: 1,
            size: 10,
            ..Default::default()
        })
        .await
        .expect("gRPC calls answer");

    // A stream that ends gives its place back.
    drop(watch);
    eventually("a stream's place to come back", || async {
        let response = open_events(&app, &three).await;
        (response.status() == 200).then_some(())
    })
    .await;
    drop((sse, other));
}

#[tokio::test]
async fn http2_announces_its_stream_limit_and_refuses_an_oversized_header_list() {
    let app = TestApp::spawn_with(config(|c| {
        c.http2_max_concurrent_streams = 7;
        c.http2_max_header_list_bytes = 4096;
    }))
    .await;
    let tcp = raw(&app).await;
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let get = |big: Option<&str>| {
        let mut request = http::Request::get(format!("http://{}/healthz", app.addr));
        if let Some(big) = big {
            request = request.header("x-big", big);
        }
        request.body(()).unwrap()
    };
    let (small, _) = h2.send_request(get(None), true).unwrap();
    assert_eq!(small.await.unwrap().status(), 200);
    assert_eq!(
        h2.current_max_send_streams(),
        7,
        "SETTINGS_MAX_CONCURRENT_STREAMS as configured"
    );

    let big = "x".repeat(8 * 1024);
    let mut h2 = h2.ready().await.unwrap();
    let (oversized, _) = h2.send_request(get(Some(&big)), true).unwrap();
    match tokio::time::timeout(PATIENCE, oversized).await.unwrap() {
        Ok(response) => assert_eq!(response.status(), 431, "an oversized header list"),
        Err(error) => assert!(error.is_reset() || error.is_remote(), "{error:?}"),
    }
    // The connection still serves requests within the limits.
    let mut h2 = h2.ready().await.unwrap();
    let (again, _) = h2.send_request(get(None), true).unwrap();
    assert_eq!(again.await.unwrap().status(), 200);
}

#[tokio::test]
async fn past_its_rate_a_client_is_told_to_retry_while_others_and_health_checks_are_not() {
    let app = TestApp::spawn_with(config(|c| {
        c.rate_limit_per_second = Some(1);
        c.rate_limit_burst = Some(5);
    }))
    .await;
    let (one, two) = (http_from(1), http_from(2));
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..10 {
        let response = one.get(app.url("/api/v1/jobs")).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refusal.is_none() {
            refusal = Some(response);
        }
    }
    assert!(
        statuses[..5].iter().all(|s| *s == 200),
        "the burst passes: {statuses:?}"
    );
    let refusal = refusal.unwrap_or_else(|| panic!("no call was refused: {statuses:?}"));
    assert_too_many(refusal, "past the burst").await;

    let status = two
        .get(app.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "another client has its own rate");
    for _ in 0..10 {
        for path in ["/healthz", "/readyz"] {
            let status = one.get(app.url(path)).send().await.unwrap().status();
            assert_eq!(status, 200, "{path} is never limited");
        }
    }

    let channel = channel_from(&app, 1).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut jobs = pb::jobs_service_client::JobsServiceClient::new(channel);
    let mut refused = None;
    for _ in 0..10 {
        let check = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("gRPC health is never limited");
        assert_eq!(
            check.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        if let Err(status) = jobs
            .list_jobs(pb::ListJobsRequest {
                page: 1,
                size: 1,
                ..Default::default()
            })
            .await
        {
            refused.get_or_insert(status);
        }
    }
    let refused = refused.expect("some gRPC call past the rate is refused");
    assert_exhausted(&refused, "a gRPC call past the rate");
}
