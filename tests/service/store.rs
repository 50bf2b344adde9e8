//! One conformance suite, two stores: every test body below runs against the embedded store
//! and against MongoDB (the server at `MONGODB_URI`, which `scripts/test.sh` starts), each test
//! in its own data directory or database.

use std::{collections::HashMap, sync::Arc};

use chrono::{Duration, Utc};
use scheduler::{
    config::Config,
    domain::{Job, JobInput, JobStatus, JobType, RunStatus, truncate},
    events::{Event, EventKind},
    store::{
        Fire, IdempotencyKey, JobFilter, JobStore, Lease, PageRequest, StoreError,
        mongo::MongoStore, sqlite::SqliteStore,
    },
};
use serde_json::json;

/// A store under test, and how to open it again as a restarted process would.
pub enum Backend {
    Embedded(tempfile::TempDir),
    Mongo(String),
}

impl Backend {
    pub fn embedded() -> Self {
        Self::Embedded(tempfile::tempdir().unwrap())
    }

    /// A fresh database on the server at `MONGODB_URI`.
    pub fn mongo() -> Self {
        Self::Mongo(format!("test_{}", uuid::Uuid::new_v4().simple()))
    }

    pub async fn open(&self) -> Arc<dyn JobStore> {
        match self {
            Self::Embedded(dir) => Arc::new(SqliteStore::open(dir.path()).unwrap()),
            Self::Mongo(database) => Arc::new(mongo_store(database).await),
        }
    }
}

/// The settings of a MongoDB store on database `database` at `MONGODB_URI`.
pub fn mongo_config(database: &str) -> Config {
    let uri = std::env::var("MONGODB_URI").expect(
        "MONGODB_URI is not set: run the suite with ./scripts/test.sh, which starts a MongoDB-wire server",
    );
    let mut config = Config::for_tests();
    config.store = Some(scheduler::config::StoreKind::Mongodb);
    config.mongodb_uri = Some(uri);
    config.database_name = database.to_owned();
    config.database_db_name_file = None;
    config
}

pub async fn mongo_store(database: &str) -> MongoStore {
    let settings = mongo_config(database).mongo_settings().await.unwrap();
    MongoStore::connect(settings).await.unwrap()
}

fn job_due(name: &str, at: chrono::DateTime<Utc>) -> Job {
    let input: JobInput = serde_json::from_value(json!({
        "name": name, "jobType": "SMS", "jobData": {"To": "+100", "Count": 3},
        "schedule": {"runAt": scheduler::domain::format_time(at)}
    }))
    .unwrap();
    Job::new(input.parse().unwrap(), Utc::now())
}

fn lease(owner: &str, until: chrono::DateTime<Utc>) -> Lease {
    Lease {
        owner: owner.into(),
        until,
    }
}

/// Runs `body` against both stores, as two tests.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::embedded()).await;
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::mongo()).await;
                }
            )*
        }
    };
}

conformance!(
    stored_job_reads_back_equal_and_survives_a_reopen,
    claims_never_double_fire_under_concurrent_claimers,
    a_lease_holds_until_it_lapses_and_then_passes_on,
    a_job_changed_after_its_claim_is_not_fired_by_that_claim,
    due_jobs_are_claimed_earliest_first_and_next_due_sees_them,
    conditional_updates_lose_to_a_newer_version,
    runs_are_written_with_the_job_and_never_overwritten_by_a_fire,
    paging_counts_and_filters_are_exact_at_the_edges,
    idempotency_keys_are_unique,
    deleting_removes_the_job_and_its_runs,
    every_write_stores_its_event_atomically_and_in_order,
    a_refused_write_stores_no_event,
    the_outbox_survives_a_reopen_and_keeps_order_across_partial_delivery,
    one_relay_holds_the_outbox_lease_at_a_time,
);

