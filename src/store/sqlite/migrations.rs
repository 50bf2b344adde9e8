//! The embedded store's schema, as numbered migrations. A file's `PRAGMA user_version` is the
//! number of the last migration applied to it; opening a file applies the ones after it, all in
//! one transaction, so a crash mid-way leaves the file as it was, and of several processes
//! opening one file at once the first migrates it and the others find it done.
//!
//! Files made before the migrations were numbered have version 0 and some of these steps
//! already applied (by the same statements): every step is therefore written to be a no-op
//! where it was already done. Append new steps; never edit one that has shipped.

use rusqlite::Connection;

/// One step of the schema's history.
struct Migration {
    /// What it adds, for the log and for errors.
    what: &'static str,
    apply: fn(&Connection) -> rusqlite::Result<()>,
}

/// The schema's history, oldest first: migration `n` (from 1) takes a file to version `n`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        what: "the jobs table, with the columns the queries filter and order on",
        apply: |conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS jobs (
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
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at, id);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs(name);",
            )
        },
    },
    Migration {
        what: "the outbox and the relay's lease",
        apply: |conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
);",
            )
        },
    },
    Migration {
        // Files from before the ledger have a `runs` table of an earlier layout, which
        // nothing reads since; it is left as it was rather than deleted.
        what: "the run ledger",
        apply: |conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_job ON ledger(job_id, seq);",
            )
        },
    },
    Migration {
        // The claim asks for due jobs whatever their status (a paused job's open run still
        // times out), so the index of the first layout, on (status, due_at), went.
        what: "the due-time index on due_at alone",
        apply: |conn| {
            conn.execute_batch(
                "DROP INDEX IF EXISTS jobs_due;
CREATE INDEX IF NOT EXISTS jobs_due_at ON jobs(due_at) WHERE due_at IS NOT NULL;",
            )
        },
    },
    Migration {
        what: "the fencing token of each job's claims",
        apply: |conn| {
            if !has_column(conn, "fence")? {
                conn.execute_batch("ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0")?;
            }
            Ok(())
        },
    },
    Migration {
        // Counted so that the ledger is trimmed once per few appends, not on every fire.
        what: "the length of each job's ledger",
        apply: |conn| {
            if !has_column(conn, "ledger_runs")? {
                conn.execute_batch(
                    "ALTER TABLE jobs ADD COLUMN ledger_runs INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET ledger_runs = (SELECT COUNT(*) FROM ledger WHERE ledger.job_id = jobs.id);",
                )?;
            }
            Ok(())
        },
    },
    Migration {
        // The metrics count jobs per status on an interval: from this index alone.
        what: "the status index",
        apply: |conn| conn.execute_batch("CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);"),
    },
    Migration {
        // The outbox becomes the journal: every event is written to it, and kept for the
        // retention window. Its rows so far are the events still to publish, which a
        // publishing cursor at 0 finds first. `AUTOINCREMENT` already keeps a place from ever
        // being given twice, even after the rows before it were trimmed.
        what: "the event journal, its cursors and the index of one job's events",
        apply: |conn| {
            conn.execute_batch(
                "ALTER TABLE outbox RENAME TO events;
ALTER TABLE events ADD COLUMN time INTEGER;
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);",
            )
        },
    },
    Migration {
        // When a job's open run is first offered to pulling workers, and to the webhook
        // caller: what their claims look up, from an index each. Rows written before have
        // no such runs.
        what: "the times open runs are offered to workers and to the webhook caller",
        apply: |conn| {
            conn.execute_batch(
                "ALTER TABLE jobs ADD COLUMN pull_at INTEGER;
ALTER TABLE jobs ADD COLUMN hook_at INTEGER;
CREATE INDEX IF NOT EXISTS jobs_pull_at ON jobs(pull_at) WHERE pull_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_hook_at ON jobs(hook_at) WHERE hook_at IS NOT NULL;",
            )
        },
    },
    Migration {
        // A listing filtered by status or type reads its page, newest first, from an index of
        // its own instead of sorting every matching row (the dashboard's filters, with 100,000
        // jobs stored: 122 ms a page by status before, see BENCHMARKS.md). The status index
        // alone is its prefix, so it goes.
        what: "the listing's indexes by status and by type, newest first",
        apply: |conn| {
            conn.execute_batch(
                "CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs(status, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_type_created ON jobs(job_type, created_at, id);
DROP INDEX IF EXISTS jobs_status;",
            )
        },
    },
];

/// Whether the jobs table has `column` (added by a step that older files may lack).
fn has_column(conn: &Connection, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1")?
        .exists([column])
}

