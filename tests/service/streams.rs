//! Resumable event streams: a client that reconnects with its last event's id (SSE
//! `Last-Event-ID` or `since`, gRPC `since`) gets every event it missed, in order, then the
//! live ones; one whose cursor the journal no longer keeps gets one `gap` first; a malformed
//! cursor is a 400 naming it. On both stores, with and without Kafka. (Three replicas and a
//! client that resumes on another one: `replicas`.)

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use scheduler::{
    grpc::pb,
    jobs::ports::{JobStore, Retention},
};
use serde_json::{Value, json};

use crate::support::{
    EventClient, Failures, Service, TestApp, database_name, id_of, in_millis, kafka, sms_job,
};

/// A job far in the future: only its operations make events.
fn idle_job(name: &str) -> Value {
    sms_job(name, json!({"runAt": in_millis(3_600_000)}), json!({}))
}

#[tokio::test]
async fn a_stream_resumed_after_its_last_event_gets_every_event_it_missed_in_order_then_live_ones()
{
    let app = TestApp::spawn().await;
    let events = app.url("/api/v1/events");
    let mut client = EventClient::open(&events, None).await;
    let first = id_of(&app.create_job(&idle_job("first")).await);
    let created = client.take(1).await;
    assert_eq!(created[0].event, "scheduler.job.created");
    let last = created[0].id.expect("an event has an id");

    // Gone while three more changes happen.
    drop(client);
    let second = id_of(&app.create_job(&idle_job("second")).await);
    for operation in ["pause", "resume"] {
        let (status, _) = app
            .post_json(&format!("/api/v1/jobs/{first}/{operation}"), &json!({}))
            .await;
        assert_eq!(status, 200);
    }
    let missed = [
        ("scheduler.job.created", &second),
        ("scheduler.job.paused", &first),
        ("scheduler.job.resumed", &first),
    ];

    // Back with Last-Event-ID, with `since`, and with both (the header wins, as an
    // EventSource sends it on the URL it first opened).
    for (how, url, header) in [
        ("Last-Event-ID", events.clone(), Some(last)),
        ("since", format!("{events}?since={last}"), None),
        ("both", format!("{events}?since=0"), Some(last)),
    ] {
        let mut client = EventClient::open(&url, header).await;
        let got = client.take(3).await;
        let seen: Vec<_> = got
            .iter()
            .map(|m| (m.event.as_str(), m.data["jobId"].as_str().unwrap_or("")))
            .collect();
        let wanted: Vec<_> = missed.iter().map(|(e, id)| (*e, id.as_str())).collect();
        assert_eq!(seen, wanted, "{how}");
        let ids: Vec<u64> = got.iter().map(|m| m.id.unwrap()).collect();
        assert_eq!(
            ids,
            [last + 1, last + 2, last + 3],
            "{how}: in journal order"
        );
        assert!(
            client
                .next_within(Duration::from_millis(300))
                .await
                .is_none(),
            "{how}: nothing more than what it missed"
        );
    }

    // Then the live ones, after what it caught up with.
    let mut client = EventClient::open(&events, Some(last)).await;
    client.take(3).await;
    let third = id_of(&app.create_job(&idle_job("third")).await);
    let live = client.take(1).await;
    assert_eq!(live[0].data["jobId"], third.as_str());
    assert_eq!(live[0].id, Some(last + 4));

    // A watch of one job resumes with that job's events only.
    let url = format!("{events}?jobId={first}");
    let mut client = EventClient::open(&url, Some(0)).await;
    let kinds: Vec<String> = client.take(3).await.into_iter().map(|m| m.event).collect();
    assert_eq!(
        kinds,
        [
            "scheduler.job.created",
            "scheduler.job.paused",
            "scheduler.job.resumed"
        ]
    );
    assert!(
        client
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_cursor_the_journal_no_longer_keeps_gets_one_gap_then_the_kept_events() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        app.create_job(&idle_job(&format!("kept {i}"))).await;
    }
    // The relay trims on its own schedule; here the window is made to drop three.
    let store: std::sync::Arc<dyn JobStore> = app.store();
    let retention = Retention {
        events: 2,
        age: chrono::Duration::hours(1),
    };
    assert_eq!(
        store
            .trim_journal(retention, u64::MAX, Utc::now())
            .await
            .unwrap(),
        3
    );
    let events = app.url("/api/v1/events");
    for (cursor, why) in [(1, "older than the window"), (500, "beyond the journal")] {
        let mut client = EventClient::open(&events, Some(cursor)).await;
        let got = client.take(3).await;
        assert_eq!(got[0].event, "gap", "{why}");
        assert_eq!(got[0].data["after"], cursor, "{why}");
        assert_eq!(got[0].data["resumesAfter"], 3, "{why}");
        assert_eq!(
            got[0].id,
            Some(3),
            "{why}: a reconnect resumes after the gap"
        );
        let ids: Vec<_> = got[1..].iter().map(|m| m.id).collect();
        assert_eq!(ids, [Some(4), Some(5)], "{why}");
    }
    // A cursor inside the window gets no gap.
    let mut client = EventClient::open(&events, Some(3)).await;
    assert_eq!(client.take(1).await[0].id, Some(4));
}

