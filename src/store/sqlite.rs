//! The embedded job store: SQLite (bundled, so nothing is needed from the system) in one file.
//!
//! Each job is a JSON document in `jobs.doc`, beside the columns the queries filter and order on,
//! so the store reads like the MongoDB adapter's documents. SQLite runs in WAL mode with
//! `synchronous = FULL`: a write the API acknowledged survives a crash of the process or of the
//! machine. Several processes may share one file; writes take the database lock
//! (`BEGIN IMMEDIATE`) and wait up to the busy timeout for it.
//!
//! rusqlite is synchronous: each call runs on tokio's blocking pool, holding the one connection.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior, params};

use uuid::Uuid;

use super::{Fire, IdempotencyKey, JobFilter, JobStore, Lease, Outbox, PageRequest, StoreError};
use crate::{
    domain::{Job, JobId, JobStatus, Run, RunId},
    events::Event,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    name TEXT NOT NULL,
    status INTEGER NOT NULL,
    job_type INTEGER NOT NULL,
    due_at INTEGER,
    created_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    idempotency_key TEXT UNIQUE,
    idempotency_fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(status, due_at);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at, id);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    fired_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job_id, fired_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
);
";

/// The name of the relay's row in `leases`.
const RELAY_LEASE: &str = "outbox-relay";

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    /// The one connection; SQLite serialises writers anyway.
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file `jobs.db` in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create the data directory {}", dir.display()))?;
        let path = dir.join("jobs.db");
        let conn = Connection::open(&path)
            .with_context(|| format!("Failed to open {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> anyhow::Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> anyhow::Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .context("Failed to create the embedded store's schema")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: SQLite rolls back
            // the unfinished transaction when it is dropped.
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(anyhow!(e)))?
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::DuplicateKey,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(anyhow!(e))
        }
        Some(ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(anyhow!(e))
        }
        _ => StoreError::Internal(anyhow!(e)),
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Decodes a stored document; a malformed one is logged and skipped, never a panic.
fn decode<T: serde::de::DeserializeOwned>(kind: &str, id: &str, doc: &str) -> Option<T> {
    match serde_json::from_str(doc) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(%error, kind, id, "skipping a malformed stored document");
            None
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(anyhow!(e)))
}

/// The due time the claim query sees: only scheduled jobs are due.
fn due_at(job: &Job) -> Option<i64> {
    (job.status == JobStatus::Scheduled)
        .then_some(job.schedule_time)
        .flatten()
        .map(millis)
}

fn read_jobs(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[&dyn ToSql],
) -> Result<Vec<Job>, StoreError> {
    let rows = stmt
        .query_map(params, |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(map_err)?;
    let mut jobs = Vec::new();
    for row in rows {
        let (id, doc) = row.map_err(map_err)?;
        jobs.extend(decode::<Job>("job", &id, &doc));
    }
    Ok(jobs)
}

/// Replaces a job's row if it has `expected_version` (and, with `owner`, is held by that owner).
fn replace_job(
    tx: &Connection,
    job: &Job,
    expected_version: u64,
    owner: Option<&str>,
) -> Result<bool, StoreError> {
    let doc = encode(job)?;
    let changed = tx
        .prepare_cached(
            "UPDATE jobs SET doc = ?1, name = ?2, status = ?3, job_type = ?4, due_at = ?5,
                 version = ?6, lease_owner = NULL, lease_until = NULL
             WHERE id = ?7 AND version = ?8 AND (?9 IS NULL OR lease_owner = ?9)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                doc,
                job.name,
                job.status.code(),
                job.job_type.code(),
                due_at(job),
                job.version as i64,
                job.id.to_string(),
                expected_version as i64,
                owner,
            ])
        })
        .map_err(map_err)?;
    Ok(changed == 1)
}

/// What a run write does when the run id exists already.
#[derive(Clone, Copy)]
enum OnExisting {
    /// A fire never overwrites a run: the write is skipped.
    Keep,
    /// A result replaces the run's document.
    Replace,
}

/// Writes a run; returns whether a row was written.
fn write_run(tx: &Connection, run: &Run, on_existing: OnExisting) -> Result<bool, StoreError> {
    let doc = encode(run)?;
    let sql = match on_existing {
        OnExisting::Keep => {
            "INSERT INTO runs (run_id, job_id, fired_at, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(run_id) DO NOTHING"
        }
        OnExisting::Replace => {
            "INSERT INTO runs (run_id, job_id, fired_at, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(run_id) DO UPDATE SET doc = excluded.doc"
        }
    };
    let written = tx
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                run.run_id.to_string(),
                run.job_id.to_string(),
                millis(run.fired_at),
                doc
            ])
        })
        .map_err(map_err)?;
    Ok(written == 1)
}

