//! The conversions' unit tests.

use super::*;
use crate::domain::JobStatus;

#[test]
fn field_violations_are_named_by_the_proto_fields() {
    let cases = [
        ("name", "name"),
        ("jobType", "job_type"),
        ("jobData.SourceAddress", "job_data.SourceAddress"),
        ("schedule.runAt", "schedule_time"),
        ("schedule.intervalSeconds", "schedule.interval_seconds"),
        ("schedule.startAt", "schedule.start_at"),
        ("retry.backoffSeconds", "policy.backoff_seconds"),
        ("retry.maxAttempts", "policy.max_attempts"),
        ("runTimeoutSeconds", "policy.run_timeout_seconds"),
        ("misfirePolicy", "policy.misfire_policy"),
        ("overlapPolicy", "policy.overlap_policy"),
        ("Idempotency-Key", "idempotency-key"),
        ("If-Match", "if-match"),
    ];
    for (rest, proto) in cases {
        assert_eq!(proto_field(rest), proto, "{rest}");
    }
}

#[test]
fn proto_enums_use_the_domain_codes() {
    for status in JobStatus::ALL {
        assert_eq!(
            pb::JobStatus::try_from(status.code()).map(|s| s as i32),
            Ok(status.code())
        );
    }
    assert_eq!(pb::JobType::Email as i32, JobType::Email.code());
    assert_eq!(pb::JobType::Sms as i32, JobType::Sms.code());
}

#[test]
fn rest_paths_become_proto_field_names() {
    let table = [
        ("name", "name"),
        ("jobType", "job_type"),
        ("jobData.SourceAddress", "job_data.SourceAddress"),
        ("schedule.runAt", "schedule_time"),
        ("schedule.intervalSeconds", "schedule.interval_seconds"),
        ("runId", "run_id"),
        ("If-Match", "if-match"),
        ("Idempotency-Key", "idempotency-key"),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter(|(rest, proto)| proto_field(rest) != *proto)
        .map(|(rest, proto)| format!("{rest}: {} instead of {proto}", proto_field(rest)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_create_with_both_kinds_of_schedule_or_neither_is_refused() {
    let base = pb::CreateJobRequest {
        name: "grpc job".into(),
        job_type: pb::JobType::Sms as i32,
        ..Default::default()
    };
    let both = pb::CreateJobRequest {
        schedule_time: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        }),
        schedule: Some(pb::JobSchedule {
            interval_seconds: 60,
            ..Default::default()
        }),
        ..base.clone()
    };
    let field = |request| match JobInput::try_from(request) {
        Err(Invalid(errors)) => errors[0].field.clone(),
        Ok(input) => format!("accepted as {input:?}"),
    };
    assert_eq!(field(both), "schedule");
    assert_eq!(field(base), "schedule_time");
}
