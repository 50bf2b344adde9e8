//! What each store writes, pinned byte for byte in `tests/golden/store/`: the embedded store's
//! schema and rows, and MongoDB's documents with their BSON types. A change to a stored format
//! must be deliberate (old files and databases must still read): accept one with
//! `UPDATE_GOLDEN=1 cargo test golden`.

use std::{fmt::Write, sync::Arc};

use bson::{Bson, Document};
use scheduler::{
    domain::{
        Audit, Delivery, Event, EventKind, Job, JobId, JobInput, MisfirePolicy, OverlapPolicy,
        PendingRetry, RetryPolicy, Run, RunLease, RunStatus, Webhook,
    },
    jobs::ports::{IdempotencyKey, JobStore, Lease, PUBLISHED},
    store::sqlite::SqliteStore,
};
use serde_json::json;

use crate::support::{at, database_name, matches_golden, mongo_store};

fn id(hex: &str) -> JobId {
    JobId::parse(hex).unwrap()
}

/// The trace of the request that changed the interval job, as tracing stores it.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A job with a fixed id, made at a fixed time from REST-shaped input.
fn job(hex: &str, input: serde_json::Value) -> Job {
    let input: JobInput = serde_json::from_value(input).unwrap();
    let mut job = Job::new(input.parse().unwrap(), at("2030-01-01T08:00:00.125Z"));
    job.id = id(hex);
    job
}

fn event(n: u128, kind: EventKind, job: &Job, run: Option<Run>) -> Event {
    Event {
        id: uuid::Uuid::from_u128(0x9f3c_2a1e_6b4d_4e8f_a7c5_1d2e_3f4a_5b00 + n),
        kind,
        time: at("2030-01-01T08:00:00.250Z"),
        job: job.clone(),
        run,
        actor: None,
        reason: None,
        trace: None,
    }
}

fn run(job: &Job, due: &str, attempt: u32, status: RunStatus) -> Run {
    let fired = !matches!(status, RunStatus::Missed);
    Run {
        run_id: job.run_id(at(due), attempt),
        job_id: job.id,
        scheduled_for: at(due),
        fired_at: fired.then(|| at(due) + chrono::Duration::milliseconds(4)),
        attempt,
        status,
        finished_at: (status != RunStatus::Running).then(|| at(due) + chrono::Duration::seconds(3)),
        error: (status == RunStatus::Missed).then(|| "missed: the scheduler was down".to_owned()),
        output: (status == RunStatus::Succeeded).then(|| "sent 12".to_owned()),
        actor: None,
        reason: None,
        trace: None,
        delivery: None,
        lease: None,
    }
}

