//! The embedded store's writes of one job inside the caller's transaction: its row, its
//! ledger records and its events (into the journal), each statement prepared once per
//! connection.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{JobRow, event_doc, map_err, run_doc, sql_int};
use crate::{
    domain::{Event, Job, JobId, Run},
    jobs::ports::{IdempotencyKey, StoreError},
};

/// Inserts a new job's row.
pub(super) fn insert_row(
    tx: &Connection,
    row: &JobRow,
    idempotency: Option<&IdempotencyKey>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO jobs (id, doc, name, status, job_type, due_at, created_at, version,
             idempotency_key, idempotency_fingerprint, pull_at, hook_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.id,
            row.doc,
            row.name,
            row.status,
            row.job_type,
            row.due_at,
            row.created_at,
            row.version,
            idempotency.map(|k| k.key.as_str()),
            idempotency.map(|k| k.fingerprint.as_str()),
            row.pull_at,
            row.hook_at,
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// Replaces a job's row if it has `expected_version` (and, with a claim, is held by that owner
/// under that fencing token), counting `finished` into its ledger length; returns the ledger's
/// length with them, or `None` when no row had that version and claim.
pub(super) fn replace_job(
    tx: &Connection,
    job: &Job,
    expected_version: u64,
    claim: Option<(&str, u64)>,
    finished: usize,
) -> Result<Option<i64>, StoreError> {
    let row = JobRow::of(job)?;
    tx.prepare_cached(
        "UPDATE jobs SET doc = ?1, name = ?2, status = ?3, job_type = ?4, due_at = ?5,
             version = ?6, lease_owner = NULL, lease_until = NULL,
             ledger_runs = ledger_runs + ?11, pull_at = ?12, hook_at = ?13
         WHERE id = ?7 AND version = ?8 AND (?9 IS NULL OR (lease_owner = ?9 AND fence = ?10))
         RETURNING ledger_runs",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            params![
                row.doc,
                row.name,
                row.status,
                row.job_type,
                row.due_at,
                row.version,
                row.id,
                sql_int(expected_version),
                claim.map(|(owner, _)| owner),
                claim.map(|(_, token)| sql_int(token)),
                finished as i64,
                row.pull_at,
                row.hook_at,
            ],
            |r| r.get(0),
        )
        .optional()
    })
    .map_err(map_err)
}

/// Records a job may hold in its ledger beyond `history` before they are trimmed: trimming
/// once per this many appends rather than on each saves a statement on nearly every fire.
/// Reads return the newest `history` only, so the slack never shows.
fn ledger_slack(history: usize) -> usize {
    (history / 4).clamp(1, 256)
}

/// Appends finished runs to a job's ledger (of `length` records with them, as counted by
/// [`replace_job`]) and, once it holds more than `history` plus the slack, drops the oldest
/// beyond `history`.
pub(super) fn append_runs(
    tx: &Connection,
    job: JobId,
    finished: &[Run],
    history: usize,
    length: i64,
) -> Result<(), StoreError> {
    if finished.is_empty() {
        return Ok(());
    }
    let job = job.to_string();
    {
        let mut stmt = tx
            .prepare_cached("INSERT INTO ledger (job_id, run_id, doc) VALUES (?1, ?2, ?3)")
            .map_err(map_err)?;
        for run in finished {
            stmt.execute(params![job, run.run_id.to_string(), run_doc(run)?])
                .map_err(map_err)?;
        }
    }
    if length.unsigned_abs() as usize <= history + ledger_slack(history) {
        return Ok(());
    }
    tx.prepare_cached(
        "DELETE FROM ledger WHERE job_id = ?1 AND seq <= (
             SELECT seq FROM ledger WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
    )
    .and_then(|mut stmt| stmt.execute(params![job, history as i64]))
    .map_err(map_err)?;
    tx.prepare_cached("UPDATE jobs SET ledger_runs = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![job, history as i64]))
        .map_err(map_err)?;
    Ok(())
}

/// Appends events to the journal, inside the caller's transaction: their places are given
/// here, and since writers take the database lock one at a time, places follow the order of
/// the commits, with no hole a reader could see filled later.
pub(super) fn append_events(tx: &Connection, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached("INSERT INTO events (event_id, job_id, doc, time) VALUES (?1, ?2, ?3, ?4)")
        .map_err(map_err)?;
    for event in events {
        stmt.execute(params![
            event.id.to_string(),
            event.job.id.to_string(),
            event_doc(event)?,
            event.time.timestamp_millis(),
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

/// Why a conditional write changed no row: the job changed since, or it is gone.
pub(super) fn why_not_written(tx: &Connection, id: JobId) -> StoreError {
    let exists = tx
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id.to_string()], |_| {
            Ok(())
        })
        .optional();
    match exists {
        Ok(Some(())) => StoreError::VersionConflict,
        Ok(None) => StoreError::NotFound,
        Err(e) => map_err(e),
    }
}
