//! gRPC over the shared port: the older service's five calls, the added calls, reflection and
//! health, with a client generated from the project's proto.

use scheduler::grpc::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::support::{Failures, TestApp, in_millis, timestamp};

fn email_request(name: &str, at: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        name: name.into(),
        description: "from an older client".into(),
        schedule_time: Some(timestamp(at)),
        job_type: pb::JobType::Email as i32,
        job_data: r#"{"SourceAddress":"a@example.com","DestinationAddress":"b@example.com","Subject":"s","Message":"m"}"#.into(),
        ..Default::default()
    }
}

/// Creates an EMAIL job due at `at` with an older client's request; its id.
async fn create(
    client: &mut pb::jobs_service_client::JobsServiceClient<tonic::transport::Channel>,
    name: &str,
    at: &str,
) -> String {
    client
        .create_job(email_request(name, at))
        .await
        .unwrap()
        .into_inner()
        .id
}

#[tokio::test]
async fn an_older_client_creates_a_job_and_reads_it_back() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let id = create(&mut client, "grpc report", "2030-01-01T09:00:00Z").await;
    assert_eq!(id.len(), 24);

    let job = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.name, "grpc report");
    assert_eq!(job.status, pb::JobStatus::Scheduled as i32);
    assert_eq!(job.job_type, pb::JobType::Email as i32);
    assert_eq!(job.schedule_time, Some(timestamp("2030-01-01T09:00:00Z")));
    assert!(job.created_time.is_some() && job.updated_time.is_some());
    let data: serde_json::Value = serde_json::from_str(&job.job_data).unwrap();
    assert_eq!(data["Subject"], "s");

    // The same job is visible over REST.
    let rest = app.get_job(&id).await;
    assert_eq!(rest["name"], "grpc report");
}

#[tokio::test]
async fn an_older_client_lists_jobs_in_pages_and_may_leave_paging_unset() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    create(&mut client, "first job", "2030-01-01T09:00:00Z").await;
    create(&mut client, "second job", "2030-01-01T09:00:00Z").await;
    let page = client
        .list_jobs(pb::ListJobsRequest {
            page: 1,
            size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.total_count, page.total_pages, page.page, page.size),
        (2, 2, 1, 1)
    );
    assert!(page.has_more);
    assert_eq!(page.jobs[0].name, "second job");
    let defaults = client
        .list_jobs(pb::ListJobsRequest {
            page: 0,
            size: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (defaults.page, defaults.size, defaults.jobs.len()),
        (1, 20, 2)
    );
}

