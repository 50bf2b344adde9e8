//! Traces against a real Jaeger v2 (`scripts/with-jaeger.sh`) and a real Kafka: the binary
//! runs with the standard `OTEL_*` variables set, and the tests read its spans back through
//! Jaeger's query API and its messages from Kafka.
//!
//! Each test runs its own service process under its own service name, with its own topics.

use std::time::Duration;

use scheduler::grpc::pb;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{
    Service, email_job, eventually, id_of, in_millis,
    jaeger::{Jaeger, Span, named, random_id, traced_env},
    kafka::{Reader, Received, TestTopics, brokers, produce_with},
};

/// What a job's data holds: no span may carry it.
const SECRET_DATA: &str = "s3cret-job-data-never-in-a-span";

/// A traced service on `topics`, with its log lines (JSON) in `dir/log`.
async fn traced(topics: &TestTopics, dir: &TempDir, service: &str) -> Service {
    let brokers = brokers();
    topics.ensure(&brokers).await;
    let mut flags = topics.flags(&brokers);
    flags.extend(
        [
            "--store",
            "embedded",
            "--data-dir",
            &dir.path().display().to_string(),
            "--log-format",
            "json",
        ]
        .map(String::from),
    );
    let mut env = traced_env(service);
    env.push(("RUST_LOG", "info".to_owned()));
    Service::start_env(&flags, &env, Some(&dir.path().join("log"))).await
}

/// A traced service holding one job, due in an hour, created in a trace of its own.
async fn traced_with_job() -> (TestTopics, TempDir, Service, String) {
    let topics = TestTopics::new();
    let dir = TempDir::new().unwrap();
    let service = traced(&topics, &dir, &service_name()).await;
    let created = post_traced(
        &service,
        &job_with_secret(&in_millis(3_600_000)),
        &new_traceparent().0,
    )
    .await;
    let id = id_of(&created);
    (topics, dir, service, id)
}