/// Writes one of each kind of thing a store keeps, at fixed times with fixed ids:
/// - a one-shot EMAIL job under an idempotency key, with its creation event, then claimed;
/// - a cron job with every policy away from its default, a webhook it is delivered by, an open
///   run held by a worker and a waiting retry;
/// - a cron job created by a named actor;
/// - an interval job whose ledger holds a succeeded and a missed run (recorded by an actor for
///   a reason, as an operation records it), with its finished event;
/// - a deleted job (with its deletion event waiting in the outbox);
/// - the first two events journaled (MongoDB journals later than it stores: the others wait
///   in their documents), and the publishing cursor past the first;
/// - the outbox relay's lease.
async fn write_one_of_each(store: Arc<dyn JobStore>) {
    let email = job(
        "65a1b2c3d4e5f60718293a01",
        json!({
            "name": "Weekly report", "description": "Monday's numbers", "jobType": "EMAIL",
            "jobData": {"SourceAddress": "reports@example.com",
                        "DestinationAddress": "team@example.com",
                        "Subject": "Weekly report", "Message": "Attached."},
            "schedule": {"runAt": "2030-01-01T08:30:00Z"}
        }),
    );
    let key = IdempotencyKey {
        key: "order-42".into(),
        fingerprint: email.spec().fingerprint(),
    };
    store
        .insert(
            &email,
            Some(&key),
            &[event(1, EventKind::Created, &email, None)],
        )
        .await
        .unwrap();

    let mut cron = job(
        "65a1b2c3d4e5f60718293a02",
        json!({
            "name": "Berlin mornings", "jobType": "SMS",
            "jobData": {"To": "+4930123", "Count": 3, "Tags": ["a", "b"], "Nested": {"On": true}},
            "schedule": {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
            "retry": {"maxAttempts": 3, "backoffSeconds": 7},
            "runTimeoutSeconds": 42, "misfirePolicy": "FIRE_ALL", "overlapPolicy": "ALLOW"
        }),
    );
    assert_eq!(
        (cron.retry, cron.misfire_policy, cron.overlap_policy),
        (
            RetryPolicy {
                max_attempts: 3,
                backoff_seconds: 7
            },
            MisfirePolicy::FireAll,
            OverlapPolicy::Allow
        )
    );
    cron.delivery = Some(Delivery::Webhook);
    cron.webhook = Some(Webhook {
        url: "https://hooks.example.com/in?team=ops".into(),
        headers: [("X-Team".to_owned(), "ops".to_owned())].into(),
        secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
    });
    let mut open = run(&cron, "2030-01-06T08:00:00Z", 1, RunStatus::Running);
    open.delivery = Some(Delivery::Webhook);
    open.lease = Some(RunLease {
        holder: Some("worker-7".into()),
        until: at("2030-01-06T08:01:00Z"),
    });
    cron.open_runs.push(open.clone());
    cron.retries.push(PendingRetry {
        due: at("2030-01-06T08:05:00Z"),
        scheduled_for: at("2029-12-30T08:00:00Z"),
        attempt: 2,
    });
    cron.next_attempt = 2;
    cron.refresh_status(None);
    cron.created_by = Some("ana@example.com".into());
    cron.updated_by = Some("ana@example.com".into());
    store
        .insert(&cron, None, &[event(2, EventKind::Run, &cron, Some(open))])
        .await
        .unwrap();
    store.sequence_events(100).await.unwrap();
    store.set_cursor(PUBLISHED, 1).await.unwrap();

    let interval = job(
        "65a1b2c3d4e5f60718293a03",
        json!({
            "name": "every hour", "jobType": "SMS", "jobData": {},
            "schedule": {"intervalSeconds": 3600, "startAt": "2030-01-01T10:00:00Z"}
        }),
    );
    store.insert(&interval, None, &[]).await.unwrap();
    let mut next = interval.clone();
    next.touch(at("2030-01-01T12:00:00.500Z"));
    next.updated_by = Some("ops@example.com".into());
    next.trace = Some(TRACE.into());
    // As after an edit of its schedule: pins the counter run ids take part in (written only
    // when not 0, so the other jobs' documents read as before it existed).
    next.reschedules = 1;
    let audit = Audit {
        actor: Some("ops@example.com".into()),
        reason: Some("maintenance window".into()),
        trace: Some(TRACE.into()),
    };
    let mut missed = run(&interval, "2030-01-01T11:00:00Z", 1, RunStatus::Missed);
    missed.actor.clone_from(&audit.actor);
    missed.reason.clone_from(&audit.reason);
    missed.trace.clone_from(&audit.trace);
    let finished = [
        run(&interval, "2030-01-01T10:00:00Z", 1, RunStatus::Succeeded),
        missed,
    ];
    let finished_event =
        event(3, EventKind::Finished, &next, Some(finished[1].clone())).attributed(&audit);
    store
        .update(&next, interval.version, &finished, &[finished_event])
        .await
        .unwrap();

    let doomed = job(
        "65a1b2c3d4e5f60718293a04",
        json!({"name": "to delete", "jobType": "SMS", "jobData": {},
               "schedule": {"runAt": "2030-02-01T00:00:00Z"}}),
    );
    store.insert(&doomed, None, &[]).await.unwrap();
    store
        .delete(
            doomed.id,
            doomed.version,
            &[event(4, EventKind::Deleted, &doomed, None)],
        )
        .await
        .unwrap();

    // Only the one-shot is due by then: its claim sets the lease and the fencing token.
    let lease = Lease {
        owner: "scheduler-golden".into(),
        until: at("2030-01-01T09:00:30Z"),
    };
    let claimed = store
        .claim_due(&lease, at("2030-01-01T09:00:00Z"), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, email.id);
    let relay = Lease {
        owner: "relay-golden".into(),
        until: at("2030-01-01T09:00:10Z"),
    };
    assert!(
        store
            .take_relay_lease(&relay, at("2030-01-01T09:00:00Z"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_embedded_store_writes_its_golden_schema_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_one_of_each(Arc::new(SqliteStore::open(dir.path()).unwrap())).await;

    let conn = rusqlite::Connection::open(dir.path().join("jobs.db")).unwrap();
    let mut text = String::new();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    writeln!(text, "user_version: {version}").unwrap();
    let mut schema = conn
        .prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap();
    let rows = schema
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (kind, name, sql) = row.unwrap();
        writeln!(text, "{kind} {name}: {}", sql.unwrap_or_default()).unwrap();
    }
    for (table, order) in [
        ("jobs", "id"),
        ("ledger", "seq"),
        ("events", "seq"),
        ("cursors", "name"),
        ("leases", "name"),
    ] {
        writeln!(text, "\n# {table}").unwrap();
        let mut statement = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            writeln!(text, "-").unwrap();
            for (i, column) in columns.iter().enumerate() {
                let value = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(x) => x.to_string(),
                    rusqlite::types::ValueRef::Text(t) => {
                        format!("'{}'", String::from_utf8_lossy(t))
                    }
                    rusqlite::types::ValueRef::Blob(b) => format!("blob of {} bytes", b.len()),
                };
                writeln!(text, "  {column}: {value}").unwrap();
            }
        }
    }
    matches_golden("store", "embedded.txt", &text);
}

/// A BSON value with its type, in a stable text form: field order and number types matter to
/// MongoDB, so both are pinned.
fn render(value: &Bson, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Bson::Document(document) => render_document(document, indent, out),
        Bson::Array(items) if items.is_empty() => out.push_str("[]\n"),
        Bson::Array(items) => {
            out.push('\n');
            for item in items {
                write!(out, "{pad}- ").unwrap();
                render(item, indent + 1, out);
            }
        }
        Bson::String(s) => writeln!(out, "String({})", serde_json::to_string(s).unwrap()).unwrap(),
        Bson::Int32(n) => writeln!(out, "Int32({n})").unwrap(),
        Bson::Int64(n) => writeln!(out, "Int64({n})").unwrap(),
        Bson::Double(x) => writeln!(out, "Double({x})").unwrap(),
        Bson::Boolean(b) => writeln!(out, "Boolean({b})").unwrap(),
        Bson::Null => out.push_str("Null\n"),
        Bson::ObjectId(oid) => writeln!(out, "ObjectId({})", oid.to_hex()).unwrap(),
        Bson::DateTime(t) => writeln!(
            out,
            "DateTime({})",
            t.try_to_rfc3339_string().unwrap_or_default()
        )
        .unwrap(),
        other => writeln!(out, "{other:?}").unwrap(),
    }
}