/// Appends an event to the outbox, inside the caller's transaction.
fn append_event(tx: &Connection, event: Option<&Event>) -> Result<(), StoreError> {
    let Some(event) = event else {
        return Ok(());
    };
    tx.prepare_cached("INSERT INTO outbox (event_id, job_id, doc) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| {
            stmt.execute(params![
                event.id.to_string(),
                event.job.id.to_string(),
                encode(event).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?
            ])
        })
        .map_err(map_err)?;
    Ok(())
}

/// Whether a job row exists: tells a version conflict from a deleted job.
fn job_exists(tx: &Connection, id: JobId) -> Result<bool, StoreError> {
    Ok(tx
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id.to_string()], |_| {
            Ok(())
        })
        .optional()
        .map_err(map_err)?
        .is_some())
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    async fn insert(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let job = job.clone();
        let idempotency = idempotency.cloned();
        let event = outbox.cloned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            tx.execute(
                "INSERT INTO jobs (id, doc, name, status, job_type, due_at, created_at, version,
                     idempotency_key, idempotency_fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    job.id.to_string(),
                    encode(&job)?,
                    job.name,
                    job.status.code(),
                    job.job_type.code(),
                    due_at(&job),
                    millis(job.created_at),
                    job.version as i64,
                    idempotency.as_ref().map(|k| k.key.as_str()),
                    idempotency.as_ref().map(|k| k.fingerprint.as_str()),
                ],
            )
            .map_err(map_err)?;
            append_event(&tx, event.as_ref())?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        let key = key.to_owned();
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "SELECT id, doc, idempotency_fingerprint FROM jobs WHERE idempotency_key = ?1",
                    [&key],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(map_err)?;
            Ok(row.and_then(|(id, doc, fingerprint)| {
                decode::<Job>("job", &id, &doc).map(|job| (job, fingerprint))
            }))
        })
        .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.with(move |conn| {
            let id = id.to_string();
            let doc = conn
                .query_row("SELECT doc FROM jobs WHERE id = ?1", [&id], |row| {
                    row.get::<_, String>(0)
                })
                .optional()
                .map_err(map_err)?;
            Ok(doc.and_then(|doc| decode("job", &id, &doc)))
        })
        .await
    }

    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        let filter = filter.clone();
        self.with(move |conn| {
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
                values.push(Box::new(format!("{prefix}{}", char::MAX)));
                values.push(Box::new(prefix));
                clauses.push(format!(
                    "name >= ?{} AND name < ?{}",
                    values.len(),
                    values.len() - 1
                ));
            }
            let filter_sql = if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            };
            let refs: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
            let total: i64 = conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM jobs {filter_sql}"),
                    refs.as_slice(),
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT id, doc FROM jobs {filter_sql}
                     ORDER BY created_at DESC, id DESC LIMIT {} OFFSET {}",
                    page.size as i64,
                    page.offset() as i64
                ))
                .map_err(map_err)?;
            let jobs = read_jobs(&mut stmt, &refs)?;
            Ok((jobs, total as u64))
        })
        .await
    }

    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        run: Option<&Run>,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let job = job.clone();
        let run = run.cloned();
        let event = outbox.cloned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            if !replace_job(&tx, &job, expected_version, None)? {
                return Err(if job_exists(&tx, job.id)? {
                    StoreError::VersionConflict
                } else {
                    StoreError::NotFound
                });
            }
            if let Some(run) = &run {
                write_run(&tx, run, OnExisting::Replace)?;
            }
            append_event(&tx, event.as_ref())?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let event = outbox.cloned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let deleted = tx
                .execute(
                    "DELETE FROM jobs WHERE id = ?1 AND version = ?2",
                    params![id.to_string(), expected_version as i64],
                )
                .map_err(map_err)?;
            if deleted == 0 {
                return Err(if job_exists(&tx, id)? {
                    StoreError::VersionConflict
                } else {
                    StoreError::NotFound
                });
            }
            tx.execute("DELETE FROM runs WHERE job_id = ?1", [id.to_string()])
                .map_err(map_err)?;
            append_event(&tx, event.as_ref())?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|conn| {
            let due: Option<i64> = conn
                .query_row(
                    "SELECT MIN(due_at) FROM jobs WHERE status = ?1 AND lease_until IS NULL",
                    [JobStatus::Scheduled.code()],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            let lapse: Option<i64> = conn
                .query_row(
                    "SELECT MIN(lease_until) FROM jobs WHERE lease_until IS NOT NULL",
                    [],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            Ok(due.into_iter().chain(lapse).min().map(from_millis))
        })
        .await
    }

    async fn claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let lease = lease.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut jobs = {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET lease_owner = ?1, lease_until = ?2
                         WHERE id IN (
                             SELECT id FROM jobs
                             WHERE status = ?3 AND due_at <= ?4
                               AND (lease_until IS NULL OR lease_until < ?4)
                             ORDER BY due_at LIMIT ?5)
                         RETURNING id, doc",
                    )
                    .map_err(map_err)?;
                read_jobs(
                    &mut stmt,
                    params![
                        lease.owner,
                        millis(lease.until),
                        JobStatus::Scheduled.code(),
                        millis(now),
                        limit as i64
                    ],
                )?
            };
            tx.commit().map_err(map_err)?;
            jobs.sort_by_key(|j| j.schedule_time);
            Ok(jobs)
        })
        .await
    }

    async fn record_fires(&self, lease: &Lease, fires: &[Fire]) -> Result<Vec<JobId>, StoreError> {
        let owner = lease.owner.clone();
        let fires = fires.to_vec();
        self.with(move |conn| {
            let mut tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut written = Vec::with_capacity(fires.len());
            for Fire { job, run, event } in &fires {
                // Each fire in its own savepoint: one that cannot be written leaves no trace.
                let fire = tx.savepoint().map_err(map_err)?;
                if !replace_job(&fire, job, job.version - 1, Some(&owner))? {
                    continue; // changed or taken over since the claim
                }
                if write_run(&fire, run, OnExisting::Keep)? {
                    append_event(&fire, event.as_ref())?;
                    fire.commit().map_err(map_err)?;
                    written.push(job.id);
                } else {
                    tracing::error!(job = %job.id, run = %run.run_id,
                        "a run with this id exists already; the fire is not recorded");
                }
            }
            tx.commit().map_err(map_err)?;
            Ok(written)
        })
        .await
    }

    async fn get_run(&self, job: JobId, run: RunId) -> Result<Option<Run>, StoreError> {
        self.with(move |conn| {
            let run_id = run.to_string();
            let doc = conn
                .query_row(
                    "SELECT doc FROM runs WHERE run_id = ?1 AND job_id = ?2",
                    [&run_id, &job.to_string()],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                .map_err(map_err)?;
            Ok(doc.and_then(|doc| decode("run", &run_id, &doc)))
        })
        .await
    }

    async fn list_runs(
        &self,
        job: JobId,
        page: PageRequest,
    ) -> Result<(Vec<Run>, u64), StoreError> {
        self.with(move |conn| {
            let job = job.to_string();
            let total: i64 = conn
                .query_row("SELECT COUNT(*) FROM runs WHERE job_id = ?1", [&job], |r| {
                    r.get(0)
                })
                .map_err(map_err)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, doc FROM runs WHERE job_id = ?1
                     ORDER BY fired_at DESC, run_id DESC LIMIT ?2 OFFSET ?3",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![job, page.size as i64, page.offset() as i64],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .map_err(map_err)?;
            let mut runs = Vec::new();
            for row in rows {
                let (id, doc) = row.map_err(map_err)?;
                runs.extend(decode::<Run>("run", &id, &doc));
            }
            Ok((runs, total as u64))
        })
        .await
    }

    async fn take_relay_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.with(move |conn| {
            let taken = conn
                .prepare_cached(
                    "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, until = excluded.until
                     WHERE leases.owner = excluded.owner OR leases.until < ?4",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        RELAY_LEASE,
                        lease.owner,
                        millis(lease.until),
                        millis(now)
                    ])
                })
                .map_err(map_err)?;
            Ok(taken == 1)
        })
        .await
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT event_id, doc FROM outbox ORDER BY seq LIMIT ?1")
                .map_err(map_err)?;
            let rows = stmt
                .query_map([limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(map_err)?;
            let mut events = Vec::new();
            for row in rows {
                let (id, doc) = row.map_err(map_err)?;
                events.extend(decode::<Event>("event", &id, &doc));
            }
            Ok(events)
        })
        .await
    }

    async fn mark_delivered(&self, events: &[(JobId, Uuid)]) -> Result<(), StoreError> {
        let ids: Vec<String> = events.iter().map(|(_, id)| id.to_string()).collect();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM outbox WHERE event_id = ?1")
                    .map_err(map_err)?;
                for id in &ids {
                    stmt.execute([id]).map_err(map_err)?;
                }
            }
            tx.commit().map_err(map_err)
        })
        .await
    }
}
