//! The embedded job store: SQLite (bundled, so nothing is needed from the system) in one file.
//!
//! Each job is a JSON document in `jobs.doc` ([`rows`] maps it), beside the columns the queries
//! filter and order on, so the store reads like the MongoDB adapter's documents; the schema is
//! built by numbered [`migrations`]. SQLite runs in WAL mode with `synchronous = FULL`: a write
//! the API acknowledged survives a crash of the process or of the machine. Several processes
//! may share one file; writes take the database lock (`BEGIN IMMEDIATE`) and wait up to the
//! busy timeout for it.
//!
//! rusqlite is synchronous: writes go to one writer thread, which commits those that arrive
//! together in one transaction, and reads run on tokio's blocking pool over a few read
//! connections of their own ([`writer`]).
//!
//! Apart: the row mapping ([`rows`]), one job's writes inside a transaction ([`writes`]), the
//! scheduler's queries ([`claims`]), the event journal's ([`journal`]), what workers may take
//! ([`offers`]), the schema ([`migrations`]), the census for the metrics ([`census`]) and the
//! connections ([`writer`]).

mod census;
mod claims;
mod journal;
mod migrations;
mod offers;
mod rows;
mod writer;
mod writes;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use self::{
    claims::{CLAIM_IDS, DUE_WITHIN, STILL_CLAIMABLE},
    rows::{JobRow, filter_clause, job_of, map_err, run_of, sql_int},
    writer::Connections,
    writes::{append_events, append_runs, insert_row, replace_job, why_not_written},
};
use super::{RELAY_LEASE, earliest_due_first, from_millis, history_bound};
use crate::{
    domain::{Delivery, Event, Job, JobId, JobType, Run},
    jobs::{
        listing::{ByteBudget, JobFilter, MAX_CLAIM_BYTES, PageRequest},
        ports::{
            Census, Claim, Claimed, ClaimedStep, DEFAULT_RUN_HISTORY, Due, IdempotencyKey,
            JobStore, JournalBounds, Journaled, Lease, Retention, StoreError,
        },
    },
};

/// Prepared statements kept per connection: more than the store's distinct statements (about
/// twenty, and one per listing filter shape), so the hot ones are never parsed again.
const STATEMENT_CACHE: usize = 64;

/// Read connections of a store in a file: the API's gets, the relay and the scheduler's
/// window read seldom wait for one another on two, and each one more is memory held (the
/// memory test's big-job scenario rose by about 20 MiB with four).
const READERS: usize = 2;

/// Page cache of each read connection, in KiB (as SQLite's negative `cache_size`).
const READER_CACHE_KIB: i64 = -512;

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    /// The writer thread's queue and the read connections.
    conns: Arc<Connections>,
    /// Finished runs kept per job.
    history: usize,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file `jobs.db` in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create the data directory {}", dir.display()))?;
        let path = dir.join("jobs.db");
        let open = || {
            let conn = Connection::open(&path)
                .with_context(|| format!("Failed to open {}", path.display()))?;
            prepare(&conn)?;
            anyhow::Ok(conn)
        };
        let mut writer = open()?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        migrations::migrate(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = open()?;
            reader.pragma_update(None, "query_only", true)?;
            // A small page cache each: the operating system caches the file for all of them,
            // and every connection's cache is memory the process holds.
            reader.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
            readers.push(Arc::new(Mutex::new(reader)));
        }
        Self::start(writer, readers)
    }

    /// A private in-memory database, for tests and demos: one connection, which reads and
    /// writes share.
    pub fn in_memory() -> anyhow::Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        prepare(&conn)?;
        migrations::migrate(&mut conn)?;
        Self::start(conn, Vec::new())
    }

    /// The store over its write connection and its read connections.
    fn start(write: Connection, readers: Vec<writer::Shared>) -> anyhow::Result<Self> {
        let conns = Connections::start(Arc::new(Mutex::new(write)), readers)
            .context("Failed to start the embedded store's writer thread")?;
        Ok(Self {
            conns: Arc::new(conns),
            history: DEFAULT_RUN_HISTORY,
        })
    }

    /// The same store, keeping `history` finished runs per job.
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history_bound(history);
        self
    }

    /// Stores many new jobs in one transaction, without idempotency keys or events: for bulk
    /// loads (benchmarks, imports), where one commit per job would dominate.
    pub async fn insert_many(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        let rows = jobs.iter().map(JobRow::of).collect::<Result<Vec<_>, _>>()?;
        self.write(move |tx| {
            for row in &rows {
                insert_row(tx, row, None)?;
            }
            Ok(())
        })
        .await
    }

    /// Runs `f` on a read connection.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.conns.read(f).await
    }

    /// Runs `f` in the next group commit (see [`writer`]): in a transaction, answered once
    /// it is on disk.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.conns.write(f).await
    }
}

