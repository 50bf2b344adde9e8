//! One conformance suite, two stores: every test body below runs against the embedded store
//! and against MongoDB (the server at `MONGODB_URI`, which `scripts/test.sh` starts), each test
//! in its own data directory or database.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use scheduler::{
    domain::{
        DEFAULT_RUN_TIMEOUT_SECONDS, Event, EventKind, Job, JobId, JobStatus, JobType, Limits,
        PendingRetry, Run, RunResult, RunStatus, Schedule, truncate,
    },
    jobs::{
        JobFilter, Page, PageRequest,
        listing::{MAX_CLAIM_BYTES, MAX_PAGE_BYTES},
        ports::{
            Census, Claim, ClaimedStep, DEFAULT_RUN_HISTORY, Due, IdempotencyKey, JobStore,
            Journaled, Lease, PUBLISHED, Retention, StoreError,
        },
    },
    store::sqlite::SqliteStore,
};
use serde_json::json;

use crate::support::{Failures, database_name, job_from, mongo_store};

/// A store under test, and how to open it again as a restarted process would.
enum Backend {
    Embedded(tempfile::TempDir),
    Mongo(String),
}

impl Backend {
    fn embedded() -> Self {
        Self::Embedded(tempfile::tempdir().unwrap())
    }

    /// A fresh database on the server at `MONGODB_URI`.
    fn mongo() -> Self {
        Self::Mongo(database_name())
    }

    async fn open(&self) -> Arc<dyn JobStore> {
        self.open_with_history(DEFAULT_RUN_HISTORY).await
    }

    /// The store, keeping `history` finished runs per job.
    async fn open_with_history(&self, history: usize) -> Arc<dyn JobStore> {
        match self {
            Self::Embedded(dir) => {
                Arc::new(SqliteStore::open(dir.path()).unwrap().with_history(history))
            }
            Self::Mongo(database) => Arc::new(mongo_store(database).await.with_history(history)),
        }
    }
}

/// A one-shot SMS job due at `at`, with the default policies.
fn job_due(name: &str, at: DateTime<Utc>) -> Job {
    job_from(json!({
        "name": name, "jobType": "SMS", "jobData": {"To": "+100", "Count": 3},
        "schedule": {"runAt": scheduler::domain::format_time(at)}
    }))
}

/// The job as the scheduler leaves it after firing it at `at`: its run open, RUNNING.
fn fired_at(job: &Job, at: DateTime<Utc>) -> Job {
    let fired = job.settle(at, &Limits::default(), 0.5).job;
    assert_eq!(fired.open_runs.len(), 1);
    fired
}

/// A finished run of `job` due at `scheduled_for`; the statuses of fires that did not happen
/// have no fire time.
fn finished_run(job: &Job, scheduled_for: DateTime<Utc>, status: RunStatus) -> Run {
    let fired = !matches!(
        status,
        RunStatus::Skipped | RunStatus::Missed | RunStatus::Cancelled
    );
    Run {
        run_id: job.run_id(scheduled_for, 1),
        job_id: job.id,
        scheduled_for,
        fired_at: fired.then_some(scheduled_for),
        attempt: 1,
        status,
        finished_at: Some(scheduled_for + Duration::seconds(1)),
        error: (status != RunStatus::Succeeded)
            .then(|| format!("{} run", scheduler::domain::name_of(&status))),
        output: (status == RunStatus::Succeeded).then(|| "done".to_owned()),
        actor: None,
        reason: None,
        trace: None,
        delivery: None,
        lease: None,
    }
}

fn lease(owner: &str, until: DateTime<Utc>) -> Lease {
    Lease {
        owner: owner.into(),
        until,
    }
}

/// The earliest time at which any stored job may become claimable, from the window read.
async fn next_due(store: &dyn JobStore) -> Option<DateTime<Utc>> {
    let horizon = Utc::now() + Duration::days(365 * 100);
    let found = store.due_within(horizon, 100_000).await.unwrap();
    found.iter().map(|due| due.at).min()
}

/// What the scheduler stores for `claim` at `now`: the domain's step, without events.
fn settle(claim: &Claim, now: DateTime<Utc>) -> ClaimedStep {
    let step = claim.job.settle(now, &Limits::default(), 0.5);
    ClaimedStep {
        token: claim.token,
        job: step.job,
        finished: step.finished,
        events: Vec::new(),
    }
}

