//! Switching from the older service: its documents, written exactly as it writes them (BSON
//! dates, numbers for status and type, `jobData` as JSON text, its timer's `scheduledKey`),
//! are adopted when the service starts on its database.

use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use scheduler::domain::EventKind;
use serde_json::{Value, json};

use crate::support::{TestApp, database_name, mongo_config, mongo_store};

const EMAIL_DATA: &str = r#"{"SourceAddress":"a@example.com","DestinationAddress":"b@example.com","Subject":"s","Message":"m"}"#;

/// A job as the older service stores it: `status` and `jobType` as its driver writes a Go
/// `int` (32 bits when it fits).
fn older(name: &str, status: i32, due: DateTime<Utc>) -> Document {
    let created = bson::DateTime::from_millis((due - Duration::hours(1)).timestamp_millis());
    doc! {
        "_id": ObjectId::new(),
        "name": name,
        "description": format!("{name}, from the older service"),
        "scheduleTime": bson::DateTime::from_millis(due.timestamp_millis()),
        "createdAt": created,
        "updatedAt": created,
        "status": status,
        "jobType": 0,
        "jobData": EMAIL_DATA,
        "scheduledKey": format!("key-{name}"),
    }
}

fn hex(document: &Document) -> String {
    document.get_object_id("_id").unwrap().to_hex()
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_older_services_jobs_are_adopted_once_and_fire_at_their_times() {
    let database = database_name();
    let jobs = mongo_store(&database)
        .await
        .database()
        .collection::<Document>("jobs");
    let now = Utc::now().trunc_subsecs(3);
    let soon = older("due soon", 2, now + Duration::seconds(2));
    let overdue = older("overdue", 1, now - Duration::seconds(20));
    let done = older("done", 4, now - Duration::days(1));
    let running = older("running", 3, now - Duration::seconds(5));
    let mut unknown = older("unknown type", 2, now + Duration::days(1));
    unknown.insert("jobType", 9);
    let documents = [&soon, &overdue, &done, &running, &unknown];
    jobs.insert_many(documents.iter().copied()).await.unwrap();

    let mut app = TestApp::spawn_with(mongo_config(&database)).await;

    // Ids, names, times, statuses and data carry over.
    for (older, status) in [
        (&soon, "SCHEDULED"),
        (&done, "SUCCEEDED"),
        (&running, "RUNNING"),
    ] {
        let job = app.get_job(&hex(older)).await;
        assert_eq!(job["name"], older.get_str("name").unwrap(), "{job}");
        assert_eq!(job["description"], older.get_str("description").unwrap());
        assert_eq!(job["jobType"], "EMAIL");
        assert_eq!(
            job["jobData"],
            serde_json::from_str::<Value>(EMAIL_DATA).unwrap()
        );
        assert_eq!(job["status"], status, "{job}");
        let created = older.get_datetime("createdAt").unwrap().timestamp_millis();
        assert_eq!(time(&job["createdAt"]).timestamp_millis(), created);
        let due = older
            .get_datetime("scheduleTime")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            time(&job["schedule"]["runAt"]).timestamp_millis(),
            due,
            "{job}"
        );
    }

    // The overdue job fires at once, the pending one at its time.
    for older in [&overdue, &soon] {
        let id = hex(older);
        let fired = app.next_event(EventKind::Run, &id).await;
        let run = fired.run.as_ref().unwrap();
        let due = older
            .get_datetime("scheduleTime")
            .unwrap()
            .timestamp_millis();
        assert_eq!(run.scheduled_for.timestamp_millis(), due, "{id}");
    }

    // The running job's run is open: the executor's result closes it.
    let id = hex(&running);
    let runs = app.runs(&id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "RUNNING");
    let (status, _) = app
        .post_json(
            &format!(
                "/api/v1/jobs/{id}/runs/{}/result",
                runs[0]["runId"].as_str().unwrap()
            ),
            &json!({"status": "SUCCEEDED"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get_job(&id).await["status"], "SUCCEEDED");

    // A document the older service never wrote is left exactly as it was.
    let left = jobs
        .find_one(doc! {"_id": unknown.get_object_id("_id").unwrap()})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left, unknown);

    // A second start adopts nothing again: every adopted document keeps its adoption time.
    let adopted_at = |document: &Document| document.get_document("adopted").ok().cloned();
    let before: Vec<Document> = {
        use futures::TryStreamExt;
        jobs.find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    let marks: Vec<_> = before.iter().filter_map(adopted_at).collect();
    assert_eq!(marks.len(), 4, "{before:?}");
    assert!(marks.iter().all(|m| m.get_str("scheduledKey").is_ok()));
    let again = TestApp::spawn_with(mongo_config(&database)).await;
    for document in &before {
        let now = jobs
            .find_one(doc! {"_id": document.get("_id").cloned().unwrap_or(Bson::Null)})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(adopted_at(&now), adopted_at(document));
    }
    drop(again);
}

#[tokio::test]
async fn a_process_killed_while_adopting_leaves_each_document_whole_and_the_next_start_finishes() {
    use futures::TryStreamExt;
    let uri = std::env::var("MONGODB_URI").expect(
        "MONGODB_URI is not set: run the suite with ./scripts/test.sh, which starts a MongoDB-wire server",
    );
    let database = database_name();
    let jobs = mongo_store(&database)
        .await
        .database()
        .collection::<Document>("jobs");
    let due = Utc::now() + Duration::days(1);
    let originals: Vec<Document> = (0..2_000)
        .map(|i| older(&format!("job {i}"), 2, due))
        .collect();
    jobs.insert_many(&originals).await.unwrap();
    let flags: Vec<String> = ["--store", "mongodb", "--mongodb-uri", &uri]
        .into_iter()
        .chain(["--database-name", &database])
        .map(String::from)
        .collect();

    // Killed as soon as it answers, or before: adoption may be anywhere.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .env_clear()
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(&flags)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Each document is the older one, untouched, or wholly ours.
    let now: Vec<Document> = jobs
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(now.len(), originals.len());
    let mut adopted = 0;
    for document in &now {
        let original = originals
            .iter()
            .find(|o| o.get("_id") == document.get("_id"))
            .unwrap();
        if document.contains_key("adopted") {
            assert!(document.contains_key("schedule") && !document.contains_key("scheduledKey"));
            assert_eq!(document.get("name"), original.get("name"));
            adopted += 1;
        } else {
            assert_eq!(document, original, "half converted");
        }
    }
    println!("{adopted} of {} adopted before the kill", originals.len());

    // The next start adopts the rest.
    let app = TestApp::spawn_with(mongo_config(&database)).await;
    let page = app.get_json("/api/v1/jobs?size=1").await;
    assert_eq!(page["totalCount"], originals.len(), "{page}");
    let left = jobs
        .count_documents(doc! {"adopted": {"$exists": false}})
        .await
        .unwrap();
    assert_eq!(left, 0);
}
