//! Bad input gets a precise error and changes nothing: tables over both transports.

use scheduler::grpc::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{Failures, TestApp, email_job};

/// One bad REST request and what it must answer.
struct Case {
    what: &'static str,
    method: &'static str,
    /// `{id}` is replaced by a stored job's id.
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    /// The field the problem must name, if any.
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: &str,
    body: Value,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        status,
        field,
    }
}

fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    *base.pointer_mut(pointer).unwrap() = value;
    base
}

fn without(mut base: Value, parent: &str, key: &str) -> Value {
    base.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
    base
}

fn cases() -> Vec<Case> {
    let good = email_job("weekly report", "2030-01-01T09:00:00Z");
    let jobs = "/api/v1/jobs";
    let mut cases = vec![
        case(
            "wrong type for name",
            "POST",
            jobs,
            with(good.clone(), "/name", json!(5)),
            400,
            Some("name"),
        ),
        case(
            "wrong type for jobData",
            "POST",
            jobs,
            with(good.clone(), "/jobData", json!("text")),
            400,
            Some("jobData"),
        ),
        case(
            "unknown job type",
            "POST",
            jobs,
            with(good.clone(), "/jobType", json!("FAX")),
            400,
            Some("jobType"),
        ),
        case(
            "job type as a number",
            "POST",
            jobs,
            with(good.clone(), "/jobType", json!(7)),
            400,
            Some("jobType"),
        ),
        case(
            "name too short",
            "POST",
            jobs,
            with(good.clone(), "/name", json!("ab")),
            400,
            Some("name"),
        ),
        case(
            "name only spaces",
            "POST",
            jobs,
            with(good.clone(), "/name", json!("      ")),
            400,
            Some("name"),
        ),
        case(
            "name too long",
            "POST",
            jobs,
            with(good.clone(), "/name", json!("n".repeat(251))),
            400,
            Some("name"),
        ),
        case(
            "description too long",
            "POST",
            jobs,
            with(good.clone(), "/description", json!("d".repeat(501))),
            400,
            Some("description"),
        ),
        case(
            "invalid timestamp",
            "POST",
            jobs,
            with(
                good.clone(),
                "/schedule/runAt",
                json!("2030-13-45T99:00:00Z"),
            ),
            400,
            Some("schedule.runAt"),
        ),
        case(
            "timestamp without zone",
            "POST",
            jobs,
            with(
                good.clone(),
                "/schedule/runAt",
                json!("2030-01-01T09:00:00"),
            ),
            400,
            Some("schedule.runAt"),
        ),
        case(
            "missing schedule",
            "POST",
            jobs,
            without(good.clone(), "", "schedule"),
            400,
            Some("schedule"),
        ),
        case(
            "empty schedule",
            "POST",
            jobs,
            with(good.clone(), "/schedule", json!({})),
            400,
            Some("schedule"),
        ),
        case(
            "EMAIL data missing the destination",
            "POST",
            jobs,
            without(good.clone(), "/jobData", "DestinationAddress"),
            400,
            Some("jobData.DestinationAddress"),
        ),
        case(
            "EMAIL data with a bad address",
            "POST",
            jobs,
            with(
                good.clone(),
                "/jobData/SourceAddress",
                json!("not-an-address"),
            ),
            400,
            Some("jobData.SourceAddress"),
        ),
        case(
            "jobData over 64 KiB",
            "POST",
            jobs,
            with(
                good.clone(),
                "/jobData/Message",
                json!("m".repeat(70 * 1024)),
            ),
            400,
            Some("jobData"),
        ),
        case(
            "unknown field",
            "POST",
            jobs,
            with(good.clone(), "/name", json!("fine name"))
                .as_object()
                .cloned()
                .map(|mut m| {
                    m.insert("status".into(), json!("RUNNING"));
                    Value::Object(m)
                })
                .unwrap(),
            400,
            Some("status"),
        ),
        case(
            "body not an object",
            "POST",
            jobs,
            json!([1, 2]),
            400,
            Some("body"),
        ),
        case(
            "bad ObjectId",
            "GET",
            "/api/v1/jobs/123",
            Value::Null,
            400,
            Some("id"),
        ),
        case(
            "query operator as id",
            "GET",
            "/api/v1/jobs/%7B%22%24gt%22%3A%20%22%22%7D",
            Value::Null,
            400,
            Some("id"),
        ),
        case(
            "query operator as id on delete",
            "DELETE",
            "/api/v1/jobs/%7B%22%24gt%22%3A%22%22%7D",
            Value::Null,
            400,
            Some("id"),
        ),
        case(
            "page 0",
            "GET",
            "/api/v1/jobs?page=0",
            Value::Null,
            400,
            Some("page"),
        ),
        case(
            "size 1000",
            "GET",
            "/api/v1/jobs?size=1000",
            Value::Null,
            400,
            Some("size"),
        ),
        case(
            "size not a number",
            "GET",
            "/api/v1/jobs?size=ten",
            Value::Null,
            400,
            Some("size"),
        ),
        case(
            "unknown status filter",
            "GET",
            "/api/v1/jobs?status=DONE",
            Value::Null,
            400,
            Some("status"),
        ),
        case(
            "dueBefore not a time",
            "GET",
            "/api/v1/jobs?dueBefore=tomorrow",
            Value::Null,
            400,
            Some("dueBefore"),
        ),
        case(
            "bad run id",
            "POST",
            "/api/v1/jobs/{id}/runs/not-a-uuid/result",
            json!({"status": "SUCCEEDED"}),
            400,
            Some("runId"),
        ),
        case(
            "result status RUNNING",
            "POST",
            "/api/v1/jobs/{id}/runs/6f1d3a2c-9b7e-4c58-a0d2-51e38f47c916/result",
            json!({"status": "RUNNING"}),
            400,
            Some("status"),
        ),
        case(
            "patch with a bad time",
            "PATCH",
            "/api/v1/jobs/{id}",
            json!({"schedule": {"runAt": "yesterday"}}),
            400,
            Some("schedule.runAt"),
        ),
        case(
            "patch removing the name",
            "PATCH",
            "/api/v1/jobs/{id}",
            json!({"name": null}),
            400,
            Some("name"),
        ),
        case(
            "patch of a read-only field",
            "PATCH",
            "/api/v1/jobs/{id}",
            json!({"status": "SUCCEEDED"}),
            400,
            Some("status"),
        ),
        case(
            "patch not an object",
            "PATCH",
            "/api/v1/jobs/{id}",
            json!("rename"),
            400,
            Some("body"),
        ),
    ];
    cases.push(Case {
        what: "malformed JSON",
        method: "POST",
        path: jobs.into(),
        content_type: "application/json",
        body: br#"{"name": "weekly report", "#.to_vec(),
        status: 400,
        field: Some("body"),
    });
    cases.push(Case {
        what: "not JSON",
        method: "POST",
        path: jobs.into(),
        content_type: "text/plain",
        body: good.to_string().into_bytes(),
        status: 415,
        field: None,
    });
    cases.push(Case {
        what: "oversized body",
        method: "POST",
        path: jobs.into(),
        content_type: "application/json",
        body: with(
            good.clone(),
            "/jobData/Message",
            json!("m".repeat(400 * 1024)),
        )
        .to_string()
        .into_bytes(),
        status: 413,
        field: None,
    });
    // Integers no store keeps exactly, written out (a `Value` cannot hold them).
    let big = |base: Value, pointer: &str, digits: &str| {
        with(base, pointer, json!("@big@"))
            .to_string()
            .replace("\"@big@\"", digits)
            .into_bytes()
    };
    cases.push(Case {
        what: "an integer in jobData beyond 64 bits",
        method: "POST",
        path: jobs.into(),
        content_type: "application/json",
        body: big(good.clone(), "/jobData/Subject", "99999999999999999999"),
        status: 400,
        field: Some("jobData.Subject"),
    });
    cases.push(Case {
        what: "an integer beyond 64 bits in a patch of jobData",
        method: "PATCH",
        path: "/api/v1/jobs/{id}".into(),
        content_type: "application/merge-patch+json",
        body: big(
            json!({"jobData": {"Count": [1, 2, 0]}}),
            "/jobData/Count/2",
            "-9223372036854775809",
        ),
        status: 400,
        field: Some("jobData.Count[2]"),
    });
    cases.push(Case {
        what: "malformed patch",
        method: "PATCH",
        path: "/api/v1/jobs/{id}".into(),
        content_type: "application/merge-patch+json",
        body: b"{name".to_vec(),
        status: 400,
        field: Some("body"),
    });
    cases
}

