//! The scheduler's queries of the embedded store: the window read and the claim by ids, each
//! served by an index (the test in `super` checks their plans).

/// The scheduler's window read: the jobs that may be claimable by `?1`, from the due-time
/// index, earliest due first (a lapsing lease is read from the row the index found).
pub(super) const DUE_WITHIN: &str = "SELECT id, due_at, lease_until FROM jobs
     WHERE due_at IS NOT NULL AND due_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
     ORDER BY due_at LIMIT ?2";

/// The claim by ids: leases those of `?3` (a JSON array) due at `?4` that nobody holds,
/// earliest due first while the documents before each take less than `?5` bytes (the first
/// is always taken), found by their ids.
pub(super) const CLAIM_IDS: &str =
    "UPDATE jobs SET lease_owner = ?1, lease_until = ?2, fence = fence + 1
     WHERE id IN (
         SELECT id FROM (
             SELECT id, SUM(octet_length(doc)) OVER (
                 ORDER BY due_at ROWS UNBOUNDED PRECEDING
             ) - octet_length(doc) AS before
             FROM jobs
             WHERE id IN (SELECT value FROM json_each(?3))
               AND due_at <= ?4
               AND (lease_until IS NULL OR lease_until < ?4))
         WHERE before < ?5)
     RETURNING id, doc, fence";

/// Those of `?1` still claimable at `?2`, by their ids.
pub(super) const STILL_CLAIMABLE: &str =
    "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?1))
     AND due_at <= ?2 AND (lease_until IS NULL OR lease_until < ?2)";
