//! The job store adapters: the embedded SQLite store ([`sqlite`]) and MongoDB ([`mongo`]), both
//! implementations of the `JobStore` port in `jobs::ports`, and what they share: the JSON
//! documents they keep, the names they write for enums, and the helpers below; and
//! [`metered`], the decorator that times any store's operations and counts what it holds for
//! the metrics.
//!
//! An adapter maps the domain to its own rows or documents explicitly (never the domain's own
//! shape), keeps its queries apart from that mapping, and must not decide anything about jobs:
//! the use cases and the scheduler do, through the port.

mod json;
pub mod metered;
pub mod mongo;
mod names;
pub mod sqlite;

use std::fmt;

use chrono::{DateTime, Utc};

use crate::jobs::ports::Claim;

/// The name of the outbox relay's lease, in both stores.
const RELAY_LEASE: &str = "outbox-relay";

/// Finished runs kept per job: at least one.
fn history_bound(history: usize) -> usize {
    history.max(1)
}

/// A stored time, from milliseconds since the epoch; times beyond what a date can hold (which
/// no store write makes) read as the epoch.
fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A decoded stored document, or `None` with the reason logged: a malformed document is
/// skipped, never a panic or a failed read of everything else.
fn or_skip<T>(kind: &str, id: &dyn fmt::Debug, decoded: Result<T, String>) -> Option<T> {
    decoded
        .map_err(|error| tracing::error!(%error, kind, ?id, "skipping a malformed stored document"))
        .ok()
}

/// Claims in the order the scheduler settles them: earliest due first.
fn earliest_due_first(mut claims: Vec<Claim>) -> Vec<Claim> {
    claims.sort_by_key(|c| c.job.due_at());
    claims
}

/// The least text greater than every text that starts with `prefix`, in code-point order (what
/// SQLite's binary collation and MongoDB compare): the prefix with its last character made the
/// next one, dropping characters that have none. `None` when every text with the prefix is
/// the greatest (a prefix of U+10FFFF only): then the prefix has no upper bound.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_no_text_with_it_can_sort_after() {
        let cases = [
            ("ab", Some("ac".to_owned())),
            ("a\u{10FFFF}", Some("b".to_owned())),
            ("\u{D7FF}", Some("\u{E000}".to_owned())),
            ("\u{10FFFF}", None),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end, "{prefix:?}");
        }
        let end = prefix_end("a").unwrap();
        for text in ["a", "a\u{10FFFF}", "a\u{10FFFF}\u{10FFFF}z", "az"] {
            assert!(text.starts_with('a') && text < end.as_str(), "{text:?}");
        }
    }
}