#[tokio::test]
async fn bad_rest_input_gets_a_precise_problem_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let existing = app
        .create_job(&email_job("existing job", "2030-01-01T09:00:00Z"))
        .await;
    let id = existing["id"].as_str().unwrap();

    let mut failures = Failures::new();
    for case in cases() {
        let url = app.url(&case.path.replace("{id}", id));
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = app.http.request(method, url);
        if !matches!(case.method, "GET" | "DELETE") {
            request = request
                .header("content-type", case.content_type)
                .body(case.body.clone());
        }
        let response = request.send().await.unwrap();
        failures.expect_eq(case.what, response.status().as_u16(), case.status);
        let content_type = response.headers()["content-type"].clone();
        failures.expect_eq(
            case.what,
            content_type.to_str().unwrap(),
            "application/problem+json",
        );
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        failures.expect_eq(case.what, problem["status"].clone(), json!(case.status));
        if let Some(field) = case.field {
            let fields: Vec<String> = problem["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect();
            failures.expect(
                case.what,
                fields.iter().any(|f| f == field),
                format!("no error names {field}: {fields:?}"),
            );
        }
    }
    failures.assert_none("bad REST requests");

    // Nothing was stored or changed.
    assert_eq!(app.job_count().await, 1);
    assert_eq!(app.get_job(id).await, existing);
}