#[tokio::test]
async fn an_older_client_update_replaces_the_five_fields_it_carries() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let id = create(&mut client, "grpc report", "2030-01-01T09:00:00Z").await;
    let updated = client
        .update_job(pb::UpdateJobRequest {
            id: id.clone(),
            name: "renamed report".into(),
            description: "changed".into(),
            schedule_time: Some(timestamp("2031-06-01T12:00:00Z")),
            job_type: pb::JobType::Sms as i32,
            job_data: r#"{"To":"+100"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.message.is_empty());
    let job = client
        .get_job(pb::GetJobRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.name, "renamed report");
    assert_eq!(job.description, "changed");
    assert_eq!(job.job_type, pb::JobType::Sms as i32);
    assert_eq!(job.schedule_time, Some(timestamp("2031-06-01T12:00:00Z")));
    // job_data is replaced whole, not merged.
    assert_eq!(job.job_data, r#"{"To":"+100"}"#);
    assert_eq!(job.version, 2);
}

#[tokio::test]
async fn an_older_client_deletes_a_job_and_it_is_gone() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let id = create(&mut client, "grpc report", "2030-01-01T09:00:00Z").await;
    let deleted = client
        .delete_job(pb::DeleteJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.message.is_empty());
    let gone = client.get_job(pb::GetJobRequest { id }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_watch_of_a_malformed_job_id_names_the_job_id_field() {
    use tonic_types::StatusExt;
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let refused = client
        .watch_events(pb::WatchEventsRequest {
            job_id: "not-an-id".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let details = refused.get_error_details();
    let fields: Vec<_> = details
        .bad_request()
        .expect("field violations")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["job_id"]);
}

#[tokio::test]
async fn watch_streams_the_fire_and_a_reported_result_closes_the_run() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let mut events = client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let id = client
        .create_job(email_request("watched job", &in_millis(200)))
        .await
        .unwrap()
        .into_inner()
        .id;

    let mut types = Vec::new();
    let run = loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), events.next())
            .await
            .expect("an event")
            .expect("stream open")
            .unwrap();
        assert_eq!(event.job_id, id);
        types.push(event.r#type.clone());
        if event.r#type == "scheduler.job.run" {
            break event.run.expect("a run");
        }
    };
    assert_eq!(types, ["scheduler.job.created", "scheduler.job.run"]);
    assert_eq!(run.status, pb::RunStatus::Running as i32);

    // Without a run id, the result closes the job's open run.
    let closed = client
        .report_run_result(pb::ReportRunResultRequest {
            job_id: id.clone(),
            run_id: String::new(),
            status: pb::RunStatus::Succeeded as i32,
            error: String::new(),
            output: "delivered".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.run_id, run.run_id);
    assert_eq!(closed.status, pb::RunStatus::Succeeded as i32);

    let conflicting = client
        .report_run_result(pb::ReportRunResultRequest {
            job_id: id.clone(),
            run_id: run.run_id.clone(),
            status: pb::RunStatus::Failed as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(conflicting.code(), Code::FailedPrecondition);

    let runs = client
        .list_job_runs(pb::ListJobRunsRequest {
            job_id: id.clone(),
            page: 0,
            size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.total_count, 1);
    assert_eq!(runs.runs[0].output, "delivered");
    let job = client
        .get_job(pb::GetJobRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.status, pb::JobStatus::Succeeded as i32);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let app = TestApp::spawn().await;

    use tonic_reflection::pb::v1 as r1;
    let mut v1 = r1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"proto.JobsService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    use tonic_reflection::pb::v1alpha as ra;
    let mut alpha = ra::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = ra::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            ra::server_reflection_request::MessageRequest::FileContainingSymbol(
                "proto.JobsService".into(),
            ),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(ra::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

/// The descriptors of `file` and of every file it imports, through reflection v1, as grpcurl
/// fetches them to decode a message.
async fn reflected_file_and_imports(
    app: &TestApp,
    symbol: &str,
) -> Vec<prost_types::FileDescriptorProto> {
    use prost::Message;
    use tonic_reflection::pb::v1 as r1;
    let mut client = r1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let ask = |request| r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut wanted =
        vec![r1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into())];
    while let Some(request) = wanted.pop() {
        let asked = format!("{request:?}");
        let response = client
            .server_reflection_info(tokio_stream::iter([ask(request)]))
            .await
            .unwrap()
            .into_inner()
            .next()
            .await
            .unwrap()
            .unwrap();
        let Some(r1::server_reflection_response::MessageResponse::FileDescriptorResponse(found)) =
            response.message_response
        else {
            panic!(
                "reflection does not serve {asked}: {:?}",
                response.message_response
            )
        };
        for bytes in found.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            if files.iter().any(|known| known.name == file.name) {
                continue;
            }
            for import in &file.dependency {
                if !files.iter().any(|known| known.name() == import) {
                    wanted.push(
                        r1::server_reflection_request::MessageRequest::FileByFilename(
                            import.clone(),
                        ),
                    );
                }
            }
            files.push(file);
        }
    }
    files
}

#[tokio::test]
async fn reflection_serves_the_error_details_so_a_generic_client_can_print_field_violations() {
    let app = TestApp::spawn().await;
    for symbol in ["google.rpc.BadRequest", "google.rpc.RetryInfo"] {
        let files = reflected_file_and_imports(&app, symbol).await;
        let (package, message) = symbol.rsplit_once('.').unwrap();
        let file = files
            .iter()
            .find(|f| f.package() == package && f.message_type.iter().any(|m| m.name() == message))
            .unwrap_or_else(|| panic!("no file declares {symbol}"));
        // Every import resolved, so a client can build the message from reflection alone.
        for import in &file.dependency {
            assert!(
                files.iter().any(|f| f.name() == import),
                "{symbol}: {import} missing"
            );
        }
    }
    // And the field violations an invalid call carries are that message.
    let mut client = app.grpc().await;
    let refused = client
        .create_job(email_request("", "2030-01-01T09:00:00Z"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    use tonic_types::StatusExt;
    let details = refused.get_error_details();
    let violations = details
        .bad_request()
        .expect("a google.rpc.BadRequest detail");
    assert!(
        violations
            .field_violations
            .iter()
            .any(|v| v.field == "name"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn health_reports_serving() {
    let app = TestApp::spawn().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    for service in ["", "proto.JobsService"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

/// The older service's messages, as the contract lists them: (message, [(field, number, type)]).
/// Types are protobuf type names; `.proto.X` is a message or enum of the package.
/// A field: name, number, type.
type Field = (&'static str, i32, &'static str);

const OLDER_CONTRACT: &[(&str, &[Field])] = &[
    (
        "CreateJobRequest",
        &[
            ("name", 1, "string"),
            ("description", 2, "string"),
            ("schedule_time", 3, ".google.protobuf.Timestamp"),
            ("job_type", 4, ".proto.JobType"),
            ("job_data", 5, "string"),
        ],
    ),
    ("CreateJobResponse", &[("id", 1, "string")]),
    ("GetJobRequest", &[("id", 1, "string")]),
    (
        "ListJobsRequest",
        &[("page", 2, "int64"), ("size", 3, "int64")],
    ),
    (
        "ListJobsResponse",
        &[
            ("total_count", 1, "int64"),
            ("total_pages", 2, "int64"),
            ("page", 3, "int64"),
            ("size", 4, "int64"),
            ("has_more", 5, "bool"),
            ("jobs", 6, ".proto.Job"),
        ],
    ),
    (
        "UpdateJobRequest",
        &[
            ("id", 1, "string"),
            ("name", 2, "string"),
            ("description", 3, "string"),
            ("schedule_time", 4, ".google.protobuf.Timestamp"),
            ("job_type", 5, ".proto.JobType"),
            ("job_data", 6, "string"),
        ],
    ),
    ("UpdateJobResponse", &[("message", 1, "string")]),
    ("DeleteJobRequest", &[("id", 1, "string")]),
    ("DeleteJobResponse", &[("message", 1, "string")]),
    (
        "Job",
        &[
            ("id", 1, "string"),
            ("name", 2, "string"),
            ("description", 3, "string"),
            ("schedule_time", 4, ".google.protobuf.Timestamp"),
            ("created_time", 5, ".google.protobuf.Timestamp"),
            ("updated_time", 6, ".google.protobuf.Timestamp"),
            ("status", 7, ".proto.JobStatus"),
            ("job_type", 8, ".proto.JobType"),
            ("job_data", 9, "string"),
        ],
    ),
];

/// The compiled `job.proto`, as reflection serves it.
fn proto_file() -> prost_types::FileDescriptorProto {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .into_iter()
        .find(|f| f.package() == "proto")
        .expect("package proto")
}

#[test]
fn the_older_services_messages_keep_their_fields_numbers_and_types() {
    use prost_types::field_descriptor_proto::Type;

    let file = proto_file();
    let mut failures = Failures::new();
    for (message, fields) in OLDER_CONTRACT {
        let Some(descriptor) = file.message_type.iter().find(|m| m.name() == *message) else {
            failures.expect(message, false, "the message is missing");
            continue;
        };
        for (name, number, kind) in *fields {
            let row = format!("{message}.{name}");
            let Some(field) = descriptor.field.iter().find(|f| f.name() == *name) else {
                failures.expect(&row, false, "the field is missing");
                continue;
            };
            failures.expect_eq(&row, field.number(), *number);
            let actual = match field.r#type() {
                Type::String => "string".to_owned(),
                Type::Int64 => "int64".to_owned(),
                Type::Bool => "bool".to_owned(),
                Type::Message | Type::Enum => field.type_name().to_owned(),
                other => format!("{other:?}"),
            };
            failures.expect_eq(&row, actual.as_str(), *kind);
        }
    }
    failures.assert_none("the older service's messages");
}

#[test]
fn the_older_services_enums_keep_their_numbers() {
    let file = proto_file();
    let values: Vec<(String, i32)> = file
        .enum_type
        .iter()
        .flat_map(|e| e.value.iter().map(|v| (v.name().to_owned(), v.number())))
        .collect();
    let mut failures = Failures::new();
    let statuses = [
        "UNKNOWN",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
    ];
    for (number, name) in statuses.iter().enumerate() {
        let value = (format!("JOB_STATUS_{name}"), number as i32);
        failures.expect(&value.0, values.contains(&value), "missing or renumbered");
    }
    for value in [("JOB_TYPE_EMAIL", 0), ("JOB_TYPE_SMS", 1)] {
        let value = (value.0.to_owned(), value.1);
        failures.expect(&value.0, values.contains(&value), "missing or renumbered");
    }
    failures.assert_none("the older service's enums");
}

#[test]
fn the_older_services_calls_keep_their_names_and_messages() {
    let file = proto_file();
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "JobsService")
        .expect("service JobsService");
    let mut failures = Failures::new();
    for (call, input, output) in [
        (
            "CreateJob",
            ".proto.CreateJobRequest",
            ".proto.CreateJobResponse",
        ),
        ("GetJob", ".proto.GetJobRequest", ".proto.Job"),
        (
            "ListJobs",
            ".proto.ListJobsRequest",
            ".proto.ListJobsResponse",
        ),
        (
            "UpdateJob",
            ".proto.UpdateJobRequest",
            ".proto.UpdateJobResponse",
        ),
        (
            "DeleteJob",
            ".proto.DeleteJobRequest",
            ".proto.DeleteJobResponse",
        ),
    ] {
        match service.method.iter().find(|m| m.name() == call) {
            None => failures.expect(call, false, "the call is missing"),
            Some(method) => failures.expect_eq(
                call,
                (method.input_type(), method.output_type()),
                (input, output),
            ),
        }
    }
    failures.assert_none("the older service's calls");
}

#[tokio::test]
async fn update_with_bad_input_or_a_stale_version_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let id = client
        .create_job(email_request("grpc report", "2030-01-01T09:00:00Z"))
        .await
        .unwrap()
        .into_inner()
        .id;
    let before = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let update = pb::UpdateJobRequest {
        id: id.clone(),
        name: "renamed".into(),
        description: String::new(),
        schedule_time: Some(timestamp("2030-01-01T09:00:00Z")),
        job_type: pb::JobType::Sms as i32,
        job_data: "{}".into(),
        ..Default::default()
    };
    let bad = client
        .update_job(pb::UpdateJobRequest {
            name: "x".into(),
            ..update.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let mut stale = tonic::Request::new(update.clone());
    stale
        .metadata_mut()
        .insert("if-match", "7".parse().unwrap());
    assert_eq!(
        client.update_job(stale).await.unwrap_err().code(),
        Code::Aborted
    );
    let after = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before);

    let mut current = tonic::Request::new(update);
    current
        .metadata_mut()
        .insert("if-match", "1".parse().unwrap());
    client.update_job(current).await.unwrap();
    assert_eq!(
        client
            .get_job(pb::GetJobRequest { id })
            .await
            .unwrap()
            .into_inner()
            .version,
        2
    );
}

#[tokio::test]
async fn idempotency_key_metadata_makes_create_at_most_once() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let send = |name: &str| {
        let mut request = tonic::Request::new(email_request(name, "2030-01-01T09:00:00Z"));
        request
            .metadata_mut()
            .insert("idempotency-key", "batch-7".parse().unwrap());
        request
    };
    let first = client
        .create_job(send("keyed job"))
        .await
        .unwrap()
        .into_inner()
        .id;
    let again = client
        .create_job(send("keyed job"))
        .await
        .unwrap()
        .into_inner()
        .id;
    assert_eq!(first, again);
    let other = client.create_job(send("another job")).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn call_slower_than_the_timeout_ends_with_deadline_exceeded_and_stores_nothing() {
    let mut config = scheduler::config::Config::for_tests();
    config.request_timeout_seconds = 1;
    let app = TestApp::spawn_with(config).await;
    // A CreateJob whose request message never arrives, over a raw HTTP/2 stream.
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/proto.JobsService/CreateJob", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, _open_body) = h2.send_request(request, false).unwrap();
    let response = tokio::time::timeout(std::time::Duration::from_secs(20), response)
        .await
        .expect("an answer before the test gives up")
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn list_jobs_filters_by_status_type_and_name_prefix_as_rest_does() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;
    let alpha = create(&mut client, "alpha report", "2030-01-01T09:00:00Z").await;
    create(&mut client, "beta report", "2030-01-01T09:00:00Z").await;
    let sms = app
        .create_job(&crate::support::sms_job(
            "alpha text",
            serde_json::json!({"runAt": "2030-01-01T09:00:00Z"}),
            serde_json::json!({}),
        ))
        .await;
    let (status, _) = app
        .post_json(
            &format!("/api/v1/jobs/{alpha}/pause"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);

    let email = pb::JobType::Email as i32;
    let sms_type = pb::JobType::Sms as i32;
    let paused = pb::JobStatus::Paused as i32;
    let cases: [(&str, pb::ListJobsRequest, &str); 5] = [
        (
            "type SMS",
            pb::ListJobsRequest {
                job_type: Some(sms_type),
                ..Default::default()
            },
            "jobType=SMS",
        ),
        (
            "type EMAIL, the zero value, given",
            pb::ListJobsRequest {
                job_type: Some(email),
                ..Default::default()
            },
            "jobType=EMAIL",
        ),
        (
            "name prefix",
            pb::ListJobsRequest {
                name_prefix: "alpha".into(),
                ..Default::default()
            },
            "name=alpha",
        ),
        (
            "status",
            pb::ListJobsRequest {
                status: paused,
                ..Default::default()
            },
            "status=PAUSED",
        ),
        (
            "all three",
            pb::ListJobsRequest {
                status: pb::JobStatus::Scheduled as i32,
                job_type: Some(sms_type),
                name_prefix: "alpha".into(),
                ..Default::default()
            },
            "status=SCHEDULED&jobType=SMS&name=alpha",
        ),
    ];
    let mut failures = Failures::new();
    for (name, request, query) in cases {
        let grpc = client.list_jobs(request).await.unwrap().into_inner();
        let rest = app.get_json(&format!("/api/v1/jobs?{query}")).await;
        let grpc_ids: Vec<String> = grpc.jobs.iter().map(|j| j.id.clone()).collect();
        let rest_ids: Vec<String> = rest["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect();
        failures.expect(
            name,
            grpc_ids == rest_ids && !grpc_ids.is_empty(),
            format!("gRPC {grpc_ids:?}, REST {rest_ids:?}"),
        );
        failures.expect_eq(name, grpc.total_count as usize, grpc_ids.len());
    }
    failures.assert_none("gRPC list filters");
    assert_eq!(
        client
            .list_jobs(pb::ListJobsRequest {
                job_type: Some(sms_type),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .jobs[0]
            .id,
        crate::support::id_of(&sms)
    );

    let mut refused = Failures::new();
    for (name, request, field) in [
        (
            "status 99",
            pb::ListJobsRequest {
                status: 99,
                ..Default::default()
            },
            "status",
        ),
        (
            "type 7",
            pb::ListJobsRequest {
                job_type: Some(7),
                ..Default::default()
            },
            "job_type",
        ),
    ] {
        refused.expect_invalid_argument(name, field, client.list_jobs(request).await);
    }
    refused.assert_none("refused gRPC list filters");
}
