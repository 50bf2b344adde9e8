//! The filter, projection and update documents the MongoDB queries send.

use bson::{Bson, Document, doc};

use super::document::{bson_time, outbox_entries, run_entries};
use crate::{
    domain::{Event, Run},
    jobs::{listing::JobFilter, ports::StoreError},
};

/// Matches live jobs: not tombstones waiting for their deletion event to go out.
pub(super) fn live(mut filter: Document) -> Document {
    filter.insert("deleted", doc! { "$ne": true });
    filter
}

/// Whether a document read is a tombstone, which [`live`] filters would not have matched.
pub(super) fn is_tombstone(document: &Document) -> bool {
    document.get_bool("deleted").unwrap_or(false)
}

/// The filter that matches `document` only while it is as it was read: its `_id`, `version`
/// and `fence`. Every write to a job document that a reader could race with changes one of
/// them: a change of the job or of its runs, and a tombstone, bump `version`; a claim bumps
/// `fence`. Equality on exactly these three fields is what the guard index serves on servers
/// that use an index only for a filter naming exactly its keys (see `MongoStore::create_indexes`);
/// every MongoDB serves it from the `_id` index. A field the document lacks (documents written
/// before `fence` was stored from the start) is matched as absent. `None` without an `_id`.
pub(super) fn guard(document: &Document) -> Option<Document> {
    let id = document.get_object_id("_id").ok()?;
    let mut filter = doc! { "_id": id };
    for field in ["version", "fence"] {
        match document.get(field) {
            Some(value) => filter.insert(field, value.clone()),
            None => filter.insert(field, doc! { "$exists": false }),
        };
    }
    Some(filter)
}

/// The update parts that store `events` in the job document's outbox.
pub(super) fn outbox_update(update: &mut Document, events: &[Event]) -> Result<(), StoreError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    push(update, "outbox", doc! { "$each": outbox_entries(events)? });
    update.insert("$min", doc! { "outboxAt": bson_time(first.time) });
    Ok(())
}

/// The update part that appends finished runs to the ledger, keeping the newest `history`.
pub(super) fn ledger_update(
    update: &mut Document,
    finished: &[Run],
    history: usize,
) -> Result<(), StoreError> {
    if finished.is_empty() {
        return Ok(());
    }
    let history = i64::try_from(history).unwrap_or(i64::MAX);
    push(
        update,
        "runs",
        doc! { "$each": run_entries(finished)?, "$slice": -history },
    );
    Ok(())
}

/// Adds `field: value` to the update's `$push`.
pub(super) fn push(update: &mut Document, field: &str, value: Document) {
    match update.get_document_mut("$push") {
        Ok(push) => {
            push.insert(field, value);
        }
        Err(_) => {
            update.insert("$push", doc! { field: value });
        }
    }
}

/// The projection of a job read: everything but its runs, which can be many.
pub(super) fn without_runs() -> Document {
    doc! { "runs": 0 }
}

/// Escapes a text for use as a literal inside a regular expression.
pub(super) fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn filter_document(filter: &JobFilter) -> Document {
    let mut query = Document::new();
    if let Some(due_before) = filter.due_before {
        query.insert("dueAt", doc! { "$lte": bson_time(due_before) });
    }
    if let Some(status) = filter.status {
        query.insert("status", status.code());
    }
    if let Some(job_type) = filter.job_type {
        query.insert("jobType", job_type.code());
    }
    if let Some(prefix) = filter.name_prefix.as_deref().filter(|p| !p.is_empty()) {
        // An anchored, case-sensitive prefix: the name index serves it.
        query.insert(
            "name",
            doc! { "$regex": format!("^{}", regex_literal(prefix)) },
        );
    }
    query
}

/// A count as the server answers it (32 or 64 bits), never negative; none if it is not a number.
pub(super) fn count_of(value: Option<&Bson>) -> Option<u64> {
    match value? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}
