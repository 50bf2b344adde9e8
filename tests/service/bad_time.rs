//! Times out of range are refused on both protocols, naming the field, storing nothing; a job
//! stored with such a time before the rule existed can still be edited.

use chrono::{DateTime, Utc};
use scheduler::{
    domain::{Job, JobInput, Schedule},
    grpc::pb,
    store::sqlite::SqliteStore,
};
use serde_json::{Value, json};

use crate::support::{Failures, TestApp, email_job, sms_job};

/// RFC 3339 texts that parse but are no time the service may accept.
const BAD_TEXTS: [(&str, &str); 5] = [
    ("past year 9999 in UTC", "9999-12-31T23:59:59.999-23:59"),
    ("before year 1 in UTC", "0000-01-01T00:00:00+23:59"),
    ("year 0", "0000-06-01T00:00:00Z"),
    ("a leap second at any minute", "2030-01-01T00:07:60.5Z"),
    ("a leap second at the end of June", "2030-06-30T23:59:60Z"),
];

/// Protobuf timestamps outside what `Timestamp` allows.
const BAD_TIMESTAMPS: [(&str, i64, i32); 5] = [
    ("nanos 1.5e9", 1_900_000_000, 1_500_000_000),
    ("nanos -1", 1_900_000_000, -1),
    ("seconds past year 9999", 253_402_300_800, 0),
    ("seconds in year 0", -62_135_596_801, 0),
    ("seconds at i64::MAX", i64::MAX, 0),
];

async fn problem_fields(response: reqwest::Response) -> (u16, Vec<String>) {
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    let fields = problem["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str().map(str::to_owned))
        .collect();
    (status, fields)
}

#[tokio::test]
async fn rest_times_out_of_range_are_refused_naming_the_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let existing = app
        .create_job(&email_job("existing job", "2030-01-01T09:00:00Z"))
        .await;
    let id = existing["id"].as_str().unwrap();
    let mut failures = Failures::new();
    for (what, bad) in BAD_TEXTS {
        let requests = [
            (
                "create runAt",
                "schedule.runAt",
                app.post_job(&email_job("a new job", bad)).await,
            ),
            (
                "create startAt",
                "schedule.startAt",
                app.post_job(&sms_job(
                    "a new job",
                    json!({"intervalSeconds": 60, "startAt": bad}),
                    json!({}),
                ))
                .await,
            ),
            (
                "patch runAt",
                "schedule.runAt",
                app.patch(
                    &format!("/api/v1/jobs/{id}"),
                    &json!({"schedule": {"runAt": bad}}),
                )
                .await,
            ),
            (
                "patch startAt",
                "schedule.startAt",
                app.patch(
                    &format!("/api/v1/jobs/{id}"),
                    &json!({"schedule": {"runAt": null, "intervalSeconds": 60, "startAt": bad}}),
                )
                .await,
            ),
            (
                "preview from",
                "from",
                app.http
                    .get(app.url("/api/v1/schedule/preview"))
                    .query(&[("cron", "0 9 * * *"), ("from", bad)])
                    .send()
                    .await
                    .unwrap(),
            ),
        ];
        for (call, field, response) in requests {
            let row = format!("{call} {what} ({bad})");
            let (status, fields) = problem_fields(response).await;
            failures.expect_eq(&row, status, 400);
            failures.expect(
                &row,
                fields.iter().any(|f| f == field),
                format!("no error names {field}: {fields:?}"),
            );
        }
    }
    failures.assert_none("REST times out of range");
    assert_eq!(app.job_count().await, 1);
    assert_eq!(app.get_job(id).await, existing);
}

