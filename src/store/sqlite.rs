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

use super::{
    Claim, ClaimedStep, DEFAULT_RUN_HISTORY, IdempotencyKey, JobFilter, JobStore, Lease, Outbox,
    PageRequest, StoreError,
};
use crate::{
    domain::{Job, JobId, Run},
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
DROP INDEX IF EXISTS jobs_due;
CREATE INDEX IF NOT EXISTS jobs_due_at ON jobs(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at, id);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_job ON ledger(job_id, seq);
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
    /// Finished runs kept per job.
    history: usize,
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
        add_fence_column(&conn).context("Failed to add the fencing token column")?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            history: DEFAULT_RUN_HISTORY,
        })
    }

    /// The same store, keeping `history` finished runs per job.
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(1);
        self
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

/// Files made before fencing tokens existed lack the column.
fn add_fence_column(conn: &Connection) -> rusqlite::Result<()> {
    let has = conn
        .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'fence'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
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

/// The due time the claim query sees.
fn due_at(job: &Job) -> Option<i64> {
    job.due_at().map(millis)
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

/// Replaces a job's row if it has `expected_version` (and, with a claim, is held by that owner
/// under that fencing token).
fn replace_job(
    tx: &Connection,
    job: &Job,
    expected_version: u64,
    claim: Option<(&str, u64)>,
) -> Result<bool, StoreError> {
    let doc = encode(job)?;
    let changed = tx
        .prepare_cached(
            "UPDATE jobs SET doc = ?1, name = ?2, status = ?3, job_type = ?4, due_at = ?5,
                 version = ?6, lease_owner = NULL, lease_until = NULL
             WHERE id = ?7 AND version = ?8 AND (?9 IS NULL OR (lease_owner = ?9 AND fence = ?10))",
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
                claim.map(|(owner, _)| owner),
                claim.map(|(_, token)| token as i64),
            ])
        })
        .map_err(map_err)?;
    Ok(changed == 1)
}

/// Appends finished runs to a job's ledger and drops its records beyond `history`.
fn append_runs(
    tx: &Connection,
    job: JobId,
    finished: &[Run],
    history: usize,
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
            stmt.execute(params![job, run.run_id.to_string(), encode(run)?])
                .map_err(map_err)?;
        }
    }
    tx.prepare_cached(
        "DELETE FROM ledger WHERE job_id = ?1 AND seq <= (
             SELECT seq FROM ledger WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
    )
    .and_then(|mut stmt| stmt.execute(params![job, history as i64]))
    .map_err(map_err)?;
    Ok(())
}

/// Appends events to the outbox, inside the caller's transaction.
fn append_events(tx: &Connection, events: &[Event]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached("INSERT INTO outbox (event_id, job_id, doc) VALUES (?1, ?2, ?3)")
        .map_err(map_err)?;
    for event in events {
        stmt.execute(params![
            event.id.to_string(),
            event.job.id.to_string(),
            encode(event)?
        ])
        .map_err(map_err)?;
    }
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
        let events = outbox.to_vec();
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
            append_events(&tx, &events)?;
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
        finished: &[Run],
        outbox: Outbox<'_>,
    ) -> Result<(), StoreError> {
        let job = job.clone();
        let finished = finished.to_vec();
        let events = outbox.to_vec();
        let history = self.history;
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
            append_runs(&tx, job.id, &finished, history)?;
            append_events(&tx, &events)?;
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
        let events = outbox.to_vec();
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
            tx.execute("DELETE FROM ledger WHERE job_id = ?1", [id.to_string()])
                .map_err(map_err)?;
            append_events(&tx, &events)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|conn| {
            let due: Option<i64> = conn
                .query_row(
                    "SELECT MIN(due_at) FROM jobs WHERE lease_until IS NULL",
                    [],
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
    ) -> Result<Vec<Claim>, StoreError> {
        let lease = lease.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut claims = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET lease_owner = ?1, lease_until = ?2, fence = fence + 1
                         WHERE id IN (
                             SELECT id FROM jobs
                             WHERE due_at <= ?3
                               AND (lease_until IS NULL OR lease_until < ?3)
                             ORDER BY due_at LIMIT ?4)
                         RETURNING id, doc, fence",
                    )
                    .map_err(map_err)?;
                let rows = stmt
                    .query_map(
                        params![lease.owner, millis(lease.until), millis(now), limit as i64],
                        |row| {
                            Ok((
                                row.get::<_, String>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, i64>(2)?,
                            ))
                        },
                    )
                    .map_err(map_err)?;
                for row in rows {
                    let (id, doc, token) = row.map_err(map_err)?;
                    if let Some(job) = decode::<Job>("job", &id, &doc) {
                        claims.push(Claim {
                            job,
                            token: token as u64,
                        });
                    }
                }
            }
            tx.commit().map_err(map_err)?;
            claims.sort_by_key(|c| c.job.due_at());
            Ok(claims)
        })
        .await
    }

    async fn record_steps(
        &self,
        lease: &Lease,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        let owner = lease.owner.clone();
        let steps = steps.to_vec();
        let history = self.history;
        self.with(move |conn| {
            let mut tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut written = Vec::with_capacity(steps.len());
            for step in &steps {
                // Each step in its own savepoint: one that cannot be written leaves no trace.
                let savepoint = tx.savepoint().map_err(map_err)?;
                let claim = Some((owner.as_str(), step.token));
                if !replace_job(&savepoint, &step.job, step.job.version - 1, claim)? {
                    continue; // changed or claimed by another since this claim
                }
                append_runs(&savepoint, step.job.id, &step.finished, history)?;
                append_events(&savepoint, &step.events)?;
                savepoint.commit().map_err(map_err)?;
                written.push(step.job.id);
            }
            tx.commit().map_err(map_err)?;
            Ok(written)
        })
        .await
    }

    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT run_id, doc FROM ledger WHERE job_id = ?1 ORDER BY seq")
                .map_err(map_err)?;
            let rows = stmt
                .query_map([job.to_string()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(map_err)?;
            let mut runs = Vec::new();
            for row in rows {
                let (id, doc) = row.map_err(map_err)?;
                runs.extend(decode::<Run>("run", &id, &doc));
            }
            Ok(runs)
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
