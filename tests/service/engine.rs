//! The scheduling engine end to end: recurring schedules, retries, timeouts, the run ledger,
//! the operations, misfires after downtime, and schedule previews.

use std::time::Duration;

use scheduler::{
    config::Config,
    domain::{EventKind, JobStatus, RunStatus},
    grpc::pb,
};
use serde_json::{Value, json};

use crate::support::{
    Failures, Service, TestApp, at, email_job, eventually, id_of, in_millis, sms_job, timestamp,
};

#[tokio::test]
async fn a_cron_job_with_seconds_fires_every_second_with_a_new_run_id_each_time() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "every second",
            json!({"cron": "* * * * * *", "timezone": "Europe/Berlin"}),
            json!({"overlapPolicy": "ALLOW"}),
        ))
        .await;
    let id = id_of(&job);
    assert_eq!(job["schedule"]["cron"], "* * * * * *");
    assert_eq!(job["schedule"]["timezone"], "Europe/Berlin");
    assert_eq!(job["status"], "SCHEDULED");

    let mut fires = Vec::new();
    for _ in 0..3 {
        let event = app.next_event(EventKind::Run, &id).await;
        fires.push(event.run.clone().unwrap());
    }
    for pair in fires.windows(2) {
        assert_ne!(pair[0].run_id, pair[1].run_id);
        assert_eq!(
            pair[1].scheduled_for - pair[0].scheduled_for,
            chrono::Duration::seconds(1),
            "one fire per second, none skipped or doubled"
        );
    }
    for run in &fires {
        assert_eq!(run.scheduled_for.timestamp_subsec_millis(), 0);
    }
    let stored = app.get_job(&id).await;
    assert!(
        stored["status"] == "RUNNING" || stored["status"] == "SCHEDULED",
        "{stored}"
    );
    assert!(
        stored["scheduleTime"].is_string(),
        "a recurring job stays scheduled"
    );
}

#[tokio::test]
async fn an_interval_job_fires_at_its_start_and_every_interval_after() {
    let mut app = TestApp::spawn().await;
    let start = in_millis(300);
    let job = app
        .create_job(&sms_job(
            "every second from start",
            json!({"intervalSeconds": 1, "startAt": start}),
            json!({"overlapPolicy": "ALLOW"}),
        ))
        .await;
    let id = id_of(&job);
    assert_eq!(job["scheduleTime"], start);
    let first = app.next_event(EventKind::Run, &id).await;
    let second = app.next_event(EventKind::Run, &id).await;
    let (first, second) = (first.run.clone().unwrap(), second.run.clone().unwrap());
    assert_eq!(
        scheduler::domain::format_time(first.scheduled_for),
        start,
        "the first fire is at startAt"
    );
    assert_eq!(
        second.scheduled_for - first.scheduled_for,
        chrono::Duration::seconds(1)
    );
}

#[tokio::test]
async fn a_failed_result_retries_as_a_new_run_then_the_job_fails_when_attempts_run_out() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "retried",
            json!({"runAt": in_millis(0)}),
            json!({"retry": {"maxAttempts": 2, "backoffSeconds": 0}}),
        ))
        .await;
    let id = id_of(&job);
    let first = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    assert_eq!(first.attempt, 1);
    let (status, _) = app
        .post_json(
            &format!("/api/v1/jobs/{id}/runs/{}/result", first.run_id),
            &json!({"status": "FAILED", "error": "mailbox full"}),
        )
        .await;
    assert_eq!(status, 200);

    let second = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.scheduled_for, first.scheduled_for);
    assert_ne!(
        second.run_id, first.run_id,
        "each attempt has its own run id"
    );
    let (status, _) = app
        .post_json(
            &format!("/api/v1/jobs/{id}/runs/{}/result", second.run_id),
            &json!({"status": "FAILED", "error": "mailbox still full"}),
        )
        .await;
    assert_eq!(status, 200);

    let stored = app.get_job(&id).await;
    assert_eq!(stored["status"], "FAILED");
    assert_eq!(stored["scheduleTime"], Value::Null);
    let ledger = app.runs(&id).await;
    let summary: Vec<(u64, &str)> = ledger
        .iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, vec![(2, "FAILED"), (1, "FAILED")], "newest first");
}