#[tokio::test]
async fn grpc_timestamps_out_of_range_are_invalid_argument_naming_the_field_and_store_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let create = pb::CreateJobRequest {
        name: "grpc job".into(),
        job_type: pb::JobType::Sms as i32,
        job_data: "{}".into(),
        ..Default::default()
    };
    let mut failures = Failures::new();
    for (what, seconds, nanos) in BAD_TIMESTAMPS {
        let bad = Some(prost_types::Timestamp { seconds, nanos });
        let row = |call: &str| format!("{call} {what}");
        let answer = client
            .create_job(pb::CreateJobRequest {
                schedule_time: bad,
                ..create.clone()
            })
            .await;
        failures.expect_invalid_argument(row("CreateJob schedule_time"), "schedule_time", answer);
        let answer = client
            .create_job(pb::CreateJobRequest {
                schedule: Some(pb::JobSchedule {
                    run_at: bad,
                    ..Default::default()
                }),
                ..create.clone()
            })
            .await;
        failures.expect_invalid_argument(row("JobSchedule run_at"), "schedule.run_at", answer);
        let answer = client
            .create_job(pb::CreateJobRequest {
                schedule: Some(pb::JobSchedule {
                    interval_seconds: 60,
                    start_at: bad,
                    ..Default::default()
                }),
                ..create.clone()
            })
            .await;
        failures.expect_invalid_argument(row("JobSchedule start_at"), "schedule.start_at", answer);
        let answer = client
            .preview_schedule(pb::PreviewScheduleRequest {
                schedule: Some(pb::JobSchedule {
                    cron: "0 9 * * *".into(),
                    ..Default::default()
                }),
                count: 3,
                from: bad,
            })
            .await;
        failures.expect_invalid_argument(row("PreviewSchedule from"), "from", answer);
    }
    failures.assert_none("gRPC timestamps out of range");
    assert_eq!(app.job_count().await, 0);
}

/// A job as an older build could store it: a one-shot time past year 9999.
fn stored_out_of_range(name: &str) -> Job {
    let input: JobInput = serde_json::from_value(email_job(name, "2030-01-01T09:00:00Z")).unwrap();
    let mut job = Job::new(input.parse().unwrap(), Utc::now());
    let beyond = DateTime::<Utc>::from_timestamp(253_402_300_800 + 3600, 0).unwrap();
    job.schedule = Schedule::RunAt(beyond);
    job.schedule_time = Some(beyond);
    job
}

#[tokio::test]
async fn a_job_stored_with_a_time_now_refused_can_still_be_renamed_on_both_protocols() {
    let data = tempfile::tempdir().unwrap();
    let rest_job = stored_out_of_range("stored for rest");
    let grpc_job = stored_out_of_range("stored for grpc");
    let (rest_id, grpc_id) = (rest_job.id.to_string(), grpc_job.id.to_string());
    SqliteStore::open(data.path())
        .unwrap()
        .insert_many(vec![rest_job, grpc_job])
        .await
        .unwrap();
    let mut config = scheduler::config::Config::for_tests();
    config.store = Some(scheduler::config::StoreKind::Embedded);
    config.data_dir = data.path().to_owned();
    let app = TestApp::spawn_with(config).await;

    let renamed = app
        .patch(
            &format!("/api/v1/jobs/{rest_id}"),
            &json!({"name": "renamed over rest"}),
        )
        .await;
    assert_eq!(renamed.status().as_u16(), 200, "PATCH of the name only");
    let job = app.get_job(&rest_id).await;
    assert_eq!(job["name"], "renamed over rest");
    // The schedule is sent now, so it is checked: the stored time is refused by name.
    let (status, fields) = problem_fields(
        app.patch(
            &format!("/api/v1/jobs/{rest_id}"),
            &json!({"schedule": {"runAt": job["schedule"]["runAt"]}}),
        )
        .await,
    )
    .await;
    assert_eq!((status, fields), (400, vec!["schedule.runAt".to_owned()]));

    let mut client = app.grpc().await;
    client
        .update_job(pb::UpdateJobRequest {
            id: grpc_id.clone(),
            name: "renamed over grpc".into(),
            job_type: pb::JobType::Sms as i32,
            job_data: "{}".into(),
            ..Default::default()
        })
        .await
        .expect("UpdateJob without a schedule keeps the stored one");
    let job = app.get_job(&grpc_id).await;
    assert_eq!(job["name"], "renamed over grpc");
    assert_eq!(job["jobType"], "SMS");
}