async fn stored_job_reads_back_equal_and_survives_a_reopen(backend: Backend) {
    let store = backend.open().await;
    store.ping().await.unwrap();
    let job = job_due("durable job", Utc::now() + Duration::hours(1));
    store.insert(&job, None, None).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap().as_ref(), Some(&job));
    drop(store);

    let reopened = backend.open().await;
    assert_eq!(reopened.get(job.id).await.unwrap(), Some(job));
    assert_eq!(
        reopened
            .get(scheduler::domain::JobId::generate())
            .await
            .unwrap(),
        None
    );
}

async fn claims_never_double_fire_under_concurrent_claimers(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let mut ids = Vec::new();
    for i in 0..120 {
        let job = job_due(&format!("contended {i}"), now - Duration::seconds(1));
        store.insert(&job, None, None).await.unwrap();
        ids.push(job.id);
    }
    // Four schedulers, each on its own connection, claim and fire until nothing is due.
    let mut claimers = Vec::new();
    for owner in ["a", "b", "c", "d"] {
        let store = backend.open().await;
        claimers.push(tokio::spawn(async move {
            let mut fired = Vec::new();
            let lease = lease(owner, Utc::now() + Duration::seconds(60));
            loop {
                let now = Utc::now();
                let claimed = store.claim_due(&lease, now, 7).await.unwrap();
                if claimed.is_empty() {
                    break fired;
                }
                let fires: Vec<Fire> = claimed.iter().map(|job| job.fired(now).into()).collect();
                fired.extend(store.record_fires(&lease, &fires).await.unwrap());
            }
        }));
    }
    let mut count = HashMap::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            *count.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(count.len(), ids.len(), "every due job fired");
    assert!(count.values().all(|&n| n == 1), "a job fired twice");
    for id in ids {
        let (runs, total) = store
            .list_runs(id, PageRequest { page: 1, size: 10 })
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(runs[0].status, RunStatus::Running);
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            JobStatus::Running
        );
    }
}

