//! The embedded store's event journal: the `events` table, whose `seq` (`AUTOINCREMENT`) is
//! each event's place. Events are appended by the write that stores their change
//! ([`super::writes::append_events`]), so places follow the order of the commits; these are
//! its reads, its trim and its cursors.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::rows::{journaled_of, map_err, sql_int};
use crate::{
    domain::JobId,
    jobs::{
        listing::ByteBudget,
        ports::{JournalBounds, Journaled, Retention, StoreError},
    },
};

/// Up to `limit` events after `after`, of every job or of `job` only (from the index of one
/// job's events), within a page's byte budget.
pub(super) fn read(
    conn: &mut Connection,
    after: u64,
    job: Option<JobId>,
    limit: usize,
) -> Result<Vec<Journaled>, StoreError> {
    let after = sql_int(after);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let job = job.map(|id| id.to_string());
    let mut stmt = match job {
        None => conn.prepare_cached(
            "SELECT seq, event_id, doc FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        ),
        Some(_) => conn.prepare_cached(
            "SELECT seq, event_id, doc FROM events WHERE job_id = ?3 AND seq > ?1
             ORDER BY seq LIMIT ?2",
        ),
    }
    .map_err(map_err)?;
    let mut params: Vec<&dyn ToSql> = vec![&after, &limit];
    if let Some(job) = &job {
        params.push(job);
    }
    let mut rows = stmt.query(params.as_slice()).map_err(map_err)?;
    let (mut events, mut budget) = (Vec::new(), ByteBudget::page());
    while let Some(row) = rows.next().map_err(map_err)? {
        if let Some(journaled) = journaled_of(row).map_err(map_err)?
            && !budget.push(&mut events, journaled)
        {
            break;
        }
    }
    Ok(events)
}

/// The journal's ends: the newest place ever given (kept by `AUTOINCREMENT` even when every
/// event was trimmed) and the oldest event kept.
pub(super) fn bounds(conn: &Connection) -> rusqlite::Result<JournalBounds> {
    let (first, head): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT MIN(seq) FROM events),
                    (SELECT seq FROM sqlite_sequence WHERE name = 'events')",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let head = head.map_or(0, i64::unsigned_abs);
    Ok(JournalBounds {
        first: first.map_or(head + 1, i64::unsigned_abs),
        head,
    })
}

/// The last place `retention` drops at `now`, never past `floor`; `None` when nothing goes.
pub(super) fn cut(
    conn: &mut Connection,
    retention: Retention,
    floor: u64,
    now: DateTime<Utc>,
) -> Result<Option<u64>, StoreError> {
    let bounds = bounds(conn).map_err(map_err)?;
    // The first event young enough to keep: found from the oldest on, so only the events
    // about to go are read.
    let cutoff = (now - retention.age).timestamp_millis();
    let young: Option<i64> = conn
        .prepare_cached("SELECT seq FROM events WHERE time >= ?1 ORDER BY seq LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([cutoff], |r| r.get(0)).optional())
        .map_err(map_err)?;
    let by_age = young.map_or(bounds.head, |seq| seq.unsigned_abs() - 1);
    let by_count = bounds.head.saturating_sub(retention.events);
    let cut = by_age.max(by_count).min(floor);
    Ok((cut >= bounds.first).then_some(cut))
}

/// Drops the events up to `cut`; how many went.
pub(super) fn drop_through(tx: &Connection, cut: u64) -> Result<u64, StoreError> {
    let dropped = tx
        .prepare_cached("DELETE FROM events WHERE seq <= ?1")
        .and_then(|mut stmt| stmt.execute([sql_int(cut)]))
        .map_err(map_err)?;
    Ok(dropped as u64)
}

/// Where cursor `name` stands; 0 when it was never set.
pub(super) fn cursor(conn: &mut Connection, name: &str) -> Result<u64, StoreError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM cursors WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
        .map_err(map_err)?;
    Ok(seq.map_or(0, i64::unsigned_abs))
}

/// Moves cursor `name` to `seq`.
pub(super) fn set_cursor(tx: &Connection, name: &str, seq: u64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO cursors (name, seq) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
    )
    .and_then(|mut stmt| stmt.execute(params![name, sql_int(seq)]))
    .map_err(map_err)?;
    Ok(())
}