#[tokio::test]
async fn a_malformed_cursor_is_a_400_naming_it_and_opens_nothing() {
    let app = TestApp::spawn().await;
    let mut failures = Failures::new();
    let rows: [(&str, Option<&str>, &str); 6] = [
        ("?since=abc", None, "since"),
        ("?since=-1", None, "since"),
        ("?since=18446744073709551616", None, "since"),
        ("?since=1.5", None, "since"),
        ("", Some("abc"), "Last-Event-ID"),
        ("?since=1", Some("7x"), "Last-Event-ID"),
    ];
    for (query, header, field) in rows {
        let mut request = app.http.get(app.url(&format!("/api/v1/events{query}")));
        if let Some(header) = header {
            request = request.header("last-event-id", header);
        }
        let response = request.send().await.unwrap();
        let row = format!("{query} {header:?}");
        failures.expect_eq(&row, response.status().as_u16(), 400);
        // A stream opened by mistake would never end: the body is read within a bound.
        let problem: Value = tokio::time::timeout(Duration::from_secs(5), response.json())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        failures.expect_eq(&row, problem["errors"][0]["field"].as_str(), Some(field));
    }
    failures.assert_none("malformed cursors");
    let health: Value = app.get_json("/api/v1/jobs").await;
    assert_eq!(health["totalCount"], 0, "nothing stored");
}

