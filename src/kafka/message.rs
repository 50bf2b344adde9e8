//! The Kafka wire format: event payloads and headers, and result messages.
//!
//! Payloads keep the older service's shape, so its consumers read them unchanged: PascalCase
//! job fields, `Status` and `JobType` as ints, `JobData` as a JSON string. Added fields only
//! extend it: `Event`, `Version`, the run's fields on run and result events, and, with access
//! control, `CreatedBy`, `UpdatedBy`, `Actor` and `Reason`. Headers are CloudEvents 1.0 in
//! binary mode (with the `actor` extension when there is one) plus a W3C `traceparent`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::{
    Delivery, Event, EventKind, Invalid, JobId, JobStatus, RunId, RunResult, RunStatus,
    ScheduleInput, format_time,
};

use super::Topics;

/// The topic an event goes to: creations to the create topic, fired runs to the run topic, and
/// everything else (updates, deletions, finished runs, pauses, resumes, cancellations) to the
/// update topic.
pub fn topic_of(kind: EventKind, topics: &Topics) -> &str {
    match kind {
        EventKind::Created => &topics.create.name,
        EventKind::Run => &topics.run.name,
        EventKind::Updated
        | EventKind::Deleted
        | EventKind::Finished
        | EventKind::Paused
        | EventKind::Resumed
        | EventKind::Cancelled => &topics.update.name,
    }
}

/// Whether an event goes to Kafka: every event but the fire of a run that goes by webhook or
/// to pulling workers, which Kafka's executors must not act on too.
pub fn for_kafka(event: &Event) -> bool {
    let elsewhere = event
        .run
        .as_ref()
        .and_then(|run| run.delivery)
        .is_some_and(|delivery| delivery != Delivery::Kafka);
    !(event.kind == EventKind::Run && elsewhere)
}

/// The message key: the job id, so one job's messages stay in one partition, in order.
pub fn key_of(event: &Event) -> String {
    event.job.id.to_string()
}

/// The JSON value of an event's message.
pub fn payload(event: &Event) -> Value {
    let job = &event.job;
    let mut value = json!({
        "Id": job.id.to_string(),
        "Name": job.name,
        "Description": job.description,
        "ScheduleTime": job.next_fire().map(format_time),
        "CreatedAt": format_time(job.created_at),
        "UpdatedAt": format_time(job.updated_at),
        "Status": job.status.code(),
        "JobType": job.job_type.code(),
        "JobData": job.job_data.text(),
        "Event": event.kind.name(),
        "Version": job.version,
        "Schedule": ScheduleInput::from(&job.schedule),
    });
    // Who: only with access control, so consumers without it see the payload as before.
    if let Value::Object(fields) = &mut value {
        let named = [
            ("CreatedBy", &job.created_by),
            ("UpdatedBy", &job.updated_by),
            ("Actor", &event.actor),
            ("Reason", &event.reason),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                fields.insert(name.into(), json!(value));
            }
        }
    }
    if let (Some(run), Value::Object(fields)) = (&event.run, &mut value) {
        fields.insert("RunId".into(), json!(run.run_id.to_string()));
        fields.insert("Attempt".into(), json!(run.attempt));
        fields.insert("ScheduledFor".into(), json!(format_time(run.scheduled_for)));
        fields.insert("FiredAt".into(), json!(run.fired_at.map(format_time)));
        if event.kind == EventKind::Finished {
            fields.insert("RunStatus".into(), json!(run.status));
            fields.insert("FinishedAt".into(), json!(run.finished_at.map(format_time)));
            fields.insert("Error".into(), json!(run.error));
            fields.insert("Output".into(), json!(run.output));
        }
    }
    value
}

/// The message headers of an event, in order. `traceparent` is the context of the span that
/// sends it, while tracing is on; without one the trace context is derived from the event id.
pub fn headers(
    event: &Event,
    source: &str,
    traceparent: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", event.id.to_string()),
        ("ce_type", event.kind.ce_type().to_owned()),
        ("ce_source", source.to_owned()),
        ("ce_time", format_time(event.time)),
        ("ce_subject", event.job.id.to_string()),
        ("content-type", "application/json".to_owned()),
        (
            "traceparent",
            traceparent.unwrap_or_else(|| derived_traceparent(event)),
        ),
    ];
    // A CloudEvents extension attribute: who caused the event through the API.
    if let Some(actor) = &event.actor {
        headers.push(("ce_actor", actor.clone()));
    }
    headers
}

/// A W3C trace context for the event when tracing is off. Derived from the event id, so a
/// message published again from the outbox carries the same trace as the first copy.
fn derived_traceparent(event: &Event) -> String {
    let bytes = event.id.as_bytes();
    let trace: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // The span id: the id's bytes folded to 8, never all zero (a v4 UUID has version bits set).
    let span: String = (0..8)
        .map(|i| format!("{:02x}", bytes[i] ^ bytes[i + 8]))
        .collect();
    let span = if span.chars().all(|c| c == '0') {
        "0000000000000001".to_owned()
    } else {
        span
    };
    format!("00-{trace}-{span}-01")
}

/// A result an executor published: which job (and run), and the result.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMessage {
    /// The job the result is for.
    pub job: JobId,
    /// Without it, the result closes the job's open run.
    pub run: Option<RunId>,
    /// How the run ended.
    pub result: RunResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawResult {
    id: Option<Value>,
    status: Option<Value>,
    run_id: Option<Value>,
    error: Option<Value>,
    output: Option<Value>,
}

