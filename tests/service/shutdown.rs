//! A shutdown that always ends: after SIGTERM, health turns NOT_SERVING at once, and the
//! process exits within its grace period even when clients hold connections open: a request
//! whose headers never finish, an event stream that is never read, a gRPC health watch. What
//! was acknowledged before is kept. Streams that never finish by themselves (event streams,
//! health watches) end as soon as shutdown starts, so they do not wait for the grace period.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::support::{Service, sms_job};

/// Sends SIGTERM to the service.
fn terminate(service: &Service) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

type HealthWatch = tonic::Streaming<tonic_health::pb::HealthCheckResponse>;

/// A gRPC health watch over `channel`, past its first answer, SERVING.
async fn serving_health_watch(channel: tonic::transport::Channel) -> HealthWatch {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let serving = watch.next().await.unwrap().unwrap();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    watch
}

/// The watch's next answer, within `patience`, is NOT_SERVING.
async fn expect_not_serving(watch: &mut HealthWatch, patience: Duration) {
    let update = tokio::time::timeout(patience, watch.next())
        .await
        .expect("the watch hears of the shutdown")
        .expect("an update")
        .expect("a status");
    assert_eq!(
        update.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
        "health turns NOT_SERVING when shutdown starts"
    );
}

/// The process exits with success less than `limit` after `asked` (SIGTERM), `what` saying
/// what it had open.
async fn exits_cleanly_within(service: &mut Service, asked: Instant, limit: Duration, what: &str) {
    let exited = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < limit,
            "the process is still running {limit:?} after SIGTERM, {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited:?}");
}

#[tokio::test]
async fn sigterm_ends_the_process_within_its_grace_whatever_the_clients_hold_open() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shutdown-grace-seconds".to_owned(), "2".to_owned()];
    let mut service = Service::start_with(dir.path(), &flags).await;
    let http = reqwest::Client::new();
    let created = http
        .post(service.url("/api/v1/jobs"))
        .json(&sms_job(
            "kept",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // A request whose headers never finish.
    let address = service.url("").trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-never: ends")
        .await
        .unwrap();
    // An event stream nobody reads.
    let unread = http
        .get(service.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(unread.status(), 200);
    // A gRPC health watch.
    let channel = tonic::transport::Channel::from_shared(service.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = serving_health_watch(channel).await;

    let asked = Instant::now();
    terminate(&service);
    expect_not_serving(&mut watch, Duration::from_secs(10)).await;
    exits_cleanly_within(
        &mut service,
        asked,
        Duration::from_secs(30),
        "with a 2 s grace",
    )
    .await;
    drop((stalled, unread, watch));

    let restarted = Service::start(dir.path()).await;
    let page: serde_json::Value = restarted.get_json("/api/v1/jobs").await;
    assert_eq!(
        page["totalCount"], 1,
        "the job acknowledged before SIGTERM is kept"
    );
}

#[tokio::test]
async fn at_sigterm_health_and_event_watches_end_at_once_not_at_the_end_of_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shutdown-grace-seconds".to_owned(), "120".to_owned()];
    let mut service = Service::start_with(dir.path(), &flags).await;
    let channel = tonic::transport::Channel::from_shared(service.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = serving_health_watch(channel.clone()).await;
    let mut events = scheduler::grpc::pb::jobs_service_client::JobsServiceClient::new(channel)
        .watch_events(scheduler::grpc::pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let asked = Instant::now();
    terminate(&service);
    let patience = Duration::from_secs(30);
    expect_not_serving(&mut watch, patience).await;
    let ended = tokio::time::timeout(patience, watch.next())
        .await
        .expect("the health watch ends well before the 120 s grace")
        .expect("the watch ends with a status, not a reset")
        .expect_err("the watch ends with an error status");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{ended:?}");
    let last = tokio::time::timeout(patience, events.next())
        .await
        .expect("the event watch ends well before the grace");
    assert!(
        !matches!(last, Some(Ok(_))),
        "no event after shutdown: {last:?}"
    );
    exits_cleanly_within(
        &mut service,
        asked,
        Duration::from_secs(60),
        "with nothing open but watches",
    )
    .await;
}