async fn a_lease_holds_until_it_lapses_and_then_passes_on(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("leased", now - Duration::seconds(1));
    a.insert(&job, None, None).await.unwrap();

    let lease_a = lease("a", now + Duration::seconds(10));
    let claimed = a.claim_due(&lease_a, now, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let lease_b = lease("b", now + Duration::seconds(40));
    assert!(b.claim_due(&lease_b, now, 10).await.unwrap().is_empty());
    assert_eq!(b.next_due().await.unwrap(), Some(lease_a.until));

    // A died between claim and fire: once its lease lapses, B takes the job over.
    let later = now + Duration::seconds(11);
    let reclaimed = b.claim_due(&lease_b, later, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    // A, back too late, cannot write its fire; B can.
    assert!(
        a.record_fires(&lease_a, &[claimed[0].fired(later).into()])
            .await
            .unwrap()
            .is_empty()
    );
    let fire: Fire = reclaimed[0].fired(later).into();
    assert_eq!(
        b.record_fires(&lease_b, std::slice::from_ref(&fire))
            .await
            .unwrap(),
        vec![job.id]
    );
    let stored = a.get_run(job.id, fire.run.run_id).await.unwrap().unwrap();
    assert_eq!(stored, fire.run);
}

async fn a_job_changed_after_its_claim_is_not_fired_by_that_claim(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("moved away", now);
    store.insert(&job, None, None).await.unwrap();
    let lease = lease("a", now + Duration::seconds(10));
    let claimed = store.claim_due(&lease, now, 10).await.unwrap();

    let mut moved = job.clone();
    moved.schedule_time = Some(now + Duration::days(365));
    moved.touch(now);
    store.update(&moved, job.version, None, None).await.unwrap();

    assert!(
        store
            .record_fires(&lease, &[claimed[0].fired(now).into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(moved));
}

async fn due_jobs_are_claimed_earliest_first_and_next_due_sees_them(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    assert_eq!(store.next_due().await.unwrap(), None);
    let offsets = [5, -3, 60, -10, 0];
    for (i, seconds) in offsets.iter().enumerate() {
        let job = job_due(&format!("due {i}"), now + Duration::seconds(*seconds));
        store.insert(&job, None, None).await.unwrap();
    }
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(now - Duration::seconds(10))
    );
    let lease = lease("a", now + Duration::seconds(30));
    let first = store.claim_due(&lease, now, 1).await.unwrap();
    assert_eq!(first[0].schedule_time, Some(now - Duration::seconds(10)));
    let rest = store.claim_due(&lease, now, 10).await.unwrap();
    let times: Vec<_> = rest.iter().map(|j| j.schedule_time.unwrap()).collect();
    assert_eq!(times, vec![now - Duration::seconds(3), now]);
    // Only future jobs and the leases remain: the earliest lease lapse or future due time.
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(now + Duration::seconds(5))
    );
}

async fn conditional_updates_lose_to_a_newer_version(backend: Backend) {
    let store = backend.open().await;
    let job = job_due("versioned", Utc::now() + Duration::hours(1));
    store.insert(&job, None, None).await.unwrap();
    let mut first = job.clone();
    first.name = "first writer".into();
    first.touch(Utc::now());
    store.update(&first, 1, None, None).await.unwrap();

    let mut second = job.clone();
    second.name = "second writer".into();
    second.touch(Utc::now());
    assert!(matches!(
        store.update(&second, 1, None, None).await,
        Err(StoreError::VersionConflict)
    ));
    assert_eq!(store.get(job.id).await.unwrap(), Some(first));

    let mut ghost = job_due("never stored", Utc::now());
    ghost.touch(Utc::now());
    assert!(matches!(
        store.update(&ghost, 1, None, None).await,
        Err(StoreError::NotFound)
    ));
}

async fn runs_are_written_with_the_job_and_never_overwritten_by_a_fire(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("with runs", now);
    store.insert(&job, None, None).await.unwrap();
    let lease = lease("a", now + Duration::seconds(30));
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    let (fired, run) = claimed[0].fired(now);
    store
        .record_fires(&lease, &[(fired.clone(), run.clone()).into()])
        .await
        .unwrap();

    // A result closes the run in the same write that changes the job.
    let mut finished_run = run.clone();
    finished_run.status = RunStatus::Succeeded;
    finished_run.finished_at = Some(now);
    finished_run.output = Some("done".into());
    let mut finished = fired.clone();
    finished.status = JobStatus::Succeeded;
    finished.open_run = None;
    finished.touch(now);
    store
        .update(&finished, fired.version, Some(&finished_run), None)
        .await
        .unwrap();
    assert_eq!(
        store.get_run(job.id, run.run_id).await.unwrap(),
        Some(finished_run.clone())
    );

    // Rescheduled to the same time, a fire with the same run id is not written.
    let mut again = finished.clone();
    again.status = JobStatus::Scheduled;
    again.schedule_time = Some(now);
    again.touch(now);
    store
        .update(&again, finished.version, None, None)
        .await
        .unwrap();
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    let refire = claimed[0].fired(now);
    assert_eq!(refire.1.run_id, run.run_id);
    assert!(
        store
            .record_fires(&lease, &[refire.into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_run(job.id, run.run_id).await.unwrap(),
        Some(finished_run)
    );
    assert_eq!(
        store.get(job.id).await.unwrap().unwrap().status,
        JobStatus::Scheduled
    );

    // With a new attempt number it is a new run, listed newest first.
    let mut next = claimed[0].clone();
    next.next_attempt = 2;
    let (next_job, next_run) = next.fired(now + Duration::seconds(1));
    assert_eq!(
        store
            .record_fires(&lease, &[(next_job, next_run.clone()).into()])
            .await
            .unwrap(),
        vec![job.id]
    );
    let (runs, total) = store
        .list_runs(job.id, PageRequest { page: 1, size: 10 })
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(runs[0].run_id, next_run.run_id);
    assert_eq!(runs[1].run_id, run.run_id);
}

async fn paging_counts_and_filters_are_exact_at_the_edges(backend: Backend) {
    let store = backend.open().await;
    let base = Utc::now();
    let mut names = Vec::new();
    for i in 0..25 {
        let mut job = job_due(&format!("report {i:02}"), base + Duration::hours(1));
        job.created_at = truncate(base + Duration::milliseconds(i));
        if i % 5 == 0 {
            job.job_type = JobType::Email;
            job.status = JobStatus::Succeeded;
        }
        store.insert(&job, None, None).await.unwrap();
        names.push(job.name.clone());
    }
    let mut other = job_due("[weird] name.*", base + Duration::hours(1));
    other.created_at = truncate(base + Duration::seconds(1));
    store.insert(&other, None, None).await.unwrap();

    let all = JobFilter::default();
    let page = |page, size| PageRequest { page, size };
    let (first, total) = store.list(&all, page(1, 10)).await.unwrap();
    assert_eq!(total, 26);
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].name, "[weird] name.*", "newest first");
    assert_eq!(first[1].name, "report 24");
    let (last, _) = store.list(&all, page(3, 10)).await.unwrap();
    assert_eq!(last.len(), 6);
    assert_eq!(last.last().unwrap().name, "report 00");
    let (beyond, total) = store.list(&all, page(4, 10)).await.unwrap();
    assert!(beyond.is_empty());
    assert_eq!(total, 26);
    let (exact, _) = store.list(&all, page(1, 26)).await.unwrap();
    assert_eq!(exact.len(), 26);

    let count = |filter: JobFilter| {
        let store = store.clone();
        async move { store.list(&filter, page(1, 100)).await.unwrap().1 }
    };
    assert_eq!(
        count(JobFilter {
            job_type: Some(JobType::Email),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(JobFilter {
            status: Some(JobStatus::Scheduled),
            job_type: Some(JobType::Sms),
            ..Default::default()
        })
        .await,
        21
    );
    for (prefix, expected) in [
        ("report 1", 10),
        ("report", 25),
        ("[weird] name.", 1),
        (".*", 0),
        ("^report", 0),
    ] {
        let filter = JobFilter {
            name_prefix: Some(prefix.into()),
            ..Default::default()
        };
        assert_eq!(count(filter).await, expected, "prefix {prefix:?}");
    }
}

async fn idempotency_keys_are_unique(backend: Backend) {
    let store = backend.open().await;
    let key = IdempotencyKey {
        key: "order-42".into(),
        fingerprint: "abc".into(),
    };
    let first = job_due("keyed", Utc::now() + Duration::hours(1));
    store.insert(&first, Some(&key), None).await.unwrap();
    let second = job_due("keyed again", Utc::now() + Duration::hours(1));
    assert!(matches!(
        store.insert(&second, Some(&key), None).await,
        Err(StoreError::DuplicateKey)
    ));
    // Jobs without a key do not collide with each other.
    for i in 0..3 {
        store
            .insert(&job_due(&format!("unkeyed {i}"), Utc::now()), None, None)
            .await
            .unwrap();
    }
    assert_eq!(
        store.find_by_idempotency_key("order-42").await.unwrap(),
        Some((first, "abc".into()))
    );
    assert_eq!(store.find_by_idempotency_key("other").await.unwrap(), None);
    assert_eq!(store.get(second.id).await.unwrap(), None);
}

async fn deleting_removes_the_job_and_its_runs(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("to delete", now);
    store.insert(&job, None, None).await.unwrap();
    let lease = lease("a", now + Duration::seconds(30));
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    let (_, run) = claimed[0].fired(now);
    store
        .record_fires(&lease, &[claimed[0].fired(now).into()])
        .await
        .unwrap();
    let fired = store.get(job.id).await.unwrap().unwrap();
    assert!(matches!(
        store.delete(job.id, job.version, None).await,
        Err(StoreError::VersionConflict)
    ));
    store.delete(job.id, fired.version, None).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), None);
    assert_eq!(store.get_run(job.id, run.run_id).await.unwrap(), None);
    assert!(matches!(
        store.delete(job.id, fired.version, None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.next_due().await.unwrap(), None);
}

fn event(kind: EventKind, job: &Job) -> Event {
    Event::new(kind, job.clone(), None)
}

/// The pending events' (job, kind, version) in the order the store gives them.
async fn pending(store: &Arc<dyn JobStore>) -> Vec<(scheduler::domain::JobId, EventKind, u64)> {
    store
        .pending_events(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.job.id, e.kind, e.job.version))
        .collect()
}

async fn every_write_stores_its_event_atomically_and_in_order(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("outboxed", now);
    let created = event(EventKind::Created, &job);
    store.insert(&job, None, Some(&created)).await.unwrap();
    let mut renamed = job.clone();
    renamed.name = "outboxed, renamed".into();
    renamed.touch(now);
    store
        .update(
            &renamed,
            job.version,
            None,
            Some(&event(EventKind::Updated, &renamed)),
        )
        .await
        .unwrap();
    let lease = lease("a", now + Duration::seconds(30));
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    let (fired, run) = claimed[0].fired(now);
    let fire = Fire {
        event: Some(Event::new(EventKind::Run, fired.clone(), Some(run.clone()))),
        job: fired.clone(),
        run,
    };
    assert_eq!(
        store.record_fires(&lease, &[fire]).await.unwrap(),
        vec![job.id]
    );
    store
        .delete(
            job.id,
            fired.version,
            Some(&event(EventKind::Deleted, &fired)),
        )
        .await
        .unwrap();
    // The deleted job is gone for every read, while its deletion event waits to go out.
    assert_eq!(store.get(job.id).await.unwrap(), None);
    let (listed, total) = store
        .list(&JobFilter::default(), PageRequest { page: 1, size: 10 })
        .await
        .unwrap();
    assert_eq!((listed.len(), total), (0, 0));
    let events = store.pending_events(100).await.unwrap();
    assert_eq!(events[0], created, "an event reads back exactly as stored");
    assert_eq!(
        pending(&store).await,
        vec![
            (job.id, EventKind::Created, 1),
            (job.id, EventKind::Updated, 2),
            (job.id, EventKind::Run, 3),
            (job.id, EventKind::Deleted, 3),
        ]
    );
    let ids: Vec<_> = events.iter().map(|e| (e.job.id, e.id)).collect();
    store.mark_delivered(&ids[..2]).await.unwrap();
    assert_eq!(
        pending(&store).await,
        vec![(job.id, EventKind::Run, 3), (job.id, EventKind::Deleted, 3)]
    );
    store.mark_delivered(&ids).await.unwrap();
    assert_eq!(pending(&store).await, vec![]);
    // Marking again, or marking unknown events, changes nothing.
    store.mark_delivered(&ids).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), None);
}

async fn a_refused_write_stores_no_event(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("refused", now);
    store
        .insert(&job, None, Some(&event(EventKind::Created, &job)))
        .await
        .unwrap();
    let mut stale = job.clone();
    stale.touch(now);
    assert!(matches!(
        store
            .update(
                &stale,
                job.version + 5,
                None,
                Some(&event(EventKind::Updated, &stale))
            )
            .await,
        Err(StoreError::VersionConflict)
    ));
    assert!(matches!(
        store
            .delete(
                job.id,
                job.version + 5,
                Some(&event(EventKind::Deleted, &job))
            )
            .await,
        Err(StoreError::VersionConflict)
    ));
    let key = IdempotencyKey {
        key: "k".into(),
        fingerprint: "f".into(),
    };
    let keyed = job_due("keyed", now);
    store
        .insert(&keyed, Some(&key), Some(&event(EventKind::Created, &keyed)))
        .await
        .unwrap();
    let twin = job_due("twin", now);
    assert!(matches!(
        store
            .insert(&twin, Some(&key), Some(&event(EventKind::Created, &twin)))
            .await,
        Err(StoreError::DuplicateKey)
    ));
    // A fire under a lease that is not held writes neither the fire nor its event.
    let (fired, run) = job.fired(now);
    let fire = Fire {
        event: Some(Event::new(EventKind::Run, fired.clone(), Some(run.clone()))),
        job: fired,
        run,
    };
    let stranger = lease("stranger", now + Duration::seconds(30));
    assert!(
        store
            .record_fires(&stranger, &[fire])
            .await
            .unwrap()
            .is_empty()
    );
    let mut kinds = pending(&store).await;
    kinds.sort_by_key(|(id, _, _)| *id);
    let mut expected = vec![
        (job.id, EventKind::Created, 1),
        (keyed.id, EventKind::Created, 1),
    ];
    expected.sort_by_key(|(id, _, _)| *id);
    assert_eq!(kinds, expected);
}

async fn the_outbox_survives_a_reopen_and_keeps_order_across_partial_delivery(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let jobs: Vec<Job> = (0..5)
        .map(|i| job_due(&format!("ordered {i}"), now))
        .collect();
    for job in &jobs {
        store
            .insert(job, None, Some(&event(EventKind::Created, job)))
            .await
            .unwrap();
    }
    // Interleaved changes: each job gets versions 2..=4.
    let mut current = jobs.clone();
    for _ in 0..3 {
        for job in current.iter_mut() {
            let mut next = job.clone();
            next.touch(now);
            store
                .update(
                    &next,
                    job.version,
                    None,
                    Some(&event(EventKind::Updated, &next)),
                )
                .await
                .unwrap();
            *job = next;
        }
    }
    // Deliver only the first event of each job, then add one more per job.
    let first: Vec<_> = store
        .pending_events(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Created)
        .map(|e| (e.job.id, e.id))
        .collect();
    assert_eq!(first.len(), 5);
    store.mark_delivered(&first).await.unwrap();
    for job in current.iter_mut() {
        let mut next = job.clone();
        next.touch(now);
        store
            .update(
                &next,
                job.version,
                None,
                Some(&event(EventKind::Updated, &next)),
            )
            .await
            .unwrap();
        *job = next;
    }
    let store = backend.open().await;
    let mut versions: HashMap<_, Vec<u64>> = HashMap::new();
    for (id, kind, version) in pending(&store).await {
        assert_eq!(kind, EventKind::Updated);
        versions.entry(id).or_default().push(version);
    }
    assert_eq!(versions.len(), 5);
    for (id, seen) in versions {
        assert_eq!(seen, vec![2, 3, 4, 5], "events of {id} out of order");
    }
}

async fn one_relay_holds_the_outbox_lease_at_a_time(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let now = truncate(Utc::now());
    let later = now + Duration::seconds(20);
    assert!(
        a.take_relay_lease(&lease("a", now + Duration::seconds(10)), now)
            .await
            .unwrap()
    );
    assert!(
        !b.take_relay_lease(&lease("b", now + Duration::seconds(10)), now)
            .await
            .unwrap()
    );
    // The holder renews; the other still waits.
    assert!(
        a.take_relay_lease(&lease("a", now + Duration::seconds(15)), now)
            .await
            .unwrap()
    );
    let soon = now + Duration::seconds(12);
    assert!(
        !b.take_relay_lease(&lease("b", soon + Duration::seconds(10)), soon)
            .await
            .unwrap()
    );
    // Once it lapses, the other takes it and the first cannot take it back.
    assert!(
        b.take_relay_lease(&lease("b", later + Duration::seconds(10)), later)
            .await
            .unwrap()
    );
    assert!(
        !a.take_relay_lease(&lease("a", later + Duration::seconds(10)), later)
            .await
            .unwrap()
    );
}
