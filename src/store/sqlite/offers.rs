//! What pulling workers and the webhook caller may take: the jobs whose open runs are offered
//! to them, found from the `pull_at` and `hook_at` indexes.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::rows::{job_of, map_err};
use crate::{
    domain::{Delivery, Job, JobType},
    jobs::{listing::ByteBudget, ports::StoreError},
};

/// The jobs with a run offered to pulling workers at `?1`, of the types in `?2` (a JSON array;
/// NULL for any), earliest first, from the `pull_at` index.
pub(super) const OFFERED_PULL: &str = "SELECT id, doc FROM jobs WHERE pull_at <= ?1
     AND (?2 IS NULL OR job_type IN (SELECT value FROM json_each(?2)))
     ORDER BY pull_at LIMIT ?3";

/// The same for the webhook caller, from the `hook_at` index.
pub(super) const OFFERED_HOOK: &str = "SELECT id, doc FROM jobs WHERE hook_at <= ?1
     AND (?2 IS NULL OR job_type IN (SELECT value FROM json_each(?2)))
     ORDER BY hook_at LIMIT ?3";

/// Up to `limit` jobs with a run offered to `delivery` at `now`, of `job_types` (any when
/// empty), earliest first, within a claim's byte budget.
pub(super) fn offered(
    conn: &mut Connection,
    delivery: Delivery,
    now: DateTime<Utc>,
    job_types: &[JobType],
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let query = match delivery {
        Delivery::Pull => OFFERED_PULL,
        Delivery::Webhook => OFFERED_HOOK,
        // Kafka's runs are published, never taken.
        Delivery::Kafka => return Ok(Vec::new()),
    };
    let types = (!job_types.is_empty()).then(|| {
        let codes: Vec<i32> = job_types.iter().map(|t| t.code()).collect();
        serde_json::Value::from(codes).to_string()
    });
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(query).map_err(map_err)?;
    let mut rows = stmt
        .query(params![now.timestamp_millis(), types, limit])
        .map_err(map_err)?;
    let (mut jobs, mut budget) = (Vec::new(), ByteBudget::claim());
    while let Some(row) = rows.next().map_err(map_err)? {
        if let Some(job) = job_of(row).map_err(map_err)?
            && !budget.push(&mut jobs, job)
        {
            break;
        }
    }
    Ok(jobs)
}