#[tokio::test]
async fn a_run_without_a_result_times_out_and_its_late_result_is_rejected() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "times out",
            json!({"runAt": in_millis(0)}),
            json!({"runTimeoutSeconds": 1}),
        ))
        .await;
    let id = id_of(&job);
    let run = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    let finished = app.next_event(EventKind::Finished, &id).await;
    let timed_out = finished.run.clone().unwrap();
    assert_eq!(timed_out.run_id, run.run_id);
    assert_eq!(timed_out.status, RunStatus::TimedOut);
    assert_eq!(finished.job.status, JobStatus::Failed);

    let (status, problem) = app
        .post_json(
            &format!("/api/v1/jobs/{id}/runs/{}/result", run.run_id),
            &json!({"status": "SUCCEEDED"}),
        )
        .await;
    assert_eq!(status, 409, "a result for a superseded run is rejected");
    assert!(
        problem["detail"].as_str().unwrap().contains("TIMED_OUT"),
        "{problem}"
    );
    assert_eq!(app.get_job(&id).await["status"], "FAILED");
}

#[tokio::test]
async fn operations_follow_their_transitions_and_refused_ones_change_nothing() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "operated",
            json!({"cron": "0 9 * * MON", "timezone": "Europe/Berlin"}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    let place = job["scheduleTime"].clone();
    // (operation, expected status, expected job status afterwards), in order: each row starts
    // where the one before left the job.
    let table = [
        ("pause", 200, "PAUSED"),
        ("pause", 409, "PAUSED"),
        ("resume", 200, "SCHEDULED"),
        ("resume", 409, "SCHEDULED"),
        ("trigger", 200, "RUNNING"),
        ("trigger", 409, "RUNNING"), // a run is open and overlap is SKIP
        ("pause", 200, "PAUSED"),
        ("cancel", 200, "CANCELLED"),
        ("cancel", 409, "CANCELLED"),
        ("trigger", 409, "CANCELLED"),
        ("resume", 409, "CANCELLED"),
        ("pause", 409, "CANCELLED"),
    ];
    let mut failures = Failures::new();
    for (step, (operation, expected, after)) in table.into_iter().enumerate() {
        let row = format!("step {step}: {operation}");
        let (status, body) = app
            .post_json(&format!("/api/v1/jobs/{id}/{operation}"), &json!({}))
            .await;
        failures.expect_eq(&row, status, expected);
        if status == 200 {
            failures.expect_eq(&row, body["status"].clone(), json!(after));
        } else {
            failures.expect_eq(&row, body["status"].clone(), json!(409));
        }
        let stored = app.get_job(&id).await;
        failures.expect_eq(&row, stored["status"].clone(), json!(after));
        if operation == "resume" && status == 200 {
            failures.expect_eq(&row, stored["scheduleTime"].clone(), place.clone());
        }
    }
    failures.assert_none("operations in turn");
    let triggered = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    assert_eq!(triggered.attempt, 1);
    let ledger = app.runs(&id).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0]["status"], "CANCELLED",
        "the open run was cancelled"
    );
    assert_eq!(app.get_job(&id).await["scheduleTime"], Value::Null);
}

