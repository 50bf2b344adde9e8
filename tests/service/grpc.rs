//! gRPC over the shared port: the older service's five calls, the added calls, reflection and
//! health, with a client generated from the project's proto.

use scheduler::grpc::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{TestApp, in_millis};

fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn email_request(name: &str, at: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        name: name.into(),
        description: "from an older client".into(),
        schedule_time: Some(timestamp(at)),
        job_type: pb::JobType::Email as i32,
        job_data: r#"{"SourceAddress":"a@example.com","DestinationAddress":"b@example.com","Subject":"s","Message":"m"}"#.into(),
    }
}

#[tokio::test]
async fn older_clients_create_get_list_update_and_delete() {
    let app = TestApp::spawn().await;
    let mut client = app.grpc().await;

    let id = client
        .create_job(email_request("grpc report", "2030-01-01T09:00:00Z"))
        .await
        .unwrap()
        .into_inner()
        .id;
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

    client
        .create_job(email_request("second job", "2030-01-01T09:00:00Z"))
        .await
        .unwrap();
    let page = client
        .list_jobs(pb::ListJobsRequest { page: 1, size: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.total_count, page.total_pages, page.page, page.size),
        (2, 2, 1, 1)
    );
    assert!(page.has_more);
    assert_eq!(page.jobs[0].name, "second job");
    // Older clients may leave paging unset.
    let defaults = client
        .list_jobs(pb::ListJobsRequest { page: 0, size: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (defaults.page, defaults.size, defaults.jobs.len()),
        (1, 20, 2)
    );

    let updated = client
        .update_job(pb::UpdateJobRequest {
            id: id.clone(),
            name: "renamed report".into(),
            description: "changed".into(),
            schedule_time: Some(timestamp("2031-06-01T12:00:00Z")),
            job_type: pb::JobType::Sms as i32,
            job_data: r#"{"To":"+100"}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.message.is_empty());
    let job = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.name, "renamed report");
    assert_eq!(job.job_type, pb::JobType::Sms as i32);
    assert_eq!(job.schedule_time, Some(timestamp("2031-06-01T12:00:00Z")));
    // job_data is replaced whole, not merged.
    assert_eq!(job.job_data, r#"{"To":"+100"}"#);
    assert_eq!(job.version, 2);

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
