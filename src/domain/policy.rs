//! The enumerations of the contract (job types, job and run statuses, misfire and overlap
//! policies) and the retry policy.
//!
//! Each enum's serde name is its name in the contract (`SCHEDULED`, `TIMED_OUT`, `FIRE_ONCE`);
//! the numbers of gRPC and Kafka payloads are given by `code`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What a job does when it fires; executors pick the messages of their type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobType {
    /// An email: `jobData` holds the addresses, the subject and the message.
    Email,
    /// A text message.
    Sms,
}

impl JobType {
    /// The number used on gRPC and in Kafka payloads.
    pub fn code(self) -> i32 {
        match self {
            Self::Email => 0,
            Self::Sms => 1,
        }
    }

    /// The type a gRPC or Kafka number stands for.
    pub fn from_code(code: i32) -> Option<Self> {
        [Self::Email, Self::Sms]
            .into_iter()
            .find(|t| t.code() == code)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Accepted, not yet scheduled (the older service's first status; never set now).
    Pending,
    /// Waiting for its next fire.
    Scheduled,
    /// A run is open, waiting for its result.
    Running,
    /// A one-shot job's last run succeeded.
    Succeeded,
    /// A one-shot job's last run failed, after its retries.
    Failed,
    /// Nothing fires until it is resumed.
    Paused,
    /// Nothing fires again.
    Cancelled,
}

impl JobStatus {
    /// Every status, in code order.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Paused,
        Self::Cancelled,
    ];

    /// The number used on gRPC, in Kafka payloads and in both stores.
    pub fn code(self) -> i32 {
        match self {
            Self::Pending => 1,
            Self::Scheduled => 2,
            Self::Running => 3,
            Self::Succeeded => 4,
            Self::Failed => 5,
            Self::Paused => 6,
            Self::Cancelled => 7,
        }
    }

    /// The status a number stands for; 0 (`UNKNOWN`) and anything else is none.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// How one run ended or stands. The last three record expected fires that did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Fired, waiting for its result.
    Running,
    /// The executor reported success.
    Succeeded,
    /// The executor reported failure.
    Failed,
    /// No result came within the job's `runTimeoutSeconds`; counts as a failed attempt.
    TimedOut,
    /// Not fired: the previous run was still open and the overlap policy is `SKIP`.
    Skipped,
    /// Not fired: the scheduler was down or the job paused at the due time, and the misfire
    /// policy did not catch it up.
    Missed,
    /// Cancelled with its job, open or waiting for a retry.
    Cancelled,
}

impl RunStatus {
    /// Whether the run has reached its final status.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Running)
    }

    /// The result a job status stands for in an executor's message (`Status` 4 or 5, the
    /// contract's numbers of SUCCEEDED and FAILED); none for any other status.
    pub fn reported(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Succeeded => Some(Self::Succeeded),
            JobStatus::Failed => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What a recurring job does with the fires it missed while the service was down (or the job
/// paused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MisfirePolicy {
    /// One catch-up run; the other missed times are recorded `MISSED`.
    #[default]
    FireOnce,
    /// No catch-up: every missed time is recorded `MISSED`.
    Skip,
    /// Every missed time fires, oldest first, up to a bound; older ones are `MISSED`.
    FireAll,
}

/// What a recurring job does when it is due while its previous run is still open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OverlapPolicy {
    /// The fire is recorded `SKIPPED`.
    #[default]
    Skip,
    /// The fire happens; runs overlap.
    Allow,
}

/// Longest delay between attempts.
pub const MAX_BACKOFF_SECONDS: u64 = 3600;
/// Most attempts of one fire, the first included.
pub const MAX_ATTEMPTS: u64 = 100;
/// Default `runTimeoutSeconds`.
pub const DEFAULT_RUN_TIMEOUT_SECONDS: u32 = 300;
/// Longest `runTimeoutSeconds`: one week.
pub const MAX_RUN_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1 (no retry) to 100.
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it, capped at one hour, with
    /// jitter.
    pub backoff_seconds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_seconds: 10,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next` (2 or more): `backoff · 2^(next-2)`, capped at one hour,
    /// then drawn uniformly from its upper half, so retries of many jobs failing together
    /// spread out instead of arriving at once.
    pub fn delay_before(&self, next: u32, jitter: f64) -> chrono::Duration {
        let exponent = next.saturating_sub(2).min(30);
        let full = (u64::from(self.backoff_seconds) * 1000)
            .saturating_mul(1 << exponent)
            .min(MAX_BACKOFF_SECONDS * 1000);
        let jitter = jitter.clamp(0.0, 1.0);
        chrono::Duration::milliseconds((full as f64 * (0.5 + 0.5 * jitter)) as i64)
    }
}

/// The contract's name of an enum value, as it appears in JSON: `SCHEDULED`, `TIMED_OUT`,
/// `FIRE_ONCE`.
pub fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for code in 1..=7 {
            assert_eq!(JobStatus::from_code(code).unwrap().code(), code);
        }
        assert_eq!(JobStatus::from_code(0), None);
        assert_eq!(JobType::from_code(1), Some(JobType::Sms));
        assert_eq!(JobType::from_code(2), None);
    }

    #[test]
    fn backoff_doubles_is_capped_at_an_hour_and_jitter_stays_in_the_upper_half() {
        let policy = RetryPolicy {
            max_attempts: 100,
            backoff_seconds: 10,
        };
        assert_eq!(policy.delay_before(2, 1.0), chrono::Duration::seconds(10));
        assert_eq!(policy.delay_before(3, 1.0), chrono::Duration::seconds(20));
        assert_eq!(policy.delay_before(4, 0.0), chrono::Duration::seconds(20));
        assert_eq!(
            policy.delay_before(60, 1.0),
            chrono::Duration::seconds(3600)
        );
    }

    #[test]
    fn names_are_the_contract_names() {
        assert_eq!(name_of(&RunStatus::TimedOut), "TIMED_OUT");
        assert_eq!(name_of(&MisfirePolicy::FireOnce), "FIRE_ONCE");
    }
}