#[tokio::test]
async fn an_operation_on_a_malformed_id_is_400_and_on_an_unknown_job_404() {
    let app = TestApp::spawn().await;
    let mut failures = Failures::new();
    for (path, expected) in [
        ("/api/v1/jobs/nope/pause", 400),
        ("/api/v1/jobs/65f1c0ffee0123456789abcd/pause", 404),
        ("/api/v1/jobs/65f1c0ffee0123456789abcd/resume", 404),
        ("/api/v1/jobs/65f1c0ffee0123456789abcd/trigger", 404),
        ("/api/v1/jobs/65f1c0ffee0123456789abcd/cancel", 404),
    ] {
        let (status, _) = app.post_json(path, &json!({})).await;
        failures.expect_eq(path, status, expected);
    }
    failures.assert_none("operations on missing jobs");
}

#[tokio::test]
async fn grpc_operations_follow_the_same_transitions() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let job = app
        .create_job(&sms_job(
            "over grpc",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    let refused = client
        .resume_job(pb::JobOperationRequest {
            id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let missing = client
        .pause_job(pb::JobOperationRequest {
            id: "65f1c0ffee0123456789abcd".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let paused = client
        .pause_job(pb::JobOperationRequest {
            id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.status, pb::JobStatus::Paused as i32);
    let triggered = client
        .trigger_job(pb::JobOperationRequest {
            id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        triggered.status,
        pb::JobStatus::Paused as i32,
        "a trigger fires even while paused"
    );
    let cancelled = client
        .cancel_job(pb::JobOperationRequest {
            id,
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::JobStatus::Cancelled as i32);
}

#[tokio::test]
async fn a_paused_job_fires_nothing_and_resume_catches_up_once_by_its_misfire_policy() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "paused interval",
            json!({"intervalSeconds": 1, "startAt": in_millis(200)}),
            json!({"overlapPolicy": "ALLOW"}),
        ))
        .await;
    let id = id_of(&job);
    let (status, _) = app
        .post_json(&format!("/api/v1/jobs/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert!(app.runs(&id).await.is_empty(), "nothing fired while paused");

    let (status, resumed) = app
        .post_json(&format!("/api/v1/jobs/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let catch_up = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    let ledger = app.runs(&id).await;
    let before_resume: Vec<&Value> = ledger
        .iter()
        .filter(|r| r["scheduledFor"].as_str().unwrap() < resumed["updatedAt"].as_str().unwrap())
        .collect();
    let fired: Vec<&&Value> = before_resume
        .iter()
        .filter(|r| r["status"] != "MISSED")
        .collect();
    assert_eq!(fired.len(), 1, "FIRE_ONCE: one catch-up run: {ledger:?}");
    assert_eq!(fired[0]["runId"], catch_up.run_id.to_string());
    assert!(
        before_resume.len() >= 3,
        "the other paused times are recorded MISSED: {ledger:?}"
    );
    assert!(
        before_resume
            .iter()
            .filter(|r| r["status"] == "MISSED")
            .all(|r| r["error"].as_str().unwrap().contains("paused"))
    );
}

#[tokio::test]
async fn a_fire_due_while_the_previous_run_is_open_is_recorded_skipped() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "no overlap",
            json!({"cron": "* * * * * *"}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    let open = app
        .next_event(EventKind::Run, &id)
        .await
        .run
        .clone()
        .unwrap();
    let skipped = app
        .next_event(EventKind::Finished, &id)
        .await
        .run
        .clone()
        .unwrap();
    assert_eq!(skipped.status, RunStatus::Skipped);
    assert!(skipped.fired_at.is_none());
    assert!(skipped.scheduled_for > open.scheduled_for);
    let ledger = app.runs(&id).await;
    let running = ledger.iter().filter(|r| r["status"] == "RUNNING").count();
    assert_eq!(running, 1, "{ledger:?}");
}

#[tokio::test]
async fn the_ledger_keeps_the_newest_finished_runs_up_to_the_history_bound() {
    let mut config = Config::for_tests();
    config.run_history = 3;
    let mut app = TestApp::spawn_with(config).await;
    let job = app
        .create_job(&sms_job(
            "bounded",
            json!({"cron": "* * * * * *"}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    app.next_event(EventKind::Run, &id).await;
    let mut skipped = Vec::new();
    for _ in 0..5 {
        skipped.push(
            app.next_event(EventKind::Finished, &id)
                .await
                .run
                .clone()
                .unwrap(),
        );
    }
    let newest = skipped[4].run_id.to_string();
    let ledger = eventually("the fifth skip to be stored", || {
        let (app, id, newest) = (&app, &id, &newest);
        async move {
            let ledger = app.runs(id).await;
            ledger
                .iter()
                .any(|r| r["runId"] == *newest)
                .then_some(ledger)
        }
    })
    .await;
    let finished: Vec<&Value> = ledger.iter().filter(|r| r["status"] == "SKIPPED").collect();
    assert!(finished.len() <= 3, "{ledger:?}");
    assert_eq!(
        ledger.iter().filter(|r| r["status"] == "RUNNING").count(),
        1
    );
    assert!(
        !ledger
            .iter()
            .any(|r| r["runId"] == skipped[0].run_id.to_string()),
        "the oldest record was dropped"
    );
}

#[tokio::test]
async fn preview_marks_fires_moved_or_resolved_by_dst() {
    let app = TestApp::spawn().await;
    let spring = app
        .get_json(
            "/api/v1/schedule/preview?cron=30%202%20*%20*%20*&timezone=Europe/Berlin&from=2026-03-27T12:00:00Z&count=3",
        )
        .await;
    let times = spring["times"].as_array().unwrap();
    assert_eq!(times.len(), 3);
    assert_eq!(times[0]["dstShifted"], false);
    assert_eq!(times[1]["time"], "2026-03-29T01:00:00.000Z");
    assert_eq!(times[1]["localTime"], "2026-03-29T03:00:00+02:00");
    assert_eq!(times[1]["requestedLocalTime"], "2026-03-29T02:30:00");
    assert_eq!(times[1]["dstShifted"], true);
    assert_eq!(times[1]["dst"], "SKIPPED");
    let autumn = app
        .get_json(
            "/api/v1/schedule/preview?cron=30%202%20*%20*%20*&timezone=Europe/Berlin&from=2026-10-24T12:00:00Z&count=2",
        )
        .await;
    assert_eq!(autumn["times"][0]["time"], "2026-10-25T00:30:00.000Z");
    assert_eq!(autumn["times"][0]["dst"], "REPEATED");
    assert_eq!(autumn["times"][1]["dst"], "NONE");
}

#[tokio::test]
async fn grpc_preview_marks_the_same_dst_shifts() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let preview = client
        .preview_schedule(pb::PreviewScheduleRequest {
            schedule: Some(pb::JobSchedule {
                cron: "30 2 * * *".into(),
                timezone: "Europe/Berlin".into(),
                ..Default::default()
            }),
            count: 3,
            from: Some(timestamp("2026-03-27T12:00:00Z")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(preview.times[1].dst_shifted);
    assert_eq!(preview.times[1].local_time, "2026-03-29T03:00:00+02:00");
    assert_eq!(preview.times[1].dst, "SKIPPED");
    assert_eq!(preview.times[1].requested_local_time, "2026-03-29T02:30:00");
    let bad = client
        .preview_schedule(pb::PreviewScheduleRequest {
            schedule: Some(pb::JobSchedule {
                cron: "nope".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_bad_preview_query_names_its_field() {
    let app = TestApp::spawn().await;
    let mut failures = Failures::new();
    for (query, field) in [
        ("cron=61%20*%20*%20*%20*", "schedule.cron"),
        ("cron=*%20*%20*", "schedule.cron"),
        ("cron=0%200%2031%202%20*", "schedule.cron"),
        (
            "cron=0%209%20*%20*%20*&timezone=Mars/Base",
            "schedule.timezone",
        ),
        ("cron=0%209%20*%20*%20*&count=0", "count"),
        ("cron=0%209%20*%20*%20*&count=101", "count"),
        ("cron=0%209%20*%20*%20*&count=ten", "count"),
        ("cron=0%209%20*%20*%20*&from=yesterday", "from"),
        ("", "schedule"),
        ("cron=0%209%20*%20*%20*&intervalSeconds=5", "schedule"),
        ("intervalSeconds=0", "schedule.intervalSeconds"),
        ("intervalSeconds=-5", "schedule.intervalSeconds"),
        ("intervalSeconds=five", "intervalSeconds"),
    ] {
        let response = app
            .http
            .get(app.url(&format!("/api/v1/schedule/preview?{query}")))
            .send()
            .await
            .unwrap();
        failures.expect_eq(query, response.status().as_u16(), 400);
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        failures.expect_eq(query, problem["errors"][0]["field"].clone(), json!(field));
    }
    failures.assert_none("bad preview queries");
}

#[tokio::test]
async fn bad_recurring_schedules_and_policies_are_refused_and_store_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"cron": "0 9 * * *", "runAt": in_millis(0)}),
            json!({}),
            "schedule",
        ),
        (json!({}), json!({}), "schedule"),
        (json!({"cron": "0 9 * * * * *"}), json!({}), "schedule.cron"),
        (json!({"cron": "0 25 * * *"}), json!({}), "schedule.cron"),
        (
            json!({"cron": "0 9 * * *", "timezone": "Berlin"}),
            json!({}),
            "schedule.timezone",
        ),
        (
            json!({"runAt": in_millis(0), "timezone": "UTC"}),
            json!({}),
            "schedule.timezone",
        ),
        (
            json!({"intervalSeconds": 0}),
            json!({}),
            "schedule.intervalSeconds",
        ),
        (
            json!({"intervalSeconds": 40_000_000}),
            json!({}),
            "schedule.intervalSeconds",
        ),
        (
            json!({"intervalSeconds": 5, "startAt": "soon"}),
            json!({}),
            "schedule.startAt",
        ),
        (
            json!({"cron": "0 9 * * *", "startAt": in_millis(0)}),
            json!({}),
            "schedule.startAt",
        ),
        (
            json!({"intervalSeconds": 5}),
            json!({"retry": {"maxAttempts": 0}}),
            "retry.maxAttempts",
        ),
        (
            json!({"intervalSeconds": 5}),
            json!({"retry": {"maxAttempts": 101}}),
            "retry.maxAttempts",
        ),
        (
            json!({"intervalSeconds": 5}),
            json!({"retry": {"backoffSeconds": 3601}}),
            "retry.backoffSeconds",
        ),
        (
            json!({"intervalSeconds": 5}),
            json!({"runTimeoutSeconds": 0}),
            "runTimeoutSeconds",
        ),
        (
            json!({"intervalSeconds": 5}),
            json!({"misfirePolicy": "SOMETIMES"}),
            "misfirePolicy",
        ),
        (
            json!({"intervalSeconds": 5}),
            json!({"overlapPolicy": 1}),
            "overlapPolicy",
        ),
    ];
    let mut failures = Failures::new();
    for (schedule, extra, field) in cases {
        let row = format!("{schedule} {extra}");
        let response = app
            .post_job(&sms_job("bad", schedule.clone(), extra.clone()))
            .await;
        failures.expect_eq(&row, response.status().as_u16(), 400);
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        failures.expect(
            &row,
            fields.contains(&field),
            format!("no error names {field}: {problem}"),
        );
    }
    failures.assert_none("bad recurring schedules and policies");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn after_downtime_each_misfire_policy_does_what_it_says() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let flags = ["--misfire-threshold-seconds".to_owned(), "1".to_owned()];
    let mut first = Service::start_with(data.path(), &flags).await;
    let start = in_millis(1_500);
    let mut ids = Vec::new();
    for policy in ["SKIP", "FIRE_ONCE", "FIRE_ALL"] {
        let response = http
            .post(first.url("/api/v1/jobs"))
            .json(&sms_job(
                policy,
                json!({"intervalSeconds": 1, "startAt": start}),
                json!({"misfirePolicy": policy, "overlapPolicy": "ALLOW"}),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        ids.push(id_of(&response.json().await.unwrap()));
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);
    // Down through at least four due times.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let restarted_at = chrono::Utc::now();
    let second = Service::start_with(data.path(), &flags).await;
    let start = at(&start);
    let late = restarted_at - chrono::Duration::seconds(1);

    let mut ledgers = Vec::new();
    for id in &ids {
        let ledger = eventually("the downtime to be settled", || {
            let request = http
                .get(second.url(&format!("/api/v1/jobs/{id}/runs?size=100")))
                .send();
            async move {
                let page: Value = request.await.ok()?.json().await.ok()?;
                let runs = page["runs"].as_array()?.clone();
                // Settled once the first due time is accounted for.
                runs.iter()
                    .any(|r| at(r["scheduledFor"].as_str().unwrap()) == start)
                    .then_some(runs)
            }
        })
        .await;
        let missed_times: Vec<(chrono::DateTime<chrono::Utc>, String)> = ledger
            .iter()
            .map(|r| {
                (
                    at(r["scheduledFor"].as_str().unwrap()),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .filter(|(t, _)| *t < late)
            .collect();
        ledgers.push(missed_times);
    }
    let count = |ledger: &[(chrono::DateTime<chrono::Utc>, String)], status: &str| {
        ledger.iter().filter(|(_, s)| s == status).count()
    };
    let (skip, once, all) = (&ledgers[0], &ledgers[1], &ledgers[2]);
    assert!(skip.len() >= 3, "{skip:?}");
    assert_eq!(count(skip, "MISSED"), skip.len(), "SKIP: {skip:?}");
    assert_eq!(once.len(), skip.len());
    assert!(
        count(once, "MISSED") >= once.len() - 1,
        "FIRE_ONCE: at most one catch-up run: {once:?}"
    );
    assert_eq!(all.len(), skip.len());
    assert_eq!(
        count(all, "MISSED"),
        0,
        "FIRE_ALL fires every missed time: {all:?}"
    );
    let mut times: Vec<_> = all.iter().map(|(t, _)| *t).collect();
    times.dedup();
    assert_eq!(times.len(), all.len(), "each missed time once");
}

#[tokio::test]
async fn one_shot_jobs_keep_firing_once_with_the_policies_defaulted() {
    let mut app = TestApp::spawn().await;
    let job = app.create_job(&email_job("defaults", &in_millis(0))).await;
    assert_eq!(
        job["retry"],
        json!({"maxAttempts": 1, "backoffSeconds": 10})
    );
    assert_eq!(job["runTimeoutSeconds"], 300);
    assert_eq!(job["misfirePolicy"], "FIRE_ONCE");
    assert_eq!(job["overlapPolicy"], "SKIP");
    let id = id_of(&job);
    app.next_event(EventKind::Run, &id).await;
    let stored = app.get_job(&id).await;
    assert_eq!(stored["status"], "RUNNING");
    assert_eq!(stored["scheduleTime"], Value::Null);
}

/// A recurring job with every policy set, created over gRPC; its id.
async fn grpc_cron_job(
    client: &mut pb::jobs_service_client::JobsServiceClient<tonic::transport::Channel>,
) -> String {
    client
        .create_job(pb::CreateJobRequest {
            name: "grpc cron".into(),
            job_type: pb::JobType::Sms as i32,
            job_data: r#"{"To":"+100"}"#.into(),
            schedule: Some(pb::JobSchedule {
                cron: "0 9 * * MON".into(),
                timezone: "Europe/Berlin".into(),
                ..Default::default()
            }),
            policy: Some(pb::JobPolicy {
                max_attempts: Some(3),
                backoff_seconds: Some(0),
                run_timeout_seconds: Some(60),
                misfire_policy: pb::MisfirePolicy::FireAll as i32,
                overlap_policy: pb::OverlapPolicy::Allow as i32,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

#[tokio::test]
async fn grpc_creates_recurring_jobs_with_their_policies() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let id = grpc_cron_job(&mut client).await;
    let job = app.get_job(&id).await;
    assert_eq!(job["schedule"]["cron"], "0 9 * * MON");
    assert_eq!(job["retry"], json!({"maxAttempts": 3, "backoffSeconds": 0}));
    assert_eq!(job["runTimeoutSeconds"], 60);
    assert_eq!(job["misfirePolicy"], "FIRE_ALL");
    assert_eq!(job["overlapPolicy"], "ALLOW");
}

#[tokio::test]
async fn a_grpc_update_keeps_the_schedule_and_policy_fields_it_leaves_out() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let id = grpc_cron_job(&mut client).await;
    client
        .update_job(pb::UpdateJobRequest {
            id: id.clone(),
            name: "grpc cron renamed".into(),
            job_type: pb::JobType::Sms as i32,
            job_data: r#"{"To":"+100"}"#.into(),
            policy: Some(pb::JobPolicy {
                max_attempts: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "grpc cron renamed");
    assert_eq!(
        got.schedule.unwrap().cron,
        "0 9 * * MON",
        "the schedule was kept"
    );
    let policy = got.policy.unwrap();
    assert_eq!(policy.max_attempts, Some(5));
    assert_eq!(
        policy.backoff_seconds,
        Some(0),
        "the unset retry field was kept"
    );
    assert_eq!(policy.run_timeout_seconds, Some(60));
    assert_eq!(policy.misfire_policy, pb::MisfirePolicy::FireAll as i32);
    assert_eq!(policy.overlap_policy, pb::OverlapPolicy::Allow as i32);
}

#[tokio::test]
async fn a_grpc_create_with_two_schedules_or_a_bad_one_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let sms = |schedule_time, schedule| pb::CreateJobRequest {
        name: "refused".into(),
        job_type: pb::JobType::Sms as i32,
        schedule_time,
        schedule: Some(schedule),
        ..Default::default()
    };
    let cases = [
        (
            "both kinds",
            sms(
                Some(timestamp("2030-01-01T00:00:00Z")),
                pb::JobSchedule {
                    interval_seconds: 60,
                    ..Default::default()
                },
            ),
            "schedule",
        ),
        (
            "a bad cron",
            sms(
                None,
                pb::JobSchedule {
                    cron: "0 25 * * *".into(),
                    ..Default::default()
                },
            ),
            "schedule.cron",
        ),
        (
            "a negative interval",
            sms(
                None,
                pb::JobSchedule {
                    interval_seconds: -60,
                    ..Default::default()
                },
            ),
            "schedule.interval_seconds",
        ),
        (
            "an unknown misfire policy",
            pb::CreateJobRequest {
                policy: Some(pb::JobPolicy {
                    misfire_policy: 9,
                    ..Default::default()
                }),
                ..sms(
                    None,
                    pb::JobSchedule {
                        interval_seconds: 60,
                        ..Default::default()
                    },
                )
            },
            "policy.misfire_policy",
        ),
    ];
    let mut failures = Failures::new();
    for (what, request, field) in cases {
        match client.create_job(request).await {
            Ok(_) => failures.expect(what, false, "it was accepted"),
            Err(status) => {
                failures.expect_eq(what, status.code(), tonic::Code::InvalidArgument);
                use tonic_types::StatusExt;
                let fields: Vec<String> = status
                    .get_details_bad_request()
                    .map(|d| d.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                failures.expect(
                    what,
                    fields.iter().any(|f| f == field),
                    format!("{fields:?}"),
                );
            }
        }
    }
    failures.assert_none("refused gRPC creates");
    assert_eq!(app.job_count().await, 0);
}
