//! A job as the embedded store's `jobs` row holds it: its document (`store::json`) beside the
//! columns the queries filter and order on, which are derived from the job on every write; and
//! a listing's filter as a condition on those columns; and SQLite's errors as the store's.

use rusqlite::{Row, ToSql};

use crate::{
    domain::{Delivery, Event, Job, Run},
    jobs::{
        listing::JobFilter,
        ports::{Journaled, StoreError},
    },
    store::{
        json::{EventJson, JobJson, RunJson, from_text, to_text},
        or_skip, prefix_end,
    },
};

/// The columns of a job's row that a write sets.
pub(super) struct JobRow {
    pub(super) id: String,
    pub(super) doc: String,
    pub(super) name: String,
    /// The contract's number of the status.
    pub(super) status: i32,
    /// The contract's number of the job type.
    pub(super) job_type: i32,
    /// `Job::due_at`, in milliseconds: what the claim queries.
    pub(super) due_at: Option<i64>,
    /// `Job::offered_at` for pulling workers, in milliseconds: what their claim queries.
    pub(super) pull_at: Option<i64>,
    /// `Job::offered_at` for the webhook caller, in milliseconds.
    pub(super) hook_at: Option<i64>,
    pub(super) created_at: i64,
    pub(super) version: i64,
}

impl JobRow {
    pub(super) fn of(job: &Job) -> Result<Self, StoreError> {
        Ok(Self {
            id: job.id.to_string(),
            doc: to_text(&JobJson::from(job))?,
            name: job.name.clone(),
            status: job.status.code(),
            job_type: job.job_type.code(),
            due_at: job.due_at().map(|t| t.timestamp_millis()),
            pull_at: job.offered_at(Delivery::Pull).map(|t| t.timestamp_millis()),
            hook_at: job
                .offered_at(Delivery::Webhook)
                .map(|t| t.timestamp_millis()),
            created_at: job.created_at.timestamp_millis(),
            version: sql_int(job.version),
        })
    }
}

/// A count (a version, a fencing token) as an SQLite INTEGER.
pub(super) fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The document text of a run, for the ledger.
pub(super) fn run_doc(run: &Run) -> Result<String, StoreError> {
    to_text(&RunJson::from(run))
}

/// The document text of an event, for the journal.
pub(super) fn event_doc(event: &Event) -> Result<String, StoreError> {
    to_text(&EventJson::from(event))
}

/// The job of a row whose first two columns are its id and document; `None` (logged) when
/// the document is malformed.
pub(super) fn job_of(row: &Row<'_>) -> rusqlite::Result<Option<Job>> {
    let (id, doc): (String, String) = (row.get(0)?, row.get(1)?);
    Ok(or_skip("job", &id, from_text::<JobJson, Job>(&doc)))
}

/// The run of a ledger row `(run_id, doc)`; `None` (logged) when malformed.
pub(super) fn run_of(row: &Row<'_>) -> rusqlite::Result<Option<Run>> {
    let (id, doc): (String, String) = (row.get(0)?, row.get(1)?);
    Ok(or_skip("run", &id, from_text::<RunJson, Run>(&doc)))
}

/// The event of a journal row `(event_id, doc)`; `None` (logged) when malformed.
pub(super) fn event_of(row: &Row<'_>) -> rusqlite::Result<Option<Event>> {
    let (id, doc): (String, String) = (row.get(0)?, row.get(1)?);
    Ok(or_skip("event", &id, from_text::<EventJson, Event>(&doc)))
}

/// The journaled event of a row `(seq, event_id, doc)`; `None` (logged) when malformed.
pub(super) fn journaled_of(row: &Row<'_>) -> rusqlite::Result<Option<Journaled>> {
    let (seq, id, doc): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    Ok(
        or_skip("event", &id, from_text::<EventJson, Event>(&doc)).map(|event| Journaled {
            seq: seq.unsigned_abs(),
            event,
        }),
    )
}

/// The `WHERE` clause of a listing's `filter` on the row's columns (empty for no filter), and
/// the values of its numbered parameters.
pub(super) fn filter_clause(filter: JobFilter) -> (String, Vec<Box<dyn ToSql>>) {
    let mut clauses = Vec::new();
    let mut values: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(status) = filter.status {
        values.push(Box::new(status.code()));
        clauses.push(format!("status = ?{}", values.len()));
    }
    if let Some(job_type) = filter.job_type {
        values.push(Box::new(job_type.code()));
        clauses.push(format!("job_type = ?{}", values.len()));
    }
    if let Some(prefix) = filter.name_prefix.filter(|p| !p.is_empty()) {
        // A range, so the name index serves the prefix match.
        let end = prefix_end(&prefix);
        values.push(Box::new(prefix));
        clauses.push(format!("name >= ?{}", values.len()));
        if let Some(end) = end {
            values.push(Box::new(end));
            clauses.push(format!("name < ?{}", values.len()));
        }
    }
    if let Some(due_before) = filter.due_before {
        // A range of the due-time index.
        values.push(Box::new(due_before.timestamp_millis()));
        clauses.push(format!("due_at <= ?{}", values.len()));
    }
    if clauses.is_empty() {
        (String::new(), values)
    } else {
        (format!("WHERE {}", clauses.join(" AND ")), values)
    }
}

/// Maps SQLite errors once: a taken unique key, a busy or unreachable file, or anything else.
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::DuplicateKey,
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(anyhow::anyhow!(e)),
        _ => StoreError::Internal(anyhow::anyhow!(e)),
    }
}
