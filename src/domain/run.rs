//! Runs: one execution of a job, or an expected fire that did not happen; and the result an
//! executor reports.

use chrono::{DateTime, Utc};

use super::{
    delivery::{Delivery, RunLease},
    field::{Errors, Invalid},
    ids::{JobId, RunId},
    policy::RunStatus,
};

/// Longest run `output`.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Longest run `error`.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// One execution of a job, or a record of an expected fire that did not happen.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Deterministic from job id, due time and attempt.
    pub run_id: RunId,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The due time it is the fire of (a retry keeps its first attempt's).
    pub scheduled_for: DateTime<Utc>,
    /// When it fired; `None` for fires that did not happen.
    pub fired_at: Option<DateTime<Utc>>,
    /// 1 for the first attempt, 2 and up for retries.
    pub attempt: u32,
    /// Where it stands.
    pub status: RunStatus,
    /// When it reached its final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, timed out or did not fire.
    pub error: Option<String>,
    /// What it produced, as its executor reported.
    pub output: Option<String>,
    /// Who made the record through an operation (trigger, cancel, resume); `None` for the
    /// scheduler's own records and without auth.
    pub actor: Option<String>,
    /// Why, as that caller said.
    pub reason: Option<String>,
    /// The W3C `traceparent` of the fire (or the request) that made the run, while tracing
    /// is on: a result that carries no trace of its own links to it.
    pub trace: Option<String>,
    /// How the run reaches its executor, decided when it fired; `None` for runs fired before
    /// there was a choice (they went to Kafka and the event streams).
    pub delivery: Option<Delivery>,
    /// While open: the hold a worker (or the webhook caller) has on it, if any.
    pub lease: Option<RunLease>,
}

impl Run {
    /// A run of `job_id` fired at `fired_at`, open until its result comes.
    pub fn running(
        run_id: RunId,
        job_id: JobId,
        scheduled_for: DateTime<Utc>,
        attempt: u32,
        fired_at: DateTime<Utc>,
    ) -> Self {
        Self {
            run_id,
            job_id,
            scheduled_for,
            fired_at: Some(fired_at),
            attempt,
            status: RunStatus::Running,
            finished_at: None,
            error: None,
            output: None,
            actor: None,
            reason: None,
            trace: None,
            delivery: None,
            lease: None,
        }
    }

    /// Whether a worker (or the webhook caller) of `delivery` may take the open run at `now`:
    /// it goes that way, and nobody holds it.
    pub fn offered(&self, delivery: Delivery, now: DateTime<Utc>) -> bool {
        self.status == RunStatus::Running
            && self.delivery == Some(delivery)
            && self.lease.as_ref().is_none_or(|lease| lease.until <= now)
    }

    /// When the open run is first offered to the workers of `delivery`: now if nobody holds
    /// it, when the hold lapses if someone does; `None` if it does not go that way.
    pub fn offered_at(&self, delivery: Delivery) -> Option<DateTime<Utc>> {
        if self.status != RunStatus::Running || self.delivery != Some(delivery) {
            return None;
        }
        Some(match &self.lease {
            Some(lease) => lease.until,
            None => self.fired_at.unwrap_or(self.scheduled_for),
        })
    }
}

/// What an executor reports about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// `Succeeded` or `Failed`.
    pub status: RunStatus,
    /// Why it failed; at most [`MAX_ERROR_BYTES`].
    pub error: Option<String>,
    /// What it produced; at most [`MAX_OUTPUT_BYTES`].
    pub output: Option<String>,
}

impl RunResult {
    /// Checks a reported result: a final status and bounded texts. Empty texts are none.
    pub fn parse(
        status: RunStatus,
        error: Option<String>,
        output: Option<String>,
    ) -> Result<Self, Invalid> {
        let mut errors = Errors::new();
        if !matches!(status, RunStatus::Succeeded | RunStatus::Failed) {
            errors.push("status", "must be SUCCEEDED or FAILED");
        }
        if error.as_ref().is_some_and(|e| e.len() > MAX_ERROR_BYTES) {
            errors.push("error", format!("must be at most {MAX_ERROR_BYTES} bytes"));
        }
        if output.as_ref().is_some_and(|o| o.len() > MAX_OUTPUT_BYTES) {
            errors.push(
                "output",
                format!("must be at most {MAX_OUTPUT_BYTES} bytes"),
            );
        }
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        errors.finish(|| {
            Some(Self {
                status,
                error: non_empty(error),
                output: non_empty(output),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_final_and_bounded_and_every_fault_is_named() {
        let ok = RunResult::parse(RunStatus::Succeeded, Some(String::new()), None).unwrap();
        assert_eq!(ok.error, None, "an empty text is none");
        let Err(Invalid(errors)) = RunResult::parse(
            RunStatus::Running,
            Some("e".repeat(MAX_ERROR_BYTES + 1)),
            Some("o".repeat(MAX_OUTPUT_BYTES + 1)),
        ) else {
            panic!("a running result was accepted")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["error", "output", "status"]);
    }
}
