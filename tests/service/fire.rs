//! The scheduler fires one-shot jobs at their time, and results close their runs.

use scheduler::domain::{EventKind, format_time};
use serde_json::{Value, json};

use crate::support::{TestApp, at, email_job, id_of, in_millis};

#[tokio::test]
async fn job_fires_at_its_time_with_a_run_and_a_run_event() {
    let mut app = TestApp::spawn().await;
    let job = app.create_job(&email_job("soon", &in_millis(300))).await;
    let id = id_of(&job);
    let due = at(job["scheduleTime"].as_str().unwrap());

    let event = app.next_event(EventKind::Run, &id).await;
    let run = event.run.as_ref().expect("a run event carries the run");
    assert_eq!(run.scheduled_for, due);
    assert!(run.fired_at.unwrap() >= due, "fired before it was due");
    assert_eq!(run.attempt, 1);

    let stored = app.get_job(&id).await;
    assert_eq!(stored["status"], "RUNNING");
    assert_eq!(stored["scheduleTime"], Value::Null);
    let runs: Value = app.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
    assert_eq!(runs["totalCount"], 1);
    assert_eq!(runs["runs"][0]["runId"], run.run_id.to_string());
    assert_eq!(runs["runs"][0]["status"], "RUNNING");
}

#[tokio::test]
async fn job_due_in_the_past_fires_at_once() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&email_job("late", "2001-01-01T00:00:00Z"))
        .await;
    let event = app.next_event(EventKind::Run, &id_of(&job)).await;
    assert_eq!(
        event.run.as_ref().unwrap().scheduled_for,
        at("2001-01-01T00:00:00Z")
    );
}