#[tokio::test]
async fn a_grpc_watch_resumes_after_since_and_tells_of_a_gap() {
    let app = TestApp::spawn().await;
    let client = app.grpc().await;
    for i in 0..4 {
        app.create_job(&idle_job(&format!("watched {i}"))).await;
    }
    let watch = |since| {
        let mut client = client.clone();
        async move {
            client
                .watch_events(pb::WatchEventsRequest {
                    since,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut resumed = watch(Some(2)).await;
    let seqs = [next(&mut resumed).await.seq, next(&mut resumed).await.seq];
    assert_eq!(seqs, [3, 4]);
    let fifth = id_of(&app.create_job(&idle_job("watched live")).await);
    let live = next(&mut resumed).await;
    assert_eq!((live.seq, live.job_id.as_str()), (5, fifth.as_str()));

    app.store()
        .trim_journal(
            Retention {
                events: 2,
                age: chrono::Duration::hours(1),
            },
            u64::MAX,
            Utc::now(),
        )
        .await
        .unwrap();
    let mut behind = watch(Some(1)).await;
    let gap = next(&mut behind).await;
    assert_eq!(gap.r#type, "gap");
    assert_eq!(
        gap.gap,
        Some(pb::EventGap {
            after: 1,
            resumes_after: 3
        })
    );
    assert_eq!(next(&mut behind).await.seq, 4);
    // Without `since`, only what comes next.
    let mut fresh = watch(None).await;
    let sixth = id_of(&app.create_job(&idle_job("watched fresh")).await);
    assert_eq!(next(&mut fresh).await.job_id, sixth);
}

/// The next message of a gRPC watch, within 20 s.
async fn next(stream: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a message")
        .expect("the stream is open")
        .unwrap()
}

/// A job fires while its watcher is away; back with its last event's id, the watcher gets the
/// run, on the store and with Kafka as `flags` say; with Kafka, the run message is published
/// too.
async fn a_fire_missed_while_away_is_caught_up(
    flags: Vec<String>,
    topics: Option<kafka::TestTopics>,
) {
    let service = Service::start_args(&flags).await;
    let events = service.url("/api/v1/events");
    let mut client = EventClient::open(&events, None).await;
    let job = service
        .create_job(&sms_job(
            "fires while away",
            json!({"runAt": in_millis(1_500)}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    let created = client.take(1).await;
    assert_eq!(created[0].event, "scheduler.job.created");
    drop(client);
    // It fires while nobody watches.
    crate::support::eventually("the job to fire", || {
        let request = reqwest::get(service.url(&format!("/api/v1/jobs/{id}")));
        async move {
            let job: Value = request.await.ok()?.json().await.ok()?;
            (job["status"] == "RUNNING").then_some(())
        }
    })
    .await;
    let mut client = EventClient::open(&events, created[0].id).await;
    let run = client.take(1).await;
    assert_eq!(run[0].event, "scheduler.job.run");
    assert_eq!(run[0].data["jobId"], id.as_str());
    assert_eq!(run[0].id, created[0].id.map(|id| id + 1));
    if let Some(topics) = topics {
        let reader = kafka::Reader::new(&kafka::brokers(), &[topics.run()]);
        let read = reader
            .until(Duration::from_secs(30), |read| {
                read.iter().any(|m| m.key.as_deref() == Some(id.as_str()))
            })
            .await;
        let message = read.last().unwrap();
        assert_eq!(message.json()["Id"], id.as_str());
    }
}

#[tokio::test]
async fn embedded_without_kafka_a_fire_missed_while_away_is_caught_up() {
    let data = tempfile::tempdir().unwrap();
    let flags = vec![
        "--store".into(),
        "embedded".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ];
    a_fire_missed_while_away_is_caught_up(flags, None).await;
}

#[tokio::test]
async fn mongodb_without_kafka_a_fire_missed_while_away_is_caught_up() {
    a_fire_missed_while_away_is_caught_up(mongo_flags(), None).await;
}

#[tokio::test]
async fn embedded_with_kafka_a_fire_missed_while_away_is_caught_up() {
    let data = tempfile::tempdir().unwrap();
    let topics = kafka::TestTopics::new();
    let mut flags = vec![
        "--store".into(),
        "embedded".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ];
    flags.extend(topics.flags(&kafka::brokers()));
    a_fire_missed_while_away_is_caught_up(flags, Some(topics)).await;
}

#[tokio::test]
async fn mongodb_with_kafka_a_fire_missed_while_away_is_caught_up() {
    let topics = kafka::TestTopics::new();
    let mut flags = mongo_flags();
    flags.extend(topics.flags(&kafka::brokers()));
    a_fire_missed_while_away_is_caught_up(flags, Some(topics)).await;
}

/// The flags of a service on the MongoDB at `MONGODB_URI`, in a database of its own.
fn mongo_flags() -> Vec<String> {
    let uri = std::env::var("MONGODB_URI").expect(
        "MONGODB_URI is not set: run the suite with ./scripts/test.sh, which starts a MongoDB-wire server",
    );
    vec![
        "--store".into(),
        "mongodb".into(),
        "--mongodb-uri".into(),
        uri,
        "--database-name".into(),
        database_name(),
    ]
}