/// The version a fully migrated file has.
pub(super) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies the migrations the file lacks, in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    use anyhow::Context;

    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .context("Failed to lock the embedded store to migrate it")?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > latest() {
        anyhow::bail!(
            "the embedded store is at schema version {version}, newer than this build knows ({}): run a newer scheduler",
            latest()
        );
    }
    for (number, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        (migration.apply)(&tx).with_context(|| {
            format!(
                "Failed to migrate the embedded store to version {} ({})",
                number + 1,
                migration.what
            )
        })?;
        tracing::debug!(
            version = number + 1,
            what = migration.what,
            "embedded store migrated"
        );
    }
    tx.pragma_update(None, "user_version", latest())?;
    tx.commit()
        .context("Failed to commit the embedded store's migration")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut statement = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_new_file_gets_every_migration_and_a_second_run_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), latest());
        assert!(columns(&conn, "jobs").contains(&"fence".to_owned()));
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), latest());
    }

    #[test]
    fn the_outbox_becomes_the_journal_keeping_its_rows_and_never_giving_a_place_twice() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..7] {
            (migration.apply)(&tx).unwrap();
        }
        tx.pragma_update(None, "user_version", 7).unwrap();
        // Two events delivered (deleted), one pending.
        tx.execute_batch(
            "INSERT INTO outbox (event_id, job_id, doc) VALUES ('e1', 'a', '{}'), ('e2', 'a', '{}'),
                 ('e3', 'b', '{}');
             DELETE FROM outbox WHERE seq < 3;",
        )
        .unwrap();
        tx.commit().unwrap();
        migrate(&mut conn).unwrap();
        let kept: Vec<(i64, String, Option<i64>)> = conn
            .prepare("SELECT seq, event_id, time FROM events")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept, [(3, "e3".to_owned(), None)]);
        conn.execute_batch("DELETE FROM events; INSERT INTO events (event_id, job_id, doc) VALUES ('e4', 'b', '{}');")
            .unwrap();
        let next: i64 = conn
            .query_row("SELECT seq FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(next, 4, "a place is never given twice");
    }

    #[test]
    fn a_file_from_before_numbered_migrations_is_brought_up_to_date_keeping_its_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        // The layout of the first releases: the (status, due_at) index, a runs table, no
        // ledger, outbox or fencing token, and version 0.
        conn.execute_batch(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL, name TEXT NOT NULL,
                 status INTEGER NOT NULL, job_type INTEGER NOT NULL, due_at INTEGER,
                 created_at INTEGER NOT NULL, version INTEGER NOT NULL, lease_owner TEXT,
                 lease_until INTEGER, idempotency_key TEXT UNIQUE, idempotency_fingerprint TEXT);
             CREATE INDEX jobs_due ON jobs(status, due_at);
             CREATE TABLE runs (run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL,
                 fired_at INTEGER NOT NULL, doc TEXT NOT NULL);
             INSERT INTO jobs (id, doc, name, status, job_type, created_at, version)
                 VALUES ('65a1b2c3d4e5f60718293a01', '{}', 'old job', 2, 1, 0, 1);
             INSERT INTO runs VALUES ('r', '65a1b2c3d4e5f60718293a01', 0, '{}');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), latest());
        assert!(columns(&conn, "jobs").contains(&"fence".to_owned()));
        assert!(!columns(&conn, "ledger").is_empty());
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(indexes.contains(&"jobs_due_at".to_owned()), "{indexes:?}");
        assert!(!indexes.contains(&"jobs_due".to_owned()), "{indexes:?}");
        let kept: (String, i64) = conn
            .query_row("SELECT name, fence FROM jobs", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, ("old job".to_owned(), 0));
        let runs: i64 = conn
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 1, "the old runs are left as they were");
    }

    #[test]
    fn a_file_with_ledgers_gets_each_jobs_ledger_length_counted() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..5] {
            (migration.apply)(&tx).unwrap();
        }
        tx.pragma_update(None, "user_version", 5).unwrap();
        tx.execute_batch(
            "INSERT INTO jobs (id, doc, name, status, job_type, created_at, version)
                 VALUES ('a', '{}', 'three runs', 2, 1, 0, 1), ('b', '{}', 'none', 2, 1, 0, 1);
             INSERT INTO ledger (job_id, run_id, doc)
                 VALUES ('a', 'r1', '{}'), ('a', 'r2', '{}'), ('a', 'r3', '{}');",
        )
        .unwrap();
        tx.commit().unwrap();
        migrate(&mut conn).unwrap();
        let lengths: Vec<(String, i64)> = conn
            .prepare("SELECT id, ledger_runs FROM jobs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lengths, [("a".to_owned(), 3), ("b".to_owned(), 0)]);
    }

    #[test]
    fn a_file_from_a_newer_build_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", latest() + 1)
            .unwrap();
        let error = migrate(&mut conn).unwrap_err().to_string();
        assert!(error.contains("newer"), "{error}");
    }
}
