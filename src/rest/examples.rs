//! The examples Swagger UI offers, added to the generated document by [`Examples`]: a valid
//! body for each schedule shape on `POST /api/v1/jobs` (the first is the body Swagger UI fills
//! in), and on every problem response the problem document the service answers with that
//! status, made by the code that answers it (the job layer's errors, the domain's refusals,
//! the access checks, the body limits), so an example cannot drift from an answer.

use chrono::Utc;
use serde_json::{Value, json};
use utoipa::{
    Modify,
    openapi::{
        OpenApi, RefOr,
        example::{Example, ExampleBuilder},
        path::Operation,
    },
};

use super::{
    params::{EventParams, ListParams, PreviewParams},
    problem::{NOT_JSON, PROBLEM_JSON, Problem, TOO_LARGE, TOOK_TOO_LONG},
    security::operations,
};
use crate::{
    auth::{Refusal, Role},
    domain::{Job, JobId, JobInput, Limits, RunStatus},
    jobs::{Error, Missing, finished_otherwise, fired_too_often, ports::StoreError, preview_now},
    throttle::{Client, Exhausted, StreamLimit},
};

/// Adds the request and problem examples.
pub(crate) struct Examples;

impl Modify for Examples {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, operation) in operations(openapi) {
            if path == "/api/v1/jobs"
                && let Some(body) = operation.request_body.as_mut()
                && let Some(content) = body.content.get_mut("application/json")
            {
                content.examples = new_jobs()
                    .into_iter()
                    .map(|(name, summary, value)| (name.to_owned(), example(summary, value)))
                    .collect();
            }
            add_problems(path, operation);
        }
    }
}

fn example(summary: &str, value: Value) -> RefOr<Example> {
    RefOr::T(
        ExampleBuilder::new()
            .summary(summary)
            .value(Some(value))
            .build(),
    )
}