fn valid_create() -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        name: "weekly report".into(),
        description: String::new(),
        schedule_time: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        }),
        job_type: pb::JobType::Sms as i32,
        job_data: "{}".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_grpc_creates_are_invalid_argument_with_field_violations_and_store_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let valid = valid_create();
    let cases: Vec<(&str, pb::CreateJobRequest, &str)> = vec![
        (
            "name too short",
            pb::CreateJobRequest {
                name: "ab".into(),
                ..valid.clone()
            },
            "name",
        ),
        (
            "unknown job type",
            pb::CreateJobRequest {
                job_type: 9,
                ..valid.clone()
            },
            "job_type",
        ),
        (
            "job data not JSON",
            pb::CreateJobRequest {
                job_data: "{oops".into(),
                ..valid.clone()
            },
            "job_data",
        ),
        (
            "job data not an object",
            pb::CreateJobRequest {
                job_data: "[1]".into(),
                ..valid.clone()
            },
            "job_data",
        ),
        (
            "no schedule time",
            pb::CreateJobRequest {
                schedule_time: None,
                ..valid.clone()
            },
            "schedule_time",
        ),
        (
            "invalid timestamp",
            pb::CreateJobRequest {
                schedule_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -5,
                }),
                ..valid.clone()
            },
            "schedule_time",
        ),
        (
            "EMAIL without addresses",
            pb::CreateJobRequest {
                job_type: pb::JobType::Email as i32,
                job_data: r#"{"Subject":"s","Message":"m"}"#.into(),
                ..valid.clone()
            },
            "job_data.SourceAddress",
        ),
        (
            "an integer in job data beyond 64 bits",
            pb::CreateJobRequest {
                job_data: r#"{"Ids": [1, 18446744073709551616]}"#.into(),
                ..valid.clone()
            },
            "job_data.Ids[1]",
        ),
        ("a bad idempotency key", valid.clone(), "idempotency-key"),
    ];
    let mut failures = Failures::new();
    for (what, message, field) in cases {
        let mut request = tonic::Request::new(message);
        if what == "a bad idempotency key" {
            request
                .metadata_mut()
                .insert("idempotency-key", "x".repeat(300).parse().unwrap());
        }
        failures.expect_invalid_argument(what, field, client.create_job(request).await);
    }
    failures.assert_none("bad gRPC creates");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn malformed_grpc_ids_are_invalid_argument_never_a_lookup() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let mut failures = Failures::new();
    for id in ["123", r#"{"$gt": ""}"#, ""] {
        let get = client
            .get_job(pb::GetJobRequest { id: id.into() })
            .await
            .map(|_| ());
        failures.expect_eq(
            format!("GetJob {id:?}"),
            get.map_err(|s| s.code()),
            Err(Code::InvalidArgument),
        );
        let delete = client
            .delete_job(pb::DeleteJobRequest { id: id.into() })
            .await
            .map(|_| ());
        failures.expect_eq(
            format!("DeleteJob {id:?}"),
            delete.map_err(|s| s.code()),
            Err(Code::InvalidArgument),
        );
    }
    failures.assert_none("malformed ids");
    let missing = client
        .get_job(pb::GetJobRequest {
            id: "65f1c0ffee0123456789abcd".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "a well-formed unknown id");
}

#[tokio::test]
async fn grpc_paging_out_of_bounds_is_invalid_argument() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let mut failures = Failures::new();
    for (page, size) in [(-1, 10), (1, 1000), (1, -3), (i64::MAX, 100)] {
        let listed = client
            .list_jobs(pb::ListJobsRequest {
                page,
                size,
                ..Default::default()
            })
            .await
            .map(|_| ());
        failures.expect_eq(
            format!("page {page} size {size}"),
            listed.map_err(|s| s.code()),
            Err(Code::InvalidArgument),
        );
    }
    failures.assert_none("out-of-bounds pages");
}