impl ResultMessage {
    /// Parses a message value; the error is the reason a dead letter carries.
    pub fn parse(payload: Option<&[u8]>) -> Result<Self, String> {
        let payload = payload.ok_or("the message has no value")?;
        let raw: RawResult = serde_json::from_slice(payload)
            .map_err(|e| format!("the value is not a JSON object: {e}"))?;
        let job = match raw.id {
            Some(Value::String(id)) => JobId::parse(&id)
                .map_err(|_| "Id: must be a job id (24 hexadecimal digits)".to_owned())?,
            Some(_) => return Err("Id: must be a string".into()),
            None => return Err("Id: is required".into()),
        };
        // The job status the executor ends the job with, by its contract number (4, 5) or
        // name (SUCCEEDED, FAILED), as the older service's executors send it.
        let job_status = match raw.status {
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .and_then(JobStatus::from_code),
            Some(name @ Value::String(_)) => serde_json::from_value::<JobStatus>(name).ok(),
            Some(_) => None,
            None => return Err("Status: is required".into()),
        };
        let status = job_status
            .and_then(RunStatus::reported)
            .ok_or("Status: must be 4 or SUCCEEDED, or 5 or FAILED")?;
        let run = match raw.run_id {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if id.is_empty() => None,
            Some(Value::String(id)) => {
                Some(RunId::parse(&id).map_err(|_| "RunId: must be a run id (a UUID)".to_owned())?)
            }
            Some(_) => return Err("RunId: must be a string".into()),
        };
        let text = |field: &str, value: Option<Value>| match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{field}: must be a string")),
        };
        let error = text("Error", raw.error)?;
        let output = text("Output", raw.output)?;
        let result = RunResult::parse(status, error, output).map_err(|Invalid(fields)| {
            fields
                .iter()
                .map(|f| format!("{}: {}", pascal_case(&f.field), f.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(Self { job, run, result })
    }
}

fn pascal_case(field: &str) -> String {
    let mut chars = field.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Audit, JobSpec, JobType, MisfirePolicy, OverlapPolicy, RetryPolicy, Schedule,
    };

    fn event(audit: &Audit, created_by: Option<&str>) -> Event {
        let spec = JobSpec {
            name: "audited".into(),
            description: String::new(),
            job_type: JobType::Sms,
            job_data: Default::default(),
            schedule: Schedule::RunAt(chrono::Utc::now()),
            retry: RetryPolicy::default(),
            run_timeout_seconds: 300,
            misfire_policy: MisfirePolicy::FireOnce,
            overlap_policy: OverlapPolicy::Skip,
            delivery: None,
            webhook: None,
        };
        let mut job = crate::domain::Job::new(spec, chrono::Utc::now());
        job.created_by = created_by.map(str::to_owned);
        job.updated_by = created_by.map(str::to_owned);
        Event::new(EventKind::Paused, job, None).attributed(audit)
    }

    #[test]
    fn the_actor_is_a_payload_field_and_a_cloudevents_extension_only_when_there_is_one() {
        let audit = Audit::with_reason(Some("olga".into()), Some("disk full".into())).unwrap();
        let named = event(&audit, Some("ana"));
        let value = payload(&named);
        assert_eq!(
            (
                &value["Actor"],
                &value["Reason"],
                &value["CreatedBy"],
                &value["UpdatedBy"]
            ),
            (
                &json!("olga"),
                &json!("disk full"),
                &json!("ana"),
                &json!("ana")
            )
        );
        assert!(headers(&named, "/s", None).contains(&("ce_actor", "olga".to_owned())));

        let anonymous = event(&Audit::default(), None);
        let value = payload(&anonymous);
        for field in ["Actor", "Reason", "CreatedBy", "UpdatedBy"] {
            assert!(value.get(field).is_none(), "{field} is made up");
        }
        assert!(
            headers(&anonymous, "/s", None)
                .iter()
                .all(|(name, _)| *name != "ce_actor")
        );
    }

    #[test]
    fn results_accept_ints_and_names_and_refuse_the_rest() {
        let id = JobId::generate();
        let ok = ResultMessage::parse(Some(format!(r#"{{"Id":"{id}","Status":4}}"#).as_bytes()))
            .unwrap();
        assert_eq!(
            (ok.job, ok.run, ok.result.status),
            (id, None, RunStatus::Succeeded)
        );
        let failed = ResultMessage::parse(Some(
            format!(r#"{{"Id":"{id}","Status":"FAILED","Error":"x"}}"#).as_bytes(),
        ))
        .unwrap();
        assert_eq!(failed.result.status, RunStatus::Failed);
        for (bad, reason) in [
            ("not json", "not a JSON object"),
            ("[]", "not a JSON object"),
            (r#"{"Status":4}"#, "Id: is required"),
            (r#"{"Id":"nope","Status":4}"#, "Id: must be a job id"),
            (&format!(r#"{{"Id":"{id}"}}"#), "Status: is required"),
            (&format!(r#"{{"Id":"{id}","Status":3}}"#), "Status: must be"),
            (
                &format!(r#"{{"Id":"{id}","Status":"RUNNING"}}"#),
                "Status: must be",
            ),
            (
                &format!(r#"{{"Id":"{id}","Status":4,"RunId":"x"}}"#),
                "RunId: must be",
            ),
            (
                &format!(r#"{{"Id":"{id}","Status":4,"Error":7}}"#),
                "Error: must be a string",
            ),
            (
                &format!(
                    r#"{{"Id":"{id}","Status":4,"Output":"{}"}}"#,
                    "x".repeat(20_000)
                ),
                "Output: must be at most",
            ),
        ] {
            let error = ResultMessage::parse(Some(bad.as_bytes())).unwrap_err();
            assert!(error.contains(reason), "{bad}: {error}");
        }
        assert!(ResultMessage::parse(None).is_err());
    }
}
