//! The Kafka path against a real Apache Kafka broker: the one at `KAFKA_BROKERS`, which
//! `scripts/test.sh` starts, and private brokers the outage tests kill and restart. Each test
//! uses its own topic names and consumer group.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use clap::Parser;
use rdkafka::{producer::FutureRecord, util::Timeout};
use scheduler::{config::Config, domain::JobId};
use serde_json::{Value, json};

use crate::support::{
    Failures, PrivateMongo, Service, TestApp, at, database_name, email_job, eventually, free_port,
    id_of, in_millis,
    kafka::{
        PrivateBroker, Reader, Received, TestTopics, brokers, committed, message_count, produce,
        producer,
    },
    matches_golden,
    scrape::Scrape,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_event_reaches_its_topic_keyed_by_job_with_the_contract_payload_and_headers() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let reader = Reader::new(&brokers, &[topics.create(), topics.update(), topics.run()]);
    let app = TestApp::spawn_with(topics.config(&brokers)).await;

    let fired = app
        .create_job(&email_job("weekly report", &in_millis(500)))
        .await;
    let id = id_of(&fired);
    let response = app
        .patch(
            &format!("/api/v1/jobs/{id}"),
            &json!({"description": "now with charts"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    app.job_with_status(&id, "RUNNING").await;
    let runs = app.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
    let run_id = runs["runs"][0]["runId"].as_str().unwrap().to_owned();
    let response = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{id}/runs/{run_id}/result")))
        .json(&json!({"status": "SUCCEEDED", "output": "sent 12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doomed = app
        .create_job(&email_job("doomed", "2099-01-01T00:00:00Z"))
        .await;
    let doomed_id = id_of(&doomed);
    app.delete_job(&doomed_id).await;

    let messages = reader.until(WAIT, |seen| seen.len() >= 6).await;
    let by_type: HashMap<&str, &Received> =
        messages.iter().map(|m| (m.header("ce_type"), m)).collect();
    let expect = [
        ("scheduler.job.created", topics.create(), "created"),
        ("scheduler.job.updated", topics.update(), "updated"),
        ("scheduler.job.run", topics.run(), "run"),
        ("scheduler.job.finished", topics.update(), "finished"),
        ("scheduler.job.deleted", topics.update(), "deleted"),
    ];
    for (ce_type, topic, event) in &expect {
        let message = by_type
            .get(ce_type)
            .unwrap_or_else(|| panic!("no {ce_type} message"));
        assert_eq!(&message.topic, topic, "{ce_type} on its topic");
        let value = message.json();
        let job_id = value["Id"].as_str().unwrap();
        assert_eq!(message.key.as_deref(), Some(job_id), "keyed by job id");
        assert_eq!(value["Event"], *event);
        assert_eq!(message.header("ce_specversion"), "1.0");
        assert_eq!(message.header("ce_source"), "/scheduler");
        assert_eq!(message.header("ce_subject"), job_id);
        assert_eq!(message.header("content-type"), "application/json");
        scheduler::domain::parse_time(message.header("ce_time")).expect("ce_time is RFC 3339");
        let traceparent = message.header("traceparent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [2, 32, 16, 2],
            "{traceparent}"
        );
        assert!(
            traceparent
                .chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit())
        );
        // The older consumers' fields, with their types.
        assert_eq!(value["JobType"], 0);
        assert!(value["Status"].is_i64());
        assert!(value["Version"].is_u64());
        let data: Value = serde_json::from_str(value["JobData"].as_str().unwrap()).unwrap();
        assert_eq!(data["Subject"], "Weekly report");
        for field in ["Name", "Description", "CreatedAt", "UpdatedAt"] {
            assert!(value[field].is_string(), "{field} in {value}");
        }
    }
    let ids: HashSet<&str> = messages.iter().map(|m| m.header("ce_id")).collect();
    assert_eq!(ids.len(), messages.len(), "ce_id is unique per event");

    let run = by_type["scheduler.job.run"].json();
    assert_eq!(run["Id"], id.as_str());
    assert_eq!(run["RunId"], run_id.as_str());
    assert_eq!(run["Attempt"], 1);
    assert_eq!(run["Status"], 3, "RUNNING");
    assert_eq!(run["ScheduledFor"], fired["schedule"]["runAt"]);
    assert!(run["FiredAt"].is_string());
    let updated = by_type["scheduler.job.updated"].json();
    assert_eq!(updated["Description"], "now with charts");
    let finished = by_type["scheduler.job.finished"].json();
    assert_eq!(finished["Status"], 4, "SUCCEEDED");
    assert_eq!(finished["RunStatus"], "SUCCEEDED");
    assert_eq!(finished["Output"], "sent 12");
    assert_eq!(
        by_type["scheduler.job.deleted"].json()["Id"],
        doomed_id.as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_seed_style_result_completes_the_job_and_repeats_or_mismatches_change_nothing() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let app = TestApp::spawn_with(topics.config(&brokers)).await;
    let job = app
        .create_job(&email_job("executor result", &in_millis(-1000)))
        .await;
    let id = id_of(&job);
    app.job_with_status(&id, "RUNNING").await;

    let seed = json!({"Id": id, "Status": 4}).to_string();
    produce(&brokers, &topics.result(), &id, Some(seed.as_bytes())).await;
    let done = app.job_with_status(&id, "SUCCEEDED").await;

    // The same result again, a different result for the finished run, and a result naming a
    // run the job never had: each is consumed and committed, and changes nothing.
    produce(&brokers, &topics.result(), &id, Some(seed.as_bytes())).await;
    let other = json!({"Id": id, "Status": "FAILED", "Error": "late"}).to_string();
    produce(&brokers, &topics.result(), &id, Some(other.as_bytes())).await;
    let stranger = json!({"Id": id, "Status": 4, "RunId": uuid::Uuid::new_v4().to_string()});
    let last = produce(
        &brokers,
        &topics.result(),
        &id,
        Some(stranger.to_string().as_bytes()),
    )
    .await;
    eventually("the group to commit past every result", || async {
        (committed(&brokers, &topics.group(), &topics.result()).await > last).then_some(())
    })
    .await;
    let after = app.get_job(&id).await;
    assert_eq!(after["version"], done["version"]);
    assert_eq!(after["status"], "SUCCEEDED");
    let runs = app.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
    assert_eq!(runs["totalCount"], 1);
    assert_eq!(runs["runs"][0]["status"], "SUCCEEDED");
    assert_eq!(message_count(&brokers, &topics.dead_letter()).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn results_that_cannot_be_applied_are_dead_lettered_with_reason_and_origin_then_committed() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let reader = Reader::new(&brokers, &[topics.dead_letter()]);
    let app = TestApp::spawn_with(topics.config(&brokers)).await;
    let job = app
        .create_job(&email_job("stays running", &in_millis(-1000)))
        .await;
    let id = id_of(&job);
    let running = app.job_with_status(&id, "RUNNING").await;

    let unknown = JobId::generate().to_string();
    let cases: Vec<(Option<String>, &str)> = vec![
        (Some("not json at all".into()), "not a JSON object"),
        (Some("[4]".into()), "not a JSON object"),
        (
            Some(json!({"Id": unknown, "Status": 4}).to_string()),
            "unknown job",
        ),
        (
            Some(json!({"Id": id, "Status": 3}).to_string()),
            "Status: must be",
        ),
        (
            Some(json!({"Id": id, "Status": "DONE"}).to_string()),
            "Status: must be",
        ),
        (
            Some(json!({"Id": "42", "Status": 4}).to_string()),
            "Id: must be a job id",
        ),
        (Some(json!({"Status": 4}).to_string()), "Id: is required"),
        (Some(json!({"Id": id}).to_string()), "Status: is required"),
        (
            Some(json!({"Id": id, "Status": 4, "RunId": "r1"}).to_string()),
            "RunId: must be",
        ),
        (None, "no value"),
    ];
    let mut sent = Vec::new();
    for (i, (payload, reason)) in cases.iter().enumerate() {
        let key = format!("case-{i}");
        let offset = produce(
            &brokers,
            &topics.result(),
            &key,
            payload.as_deref().map(str::as_bytes),
        )
        .await;
        sent.push((key, offset, payload.clone(), *reason));
    }
    let letters = reader.until(WAIT, |seen| seen.len() >= cases.len()).await;
    let mut failures = Failures::new();
    failures.expect_eq("every case", letters.len(), sent.len());
    // Messages of different keys are applied at once, so their dead letters may come in any
    // order: each case finds its own by key.
    for (key, offset, payload, reason) in &sent {
        let row = format!("{key} ({reason})");
        let Some(letter) = letters
            .iter()
            .find(|l| l.key.as_deref() == Some(key.as_str()))
        else {
            failures.expect(&row, false, "no dead letter with its key".to_owned());
            continue;
        };
        let header = |name: &str| letter.headers.get(name).cloned().unwrap_or_default();
        failures.expect_eq(
            &row,
            letter.payload.as_deref(),
            payload.as_deref().map(str::as_bytes),
        );
        failures.expect(
            &row,
            header("dlq_reason").contains(reason),
            format!("reason {:?}", header("dlq_reason")),
        );
        failures.expect_eq(&row, header("dlq_original_topic"), topics.result());
        failures.expect_eq(&row, header("dlq_original_partition"), "0".to_owned());
        failures.expect_eq(&row, header("dlq_original_offset"), offset.to_string());
    }
    failures.assert_none("dead letters");
    let last = sent.last().unwrap().1;
    eventually("the group to commit past the dead letters", || async {
        (committed(&brokers, &topics.group(), &topics.result()).await > last).then_some(())
    })
    .await;
    let after = app.get_job(&id).await;
    assert_eq!(after, running, "bad results change nothing");

    // The consumer is not stuck behind them: a good result still applies.
    let good = json!({"Id": id, "Status": "FAILED", "Error": "bounced"}).to_string();
    produce(&brokers, &topics.result(), &id, Some(good.as_bytes())).await;
    let failed = app.job_with_status(&id, "FAILED").await;
    assert_eq!(failed["version"], running["version"].as_u64().unwrap() + 1);
    app.stop().await;
}

#[tokio::test]
async fn results_that_meet_a_store_outage_wait_and_all_apply_once_it_is_back() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let reader = Reader::new(&brokers, &[topics.update()]);
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateMongo::start(free_port(), &dir.path().join("mongo.h2"));
    let mut config = topics.config(&brokers);
    config.store = Some(scheduler::config::StoreKind::Mongodb);
    config.mongodb_uri = Some(server.uri());
    config.database_name = database_name();
    config.mongodb_timeout_ms = 1_000;
    let app = TestApp::spawn_with(config).await;
    let mut ids = Vec::new();
    for name in ["first result", "second result"] {
        let job = app.create_job(&email_job(name, &in_millis(-1000))).await;
        ids.push(id_of(&job));
    }
    for id in &ids {
        app.job_with_status(id, "RUNNING").await;
    }

    let (port, file) = server.stop();
    let failed = json!({"Id": ids[0], "Status": 5, "Error": "mailbox full"}).to_string();
    let first = produce(&brokers, &topics.result(), &ids[0], Some(failed.as_bytes())).await;
    let succeeded = json!({"Id": ids[1], "Status": 4}).to_string();
    let last = produce(
        &brokers,
        &topics.result(),
        &ids[1],
        Some(succeeded.as_bytes()),
    )
    .await;
    // The consumer meets the outage and retries; nothing past the first result is committed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(committed(&brokers, &topics.group(), &topics.result()).await <= first);

    let _server = PrivateMongo::start(port, &file);
    let job = eventually("the first result to apply", || async {
        let response = app
            .http
            .get(app.url(&format!("/api/v1/jobs/{}", ids[0])))
            .send()
            .await
            .ok()?;
        let job: Value = response.json().await.ok()?;
        (job["status"] == "FAILED").then_some(job)
    })
    .await;
    assert_eq!(job["version"], 3);
    app.job_with_status(&ids[1], "SUCCEEDED").await;
    eventually("the group to commit past both results", || async {
        (committed(&brokers, &topics.group(), &topics.result()).await > last).then_some(())
    })
    .await;
    let finished = reader
        .until(WAIT, |seen| {
            seen.iter()
                .filter(|m| m.header("ce_type") == "scheduler.job.finished")
                .count()
                >= 2
        })
        .await;
    // Each applied once. (Results of different jobs fetched together apply together, so two
    // jobs' runs may finish in either order; one job's results keep their order.)
    let mut finished_ids: Vec<String> = finished
        .iter()
        .filter(|m| m.header("ce_type") == "scheduler.job.finished")
        .map(|m| m.json()["Id"].as_str().unwrap().to_owned())
        .collect();
    finished_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(finished_ids, expected);
    assert_eq!(message_count(&brokers, &topics.dead_letter()).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn results_fetched_together_apply_once_each_and_in_order_per_job() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let data = tempfile::tempdir().unwrap();
    let config = || topics.embedded_config(&brokers, data.path());
    let app = TestApp::spawn_with(config()).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let job = app
            .create_job(&email_job(&format!("batched {i}"), &in_millis(-1000)))
            .await;
        ids.push(id_of(&job));
    }
    for id in &ids {
        app.job_with_status(id, "RUNNING").await;
    }
    app.stop().await;

    // While no consumer runs, each job gets its result, the same again, then a different one:
    // one round after the other, so each job's three keep that order in the partition. The
    // next consumer finds all 120 waiting and fetches them together.
    let producer = producer(&brokers);
    let topic = topics.result();
    let mut last = -1;
    for round in [
        json!({"Status": 4}),
        json!({"Status": 4}),
        json!({"Status": "FAILED", "Error": "late"}),
    ] {
        let sends = ids.iter().map(|id| {
            let mut payload = round.clone();
            payload["Id"] = json!(id);
            let payload = payload.to_string();
            let producer = &producer;
            let topic = &topic;
            async move {
                let record: FutureRecord<'_, str, str> =
                    FutureRecord::to(topic).key(id.as_str()).payload(&payload);
                producer
                    .send(record, Timeout::After(Duration::from_secs(20)))
                    .await
                    .expect("produced")
                    .offset
            }
        });
        last = last.max(*futures::future::join_all(sends).await.iter().max().unwrap());
    }

    let app = TestApp::spawn_with(config()).await;
    eventually("the group to commit past every result", || async {
        (committed(&brokers, &topics.group(), &topics.result()).await > last).then_some(())
    })
    .await;
    // The first result of each job applied, once; the later two changed nothing.
    for id in &ids {
        let job = app.get_job(id).await;
        assert_eq!(job["status"], "SUCCEEDED", "{id}");
        let runs = app.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
        assert_eq!(runs["totalCount"], 1, "{id}");
        assert_eq!(runs["runs"][0]["status"], "SUCCEEDED", "{id}");
    }
    assert_eq!(message_count(&brokers, &topics.dead_letter()).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_on_one_store_publish_every_event_once_through_one_relay() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let data = tempfile::tempdir().unwrap();
    let replica = || topics.embedded_config(&brokers, data.path());
    let apps = [
        TestApp::spawn_with(replica()).await,
        TestApp::spawn_with(replica()).await,
    ];
    let mut ids = Vec::new();
    for i in 0..10 {
        let app = &apps[i % 2];
        let job = app
            .create_job(&email_job(&format!("replica {i}"), &in_millis(300)))
            .await;
        ids.push(id_of(&job));
    }
    for id in &ids {
        apps[0].job_with_status(id, "RUNNING").await;
    }
    let reader = Reader::new(&brokers, &[topics.create(), topics.run()]);
    let messages = reader
        .until(WAIT, |seen| {
            events_per_job(seen).values().map(Vec::len).sum::<usize>() >= 2 * ids.len()
        })
        .await;
    let per_job = events_per_job(&messages);
    for id in &ids {
        // One event per topic each: order across topics is not Kafka's to keep.
        let mut events = per_job[id].clone();
        events.sort();
        assert_eq!(
            events,
            vec![("created".to_owned(), 1), ("run".to_owned(), 2)],
            "{id}"
        );
    }
    // No copies either: one relay published, and each event once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(message_count(&brokers, &topics.create()).await, 10);
    assert_eq!(message_count(&brokers, &topics.run()).await, 10);
    for app in apps {
        app.stop().await;
    }
}

/// Idle, neither replica asks the store for the relay lease more than once per half lease (the
/// leader renewing it, the other trying it), and neither trims the journal (the other never,
/// the leader once a minute while no event comes); when the leader stops, the other takes over
/// and publishes what it stores next.
#[tokio::test]
async fn idle_replicas_ask_for_the_relay_lease_once_per_half_lease_and_one_takes_over_at_a_stop() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let data = tempfile::tempdir().unwrap();
    // The relay's lease is the scheduler's, at most 10 s.
    let replica = || {
        let mut config = topics.embedded_config(&brokers, data.path());
        config.lease_seconds = 10;
        config
    };
    let first = TestApp::spawn_with(replica()).await;
    let second = TestApp::spawn_with(replica()).await;
    // How many times a replica asked its store for `operation`.
    let asks = |scrape: &Scrape, operation: &str| {
        scrape.value(
            "scheduler_store_operation_duration_seconds_count",
            &[("operation", operation)],
        )
    };
    // Both relays have made their first round.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = [Scrape::of(&first).await, Scrape::of(&second).await];
    // Past the 10 s a trim came every before.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = [Scrape::of(&first).await, Scrape::of(&second).await];
    for (replica, (before, after)) in before.iter().zip(&after).enumerate() {
        let asked = asks(after, "take_relay_lease") - asks(before, "take_relay_lease");
        // The lease is 10 s: in 11 s, at most three asks (one every 5 s) whatever the phase.
        assert!(
            asked <= 3.0,
            "replica {replica} asked for the relay lease {asked} times in 11 idle seconds"
        );
        assert_eq!(
            asks(after, "trim_journal"),
            0.0,
            "replica {replica} trimmed while idle"
        );
    }

    let reader = Reader::new(&brokers, &[topics.create()]);
    first.stop().await;
    let job = second
        .create_job(&email_job("after the stop", &in_millis(3_600_000)))
        .await;
    let id = id_of(&job);
    let messages = reader
        .until(WAIT, |seen| {
            events_per_job(seen)
                .get(&id)
                .is_some_and(|events| !events.is_empty())
        })
        .await;
    assert_eq!(
        events_per_job(&messages)[&id],
        vec![("created".to_owned(), 1)]
    );
    second.stop().await;
}

#[tokio::test]
async fn results_are_neither_lost_nor_applied_twice_when_a_consumer_leaves_the_group() {
    let brokers = brokers();
    let topics = TestTopics::new();
    let data = tempfile::tempdir().unwrap();
    let replica = || {
        let mut config = topics.embedded_config(&brokers, data.path());
        config.topic_job_run_result_partitions = 2;
        config
    };
    // Two partitions, so each consumer of the group gets one.
    let settings = replica().kafka_settings().unwrap();
    scheduler::kafka::ensure_topics(&settings).await.unwrap();
    let staying = TestApp::spawn_with(replica()).await;
    let leaving = TestApp::spawn_with(replica()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let job = staying
            .create_job(&email_job(&format!("rebalanced {i}"), &in_millis(-1000)))
            .await;
        ids.push(id_of(&job));
    }
    for id in &ids {
        staying.job_with_status(id, "RUNNING").await;
    }
    let result_producer = producer(&brokers);
    let send = |id: String| {
        let producer = result_producer.clone();
        let topic = topics.result();
        async move {
            let payload = json!({"Id": id, "Status": 4}).to_string();
            producer
                .send(
                    FutureRecord::to(&topic).key(&id).payload(&payload),
                    Timeout::After(Duration::from_secs(20)),
                )
                .await
                .expect("produced");
        }
    };
    for id in &ids[..10] {
        send(id.clone()).await;
    }
    // One consumer leaves mid-stream: its partition moves to the other.
    leaving.stop().await;
    for id in &ids[10..] {
        send(id.clone()).await;
    }
    for id in &ids {
        let job = eventually(&format!("the result of {id} to apply"), || async {
            let job = staying.get_job(id).await;
            (job["status"] == "SUCCEEDED").then_some(job)
        })
        .await;
        // Created 1, fired 2, finished 3: applied once.
        assert_eq!(job["version"], 3, "{id}");
    }
    // One finished event per job, and no result dead-lettered.
    let reader = Reader::new(&brokers, &[topics.update()]);
    let finished = reader
        .until(WAIT, |seen| {
            seen.iter()
                .filter(|m| m.header("ce_type") == "scheduler.job.finished")
                .count()
                >= 20
        })
        .await;
    let jobs: HashSet<String> = finished
        .iter()
        .map(|m| m.json()["Id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(jobs.len(), 20);
    assert_eq!(message_count(&brokers, &topics.dead_letter()).await, 0);
    staying.stop().await;
}

/// Splits each job's events by the topic they go to: Kafka keeps order per partition, so a
/// consumer sees one job's events in order within each topic.
fn per_topic(
    per_job: &HashMap<String, Vec<(String, u64)>>,
) -> HashMap<(String, &'static str), Vec<(String, u64)>> {
    let mut split: HashMap<(String, &'static str), Vec<(String, u64)>> = HashMap::new();
    for (job, events) in per_job {
        for (kind, version) in events {
            let topic = match kind.as_str() {
                "created" => "create",
                "run" => "run",
                _ => "update",
            };
            split
                .entry((job.clone(), topic))
                .or_default()
                .push((kind.clone(), *version));
        }
    }
    split
}

/// Each job's events in order of first appearance (copies of a `ce_id` dropped), as
/// (kind, version).
fn events_per_job(messages: &[Received]) -> HashMap<String, Vec<(String, u64)>> {
    let mut seen = HashSet::new();
    let mut per_job: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for message in messages {
        if !seen.insert(message.header("ce_id").to_owned()) {
            continue;
        }
        let value = message.json();
        per_job
            .entry(value["Id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                value["Event"].as_str().unwrap().to_owned(),
                value["Version"].as_u64().unwrap(),
            ));
    }
    per_job
}

#[tokio::test]
async fn events_stored_during_a_broker_outage_all_arrive_in_order_per_job_once_it_is_back() {
    let mut broker = PrivateBroker::new();
    broker.start().await;
    let brokers = broker.address();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let app = TestApp::spawn_with(topics.config(&brokers)).await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    broker.kill();
    let problem: Value = eventually("/readyz to report the broker outage", || async {
        let response = app.http.get(app.url("/readyz")).send().await.ok()?;
        if response.status() != 503 {
            return None;
        }
        response.json().await.ok()
    })
    .await;
    assert_eq!(problem["detail"], "the Kafka brokers are unreachable");
    // Every API call works during the outage; some jobs fire.
    let mut expected: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for i in 0..6 {
        let due = if i < 3 {
            in_millis(300)
        } else {
            "2099-01-01T00:00:00Z".into()
        };
        let job = app
            .create_job(&email_job(&format!("outage {i}"), &due))
            .await;
        let id = id_of(&job);
        let mut events = vec![("created".to_owned(), 1)];
        if i >= 3 {
            for version in 2..=3 {
                let response = app
                    .patch(
                        &format!("/api/v1/jobs/{id}"),
                        &json!({"description": format!("edit {version}")}),
                    )
                    .await;
                assert_eq!(response.status(), 200);
                events.push(("updated".to_owned(), version));
            }
        }
        if i == 5 {
            app.delete_job(&id).await;
            events.push(("deleted".to_owned(), 3));
        }
        expected.insert(id, events);
    }
    for (id, events) in expected.iter_mut() {
        if events.len() == 1 {
            app.job_with_status(id, "RUNNING").await;
            events.push(("run".to_owned(), 2));
        }
    }

    broker.start().await;
    let reader = Reader::new(&brokers, &[topics.create(), topics.update(), topics.run()]);
    let total: usize = expected.values().map(Vec::len).sum();
    let messages = reader
        .until(Duration::from_secs(90), |seen| {
            events_per_job(seen).values().map(Vec::len).sum::<usize>() >= total
        })
        .await;
    assert_eq!(per_topic(&events_per_job(&messages)), per_topic(&expected));
    eventually("/readyz to recover", || async {
        let response = app.http.get(app.url("/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_run_recorded_before_a_sigkill_is_published_by_the_restarted_service() {
    let mut broker = PrivateBroker::new();
    let brokers = broker.address();
    let topics = TestTopics::new();
    let data = tempfile::tempdir().unwrap();
    let mut flags = topics.flags(&brokers);
    flags.extend(["--lease-seconds".to_owned(), "2".to_owned()]);

    // The broker is not up yet: the fire is recorded with its event in the outbox, and cannot
    // be published before the kill.
    let mut first = Service::start_with(data.path(), &flags).await;
    let http = reqwest::Client::new();
    let response = http
        .post(first.url("/api/v1/jobs"))
        .json(&email_job("fired, then killed", &in_millis(-500)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runs_url = first.url(&format!("/api/v1/jobs/{id}/runs"));
    let run_id = eventually("the fire to be recorded", || {
        let request = http.get(&runs_url).send();
        async move {
            let runs: Value = request.await.ok()?.json().await.ok()?;
            runs["runs"][0]["runId"].as_str().map(str::to_owned)
        }
    })
    .await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().unwrap();
    drop(first);

    broker.start().await;
    let _second = Service::start_with(data.path(), &flags).await;
    // The restarted service creates the topics; read once they exist.
    topics.ensure(&brokers).await;
    let reader = Reader::new(&brokers, &[topics.create(), topics.run()]);
    let messages = reader
        .until(Duration::from_secs(60), |seen| {
            seen.iter().any(|m| m.topic == topics.run())
                && seen.iter().any(|m| m.topic == topics.create())
        })
        .await;
    let run = messages.iter().find(|m| m.topic == topics.run()).unwrap();
    assert_eq!(run.json()["RunId"], run_id.as_str());
    assert_eq!(run.key.as_deref(), Some(id.as_str()));
}

/// The message each event type becomes, pinned in `tests/golden/kafka/<type>.json`. To accept
/// a deliberate change of the wire format: `UPDATE_GOLDEN=1 cargo test golden`.
#[test]
fn every_event_type_matches_its_golden_message() {
    use scheduler::{
        domain::{
            Event, EventKind, Job, JobStatus, JobType, MisfirePolicy, OverlapPolicy, RetryPolicy,
            Run, RunId, RunStatus, Schedule,
        },
        kafka::message,
    };
    let settings = Config::parse_from(["scheduler", "--kafka-brokers", "127.0.0.1:9092"])
        .kafka_settings()
        .unwrap();
    let job = |status: JobStatus, version: u64, schedule_time: Option<&str>| -> Job {
        let data = json!({
            "SourceAddress": "reports@example.com",
            "DestinationAddress": "team@example.com",
            "Subject": "Weekly report",
            "Message": "Attached."
        });
        Job {
            id: JobId::parse("65a1b2c3d4e5f60718293a4b").unwrap(),
            name: "Weekly report".into(),
            description: "Monday's numbers".into(),
            job_type: JobType::Email,
            job_data: data.as_object().unwrap().clone().into(),
            schedule: Schedule::RunAt(at("2030-01-07T09:00:00Z")),
            retry: RetryPolicy::default(),
            run_timeout_seconds: 300,
            misfire_policy: MisfirePolicy::FireOnce,
            overlap_policy: OverlapPolicy::Skip,
            delivery: None,
            webhook: None,
            schedule_time: schedule_time.map(at),
            status,
            created_at: at("2030-01-01T08:00:00.125Z"),
            updated_at: at("2030-01-07T09:00:00.250Z"),
            version,
            open_runs: Vec::new(),
            retries: Vec::new(),
            next_attempt: 1,
            reschedules: 0,
            created_by: None,
            updated_by: None,
            trace: None,
        }
    };
    let run = |status: RunStatus, finished: Option<&str>, output: Option<&str>| -> Run {
        Run {
            run_id: RunId::parse("0b7c5e0e-3f57-5d5e-9d1e-4f2a8c6b1e2d").unwrap(),
            job_id: JobId::parse("65a1b2c3d4e5f60718293a4b").unwrap(),
            scheduled_for: at("2030-01-07T09:00:00Z"),
            fired_at: Some(at("2030-01-07T09:00:00.004Z")),
            attempt: 1,
            status,
            finished_at: finished.map(at),
            error: None,
            output: output.map(str::to_owned),
            actor: None,
            reason: None,
            trace: None,
            delivery: None,
            lease: None,
        }
    };
    let due = Some("2030-01-07T09:00:00Z");
    let cases = [
        (
            "created",
            EventKind::Created,
            job(JobStatus::Scheduled, 1, due),
            None,
        ),
        (
            "updated",
            EventKind::Updated,
            job(JobStatus::Scheduled, 2, due),
            None,
        ),
        (
            "deleted",
            EventKind::Deleted,
            job(JobStatus::Scheduled, 2, due),
            None,
        ),
        (
            "run",
            EventKind::Run,
            job(JobStatus::Running, 3, None),
            Some(run(RunStatus::Running, None, None)),
        ),
        (
            "finished",
            EventKind::Finished,
            job(JobStatus::Succeeded, 4, None),
            Some(run(
                RunStatus::Succeeded,
                Some("2030-01-07T09:00:03.5Z"),
                Some("sent 12"),
            )),
        ),
    ];
    for (name, kind, job, run) in cases {
        let event = Event {
            id: uuid::Uuid::parse_str("9f3c2a1e-6b4d-4e8f-a7c5-1d2e3f4a5b6c").unwrap(),
            kind,
            time: at("2030-01-07T09:00:00.250Z"),
            job,
            run,
            actor: None,
            reason: None,
            trace: None,
        };
        let headers: Vec<Value> = message::headers(&event, &settings.source, None)
            .into_iter()
            .map(|(name, value)| json!([name, value]))
            .collect();
        let actual = json!({
            "topic": message::topic_of(event.kind, &settings.topics),
            "key": message::key_of(&event),
            "headers": headers,
            "value": message::payload(&event),
        });
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        matches_golden("kafka", &format!("{name}.json"), &text);
    }
}
