//! Requests and values the tests build: job bodies, ids, times.

use chrono::{DateTime, Utc};
use scheduler::domain::{Job, JobInput, parse_time};
use serde_json::{Value, json};

/// A valid EMAIL job body due at `run_at`.
pub fn email_job(name: &str, run_at: &str) -> Value {
    json!({
        "name": name,
        "description": "a test job",
        "jobType": "EMAIL",
        "jobData": {
            "SourceAddress": "reports@example.com",
            "DestinationAddress": "team@example.com",
            "Subject": "Weekly report",
            "Message": "Attached."
        },
        "schedule": {"runAt": run_at}
    })
}

/// An SMS job body with `schedule`, and the fields of `extra` (policies, say) added.
pub fn sms_job(name: &str, schedule: Value, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "jobType": "SMS",
        "jobData": {"To": "+100"},
        "schedule": schedule,
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    body
}

/// The `id` of a job as the REST API shows it.
pub fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("a job with an id").to_owned()
}

/// A time given as RFC 3339.
pub fn at(rfc3339: &str) -> DateTime<Utc> {
    parse_time(rfc3339).expect("an RFC 3339 time")
}

/// A time given as RFC 3339, as a protobuf timestamp.
pub fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("an RFC 3339 time");
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A job made now from a REST-shaped body, as the use cases would store it.
pub fn job_from(input: Value) -> Job {
    let input: JobInput = serde_json::from_value(input).expect("a job body");
    Job::new(input.parse().expect("a valid job body"), Utc::now())
}
