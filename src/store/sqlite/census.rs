//! The embedded store's census for the metrics: a count per status from the status index, a
//! range of the due-time index, and the journal's events after the publishing cursor.

use rusqlite::{Connection, OptionalExtension};

use super::rows::event_of;
use crate::{
    domain::JobStatus,
    jobs::ports::{Census, PUBLISHED},
    store::from_millis,
};

/// Counts what the store holds at `now` (milliseconds since the epoch).
pub(super) fn count(conn: &mut Connection, now: i64) -> rusqlite::Result<Census> {
    let mut jobs = Vec::new();
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)?)))? {
        let (code, n) = row?;
        // A status no build knows is nobody's to count.
        if let Some(status) = JobStatus::from_code(code) {
            jobs.push((status, n.max(0) as u64));
        }
    }
    let (due, oldest_due): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(due_at) FROM jobs
             WHERE due_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)",
        )?
        .query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // Events wait only for a publisher, and only once one has a cursor.
    let published: Option<i64> = conn
        .prepare_cached("SELECT seq FROM cursors WHERE name = ?1")?
        .query_row([PUBLISHED], |r| r.get(0))
        .optional()?;
    let (pending, oldest_event) = match published {
        None => (0, None),
        Some(after) => {
            let pending: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM events WHERE seq > ?1")?
                .query_row([after], |r| r.get(0))?;
            let oldest = conn
                .prepare_cached(
                    "SELECT event_id, doc FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1",
                )?
                .query_row([after], event_of)
                .optional()?
                .flatten()
                .map(|event| event.time);
            (pending, oldest)
        }
    };
    Ok(Census {
        jobs,
        due: due.max(0) as u64,
        oldest_due: oldest_due.map(from_millis),
        outbox_pending: pending.max(0) as u64,
        oldest_event,
    })
}
