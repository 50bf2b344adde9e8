//! Identifiers: job ids (MongoDB ObjectIds, made by the service) and run ids (derived, so the
//! same expected execution always has the same id).

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::field::Invalid;

/// What a malformed job id is told.
pub const JOB_ID_EXPECTED: &str = "must be a 24-hex-digit ObjectId";

/// What a malformed run id is told.
const RUN_ID_EXPECTED: &str = "must be a UUID such as 0b5f6c1e-3f4a-5d2b-9c8e-7a6b5c4d3e2f";

/// A job id: a MongoDB ObjectId, 24 lowercase hex digits, made by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(bson::oid::ObjectId);

impl JobId {
    /// A new, unique id.
    pub fn generate() -> Self {
        Self(bson::oid::ObjectId::new())
    }

    /// The MongoDB ObjectId it is.
    pub fn object_id(self) -> bson::oid::ObjectId {
        self.0
    }

    /// The job id an ObjectId read from the store is.
    pub fn from_object_id(id: bson::oid::ObjectId) -> Self {
        Self(id)
    }

    /// Parses an id from a path, query or message (field `id`). Anything but 24 hex digits is
    /// rejected, so an id can never smuggle a query operator into a store lookup.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Self::parse_text(raw).ok_or_else(|| Invalid::field("id", JOB_ID_EXPECTED))
    }

    /// Parses a stored id; `None` when it is not one.
    pub fn parse_text(raw: &str) -> Option<Self> {
        if raw.len() != 24 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        bson::oid::ObjectId::parse_str(raw).ok().map(Self)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

/// A run id: a UUID derived from the job id, the due time, the attempt and how often the job's
/// schedule was changed, so the same expected execution always has the same id (executors can
/// drop duplicates) and no other execution ever has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId(Uuid);

impl RunId {
    /// Namespace of run ids (UUIDv5).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_3a2c_9b7e_4c58_a0d2_51e3_8f47_c916);

    /// The id of attempt `attempt` of the fire of `job` due at `scheduled_for`, after the job's
    /// schedule was changed `reschedules` times (`Job::reschedules`).
    ///
    /// Job, due time and attempt alone are not unique: a job moved back to a due time it
    /// already fired for would fire that attempt again, and the ledger that could tell is
    /// trimmed. A due time can only come back through a change of schedule, and each one
    /// increments the job's stored counter, so with the counter in the name no two executions
    /// share an id, however much of the ledger is gone. The same execution keeps its id: every
    /// input is fixed once the fire is due (a claim that fires it again settles the same stored
    /// job, counter included). With no change of schedule (0) the name is the one ids always had,
    /// so the ids of runs recorded before the counter existed still match.
    pub fn derive(
        job: JobId,
        scheduled_for: DateTime<Utc>,
        attempt: u32,
        reschedules: u32,
    ) -> Self {
        let millis = scheduled_for.timestamp_millis();
        let name = match reschedules {
            0 => format!("{job}/{millis}/{attempt}"),
            n => format!("{job}/{millis}/{attempt}/{n}"),
        };
        Self(Uuid::new_v5(&Self::NAMESPACE, name.as_bytes()))
    }

    /// Parses a run id from a path or message (field `runId`): a UUID in the hyphenated form
    /// the service gives out (36 characters), the one form the API documents; the simple,
    /// braced and URN forms are refused.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Some(raw)
            .filter(|raw| raw.len() == 36)
            .and_then(|raw| Uuid::try_parse(raw).ok())
            .map(Self)
            .ok_or_else(|| Invalid::field("runId", RUN_ID_EXPECTED))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_time;

    #[test]
    fn run_ids_are_deterministic_per_job_due_time_attempt_and_reschedule() {
        let job = JobId::generate();
        let at = parse_time("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(RunId::derive(job, at, 1, 0), RunId::derive(job, at, 1, 0));
        assert_eq!(RunId::derive(job, at, 1, 3), RunId::derive(job, at, 1, 3));
        assert_ne!(RunId::derive(job, at, 1, 0), RunId::derive(job, at, 2, 0));
        assert_ne!(RunId::derive(job, at, 1, 0), RunId::derive(job, at, 1, 1));
        assert_ne!(
            RunId::derive(job, at, 1, 0),
            RunId::derive(JobId::generate(), at, 1, 0)
        );
    }

    #[test]
    fn run_ids_accept_only_the_hyphenated_form() {
        let id = RunId::derive(
            JobId::generate(),
            parse_time("2030-01-01T00:00:00Z").unwrap(),
            1,
            0,
        );
        assert_eq!(RunId::parse(&id.to_string()), Ok(id));
        assert_eq!(RunId::parse(&id.to_string().to_uppercase()), Ok(id));
        for bad in [
            id.to_string().replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            "0".into(),
        ] {
            assert_eq!(
                RunId::parse(&bad),
                Err(Invalid::field("runId", RUN_ID_EXPECTED)),
                "{bad}"
            );
        }
    }

    #[test]
    fn job_ids_accept_only_24_hex_digits() {
        assert!(JobId::parse("65f1c0ffee0123456789abcd").is_ok());
        for bad in [
            "",
            "123",
            "65f1c0ffee0123456789abcz",
            "{\"$gt\": \"\"}",
            "65f1c0ffee0123456789abcd0",
        ] {
            assert_eq!(
                JobId::parse(bad),
                Err(Invalid::field("id", JOB_ID_EXPECTED)),
                "{bad}"
            );
        }
    }

    #[test]
    fn run_ids_of_jobs_never_rescheduled_are_the_ids_runs_always_had() {
        // Pinned: a run recorded before the counter existed keeps matching its id.
        let job = JobId::parse("65a1b2c3d4e5f60718293a02").unwrap();
        let at = parse_time("2030-01-06T08:00:00Z").unwrap();
        assert_eq!(
            RunId::derive(job, at, 1, 0).to_string(),
            "7c72adae-4839-5d17-be65-9f5e1ca01d58"
        );
    }
}