/// The JSON log lines in `dir/log` so far.
fn log_lines(dir: &TempDir) -> Vec<Value> {
    std::fs::read_to_string(dir.path().join("log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The first JSON log line in `dir/log` that `matches`, once it is written.
async fn log_line(dir: &TempDir, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || {
        let found = log_lines(dir).into_iter().find(&matches);
        async move { found }
    })
    .await
}

fn service_name() -> String {
    format!("scheduler-test-{}", uuid::Uuid::new_v4().simple())
}

/// A `traceparent` of a new trace: (header, trace id, span id).
fn new_traceparent() -> (String, String, String) {
    let (trace, span) = (random_id(16), random_id(8));
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// The trace id and span id a `traceparent` names.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn job_with_secret(run_at: &str) -> Value {
    let mut job = email_job("traced", run_at);
    job["jobData"]["Message"] = json!(SECRET_DATA);
    job
}

async fn post_traced(service: &Service, job: &Value, traceparent: &str) -> Value {
    service
        .create_job_with(job, &[("traceparent", traceparent)])
        .await
}

/// The first message keyed by job `id` that `reader` reads.
async fn message_for(reader: &Reader, id: &str) -> Received {
    let read = reader
        .until(Duration::from_secs(30), |seen| {
            seen.iter().any(|m| m.key.as_deref() == Some(id))
        })
        .await;
    read.into_iter()
        .find(|m| m.key.as_deref() == Some(id))
        .unwrap()
}

fn no_span_holds_job_data(spans: &[Span]) {
    for span in spans {
        for (key, value) in &span.tags {
            assert!(
                !value.to_string().contains(SECRET_DATA),
                "span {} tag {key} holds job data",
                span.name
            );
        }
    }
}

#[tokio::test]
async fn a_rest_create_continues_the_callers_trace_through_the_outbox_to_its_kafka_message() {
    let topics = TestTopics::new();
    let dir = TempDir::new().unwrap();
    let service = traced(&topics, &dir, &service_name()).await;
    let reader = Reader::new(&brokers(), &[topics.create()]);

    let (traceparent, trace, caller_span) = new_traceparent();
    let job = post_traced(
        &service,
        &job_with_secret(&in_millis(3_600_000)),
        &traceparent,
    )
    .await;
    let id = id_of(&job);

    // The message's traceparent is in the caller's trace.
    let message = message_for(&reader, &id).await;
    let (message_trace, message_span) = ids(message.header("traceparent"));
    assert_eq!(message_trace, trace);

    let send_name = format!("send {}", topics.create());
    let spans = Jaeger::shared()
        .trace_until(&trace, |spans| {
            spans.iter().any(|s| s.name == "POST /api/v1/jobs")
                && spans.iter().any(|s| s.name == send_name)
        })
        .await;
    let server = named(&spans, "POST /api/v1/jobs");
    assert_eq!(server.kind().as_deref(), Some("server"));
    assert_eq!(server.parent, Some((trace.clone(), caller_span)));
    assert_eq!(server.tag("http.route").as_deref(), Some("/api/v1/jobs"));
    assert_eq!(server.tag("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        server.tag("http.response.status_code").as_deref(),
        Some("201")
    );

    // The send happened later, from the outbox, yet continues the request's trace; the
    // message carries the send span's own context.
    let send = named(&spans, &send_name);
    assert_eq!(send.kind().as_deref(), Some("producer"));
    assert_eq!(send.parent, Some((trace.clone(), server.span_id.clone())));
    assert_eq!(send.span_id, message_span);
    for (key, expected) in [
        ("messaging.system", "kafka".to_owned()),
        ("messaging.destination.name", topics.create()),
        ("messaging.kafka.message.key", id.clone()),
        ("messaging.message.id", message.header("ce_id").to_owned()),
        ("messaging.destination.partition.id", "0".to_owned()),
    ] {
        assert_eq!(send.tag(key).as_deref(), Some(expected.as_str()), "{key}");
    }
    assert!(send.tag("messaging.kafka.offset").is_some());
    no_span_holds_job_data(&spans);
}

#[tokio::test]
async fn a_fire_is_a_trace_of_its_own_linked_to_the_change_and_its_result_joins_it() {
    let topics = TestTopics::new();
    let dir = TempDir::new().unwrap();
    let name = service_name();
    let service = traced(&topics, &dir, &name).await;
    let brokers = brokers();
    let reader = Reader::new(&brokers, &[topics.run()]);

    let (traceparent, create_trace, _) = new_traceparent();
    let job = post_traced(&service, &job_with_secret(&in_millis(300)), &traceparent).await;
    let id = id_of(&job);
    let run_message = message_for(&reader, &id).await;
    let (fire_trace, send_span) = ids(run_message.header("traceparent"));
    assert_ne!(fire_trace, create_trace, "a fire starts a trace of its own");

    // The executor continues the run message's trace in its result.
    let executor_span = random_id(8);
    let result_parent = format!("00-{fire_trace}-{executor_span}-01");
    let result = json!({"Id": id, "Status": "SUCCEEDED", "Output": "sent"}).to_string();
    produce_with(
        &brokers,
        &topics.result(),
        &id,
        Some(result.as_bytes()),
        &[("traceparent", &result_parent)],
    )
    .await;

    let process_name = format!("process {}", topics.result());
    let send_name = format!("send {}", topics.run());
    let spans = Jaeger::shared()
        .trace_until(&fire_trace, |spans| {
            [
                "fire EMAIL",
                send_name.as_str(),
                process_name.as_str(),
                "apply result",
            ]
            .iter()
            .all(|n| spans.iter().any(|s| s.name == *n))
        })
        .await;
    let fire = named(&spans, "fire EMAIL");
    assert_eq!(fire.parent, None, "the fire is the root of its trace");
    assert_eq!(fire.tag("scheduler.job.id").as_deref(), Some(id.as_str()));
    let server_spans = Jaeger::shared()
        .trace_until(&create_trace, |spans| {
            spans.iter().any(|s| s.name == "POST /api/v1/jobs")
        })
        .await;
    let create = named(&server_spans, "POST /api/v1/jobs");
    assert_eq!(
        fire.links,
        vec![(create_trace.clone(), create.span_id.clone())],
        "the fire links to the request that created the job"
    );
    let send = named(&spans, &send_name);
    assert_eq!(send.span_id, send_span);
    assert_eq!(
        send.parent,
        Some((fire_trace.clone(), fire.span_id.clone()))
    );

    let process = named(&spans, &process_name);
    assert_eq!(process.kind().as_deref(), Some("consumer"));
    assert_eq!(process.parent, Some((fire_trace.clone(), executor_span)));
    assert_eq!(
        process.tag("scheduler.result.outcome").as_deref(),
        Some("applied")
    );
    assert_eq!(
        process.tag("messaging.destination.name"),
        Some(topics.result())
    );
    let apply = named(&spans, "apply result");
    assert_eq!(
        apply.parent,
        Some((fire_trace.clone(), process.span_id.clone()))
    );
    no_span_holds_job_data(&spans);
}

#[tokio::test]
async fn a_result_without_a_trace_links_to_its_fire_and_a_dead_letter_says_why_in_span_and_log() {
    let topics = TestTopics::new();
    let dir = TempDir::new().unwrap();
    let name = service_name();
    let service = traced(&topics, &dir, &name).await;
    let brokers = brokers();
    let reader = Reader::new(&brokers, &[topics.run()]);

    let job = post_traced(
        &service,
        &job_with_secret(&in_millis(300)),
        &new_traceparent().0,
    )
    .await;
    let id = id_of(&job);
    let run_message = message_for(&reader, &id).await;
    let (fire_trace, _) = ids(run_message.header("traceparent"));

    // A result with no traceparent: a trace of its own, linked to the run's fire.
    let result = json!({"Id": id, "Status": 4}).to_string();
    produce_with(
        &brokers,
        &topics.result(),
        &id,
        Some(result.as_bytes()),
        &[],
    )
    .await;
    // Garbage in the caller's trace: dead-lettered, and the span says why.
    let (garbage_parent, garbage_trace, _) = new_traceparent();
    produce_with(
        &brokers,
        &topics.result(),
        &id,
        Some(b"not json at all"),
        &[("traceparent", &garbage_parent)],
    )
    .await;

    // A result for a job that does not exist: dead-lettered, its line naming the ids it gave.
    let (unknown_job, unknown_run) = ("65f1c0ffee0123456789abcd", uuid::Uuid::new_v4());
    let unknown = json!({"Id": unknown_job, "RunId": unknown_run, "Status": 4}).to_string();
    produce_with(
        &brokers,
        &topics.result(),
        unknown_job,
        Some(unknown.as_bytes()),
        &[],
    )
    .await;

    let jaeger = Jaeger::shared();
    let process_name = format!("process {}", topics.result());
    let fire = named(
        &jaeger
            .trace_until(&fire_trace, |spans| {
                spans.iter().any(|s| s.name == "fire EMAIL")
            })
            .await,
        "fire EMAIL",
    )
    .clone();
    let processed = jaeger
        .search_until(&name, &process_name, |spans| {
            spans.iter().any(|s| {
                s.name == process_name
                    && s.tag("scheduler.result.outcome").as_deref() == Some("applied")
            })
        })
        .await;
    let applied = processed
        .iter()
        .find(|s| {
            s.name == process_name
                && s.tag("scheduler.result.outcome").as_deref() == Some("applied")
        })
        .unwrap();
    assert_ne!(
        applied.trace_id, fire_trace,
        "no traceparent: a trace of its own"
    );
    assert_eq!(applied.parent, None);
    assert_eq!(
        applied.links,
        vec![(fire_trace.clone(), fire.span_id.clone())],
        "linked to the run's fire"
    );

    let dead = jaeger
        .trace_until(&garbage_trace, |spans| {
            spans.iter().any(|s| s.name == process_name)
        })
        .await;
    let dead = named(&dead, &process_name);
    assert_eq!(
        dead.tag("scheduler.result.outcome").as_deref(),
        Some("dead_lettered")
    );
    assert_eq!(dead.tag("otel.status_code").as_deref(), Some("ERROR"));
    let why = dead.tag("otel.status_description").unwrap_or_default();
    assert!(why.contains("JSON"), "{why:?}");

    // The dead letter's log line names the same trace and span.
    let line = log_line(&dir, "the dead-letter line", |l| {
        l["fields"]["message"] == "result dead-lettered" && l["fields"]["reason"] != "unknown job"
    })
    .await;
    assert_eq!(line["trace_id"], garbage_trace.as_str(), "{line}");
    assert_eq!(line["span_id"], dead.span_id.as_str(), "{line}");
    assert_eq!(line["level"], "WARN");
    let unknown_line = log_line(&dir, "the unknown job's dead-letter line", |l| {
        l["fields"]["message"] == "result dead-lettered" && l["fields"]["reason"] == "unknown job"
    })
    .await;
    assert_eq!(
        unknown_line["fields"]["job_id"], unknown_job,
        "{unknown_line}"
    );
    assert_eq!(
        unknown_line["fields"]["run_id"],
        unknown_run.to_string(),
        "{unknown_line}"
    );
    // The unreadable message named no ids.
    assert!(line["fields"].get("job_id").is_none(), "{line}");
    drop(service);
}

#[tokio::test]
async fn a_grpc_call_continues_the_trace_its_metadata_names() {
    let (_topics, _dir, service, id) = traced_with_job().await;

    let (traceparent, trace, caller_span) = new_traceparent();
    let mut client = pb::jobs_service_client::JobsServiceClient::connect(service.url(""))
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::GetJobRequest { id });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    client.get_job(request).await.unwrap();
    let mut missing = tonic::Request::new(pb::GetJobRequest {
        id: "65a1b2c3d4e5f60718293a4b".into(),
    });
    let (missing_parent, missing_trace, _) = new_traceparent();
    missing
        .metadata_mut()
        .insert("traceparent", missing_parent.parse().unwrap());
    assert_eq!(
        client.get_job(missing).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    let jaeger = Jaeger::shared();
    let spans = jaeger.trace_until(&trace, |spans| !spans.is_empty()).await;
    let call = &spans[0];
    assert!(call.name.ends_with("/GetJob"), "{}", call.name);
    assert_eq!(call.kind().as_deref(), Some("server"));
    assert_eq!(call.parent, Some((trace.clone(), caller_span)));
    assert_eq!(call.tag("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(call.tag("rpc.method").as_deref(), Some("GetJob"));
    assert_eq!(call.tag("rpc.grpc.status_code").as_deref(), Some("0"));
    let spans = jaeger
        .trace_until(&missing_trace, |spans| !spans.is_empty())
        .await;
    // NOT_FOUND is the caller's mistake, not the server's fault.
    assert_eq!(spans[0].tag("rpc.grpc.status_code").as_deref(), Some("5"));
    assert_eq!(spans[0].tag("otel.status_code"), None);
}

#[tokio::test]
async fn a_log_line_made_while_a_request_is_handled_names_its_server_span() {
    let (_topics, dir, service, id) = traced_with_job().await;

    // A trigger fires the run inside the request, which logs "run fired".
    let (traceparent, trace, caller_span) = new_traceparent();
    let response = reqwest::Client::new()
        .post(service.url(&format!("/api/v1/jobs/{id}/trigger")))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let name = "POST /api/v1/jobs/{id}/trigger";
    let spans = Jaeger::shared()
        .trace_until(&trace, |spans| spans.iter().any(|s| s.name == name))
        .await;
    let server = named(&spans, name);
    assert_eq!(server.parent, Some((trace.clone(), caller_span)));
    let line = log_line(&dir, "the trigger's log line", |l| {
        l["fields"]["message"] == "run fired" && l["fields"]["job_id"] == id
    })
    .await;
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    assert_eq!(line["span_id"], server.span_id.as_str(), "{line}");
    // A line logged outside any request (the start) names no trace.
    let started = log_line(&dir, "the start's log line", |l| l["level"] == "INFO").await;
    assert!(started.get("trace_id").is_none(), "{started}");
}