/// The same step with its events, as the scheduler stores it.
fn settle_with_events(claim: &Claim, now: DateTime<Utc>) -> ClaimedStep {
    let step = claim.job.settle(now, &Limits::default(), 0.5);
    ClaimedStep {
        token: claim.token,
        events: step.events(),
        job: step.job,
        finished: step.finished,
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
    claims_follow_the_due_time_whatever_the_status,
    conditional_updates_lose_to_a_newer_version,
    finished_runs_are_appended_to_the_ledger_with_the_job,
    a_stale_fencing_token_is_refused_even_from_the_same_owner,
    a_superseded_claimer_writes_nothing_and_stores_no_event,
    the_census_counts_jobs_by_status_the_due_backlog_and_the_outbox,
    the_ledger_keeps_the_newest_runs_in_order,
    paging_counts_and_filters_are_exact_at_the_edges,
    the_due_before_filter_lists_the_jobs_the_scheduler_must_look_at_by_then,
    a_page_of_big_jobs_stops_at_its_byte_bound,
    a_claim_of_big_jobs_stops_at_its_byte_bound_and_the_next_takes_the_rest,
    the_window_read_lists_what_may_be_claimable_by_its_horizon_in_due_order,
    a_claim_by_ids_takes_only_those_due_and_free,
    a_claim_by_ids_past_its_byte_bound_gives_the_rest_back_still_due,
    idempotency_keys_are_unique,
    deleting_removes_the_job_and_its_runs,
    every_write_stores_its_event_atomically_and_in_order,
    a_refused_write_stores_no_event,
    the_journal_survives_a_reopen_keeps_each_jobs_order_and_gives_each_place_once,
    the_journal_reads_one_jobs_events_alone_and_a_page_within_its_byte_bound,
    the_journal_is_trimmed_by_count_and_age_but_never_past_the_floor,
    one_relay_holds_the_outbox_lease_at_a_time,
    a_jobs_events_keep_their_order_when_another_replica_writes_it_between_rounds,
    the_window_read_is_cut_by_due_jobs_alone_whatever_else_holds_pending_events,
    events_another_replica_stores_are_journaled_once_in_order_around_window_reads,
);

async fn stored_job_reads_back_equal_and_survives_a_reopen(backend: Backend) {
    let store = backend.open().await;
    store.ping().await.unwrap();
    let now = truncate(Utc::now());
    let plain = job_due("durable job", now + Duration::hours(1));
    // Every field away from its default: policies, an open run and a waiting retry.
    let mut busy = job_from(json!({
        "name": "busy job", "description": "all fields set", "jobType": "SMS",
        "jobData": {"To": "+100", "Count": 3, "Tags": ["a", "b"], "Nested": {"On": true},
            "Largest": i64::MAX, "Smallest": i64::MIN, "Fraction": 0.1},
        "schedule": {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
        "retry": {"maxAttempts": 3, "backoffSeconds": 7},
        "runTimeoutSeconds": 42, "misfirePolicy": "FIRE_ALL", "overlapPolicy": "ALLOW"
    }));
    let mut open = finished_run(&busy, now - Duration::seconds(5), RunStatus::Running);
    open.finished_at = None;
    open.error = None;
    busy.open_runs.push(open);
    busy.retries.push(PendingRetry {
        due: now + Duration::seconds(30),
        scheduled_for: now - Duration::minutes(10),
        attempt: 2,
    });
    busy.next_attempt = 2;
    busy.reschedules = 3;
    busy.refresh_status(None);
    assert_eq!(busy.status, JobStatus::Running);
    let interval = job_from(json!({
        "name": "every minute", "jobType": "SMS", "jobData": {"To": "+100"},
        "schedule": {"intervalSeconds": 60}
    }));
    let jobs = [plain, busy, interval];
    for job in &jobs {
        store.insert(job, None, &[]).await.unwrap();
        assert_eq!(store.get(job.id).await.unwrap().as_ref(), Some(job));
    }
    drop(store);

    let reopened = backend.open().await;
    for job in jobs {
        assert_eq!(reopened.get(job.id).await.unwrap(), Some(job));
    }
    assert_eq!(reopened.get(JobId::generate()).await.unwrap(), None);
}

async fn claims_never_double_fire_under_concurrent_claimers(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let mut ids = Vec::new();
    for i in 0..120 {
        let job = job_due(&format!("contended {i}"), now - Duration::seconds(1));
        store.insert(&job, None, &[]).await.unwrap();
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
                let steps: Vec<_> = claimed.iter().map(|c| settle(c, now)).collect();
                fired.extend(store.record_steps(&lease, &steps).await.unwrap());
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
        let job = store.get(id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.version, 2);
        assert_eq!(job.open_runs.len(), 1, "one run fired");
        assert_eq!(job.open_runs[0].status, RunStatus::Running);
        assert_eq!(job.schedule_time, None);
        assert!(store.run_history(id).await.unwrap().is_empty());
    }
}

async fn a_lease_holds_until_it_lapses_and_then_passes_on(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("leased", now - Duration::seconds(1));
    a.insert(&job, None, &[]).await.unwrap();

    let lease_a = lease("a", now + Duration::seconds(10));
    let claimed = a.claim_due(&lease_a, now, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job, job);
    let lease_b = lease("b", now + Duration::seconds(40));
    assert!(b.claim_due(&lease_b, now, 10).await.unwrap().is_empty());
    assert_eq!(next_due(&*b).await, Some(lease_a.until));

    // A died between claim and fire: once its lease lapses, B takes the job over.
    let later = now + Duration::seconds(11);
    let reclaimed = b.claim_due(&lease_b, later, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert!(reclaimed[0].token > claimed[0].token, "every claim fences");
    // A, back too late, cannot write its step; B can.
    assert!(
        a.record_steps(&lease_a, &[settle(&claimed[0], later)])
            .await
            .unwrap()
            .is_empty()
    );
    let step = settle(&reclaimed[0], later);
    assert_eq!(
        b.record_steps(&lease_b, std::slice::from_ref(&step))
            .await
            .unwrap(),
        vec![job.id]
    );
    let stored = a.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored, step.job);
    assert_eq!(stored.open_runs.len(), 1);
    assert_eq!(stored.open_runs[0].fired_at, Some(later));
    // The write released the lease: next the open run's deadline is due.
    let deadline = later + Duration::seconds(DEFAULT_RUN_TIMEOUT_SECONDS.into());
    assert_eq!(stored.due_at(), Some(deadline));
    assert_eq!(next_due(&*a).await, Some(deadline));
}

async fn a_job_changed_after_its_claim_is_not_fired_by_that_claim(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("moved away", now);
    store.insert(&job, None, &[]).await.unwrap();
    let lease = lease("a", now + Duration::seconds(10));
    let claimed = store.claim_due(&lease, now, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let mut spec = job.spec();
    spec.schedule = Schedule::RunAt(now + Duration::days(365));
    let moved = job.with_spec(spec, now);
    assert_eq!(moved.schedule_time, Some(now + Duration::days(365)));
    store.update(&moved, job.version, &[], &[]).await.unwrap();

    assert!(
        store
            .record_steps(&lease, &[settle(&claimed[0], now)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(moved));
    assert!(store.run_history(job.id).await.unwrap().is_empty());
    // The update released the claim: the job waits for its new time, unleased.
    assert_eq!(next_due(&*store).await, Some(now + Duration::days(365)));
    assert!(store.claim_due(&lease, now, 10).await.unwrap().is_empty());
}

async fn due_jobs_are_claimed_earliest_first_and_next_due_sees_them(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    assert_eq!(next_due(&*store).await, None);
    let offsets = [5, -3, 60, -10, 0];
    for (i, seconds) in offsets.iter().enumerate() {
        let job = job_due(&format!("due {i}"), now + Duration::seconds(*seconds));
        store.insert(&job, None, &[]).await.unwrap();
    }
    assert_eq!(next_due(&*store).await, Some(now - Duration::seconds(10)));
    let lease = lease("a", now + Duration::seconds(30));
    let first = store.claim_due(&lease, now, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job.due_at(), Some(now - Duration::seconds(10)));
    let rest = store.claim_due(&lease, now, 10).await.unwrap();
    let times: Vec<_> = rest.iter().map(|c| c.job.due_at().unwrap()).collect();
    assert_eq!(times, vec![now - Duration::seconds(3), now]);
    // Only future jobs and the leases remain: the earliest lease lapse or future due time.
    assert_eq!(next_due(&*store).await, Some(now + Duration::seconds(5)));
}

async fn claims_follow_the_due_time_whatever_the_status(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let timeout = Duration::seconds(DEFAULT_RUN_TIMEOUT_SECONDS.into());
    // Not due: paused or cancelled at a past fire time, or running within the run's deadline.
    let paused = job_due("paused", now - Duration::seconds(5))
        .pause(now)
        .unwrap()
        .job;
    let cancelled = job_due("cancelled", now - Duration::seconds(5))
        .cancel(now)
        .unwrap()
        .job;
    let running = fired_at(&job_due("running", now - Duration::seconds(10)), now);
    // Due: an open run past its deadline (also while paused: runs still time out) and a
    // retry whose backoff has passed.
    let stuck_at = now - timeout - Duration::seconds(100);
    let stuck = fired_at(&job_due("stuck", stuck_at), stuck_at);
    let paused_at = now - timeout - Duration::seconds(200);
    let paused_stuck = fired_at(&job_due("paused and stuck", paused_at), paused_at)
        .pause(paused_at)
        .unwrap()
        .job;
    let mut retrying = job_due("retrying", now - Duration::seconds(60));
    retrying.schedule_time = None;
    retrying.retries.push(PendingRetry {
        due: now - Duration::seconds(2),
        scheduled_for: now - Duration::seconds(60),
        attempt: 2,
    });
    retrying.refresh_status(None);
    assert_eq!(
        [
            paused.status,
            cancelled.status,
            running.status,
            stuck.status,
            paused_stuck.status,
            retrying.status
        ],
        [
            JobStatus::Paused,
            JobStatus::Cancelled,
            JobStatus::Running,
            JobStatus::Running,
            JobStatus::Paused,
            JobStatus::Scheduled
        ]
    );
    for job in [
        &paused,
        &cancelled,
        &running,
        &stuck,
        &paused_stuck,
        &retrying,
    ] {
        store.insert(job, None, &[]).await.unwrap();
    }

    assert_eq!(next_due(&*store).await, Some(now - Duration::seconds(200)));
    let lease = lease("a", now + Duration::hours(1));
    let claimed: Vec<_> = store
        .claim_due(&lease, now, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.job)
        .collect();
    assert_eq!(claimed, vec![paused_stuck, stuck, retrying]);
    // Left unleased: the running job, due at its run's deadline (before the leases lapse).
    assert_eq!(next_due(&*store).await, Some(now + timeout));
    assert!(
        store
            .claim_due(&lease, now + timeout - Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let at_deadline = store.claim_due(&lease, now + timeout, 10).await.unwrap();
    assert_eq!(at_deadline.len(), 1);
    assert_eq!(at_deadline[0].job, running);
}

async fn conditional_updates_lose_to_a_newer_version(backend: Backend) {
    let store = backend.open().await;
    let job = job_due("versioned", Utc::now() + Duration::hours(1));
    store.insert(&job, None, &[]).await.unwrap();
    let mut first = job.clone();
    first.name = "first writer".into();
    first.touch(Utc::now());
    store.update(&first, 1, &[], &[]).await.unwrap();

    let mut second = job.clone();
    second.name = "second writer".into();
    second.touch(Utc::now());
    let lost = finished_run(&second, truncate(Utc::now()), RunStatus::Succeeded);
    assert!(matches!(
        store.update(&second, 1, &[lost], &[]).await,
        Err(StoreError::VersionConflict)
    ));
    assert_eq!(store.get(job.id).await.unwrap(), Some(first));
    assert!(
        store.run_history(job.id).await.unwrap().is_empty(),
        "the refused write appended no run"
    );

    let mut ghost = job_due("never stored", Utc::now());
    ghost.touch(Utc::now());
    assert!(matches!(
        store.update(&ghost, 1, &[], &[]).await,
        Err(StoreError::NotFound)
    ));
}
async fn finished_runs_are_appended_to_the_ledger_with_the_job(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("with a result", now);
    let slow = job_due("times out", now);
    store.insert(&job, None, &[]).await.unwrap();
    store.insert(&slow, None, &[]).await.unwrap();
    let lease = lease("a", now + Duration::seconds(30));
    let claimed = store.claim_due(&lease, now, 10).await.unwrap();
    let steps: Vec<_> = claimed.iter().map(|c| settle(c, now)).collect();
    assert_eq!(store.record_steps(&lease, &steps).await.unwrap().len(), 2);
    // A fired run is open in the job; the ledger holds finished runs only.
    let fired = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(fired.status, JobStatus::Running);
    assert_eq!(fired.open_runs.len(), 1);
    assert!(store.run_history(job.id).await.unwrap().is_empty());

    // A result closes the run in the same write that changes the job.
    let result = RunResult::parse(RunStatus::Succeeded, None, Some("done".into())).unwrap();
    let done = fired
        .finish_run(
            Some(fired.open_runs[0].run_id),
            &result,
            now + Duration::seconds(1),
            0.5,
        )
        .unwrap();
    assert_eq!(done.finished.len(), 1);
    store
        .update(&done.job, fired.version, &done.finished, &[])
        .await
        .unwrap();
    let stored = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored, done.job);
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert!(stored.open_runs.is_empty());
    let history = store.run_history(job.id).await.unwrap();
    assert_eq!(history, done.finished);
    assert_eq!(history[0].run_id, fired.open_runs[0].run_id);
    assert_eq!(history[0].status, RunStatus::Succeeded);
    assert_eq!(history[0].output.as_deref(), Some("done"));
    assert_eq!(history[0].finished_at, Some(now + Duration::seconds(1)));

    // A scheduler step appends the runs it finished: here the other job's run times out.
    let open = store.get(slow.id).await.unwrap().unwrap();
    let deadline = open.deadline(&open.open_runs[0]);
    let claimed = store.claim_due(&lease, deadline, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "the finished job is due no more");
    assert_eq!(claimed[0].job, open);
    let timeout = settle(&claimed[0], deadline);
    assert_eq!(
        store
            .record_steps(&lease, std::slice::from_ref(&timeout))
            .await
            .unwrap(),
        vec![slow.id]
    );
    let timed_out = store.run_history(slow.id).await.unwrap();
    assert_eq!(timed_out, timeout.finished);
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].run_id, open.open_runs[0].run_id);
    assert_eq!(timed_out[0].status, RunStatus::TimedOut);
    let stored = store.get(slow.id).await.unwrap().unwrap();
    assert_eq!(stored, timeout.job);
    assert_eq!(stored.status, JobStatus::Failed);
    assert!(stored.open_runs.is_empty());
    // Each job has its own ledger.
    assert_eq!(store.run_history(job.id).await.unwrap(), done.finished);
}

async fn a_stale_fencing_token_is_refused_even_from_the_same_owner(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("fenced", now);
    store.insert(&job, None, &[]).await.unwrap();
    let first_lease = lease("a", now + Duration::seconds(10));
    let first = store.claim_due(&first_lease, now, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    // The same scheduler claims the job again once its first lease has lapsed.
    let later = now + Duration::seconds(11);
    let renewed = lease("a", later + Duration::seconds(10));
    let second = store.claim_due(&renewed, later, 1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].job, first[0].job);
    assert!(second[0].token > first[0].token);

    // The first claim's step is refused though its owner holds the job again.
    for held in [&first_lease, &renewed] {
        assert!(
            store
                .record_steps(held, &[settle_with_events(&first[0], now)])
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(pending(&store).await, vec![]);

    let step = settle_with_events(&second[0], later);
    assert_eq!(
        store
            .record_steps(&renewed, std::slice::from_ref(&step))
            .await
            .unwrap(),
        vec![job.id]
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(step.job.clone()));
    assert_eq!(pending(&store).await, vec![(job.id, EventKind::Run, 2)]);
    // Written once, the step cannot be written again, nor the stale one after it.
    let stale = settle_with_events(&first[0], later);
    assert!(
        store
            .record_steps(&renewed, &[step.clone(), stale])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(step.job));
    assert_eq!(pending(&store).await, vec![(job.id, EventKind::Run, 2)]);
}

async fn a_superseded_claimer_writes_nothing_and_stores_no_event(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let now = truncate(Utc::now());
    let timeout = Duration::seconds(DEFAULT_RUN_TIMEOUT_SECONDS.into());
    // A job whose open run is past its deadline: its step finishes a run and has events.
    let fired = fired_at(&job_due("superseded", now - timeout), now - timeout);
    a.insert(&fired, None, &[]).await.unwrap();

    let lease_a = lease("a", now + Duration::seconds(10));
    let claimed_a = a.claim_due(&lease_a, now, 10).await.unwrap();
    assert_eq!(claimed_a.len(), 1);
    let step_a = settle_with_events(&claimed_a[0], now);
    assert_eq!(step_a.finished.len(), 1);
    assert_eq!(step_a.finished[0].status, RunStatus::TimedOut);
    assert!(!step_a.events.is_empty());

    // A stalls past its lease; B claims the job and so supersedes A's claim.
    let later = now + Duration::seconds(11);
    let lease_b = lease("b", later + Duration::seconds(30));
    let claimed_b = b.claim_due(&lease_b, later, 10).await.unwrap();
    assert_eq!(claimed_b.len(), 1);
    assert!(
        a.record_steps(&lease_a, std::slice::from_ref(&step_a))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.get(fired.id).await.unwrap(), Some(fired.clone()));
    assert!(a.run_history(fired.id).await.unwrap().is_empty());
    assert_eq!(pending(&a).await, vec![]);

    // B's step is written, with its runs and events only.
    let step_b = settle_with_events(&claimed_b[0], later);
    assert_eq!(
        b.record_steps(&lease_b, std::slice::from_ref(&step_b))
            .await
            .unwrap(),
        vec![fired.id]
    );
    // Even once B's lease is released, A's claim stays superseded.
    assert!(
        a.record_steps(&lease_a, &[step_a])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.get(fired.id).await.unwrap(), Some(step_b.job.clone()));
    assert_eq!(a.run_history(fired.id).await.unwrap(), step_b.finished);
    let events: Vec<Event> = journal(&a, 0).await.into_iter().map(|j| j.event).collect();
    assert_eq!(events, step_b.events);
}

async fn the_census_counts_jobs_by_status_the_due_backlog_and_the_outbox(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    assert_eq!(store.census(now).await.unwrap(), Census::default());
    let early = job_due("early", now - Duration::seconds(30));
    let late = job_due("late", now - Duration::seconds(5));
    let future = job_due("future", now + Duration::hours(1));
    let created = Event::new(EventKind::Created, early.clone(), None);
    store
        .insert(&early, None, std::slice::from_ref(&created))
        .await
        .unwrap();
    store.insert(&late, None, &[]).await.unwrap();
    store.insert(&future, None, &[]).await.unwrap();
    let census = store.census(now).await.unwrap();
    assert_eq!(census.jobs, vec![(JobStatus::Scheduled, 3)]);
    assert_eq!(census.due, 2);
    assert_eq!(census.oldest_due, early.due_at());
    // Waiting for a publisher once one has a cursor: the event, journaled or not.
    store.set_cursor(PUBLISHED, 0).await.unwrap();
    let census = store.census(now).await.unwrap();
    assert_eq!(census.outbox_pending, 1);
    assert_eq!(census.oldest_event, Some(created.time));

    // A claimed job is no longer due; once fired, it counts as running.
    let held = lease("a", now + Duration::seconds(10));
    let claimed = store.claim_due(&held, now, 1).await.unwrap();
    assert_eq!(claimed[0].job.id, early.id, "earliest first");
    let census = store.census(now).await.unwrap();
    assert_eq!((census.due, census.oldest_due), (1, late.due_at()));
    let step = settle(&claimed[0], now);
    assert_eq!(
        store.record_steps(&held, &[step]).await.unwrap(),
        vec![early.id]
    );
    // Published: the cursor passes the event.
    let journaled = journal(&store, 0).await;
    assert_eq!(journaled[0].event, created);
    store.set_cursor(PUBLISHED, journaled[0].seq).await.unwrap();
    let census = store.census(now).await.unwrap();
    assert_eq!(
        census.jobs,
        vec![(JobStatus::Scheduled, 2), (JobStatus::Running, 1)]
    );
    assert_eq!((census.due, census.oldest_due), (1, late.due_at()));
    assert_eq!((census.outbox_pending, census.oldest_event), (0, None));
}

async fn the_ledger_keeps_the_newest_runs_in_order(backend: Backend) {
    let store = backend.open_with_history(3).await;
    let now = truncate(Utc::now());
    let job = job_due("bounded", now + Duration::hours(1));
    let neighbour = job_due("neighbour", now + Duration::hours(1));
    let burst = job_due("burst", now + Duration::hours(1));
    for j in [&job, &neighbour, &burst] {
        store.insert(j, None, &[]).await.unwrap();
    }
    let statuses = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Skipped,
        RunStatus::Missed,
    ];
    let runs_of = |job: &Job| -> Vec<Run> {
        statuses
            .iter()
            .enumerate()
            .map(|(i, status)| finished_run(job, now + Duration::minutes(i as i64), *status))
            .collect()
    };
    let runs = runs_of(&job);

    // Five runs in three writes: two, one, then two more, which push out the oldest two.
    let mut current = job.clone();
    for (appended, expected) in [
        (&runs[..2], &runs[..2]),
        (&runs[2..3], &runs[..3]),
        (&runs[3..], &runs[2..]),
    ] {
        let mut next = current.clone();
        next.touch(now);
        store
            .update(&next, current.version, appended, &[])
            .await
            .unwrap();
        current = next;
        assert_eq!(store.run_history(job.id).await.unwrap(), expected);
    }

    // The bound is per job: a neighbour's run neither pushes out nor is pushed out.
    let mut next = neighbour.clone();
    next.touch(now);
    let cancelled = finished_run(&neighbour, now, RunStatus::Cancelled);
    store
        .update(
            &next,
            neighbour.version,
            std::slice::from_ref(&cancelled),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store.run_history(neighbour.id).await.unwrap(),
        vec![cancelled]
    );
    assert_eq!(store.run_history(job.id).await.unwrap(), &runs[2..]);

    // One write of more runs than the bound keeps its newest ones.
    let burst_runs = runs_of(&burst);
    let mut next = burst.clone();
    next.touch(now);
    store
        .update(&next, burst.version, &burst_runs, &[])
        .await
        .unwrap();
    assert_eq!(store.run_history(burst.id).await.unwrap(), &burst_runs[2..]);
    assert_eq!(store.run_history(JobId::generate()).await.unwrap(), vec![]);
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
        store.insert(&job, None, &[]).await.unwrap();
        names.push(job.name.clone());
    }
    let mut other = job_due("[weird] name.*", base + Duration::hours(1));
    other.created_at = truncate(base + Duration::seconds(1));
    store.insert(&other, None, &[]).await.unwrap();

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
    let mut failures = Failures::new();
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
        failures.expect_eq(format!("prefix {prefix:?}"), count(filter).await, expected);
    }
    // The greatest character, where a range bound made by appending it would cut names off.
    for name in [
        "max \u{10FFFF}",
        "max \u{10FFFF}\u{10FFFF}z",
        "\u{10FFFF}ab",
    ] {
        let job = job_due(name, base + Duration::hours(1));
        store.insert(&job, None, &[]).await.unwrap();
    }
    for (prefix, expected) in [("max ", 2), ("max \u{10FFFF}", 2), ("\u{10FFFF}", 1)] {
        let filter = JobFilter {
            name_prefix: Some(prefix.into()),
            ..Default::default()
        };
        failures.expect_eq(format!("prefix {prefix:?}"), count(filter).await, expected);
    }
    failures.assert_none("name prefixes");
}

async fn the_due_before_filter_lists_the_jobs_the_scheduler_must_look_at_by_then(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    for hours in [1, 2, 3] {
        let job = job_due(&format!("in {hours} h"), now + Duration::hours(hours));
        store.insert(&job, None, &[]).await.unwrap();
    }
    let mut paused = job_due("paused", now + Duration::hours(1));
    paused.status = JobStatus::Paused;
    store.insert(&paused, None, &[]).await.unwrap();
    let listed = |hours: i64| {
        let store = store.clone();
        async move {
            let filter = JobFilter {
                due_before: Some(now + Duration::hours(hours)),
                ..Default::default()
            };
            let (jobs, total) = store
                .list(&filter, PageRequest { page: 1, size: 10 })
                .await
                .unwrap();
            let mut names: Vec<String> = jobs.into_iter().map(|j| j.name).collect();
            names.sort();
            (names, total)
        }
    };
    assert_eq!(listed(0).await, (vec![], 0));
    assert_eq!(
        listed(2).await,
        (vec!["in 1 h".to_owned(), "in 2 h".to_owned()], 2),
        "at or before the time, and never a paused job"
    );
    assert_eq!(listed(5).await.1, 3);
}

async fn a_page_of_big_jobs_stops_at_its_byte_bound(backend: Backend) {
    let store = backend.open().await;
    let data = json!({"Note": "n".repeat(60 * 1024)});
    for i in 0..60 {
        let job = job_from(json!({
            "name": format!("big {i}"), "jobType": "SMS", "jobData": data,
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }));
        store.insert(&job, None, &[]).await.unwrap();
    }
    let (jobs, total) = store
        .list(&JobFilter::default(), PageRequest { page: 1, size: 100 })
        .await
        .unwrap();
    assert_eq!(total, 60);
    let bytes: usize = jobs.iter().map(|job| job.job_data.size()).sum();
    // The store reads up to and including the job that crosses 1 MiB, and no further.
    assert!(
        jobs.len() > 10 && jobs.len() < 60,
        "{} jobs of {bytes} bytes",
        jobs.len()
    );
    assert!(bytes - jobs[0].job_data.size() < MAX_PAGE_BYTES);
    let page = Page::new(jobs, total, PageRequest { page: 1, size: 100 });
    assert!(page.truncated);
    assert!(
        page.items
            .iter()
            .map(|job| job.job_data.size())
            .sum::<usize>()
            < MAX_PAGE_BYTES
    );
}

/// Stores 100 jobs of 60 KiB each, due a second before `now`; returns their ids.
async fn store_big_due_jobs(store: &dyn JobStore, now: DateTime<Utc>) -> Vec<JobId> {
    let data = json!({"Note": "n".repeat(60 * 1024)});
    let mut ids = Vec::new();
    for i in 0..100 {
        let mut job = job_from(json!({
            "name": format!("big {i}"), "jobType": "SMS", "jobData": data,
            "schedule": {"runAt": "2030-01-01T00:00:00Z"}
        }));
        job.schedule_time = Some(now - Duration::seconds(1));
        store.insert(&job, None, &[]).await.unwrap();
        ids.push(job.id);
    }
    ids
}

async fn a_claim_of_big_jobs_stops_at_its_byte_bound_and_the_next_takes_the_rest(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    store_big_due_jobs(&*store, now).await;
    let until = now + Duration::seconds(30);
    let first = store.claim_due(&lease("a", until), now, 200).await.unwrap();
    let bytes: usize = first.iter().map(|c| c.job.job_data.size()).sum();
    assert!(
        first.len() > 1 && first.len() < 100,
        "{} jobs of {bytes} bytes in one claim",
        first.len()
    );
    assert!(bytes - first[0].job.job_data.size() < MAX_CLAIM_BYTES);
    let second = store.claim_due(&lease("a", until), now, 200).await.unwrap();
    let third = store.claim_due(&lease("a", until), now, 200).await.unwrap();
    assert_eq!(first.len() + second.len() + third.len(), 100);
}

async fn the_window_read_lists_what_may_be_claimable_by_its_horizon_in_due_order(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let mut jobs = Vec::new();
    for seconds in [2, -1, 10, 4, 1] {
        let job = job_due(
            &format!("due in {seconds}"),
            now + Duration::seconds(seconds),
        );
        store.insert(&job, None, &[]).await.unwrap();
        jobs.push(job);
    }
    // The job due in 1 s is held until 3 s from now; the one due in 4 s is held for a minute.
    for (job, held_until, at) in [(4, 3, 1), (3, 60, 4)] {
        let held = store
            .claim(
                &lease("a", now + Duration::seconds(held_until)),
                now + Duration::seconds(at),
                &[jobs[job].id],
            )
            .await
            .unwrap();
        assert_eq!(held.claims.len(), 1);
    }

    let found = store
        .due_within(now + Duration::seconds(5), 100)
        .await
        .unwrap();
    let expected = vec![
        Due {
            job: jobs[1].id,
            at: now - Duration::seconds(1),
        },
        Due {
            job: jobs[4].id,
            at: now + Duration::seconds(3),
        },
        Due {
            job: jobs[0].id,
            at: now + Duration::seconds(2),
        },
    ];
    assert_eq!(
        found, expected,
        "earliest due first, a lapsing lease at its end"
    );
    let first = store
        .due_within(now + Duration::seconds(5), 2)
        .await
        .unwrap();
    assert_eq!(first, expected[..2]);
    assert!(
        store
            .due_within(now - Duration::seconds(2), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_claim_by_ids_takes_only_those_due_and_free(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let now = truncate(Utc::now());
    let due = job_due("due", now - Duration::seconds(1));
    let held = job_due("held by b", now - Duration::seconds(1));
    let later = job_due("later", now + Duration::seconds(5));
    let not_asked = job_due("not asked", now - Duration::seconds(1));
    for job in [&due, &held, &later, &not_asked] {
        a.insert(job, None, &[]).await.unwrap();
    }
    let lease_b = lease("b", now + Duration::seconds(30));
    assert_eq!(
        b.claim(&lease_b, now, &[held.id])
            .await
            .unwrap()
            .claims
            .len(),
        1
    );
    let gone = job_due("never stored", now - Duration::seconds(1));

    let lease_a = lease("a", now + Duration::seconds(30));
    let asked = [held.id, later.id, due.id, gone.id];
    let claimed = a.claim(&lease_a, now, &asked).await.unwrap();
    let ids: Vec<_> = claimed.claims.iter().map(|c| c.job.id).collect();
    assert_eq!(ids, vec![due.id]);
    assert!(claimed.deferred.is_empty());
    assert_eq!(claimed.claims[0].job, due);
    // Asking again takes nothing: the job is held now.
    assert!(
        a.claim(&lease_a, now, &asked)
            .await
            .unwrap()
            .claims
            .is_empty()
    );
    // What was not asked for is untouched, and claimable.
    let rest = a.claim_due(&lease_a, now, 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![not_asked.id]
    );
    // The job not yet due is claimed once it is.
    let at_five = a
        .claim(&lease_a, now + Duration::seconds(5), &[later.id])
        .await
        .unwrap();
    assert_eq!(at_five.claims.len(), 1);
}

async fn a_claim_by_ids_past_its_byte_bound_gives_the_rest_back_still_due(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let ids = store_big_due_jobs(&*store, now).await;
    let held = lease("a", now + Duration::seconds(30));
    let first = store.claim(&held, now, &ids).await.unwrap();
    assert!(
        first.claims.len() > 1 && first.claims.len() < 100,
        "{}",
        first.claims.len()
    );
    assert_eq!(first.claims.len() + first.deferred.len(), 100);
    // What was given back is free and due: the next claim takes it.
    let mut rest = first.deferred.clone();
    let mut taken = first.claims.len();
    while !rest.is_empty() {
        let next = store.claim(&held, now, &rest).await.unwrap();
        assert!(!next.claims.is_empty());
        taken += next.claims.len();
        rest = next.deferred;
    }
    assert_eq!(taken, 100);
}

async fn idempotency_keys_are_unique(backend: Backend) {
    let store = backend.open().await;
    let key = IdempotencyKey {
        key: "order-42".into(),
        fingerprint: "abc".into(),
    };
    let first = job_due("keyed", Utc::now() + Duration::hours(1));
    store.insert(&first, Some(&key), &[]).await.unwrap();
    let second = job_due("keyed again", Utc::now() + Duration::hours(1));
    assert!(matches!(
        store.insert(&second, Some(&key), &[]).await,
        Err(StoreError::DuplicateKey)
    ));
    // Jobs without a key do not collide with each other.
    for i in 0..3 {
        store
            .insert(&job_due(&format!("unkeyed {i}"), Utc::now()), None, &[])
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
    store.insert(&job, None, &[]).await.unwrap();
    let lease = lease("a", now + Duration::seconds(30));
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    assert_eq!(
        store
            .record_steps(&lease, &[settle(&claimed[0], now)])
            .await
            .unwrap(),
        vec![job.id]
    );
    let fired = store.get(job.id).await.unwrap().unwrap();
    let result = RunResult::parse(RunStatus::Failed, Some("boom".into()), None).unwrap();
    let done = fired.finish_run(None, &result, now, 0.5).unwrap();
    store
        .update(&done.job, fired.version, &done.finished, &[])
        .await
        .unwrap();
    assert_eq!(store.run_history(job.id).await.unwrap().len(), 1);

    assert!(matches!(
        store.delete(job.id, fired.version, &[]).await,
        Err(StoreError::VersionConflict)
    ));
    store.delete(job.id, done.job.version, &[]).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), None);
    assert!(store.run_history(job.id).await.unwrap().is_empty());
    assert!(matches!(
        store.delete(job.id, done.job.version, &[]).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(next_due(&*store).await, None);

    // Deleted with an event waiting to go out (in MongoDB, a tombstone until it is delivered),
    // and while a scheduler holds it: its runs are gone, and the claim writes nothing.
    let held = job_due("deleted while claimed", now);
    let mut next = held.clone();
    next.touch(now);
    let run = finished_run(&held, now - Duration::minutes(1), RunStatus::Missed);
    store.insert(&held, None, &[]).await.unwrap();
    store
        .update(&next, held.version, std::slice::from_ref(&run), &[])
        .await
        .unwrap();
    assert_eq!(store.run_history(held.id).await.unwrap(), vec![run]);
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let deleted = event(EventKind::Deleted, &next);
    store
        .delete(held.id, next.version, std::slice::from_ref(&deleted))
        .await
        .unwrap();
    assert!(
        store
            .record_steps(&lease, &[settle_with_events(&claimed[0], now)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get(held.id).await.unwrap(), None);
    assert!(store.run_history(held.id).await.unwrap().is_empty());
    assert_eq!(next_due(&*store).await, None);
    assert!(
        store
            .claim_due(&lease, now + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let events: Vec<Event> = journal(&store, 0)
        .await
        .into_iter()
        .map(|j| j.event)
        .collect();
    assert_eq!(events, vec![deleted]);
}

fn event(kind: EventKind, job: &Job) -> Event {
    Event::new(kind, job.clone(), None)
}

/// The job versions the journal's events carry, by job, in journal order.
fn versions_by_job(journaled: &[Journaled]) -> HashMap<JobId, Vec<u64>> {
    let mut versions: HashMap<JobId, Vec<u64>> = HashMap::new();
    for j in journaled {
        versions
            .entry(j.event.job.id)
            .or_default()
            .push(j.event.job.version);
    }
    versions
}

/// Changes `job` through `store` as an API update does, with its event; returns the new job.
async fn touched(store: &Arc<dyn JobStore>, job: &Job, now: DateTime<Utc>) -> Job {
    let mut next = job.clone();
    next.touch(now);
    store
        .update(&next, job.version, &[], &[event(EventKind::Updated, &next)])
        .await
        .unwrap();
    next
}

/// Every event the journal holds after `after`, once the store has journaled every event it
/// holds pending (as the relay does on MongoDB), in journal order. A call that journals
/// nothing may have gone by an earlier window read's look (see `JobStore::sequence_events`);
/// the one after it looks again.
async fn journal(store: &Arc<dyn JobStore>, after: u64) -> Vec<Journaled> {
    let mut nothing = 0;
    while nothing < 2 {
        if store.sequence_events(1000).await.unwrap() > 0 {
            nothing = 0;
        } else {
            nothing += 1;
        }
    }
    let mut events = Vec::new();
    let mut read_up_to = after;
    loop {
        let page = store.read_journal(read_up_to, None, 1000).await.unwrap();
        let Some(last) = page.last() else {
            return events;
        };
        read_up_to = last.seq;
        events.extend(page);
    }
}

/// The journaled events' (job, kind, version), in journal order.
async fn pending(store: &Arc<dyn JobStore>) -> Vec<(JobId, EventKind, u64)> {
    journal(store, 0)
        .await
        .into_iter()
        .map(|j| (j.event.job.id, j.event.kind, j.event.job.version))
        .collect()
}

async fn every_write_stores_its_event_atomically_and_in_order(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("outboxed", now);
    let created = event(EventKind::Created, &job);
    store
        .insert(&job, None, std::slice::from_ref(&created))
        .await
        .unwrap();
    let mut renamed = job.clone();
    renamed.name = "outboxed, renamed".into();
    renamed.touch(now);
    store
        .update(
            &renamed,
            job.version,
            &[],
            &[event(EventKind::Updated, &renamed)],
        )
        .await
        .unwrap();
    let lease = lease("a", now + Duration::seconds(30));
    let claimed = store.claim_due(&lease, now, 1).await.unwrap();
    let fire = settle_with_events(&claimed[0], now);
    assert_eq!(fire.events.len(), 1);
    assert_eq!(
        store
            .record_steps(&lease, std::slice::from_ref(&fire))
            .await
            .unwrap(),
        vec![job.id]
    );
    // One write, two events: cancelling finishes the open run and cancels the job.
    let cancel = fire.job.cancel(now).unwrap();
    let cancel_events = cancel.events();
    assert_eq!(cancel_events.len(), 2);
    store
        .update(
            &cancel.job,
            fire.job.version,
            &cancel.finished,
            &cancel_events,
        )
        .await
        .unwrap();
    store
        .delete(
            job.id,
            cancel.job.version,
            &[event(EventKind::Deleted, &cancel.job)],
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
    let journaled = journal(&store, 0).await;
    let places: Vec<u64> = journaled.iter().map(|j| j.seq).collect();
    assert_eq!(
        places,
        [1, 2, 3, 4, 5, 6],
        "one place each, in order, from 1"
    );
    let events: Vec<Event> = journaled.into_iter().map(|j| j.event).collect();
    assert_eq!(events[0], created, "an event reads back exactly as stored");
    assert_eq!(events[2], fire.events[0], "with its run");
    assert_eq!(events[3..5], cancel_events[..]);
    assert_eq!(
        events[3].run.as_ref().map(|r| r.status),
        Some(RunStatus::Cancelled)
    );
    assert_eq!(
        pending(&store).await,
        vec![
            (job.id, EventKind::Created, 1),
            (job.id, EventKind::Updated, 2),
            (job.id, EventKind::Run, 3),
            (job.id, EventKind::Finished, 4),
            (job.id, EventKind::Cancelled, 4),
            (job.id, EventKind::Deleted, 4),
        ]
    );
    let bounds = store.journal_bounds().await.unwrap();
    assert_eq!((bounds.first, bounds.head), (1, 6));
    // A cursor is where it was moved, and reading after it gives what follows.
    assert_eq!(store.cursor(PUBLISHED).await.unwrap(), 0, "never moved");
    store.set_cursor(PUBLISHED, 2).await.unwrap();
    assert_eq!(store.cursor(PUBLISHED).await.unwrap(), 2);
    let rest: Vec<u64> = journal(&store, 2).await.iter().map(|j| j.seq).collect();
    assert_eq!(rest, [3, 4, 5, 6]);
    assert_eq!(store.census(now).await.unwrap().outbox_pending, 4);
    store.set_cursor(PUBLISHED, 6).await.unwrap();
    assert_eq!(store.census(now).await.unwrap().outbox_pending, 0);
    assert_eq!(store.get(job.id).await.unwrap(), None);
    assert!(journal(&store, 6).await.is_empty());
}

async fn a_refused_write_stores_no_event(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("refused", now);
    store
        .insert(&job, None, &[event(EventKind::Created, &job)])
        .await
        .unwrap();
    let mut stale = job.clone();
    stale.touch(now);
    assert!(matches!(
        store
            .update(
                &stale,
                job.version + 5,
                &[],
                &[event(EventKind::Updated, &stale)]
            )
            .await,
        Err(StoreError::VersionConflict)
    ));
    assert!(matches!(
        store
            .delete(job.id, job.version + 5, &[event(EventKind::Deleted, &job)])
            .await,
        Err(StoreError::VersionConflict)
    ));
    let key = IdempotencyKey {
        key: "k".into(),
        fingerprint: "f".into(),
    };
    let keyed = job_due("keyed", now);
    store
        .insert(&keyed, Some(&key), &[event(EventKind::Created, &keyed)])
        .await
        .unwrap();
    let twin = job_due("twin", now);
    assert!(matches!(
        store
            .insert(&twin, Some(&key), &[event(EventKind::Created, &twin)])
            .await,
        Err(StoreError::DuplicateKey)
    ));
    // A step under a lease that is not held writes neither the step nor its events.
    let unclaimed = Claim {
        job: job.clone(),
        token: 1,
    };
    let step = settle_with_events(&unclaimed, now);
    assert!(!step.events.is_empty());
    let stranger = lease("stranger", now + Duration::seconds(30));
    assert!(
        store
            .record_steps(&stranger, &[step])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));
    let mut kinds = pending(&store).await;
    kinds.sort_by_key(|(id, _, _)| *id);
    let mut expected = vec![
        (job.id, EventKind::Created, 1),
        (keyed.id, EventKind::Created, 1),
    ];
    expected.sort_by_key(|(id, _, _)| *id);
    assert_eq!(kinds, expected);
}

async fn the_journal_survives_a_reopen_keeps_each_jobs_order_and_gives_each_place_once(
    backend: Backend,
) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let jobs: Vec<Job> = (0..5)
        .map(|i| job_due(&format!("ordered {i}"), now))
        .collect();
    for job in &jobs {
        store
            .insert(job, None, &[event(EventKind::Created, job)])
            .await
            .unwrap();
    }
    // Interleaved changes, journaled a few at a time (where the store journals later): each
    // job gets versions 2..=4.
    let mut current = jobs.clone();
    for _ in 0..3 {
        store.sequence_events(2).await.unwrap();
        for job in current.iter_mut() {
            *job = touched(&store, job, now).await;
        }
    }
    // Reopened, as a restarted process.
    let store = backend.open().await;
    for job in current.iter_mut() {
        *job = touched(&store, job, now).await;
    }
    let journaled = journal(&store, 0).await;
    let places: Vec<u64> = journaled.iter().map(|j| j.seq).collect();
    assert_eq!(
        places,
        (1..=25).collect::<Vec<_>>(),
        "every place once, none skipped"
    );
    let versions = versions_by_job(&journaled);
    assert_eq!(versions.len(), 5);
    for (id, seen) in versions {
        assert_eq!(seen, vec![1, 2, 3, 4, 5], "events of {id} out of order");
    }
    // Journaling again finds nothing pending.
    assert_eq!(store.sequence_events(1000).await.unwrap(), 0);
    assert_eq!(journal(&store, 0).await.len(), 25);
}

/// Two processes on one store: `here` creates a job and fires another (its claim found no
/// pending event), and `there` changes both before `here` journals. Every event is journaled
/// once, each job's in the order written, and nothing is left pending (on MongoDB, `here`
/// journals its own writes from what it wrote, and its emptying of their outboxes must not
/// drop what `there` added).
async fn a_jobs_events_keep_their_order_when_another_replica_writes_it_between_rounds(
    backend: Backend,
) {
    let here = backend.open().await;
    let there = backend.open().await;
    let now = truncate(Utc::now());
    let fired = job_due("fired here", now);
    here.insert(&fired, None, &[event(EventKind::Created, &fired)])
        .await
        .unwrap();
    // Journaled: the claim below finds no pending event.
    assert_eq!(pending(&here).await.len(), 1);

    let created = job_due("created here", now + Duration::hours(1));
    here.insert(&created, None, &[event(EventKind::Created, &created)])
        .await
        .unwrap();
    let lease = lease("here", now + Duration::seconds(30));
    let claimed = here.claim_due(&lease, now, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let step = settle_with_events(&claimed[0], now);
    assert!(!step.events.is_empty());
    let stepped = step.job.clone();
    assert_eq!(
        here.record_steps(&lease, &[step]).await.unwrap(),
        vec![fired.id]
    );
    for job in [&created, &stepped] {
        touched(&there, job, now).await;
    }

    let journaled = journal(&here, 0).await;
    let places: Vec<u64> = journaled.iter().map(|j| j.seq).collect();
    assert_eq!(places, (1..=places.len() as u64).collect::<Vec<_>>());
    let versions = versions_by_job(&journaled);
    assert_eq!(versions[&created.id], vec![1, 2], "{journaled:?}");
    let fired_versions = &versions[&fired.id];
    assert_eq!(fired_versions.first(), Some(&1), "{journaled:?}");
    assert_eq!(
        fired_versions.last(),
        Some(&(stepped.version + 1)),
        "the change made there comes last: {journaled:?}"
    );
    assert!(
        fired_versions.windows(2).all(|pair| pair[0] <= pair[1]),
        "{journaled:?}"
    );
    let ids: std::collections::HashSet<_> = journaled.iter().map(|j| j.event.id).collect();
    assert_eq!(ids.len(), journaled.len(), "an event journaled twice");
    // Nothing is left pending, seen from either process.
    assert_eq!(here.sequence_events(1000).await.unwrap(), 0);
    assert_eq!(there.sequence_events(1000).await.unwrap(), 0);
    assert_eq!(journal(&there, 0).await.len(), journaled.len());
}

/// The window read is cut at its limit by due jobs only: jobs that hold pending events but are
/// not due (tombstones, jobs due later) never take a due job's place, whether or not the
/// store looks for pending events in the same read.
async fn the_window_read_is_cut_by_due_jobs_alone_whatever_else_holds_pending_events(
    backend: Backend,
) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    for name in ["deleted a", "deleted b"] {
        let gone = job_due(name, now + Duration::hours(1));
        store
            .insert(&gone, None, &[event(EventKind::Created, &gone)])
            .await
            .unwrap();
        store
            .delete(gone.id, gone.version, &[event(EventKind::Deleted, &gone)])
            .await
            .unwrap();
    }
    let later = job_due("later", now + Duration::hours(1));
    store
        .insert(&later, None, &[event(EventKind::Created, &later)])
        .await
        .unwrap();
    let due: Vec<Job> = (1..=3)
        .map(|i| job_due(&format!("due {i}"), now - Duration::seconds(4 - i)))
        .collect();
    for job in &due {
        store
            .insert(job, None, &[event(EventKind::Created, job)])
            .await
            .unwrap();
    }
    let expected: Vec<Due> = due
        .iter()
        .map(|job| Due {
            job: job.id,
            at: job.due_at().unwrap(),
        })
        .collect();
    let horizon = now + Duration::seconds(5);
    // Without the relay lease, and with it (when a store's window read may also look for
    // pending events).
    for relay in [false, true] {
        if relay {
            let held = lease("relay", Utc::now() + Duration::hours(1));
            assert!(store.take_relay_lease(&held, Utc::now()).await.unwrap());
        }
        for limit in [1, 2, 3, 4, 100] {
            let found = store.due_within(horizon, limit).await.unwrap();
            assert_eq!(
                found,
                expected[..limit.min(3)],
                "cut at {limit}, relay lease held: {relay}: the earliest due jobs, nothing else"
            );
        }
    }
    // Every event is still journaled once, in order.
    let journaled = journal(&store, 0).await;
    assert_eq!(journaled.len(), 8, "{journaled:?}");
    assert_eq!(store.sequence_events(1000).await.unwrap(), 0);
}

/// Another replica (`there`) stores events around the window reads of `here` (which holds the
/// relay lease), and `here` journals: every event is journaled once and in order, and what was
/// stored after a read is journaled by a later call. On MongoDB, where the relay lease
/// holder's window read also finds the jobs holding pending events, the call after a read
/// journals exactly what that read found, with no look of its own, and the call after that
/// looks again.
async fn events_another_replica_stores_are_journaled_once_in_order_around_window_reads(
    backend: Backend,
) {
    let here = backend.open().await;
    let there = backend.open().await;
    let now = truncate(Utc::now());
    // `here` journals, as the holder of the relay lease does.
    let relay = lease("here", now + Duration::hours(1));
    assert!(here.take_relay_lease(&relay, now).await.unwrap());
    let first = job_due("stored before the read", now + Duration::hours(1));
    there
        .insert(&first, None, &[event(EventKind::Created, &first)])
        .await
        .unwrap();
    let horizon = now + Duration::seconds(5);
    let read_at = std::time::Instant::now();
    assert!(here.due_within(horizon, 100).await.unwrap().is_empty());
    let second = job_due("stored after the read", now + Duration::hours(1));
    there
        .insert(&second, None, &[event(EventKind::Created, &second)])
        .await
        .unwrap();
    let journaled_first = here.sequence_events(1000).await.unwrap();
    let read_age = read_at.elapsed();
    let journaled_then = here.sequence_events(1000).await.unwrap();
    if matches!(backend, Backend::Mongo(_)) {
        // A read is used only while it is less than a second old; on a machine slow enough
        // to pass that, the first call looks for itself and finds both.
        let expected = if read_age < std::time::Duration::from_millis(900) {
            (1, 1)
        } else {
            (2, 0)
        };
        assert_eq!(
            (journaled_first, journaled_then),
            expected,
            "the read's find first, then the look that follows it ({read_age:?} after the read)"
        );
    }
    // A read that finds nothing pending: the next call journals nothing and looks at nothing.
    assert!(here.due_within(horizon, 100).await.unwrap().is_empty());
    assert_eq!(here.sequence_events(1000).await.unwrap(), 0);
    let journaled = journal(&here, 0).await;
    let order: Vec<(JobId, EventKind)> = journaled
        .iter()
        .map(|j| (j.event.job.id, j.event.kind))
        .collect();
    assert_eq!(
        order,
        vec![
            (first.id, EventKind::Created),
            (second.id, EventKind::Created)
        ]
    );
    let places: Vec<u64> = journaled.iter().map(|j| j.seq).collect();
    assert_eq!(places, vec![1, 2]);
    assert_eq!(journal(&there, 0).await.len(), 2);
}

async fn the_journal_reads_one_jobs_events_alone_and_a_page_within_its_byte_bound(
    backend: Backend,
) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    // Jobs of about 60 KiB each: a page of their events passes the byte budget.
    let big = |name: &str| {
        job_from(json!({
            "name": name, "jobType": "SMS", "jobData": {"Note": "x".repeat(60 * 1024)},
            "schedule": {"runAt": scheduler::domain::format_time(now + Duration::hours(1))}
        }))
    };
    let (mine, other) = (big("mine"), big("other"));
    for _ in 0..20 {
        for job in [&mine, &other] {
            store
                .insert(
                    &job_due("filler", now),
                    None,
                    &[event(EventKind::Created, job)],
                )
                .await
                .unwrap();
        }
    }
    journal(&store, 0).await;
    let page = store.read_journal(0, None, 1000).await.unwrap();
    let bytes: usize = page.iter().map(|j| j.event.job.job_data.size()).sum();
    assert!(
        !page.is_empty() && page.len() < 40 && bytes <= MAX_PAGE_BYTES + 61 * 1024,
        "a page of {} events holding {bytes} bytes",
        page.len()
    );
    let first: Vec<u64> = page.iter().map(|j| j.seq).collect();
    assert_eq!(first, (1..=page.len() as u64).collect::<Vec<_>>());
    let mut only = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_journal(after, Some(mine.id), 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        only.extend(page);
    }
    assert_eq!(only.len(), 20);
    assert!(only.iter().all(|j| j.event.job.id == mine.id));
    assert!(only.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(only[0].seq, 1);
}

async fn the_journal_is_trimmed_by_count_and_age_but_never_past_the_floor(backend: Backend) {
    let store = backend.open().await;
    let now = truncate(Utc::now());
    let job = job_due("trimmed", now + Duration::hours(1));
    store.insert(&job, None, &[]).await.unwrap();
    // Ten events an hour old, then ten new ones.
    let mut current = job.clone();
    for i in 0..20 {
        let mut next = current.clone();
        next.touch(now);
        let mut updated = event(EventKind::Updated, &next);
        if i < 10 {
            updated.time = now - Duration::hours(1);
        }
        store
            .update(&next, current.version, &[], &[updated])
            .await
            .unwrap();
        current = next;
    }
    journal(&store, 0).await;
    let keep = |events: u64, minutes: i64| Retention {
        events,
        age: Duration::minutes(minutes),
    };
    // Nothing beyond either bound: nothing goes.
    let dropped = store
        .trim_journal(keep(100, 120), u64::MAX, now)
        .await
        .unwrap();
    assert_eq!(dropped, 0);
    // By count: the newest 15 stay.
    assert_eq!(
        store
            .trim_journal(keep(15, 120), u64::MAX, now)
            .await
            .unwrap(),
        5
    );
    assert_eq!(store.journal_bounds().await.unwrap().first, 6);
    // By age, but not past the floor: the events up to 8 go, the old ones after it stay.
    assert_eq!(store.trim_journal(keep(100, 30), 8, now).await.unwrap(), 3);
    assert_eq!(store.journal_bounds().await.unwrap().first, 9);
    // By age alone: the old ones go.
    assert_eq!(
        store
            .trim_journal(keep(100, 30), u64::MAX, now)
            .await
            .unwrap(),
        2
    );
    let bounds = store.journal_bounds().await.unwrap();
    assert_eq!((bounds.first, bounds.head), (11, 20));
    // However much is trimmed, a place is never given again: the head stays where it was,
    // and the next event follows it.
    store
        .trim_journal(keep(100, 0), u64::MAX, now + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(store.journal_bounds().await.unwrap().head, 20);
    touched(&store, &current, now).await;
    let last = journal(&store, 20).await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].seq, 21);
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

/// The embedded store trims a job's ledger once per few appends rather than on each: on disk
/// it never holds more than the bound plus that slack (here 4 plus 1), and reads show the
/// newest `history` only.
#[tokio::test]
async fn the_embedded_ledger_on_disk_stays_within_its_bound_and_slack() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap().with_history(4);
    let now = truncate(Utc::now());
    let mut current = job_due("trimmed", now + Duration::hours(1));
    store.insert(&current, None, &[]).await.unwrap();
    let file = rusqlite::Connection::open(dir.path().join("jobs.db")).unwrap();
    let mut appended = Vec::new();
    let mut most = 0;
    for i in 0..40 {
        let run = finished_run(&current, now + Duration::minutes(i), RunStatus::Skipped);
        let mut next = current.clone();
        next.touch(now);
        store
            .update(&next, current.version, std::slice::from_ref(&run), &[])
            .await
            .unwrap();
        current = next;
        appended.push(run);
        let rows: i64 = file
            .query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0))
            .unwrap();
        most = most.max(rows);
        let newest = &appended[appended.len().saturating_sub(4)..];
        assert_eq!(store.run_history(current.id).await.unwrap(), newest);
    }
    assert_eq!(
        most, 5,
        "the ledger reached its bound plus slack and no further"
    );
}