#[tokio::test]
async fn updated_time_moves_the_fire() {
    let mut app = TestApp::spawn().await;
    // Moved earlier: from next year to now.
    let later = app
        .create_job(&email_job("moved earlier", &in_millis(3_600_000)))
        .await;
    // Moved later: from now to next hour.
    let sooner = app
        .create_job(&email_job("moved later", &in_millis(1_500)))
        .await;
    let new_time = in_millis(100);
    for (job, to) in [(&later, new_time.clone()), (&sooner, in_millis(3_600_000))] {
        let response = app
            .patch(
                &format!("/api/v1/jobs/{}", id_of(job)),
                &json!({"schedule": {"runAt": to}}),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    // A sentinel due after the original time of the job moved later.
    let sentinel = app
        .create_job(&email_job("sentinel", &in_millis(2_000)))
        .await;

    let event = app.next_event(EventKind::Run, &id_of(&later)).await;
    assert_eq!(event.run.as_ref().unwrap().scheduled_for, at(&new_time));
    app.next_event(EventKind::Run, &id_of(&sentinel)).await;
    let moved = app.get_job(&id_of(&sooner)).await;
    assert_eq!(
        moved["status"], "SCHEDULED",
        "the job moved later fired early"
    );
    let runs = app
        .get_json(&format!("/api/v1/jobs/{}/runs", id_of(&sooner)))
        .await;
    assert_eq!(runs["totalCount"], 0, "the job moved later has a run");
}

#[tokio::test]
async fn deleted_job_never_fires() {
    let mut app = TestApp::spawn().await;
    // Due late enough that the delete surely lands first, even on a loaded machine.
    let doomed = app
        .create_job(&email_job("doomed", &in_millis(1_500)))
        .await;
    let sentinel = app
        .create_job(&email_job("sentinel", &in_millis(2_000)))
        .await;
    app.delete_job(&id_of(&doomed)).await;

    // Every run event up to the sentinel's fire (due after the deleted job): none is the
    // deleted job's.
    let doomed_id = id_of(&doomed);
    let sentinel_id = id_of(&sentinel);
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let event = app.next_any_run().await;
            let id = event.job.id.to_string();
            seen.push(id.clone());
            if id == sentinel_id {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), wait)
        .await
        .expect("the sentinel fires");
    assert!(!seen.contains(&doomed_id), "the deleted job fired");
    let runs = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{doomed_id}/runs")))
        .send()
        .await
        .unwrap();
    assert_eq!(runs.status(), 404);
}

#[tokio::test]
async fn results_close_the_run_once_and_conflicting_results_are_409() {
    let mut app = TestApp::spawn().await;
    let job = app.create_job(&email_job("to finish", &in_millis(0))).await;
    let id = id_of(&job);
    let event = app.next_event(EventKind::Run, &id).await;
    let run_id = event.run.as_ref().unwrap().run_id.to_string();
    let url = app.url(&format!("/api/v1/jobs/{id}/runs/{run_id}/result"));

    let first = app
        .http
        .post(&url)
        .json(&json!({"status": "SUCCEEDED", "output": "sent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let run: Value = first.json().await.unwrap();
    assert_eq!(run["status"], "SUCCEEDED");
    assert_eq!(run["output"], "sent");
    assert!(run["finishedAt"].is_string());
    let finished = app.get_job(&id).await;
    assert_eq!(finished["status"], "SUCCEEDED");

    let again = app
        .http
        .post(&url)
        .json(&json!({"status": "SUCCEEDED", "output": "sent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), run);
    assert_eq!(app.get_job(&id).await["version"], finished["version"]);

    let conflicting = app
        .http
        .post(&url)
        .json(&json!({"status": "FAILED", "error": "bounced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(conflicting.status(), 409);
    assert_eq!(app.get_job(&id).await["status"], "SUCCEEDED");
}

#[tokio::test]
async fn failed_result_sets_the_job_failed() {
    let mut app = TestApp::spawn().await;
    let job = app.create_job(&email_job("to fail", &in_millis(0))).await;
    let id = id_of(&job);
    let event = app.next_event(EventKind::Run, &id).await;
    let run_id = event.run.as_ref().unwrap().run_id;
    let response = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{id}/runs/{run_id}/result")))
        .json(&json!({"status": "FAILED", "error": "mailbox full"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let finished = app.next_event(EventKind::Finished, &id).await;
    assert_eq!(
        finished.run.as_ref().unwrap().error.as_deref(),
        Some("mailbox full")
    );
    let job = app.job_with_status(&id, "FAILED").await;
    assert_eq!(job["scheduleTime"], Value::Null);
}

/// Two services (two schedulers) on one embedded store: every job due in the same instant
/// fires exactly once, by one of them.
#[tokio::test]
async fn two_schedulers_on_one_store_fire_each_job_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = scheduler::config::Config::for_tests();
        config.store = Some(scheduler::config::StoreKind::Embedded);
        config.data_dir = data.path().to_owned();
        config.batch_size = 50;
        config.idle_poll_ms = 50;
        config
    };
    let mut first = TestApp::spawn_with(config()).await;
    let second = TestApp::spawn_with(config()).await;

    // Created through the use cases directly, so all are stored before any is due.
    let due = in_millis(3_000);
    let mut ids = std::collections::HashSet::new();
    for i in 0..300 {
        let input = serde_json::from_value(email_job(&format!("bulk {i}"), &due)).unwrap();
        let created = first
            .jobs()
            .create(input, None, &Default::default())
            .await
            .unwrap();
        ids.insert(created.job.id.to_string());
    }

    // The journal both share holds every fire once, whichever scheduler made it.
    let mut fired = std::collections::HashMap::<String, u32>::new();
    let collect = async {
        while fired.len() < ids.len() {
            let event = first.next_any_run().await;
            *fired.entry(event.job.id.to_string()).or_default() += 1;
        }
        // A second fire of any of them would be journaled by now.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        for event in first.published().await {
            if event.kind == scheduler::domain::EventKind::Run {
                *fired.entry(event.job.id.to_string()).or_default() += 1;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), collect)
        .await
        .expect("every job fires");
    assert!(fired.keys().all(|id| ids.contains(id)));
    // The store is the judge of duplicates: one run row per job, whichever scheduler fired it.
    for id in &ids {
        let runs: Value = first.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
        assert_eq!(runs["totalCount"], 1, "job {id}");
    }
    assert!(fired.values().all(|&n| n == 1), "a job fired twice");
    drop(second);
}

#[tokio::test]
async fn rescheduling_back_to_a_fired_time_records_a_new_attempt() {
    let mut app = TestApp::spawn().await;
    let at = "2001-01-01T00:00:00.000Z";
    let job = app.create_job(&email_job("fires twice", at)).await;
    let id = id_of(&job);
    let first = app.next_event(EventKind::Run, &id).await;
    let first_run = first.run.clone().unwrap();
    let result = app
        .http
        .post(app.url(&format!(
            "/api/v1/jobs/{id}/runs/{}/result",
            first_run.run_id
        )))
        .json(&json!({"status": "SUCCEEDED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);

    // Away to next year, then back to the time it already fired for.
    for to in [in_millis(3_600_000 * 24 * 365), at.to_owned()] {
        let response = app
            .patch(
                &format!("/api/v1/jobs/{id}"),
                &json!({"schedule": {"runAt": to}}),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let second = app.next_event(EventKind::Run, &id).await;
    let second_run = second.run.clone().unwrap();
    assert_eq!(second_run.attempt, 2);
    assert_ne!(second_run.run_id, first_run.run_id);

    let runs: Value = app.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
    assert_eq!(runs["totalCount"], 2);
    let statuses: Vec<_> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert!(
        statuses.contains(&json!("SUCCEEDED")),
        "the first run was overwritten: {statuses:?}"
    );
}

#[tokio::test]
async fn a_new_schedule_leaves_the_open_run_open_and_its_result_still_counts() {
    let mut app = TestApp::spawn().await;
    let job = app.create_job(&email_job("running", &in_millis(0))).await;
    let id = id_of(&job);
    let run = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    let later = in_millis(60_000);
    let response = app
        .patch(
            &format!("/api/v1/jobs/{id}"),
            &json!({"schedule": {"runAt": later}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let moved: Value = response.json().await.unwrap();
    assert_eq!(moved["status"], "RUNNING", "the run is still open");
    assert_eq!(moved["scheduleTime"], later);
    let response = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{id}/runs/{}/result", run.run_id)))
        .json(&json!({"status": "SUCCEEDED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after = app.get_job(&id).await;
    assert_eq!(
        after["status"], "SCHEDULED",
        "the new time is still to come"
    );
    assert_eq!(after["scheduleTime"], later);
}

#[tokio::test]
async fn create_wakes_the_sleeping_scheduler_for_an_earlier_job() {
    // The scheduler would otherwise sleep a minute between looks at the store.
    let mut config = scheduler::config::Config::for_tests();
    config.idle_poll_ms = 60_000;
    let mut app = TestApp::spawn_with(config).await;
    // Let the loop go to sleep on an empty store first.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let job = app
        .create_job(&email_job("wakes it", &in_millis(300)))
        .await;
    // next_event gives up after 20 s, well before the minute the loop would sleep.
    app.next_event(EventKind::Run, &id_of(&job)).await;
}

/// A job moved back to a due time it fired for, after its ledger (two runs here) dropped the
/// earlier runs of that time, fires under a run id it never had: executors drop repeated ids
/// as duplicates, so a reused one would be an execution lost.
#[tokio::test]
async fn a_run_id_is_never_reused_however_the_ledger_is_trimmed() {
    let mut config = scheduler::config::Config::for_tests();
    config.run_history = 2;
    let mut app = TestApp::spawn_with(config).await;
    // Both in the past: each fires at once.
    let (t, other) = ("2020-01-01T00:00:00.000Z", "2020-06-01T00:00:00.000Z");
    let job = app.create_job(&email_job("moved back and forth", t)).await;
    let id = id_of(&job);
    let mut ids = Vec::new();
    for next in [other, t, other, t, other, t] {
        let run = app
            .next_event(EventKind::Run, &id)
            .await
            .run
            .clone()
            .unwrap();
        ids.push(run.run_id.to_string());
        let (status, _) = app
            .post_json(
                &format!("/api/v1/jobs/{id}/runs/{}/result", run.run_id),
                &json!({"status": "SUCCEEDED"}),
            )
            .await;
        assert_eq!(status, 200, "the result of {}", run.run_id);
        app.next_event(EventKind::Finished, &id).await;
        let moved = app
            .patch(
                &format!("/api/v1/jobs/{id}"),
                &json!({"schedule": {"runAt": next}}),
            )
            .await;
        assert_eq!(moved.status().as_u16(), 200, "moved to {next}");
    }
    let last = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    assert_eq!(format_time(last.scheduled_for), t);
    assert!(
        !ids.contains(&last.run_id.to_string()),
        "{} was given out before: {ids:?}",
        last.run_id
    );
    let ledger = app.runs(&id).await;
    assert!(
        ledger.iter().all(|r| r["runId"] != ids[0]),
        "the first run of {t} was trimmed from the ledger: {ledger:?}"
    );
    ids.push(last.run_id.to_string());
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}