/// The settings every connection of the store takes.
fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // Room for every statement the store prepares, so none is parsed again per call.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The rows a query returns, each mapped by `map`; rows it maps to `None` are skipped.
fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[&dyn ToSql],
    map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<Option<T>>,
) -> Result<Vec<T>, StoreError> {
    let rows = stmt.query_map(params, map).map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.map_err(map_err)?);
    }
    Ok(out)
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
        events: &[Event],
    ) -> Result<(), StoreError> {
        let row = JobRow::of(job)?;
        let idempotency = idempotency.cloned();
        let events = events.to_vec();
        self.write(move |tx| {
            insert_row(tx, &row, idempotency.as_ref())?;
            append_events(tx, &events)
        })
        .await
    }

    async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        let key = key.to_owned();
        self.with(move |conn| {
            let found = conn
                .query_row(
                    "SELECT id, doc, idempotency_fingerprint FROM jobs WHERE idempotency_key = ?1",
                    [&key],
                    |row| Ok((job_of(row)?, row.get::<_, String>(2)?)),
                )
                .optional()
                .map_err(map_err)?;
            Ok(found.and_then(|(job, fingerprint)| job.map(|job| (job, fingerprint))))
        })
        .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.with(move |conn| {
            let found = conn
                .query_row(
                    "SELECT id, doc FROM jobs WHERE id = ?1",
                    [id.to_string()],
                    job_of,
                )
                .optional()
                .map_err(map_err)?;
            Ok(found.flatten())
        })
        .await
    }

    async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<(Vec<Job>, u64), StoreError> {
        let filter = filter.clone();
        self.conns
            .read_in_turn(move |conn| {
                let (filter_sql, values) = filter_clause(filter);
                let refs: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
                let total: i64 = conn
                    .query_row(
                        &format!("SELECT COUNT(*) FROM jobs {filter_sql}"),
                        refs.as_slice(),
                        |r| r.get(0),
                    )
                    .map_err(map_err)?;
                let limit = i64::try_from(page.size).unwrap_or(i64::MAX);
                let offset = i64::try_from(page.offset()).unwrap_or(i64::MAX);
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT id, doc FROM jobs {filter_sql}
                     ORDER BY created_at DESC, id DESC LIMIT {limit} OFFSET {offset}"
                    ))
                    .map_err(map_err)?;
                let mut rows = stmt.query(refs.as_slice()).map_err(map_err)?;
                let (mut jobs, mut budget) = (Vec::new(), ByteBudget::page());
                while let Some(row) = rows.next().map_err(map_err)? {
                    if let Some(job) = job_of(row).map_err(map_err)?
                        && !budget.push(&mut jobs, job)
                    {
                        break;
                    }
                }
                Ok((jobs, total.unsigned_abs()))
            })
            .await
    }

    async fn update(
        &self,
        job: &Job,
        expected_version: u64,
        finished: &[Run],
        events: &[Event],
    ) -> Result<(), StoreError> {
        let job = job.clone();
        let finished = finished.to_vec();
        let events = events.to_vec();
        let history = self.history;
        self.write(move |tx| {
            let Some(length) = replace_job(tx, &job, expected_version, None, finished.len())?
            else {
                return Err(why_not_written(tx, job.id));
            };
            append_runs(tx, job.id, &finished, history, length)?;
            append_events(tx, &events)
        })
        .await
    }

    async fn delete(
        &self,
        id: JobId,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let events = events.to_vec();
        self.write(move |tx| {
            let deleted = tx
                .execute(
                    "DELETE FROM jobs WHERE id = ?1 AND version = ?2",
                    params![id.to_string(), sql_int(expected_version)],
                )
                .map_err(map_err)?;
            if deleted == 0 {
                return Err(why_not_written(tx, id));
            }
            tx.execute("DELETE FROM ledger WHERE job_id = ?1", [id.to_string()])
                .map_err(map_err)?;
            append_events(tx, &events)
        })
        .await
    }

    async fn due_within(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let horizon = horizon.timestamp_millis();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(DUE_WITHIN).map_err(map_err)?;
            let rows = stmt
                .query_map(params![horizon, limit], |row| {
                    let id: String = row.get(0)?;
                    let due: i64 = row.get(1)?;
                    let lease: Option<i64> = row.get(2)?;
                    Ok((id, due.max(lease.unwrap_or(i64::MIN))))
                })
                .map_err(map_err)?;
            let mut found = Vec::new();
            for row in rows {
                let (id, at) = row.map_err(map_err)?;
                if let Ok(job) = JobId::parse(&id) {
                    found.push(Due {
                        job,
                        at: from_millis(at),
                    });
                }
            }
            Ok(found)
        })
        .await
    }

    async fn claim(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ids: &[JobId],
    ) -> Result<Claimed, StoreError> {
        let lease = lease.clone();
        let ids = serde_json::to_string(&ids.iter().map(JobId::to_string).collect::<Vec<_>>())
            .map_err(|e| StoreError::Internal(anyhow!(e)))?;
        let now = now.timestamp_millis();
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(CLAIM_IDS).map_err(map_err)?;
            let rows = stmt
                .query_map(
                    params![
                        lease.owner,
                        lease.until.timestamp_millis(),
                        ids,
                        now,
                        MAX_CLAIM_BYTES as i64
                    ],
                    |row| Ok((job_of(row)?, row.get::<_, i64>(2)?)),
                )
                .map_err(map_err)?;
            let mut claims = Vec::new();
            for row in rows {
                if let (Some(job), token) = row.map_err(map_err)? {
                    claims.push(Claim {
                        job,
                        token: token.unsigned_abs(),
                    });
                }
            }
            // What is still claimable was left out for the byte budget.
            let mut still = tx.prepare_cached(STILL_CLAIMABLE).map_err(map_err)?;
            let deferred = still
                .query_map(params![ids, now], |row| row.get::<_, String>(0))
                .map_err(map_err)?
                .filter_map(|id| id.ok().and_then(|id| JobId::parse(&id).ok()))
                .collect();
            Ok(Claimed {
                claims: earliest_due_first(claims),
                deferred,
            })
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
        self.write(move |tx| {
            let mut written = Vec::with_capacity(steps.len());
            for step in &steps {
                // A step whose job changed writes nothing; a failing statement fails the whole
                // batch's transaction, so no step is ever half written.
                let claim = Some((owner.as_str(), step.token));
                let claimed_version = step.job.version.saturating_sub(1);
                let written_job =
                    replace_job(tx, &step.job, claimed_version, claim, step.finished.len())?;
                let Some(length) = written_job else {
                    continue; // changed or claimed by another since this claim
                };
                append_runs(tx, step.job.id, &step.finished, history, length)?;
                append_events(tx, &step.events)?;
                written.push(step.job.id);
            }
            Ok(written)
        })
        .await
    }

    async fn offered(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        job_types: &[JobType],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let job_types = job_types.to_vec();
        self.with(move |conn| offers::offered(conn, delivery, now, &job_types, limit))
            .await
    }

    async fn run_history(&self, job: JobId) -> Result<Vec<Run>, StoreError> {
        let history = self.history as i64;
        self.with(move |conn| {
            // The newest `history`: the ledger may hold a few more until its next trim.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, doc FROM (
                         SELECT seq, run_id, doc FROM ledger WHERE job_id = ?1
                         ORDER BY seq DESC LIMIT ?2)
                     ORDER BY seq",
                )
                .map_err(map_err)?;
            collect(&mut stmt, &[&job.to_string(), &history], run_of)
        })
        .await
    }

    async fn take_relay_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let lease = lease.clone();
        self.write(move |conn| {
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
                        lease.until.timestamp_millis(),
                        now.timestamp_millis()
                    ])
                })
                .map_err(map_err)?;
            Ok(taken == 1)
        })
        .await
    }

    async fn sequence_events(&self, _limit: usize) -> Result<usize, StoreError> {
        // Every event got its place in the write that stored it.
        Ok(0)
    }

    async fn read_journal(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError> {
        self.with(move |conn| journal::read(conn, after, job, limit))
            .await
    }

    async fn journal_bounds(&self) -> Result<JournalBounds, StoreError> {
        self.with(|conn| journal::bounds(conn).map_err(map_err))
            .await
    }

    async fn trim_journal(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Where the cut falls is read first, so a trim with nothing to drop writes nothing.
        let cut = self
            .with(move |conn| journal::cut(conn, retention, floor, now))
            .await?;
        let Some(cut) = cut else { return Ok(0) };
        self.write(move |tx| journal::drop_through(tx, cut)).await
    }

    async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| journal::cursor(conn, &name)).await
    }

    async fn set_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |tx| journal::set_cursor(tx, &name, seq))
            .await
    }

    async fn census(&self, now: DateTime<Utc>) -> Result<Census, StoreError> {
        let now = now.timestamp_millis();
        self.with(move |conn| census::count(conn, now).map_err(map_err))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduler's queries: each must find its rows from an index, whatever the number of
    /// stored jobs, never by reading every job.
    #[test]
    fn the_schedulers_queries_read_an_index_not_the_jobs() {
        let store = SqliteStore::in_memory().unwrap();
        let conn = writer::lock(store.conns.reader());
        for query in [
            DUE_WITHIN,
            CLAIM_IDS,
            STILL_CLAIMABLE,
            offers::OFFERED_PULL,
            offers::OFFERED_HOOK,
        ] {
            // The plan of the query with its parameters unbound (NULL).
            let mut statement = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap();
            let mut rows = statement.raw_query();
            let mut plan: Vec<String> = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                plan.push(row.get(3).unwrap());
            }
            assert!(
                plan.iter().any(|step| step.contains("jobs USING")),
                "{query}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN jobs")),
                "{query}: {plan:?}"
            );
        }
    }
}