fn render_document(document: &Document, indent: usize, out: &mut String) {
    if document.is_empty() {
        out.push_str("{}\n");
        return;
    }
    out.push('\n');
    let pad = "  ".repeat(indent);
    for (key, value) in document {
        write!(out, "{pad}{key}: ").unwrap();
        // A claim's token is random: its type is pinned, not its value.
        match value {
            Bson::String(_) if key == "claim" => out.push_str("String(a random claim token)\n"),
            value => render(value, indent + 1, out),
        }
    }
}

#[tokio::test]
async fn the_mongodb_store_writes_its_golden_documents() {
    let store = mongo_store(&database_name()).await;
    let db = store.database().clone();
    write_one_of_each(Arc::new(store)).await;

    let mut text = String::new();
    for collection in ["jobs", "events", "cursors", "leases"] {
        writeln!(text, "# {collection}").unwrap();
        let mut cursor = db
            .collection::<Document>(collection)
            .find(bson::doc! {})
            .sort(bson::doc! { "_id": 1 })
            .await
            .unwrap();
        use futures::TryStreamExt;
        while let Some(document) = cursor.try_next().await.unwrap() {
            write!(text, "-").unwrap();
            render_document(&document, 1, &mut text);
        }
    }
    matches_golden("store", "mongodb.txt", &text);
}