/// One valid new job per schedule shape: (name, summary, body).
pub(crate) fn new_jobs() -> Vec<(&'static str, &'static str, Value)> {
    let email = json!({
        "SourceAddress": "reports@example.com",
        "DestinationAddress": "team@example.com",
        "Subject": "Weekly report",
        "Message": "The report is attached."
    });
    vec![
        (
            "one-shot",
            "An email sent once, at a given time",
            json!({
                "name": "Welcome email",
                "description": "Sent once to a new user",
                "jobType": "EMAIL",
                "jobData": email,
                "schedule": {"runAt": "2030-01-01T09:00:00Z"}
            }),
        ),
        (
            "cron",
            "A report every Monday at 09:00 in Berlin, retried on failure",
            json!({
                "name": "Monday report email",
                "jobType": "EMAIL",
                "jobData": email,
                "schedule": {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
                "retry": {"maxAttempts": 3, "backoffSeconds": 60},
                "runTimeoutSeconds": 300
            }),
        ),
        (
            "interval",
            "A text message every hour from a start time",
            json!({
                "name": "Hourly reminder",
                "jobType": "SMS",
                "jobData": {"To": "+15550100", "Text": "Time to stretch"},
                "schedule": {"intervalSeconds": 3600, "startAt": "2030-01-01T08:00:00Z"}
            }),
        ),
    ]
}

/// Gives each problem response of the operation on `path` without an example the problem the
/// service answers with its status.
fn add_problems(path: &str, operation: &mut Operation) {
    let takes_job =
        operation.request_body.is_some() && matches!(path, "/api/v1/jobs" | "/api/v1/jobs/{id}");
    for (code, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let Some(content) = response.content.get_mut(PROBLEM_JSON) else {
            continue;
        };
        if content.example.is_some() || !content.examples.is_empty() {
            continue;
        }
        let problem = code
            .parse()
            .ok()
            .and_then(|code| problem_for(code, path, takes_job));
        if let Some(problem) = problem {
            content.example = serde_json::to_value(problem).ok();
        }
    }
}

/// The problem the service answers with `status` on `path` (whose body is a job when
/// `takes_job`).
fn problem_for(status: u16, path: &str, takes_job: bool) -> Option<Problem> {
    let problem = match status {
        400 => Problem::from(&bad_request(path, takes_job)?),
        401 => refusal(axum::http::StatusCode::UNAUTHORIZED, &Refusal::Missing),
        403 => refusal(
            axum::http::StatusCode::FORBIDDEN,
            &Refusal::Insufficient {
                needs: Role::Operator,
                has: Some(Role::Viewer),
                subject: None,
            },
        ),
        404 => Problem::from(&Error::NotFound(Missing::Job)),
        408 => Problem::new(axum::http::StatusCode::REQUEST_TIMEOUT, TOOK_TOO_LONG),
        409 => Problem::from(&conflict(path)?),
        412 => Problem::from(&Error::VersionMismatch),
        413 => Problem::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
        415 => Problem::new(axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE, NOT_JSON),
        422 => Problem::from(&Error::IdempotencyKeyReused),
        429 => Problem::from(&streams_past_the_limit()?),
        503 => Problem::from(&Error::Unavailable(anyhow::anyhow!("unreachable"))),
        _ => return None,
    };
    Some(problem)
}

/// The 400 of a call on `path`: a bad job body, query or id.
fn bad_request(path: &str, takes_job: bool) -> Option<Error> {
    match path {
        _ if takes_job => Some(invalid_new_job()),
        "/api/v1/jobs" => serde_json::from_value::<ListParams>(json!({"status": "ASLEEP"}))
            .ok()?
            .parse()
            .err(),
        "/api/v1/schedule/preview" => {
            let query = json!({"cron": "0 9 * * FUNDAY"});
            let (schedule, count, from) = serde_json::from_value::<PreviewParams>(query)
                .ok()?
                .parse()
                .ok()?;
            preview_now(&schedule, count, from.as_deref()).err()
        }
        "/api/v1/events" => serde_json::from_value::<EventParams>(json!({"jobId": "not-an-id"}))
            .ok()?
            .parse(None)
            .err(),
        _ => Some(Error::from(JobId::parse("not-an-id").err()?)),
    }
}

fn refusal(status: axum::http::StatusCode, refusal: &Refusal) -> Problem {
    Problem::new(status, refusal.detail())
}

/// The job layer's answer to a new job with a name too short and a cron expression that
/// cannot be parsed.
fn invalid_new_job() -> Error {
    let mut body = new_jobs().swap_remove(1).2;
    body["name"] = json!("ab");
    body["schedule"]["cron"] = json!("0 9 * * FUNDAY");
    match serde_json::from_value::<JobInput>(body).map(JobInput::parse) {
        Ok(Err(invalid)) => Error::from(invalid),
        _ => Error::Internal(anyhow::anyhow!("the invalid example was accepted")),
    }
}

/// The 409 of a call on `path`: the job layer's or the domain's own refusal.
fn conflict(path: &str) -> Option<Error> {
    let now = Utc::now();
    let body = new_jobs().swap_remove(1).2;
    let spec = serde_json::from_value::<JobInput>(body)
        .ok()?
        .parse()
        .ok()?;
    let job = Job::new(spec, now);
    let limits = Limits::default();
    let refused = match path {
        "/api/v1/jobs" => return Some(Error::from(StoreError::DuplicateKey)),
        "/api/v1/jobs/{id}" => return Some(fired_too_often()),
        "/api/v1/jobs/{id}/runs/{runId}/result" => {
            return Some(finished_otherwise(RunStatus::Failed));
        }
        "/api/v1/jobs/{id}/resume" => job.resume(now, &limits, 0.5).err(),
        "/api/v1/jobs/{id}/trigger" => job.cancel(now).ok()?.job.trigger(now, &limits).err(),
        "/api/v1/jobs/{id}/cancel" => job.cancel(now).ok()?.job.cancel(now).err(),
        _ => job.pause(now).ok()?.job.pause(now).err(),
    };
    refused.map(Error::from)
}

/// The event streams' refusal of a client's eleventh stream.
fn streams_past_the_limit() -> Option<Exhausted> {
    let limit = StreamLimit::new(1000, 10);
    let client = || Client::Address(std::net::Ipv4Addr::new(192, 0, 2, 7).into());
    let _open: Vec<_> = (0..10).map(|_| limit.acquire(client())).collect();
    limit.acquire(client()).err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_new_job_example_is_a_valid_job() {
        for (name, _, body) in new_jobs() {
            let input: JobInput = serde_json::from_value(body).expect(name);
            input.parse().unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
    }

    #[test]
    fn the_problem_examples_come_from_the_answers_they_stand_for() {
        let of = |status, path| serde_json::to_value(problem_for(status, path, false).unwrap());
        let bad_body =
            serde_json::to_value(problem_for(400, "/api/v1/jobs", true).unwrap()).unwrap();
        let fields: Vec<&str> = bad_body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&"name") && fields.contains(&"schedule.cron"),
            "{bad_body}"
        );
        let bad_id = of(400, "/api/v1/jobs/{id}").unwrap();
        assert_eq!(bad_id["errors"][0]["field"], "id", "{bad_id}");
        let bad_filter = of(400, "/api/v1/jobs").unwrap();
        assert_eq!(bad_filter["errors"][0]["field"], "status", "{bad_filter}");
        let bad_schedule = of(400, "/api/v1/schedule/preview").unwrap();
        assert_eq!(
            bad_schedule["errors"][0]["field"], "schedule.cron",
            "{bad_schedule}"
        );
        let bad_job = of(400, "/api/v1/events").unwrap();
        assert_eq!(bad_job["errors"][0]["field"], "jobId", "{bad_job}");
        let conflict = of(409, "/api/v1/jobs/{id}/pause").unwrap();
        assert!(
            conflict["detail"].as_str().unwrap().contains("pause"),
            "{conflict}"
        );
        for status in [401, 403, 404, 408, 412, 413, 415, 422, 429, 503] {
            let problem = of(status, "/api/v1/jobs/{id}").unwrap();
            assert_eq!(problem["status"], status, "{problem}");
            assert_ne!(problem["detail"], "", "{problem}");
        }
    }
}
