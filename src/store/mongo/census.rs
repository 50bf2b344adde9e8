//! The MongoDB store's census for the metrics: a covered count per status on the status
//! index, a range of the due-time index, and the documents the sparse outbox index finds.

use bson::{Bson, Document, doc};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::Collection;

use super::{
    document::{bson_time, chrono_time},
    queries::live,
};
use crate::{domain::JobStatus, jobs::ports::Census};

/// Counts what the `jobs` collection holds at `now`.
pub(super) async fn count(
    jobs: &Collection<Document>,
    now: DateTime<Utc>,
) -> mongodb::error::Result<Census> {
    let mut statuses = Vec::new();
    for status in JobStatus::ALL {
        let count = jobs
            .count_documents(live(doc! { "status": status.code() }))
            .await?;
        if count > 0 {
            statuses.push((status, count));
        }
    }
    let now = bson_time(now);
    let due_filter = doc! {
        "dueAt": { "$lte": now },
        "$or": [
            { "leaseUntil": Bson::Null },
            { "leaseUntil": { "$lt": now } },
        ],
    };
    let due = jobs.count_documents(due_filter.clone()).await?;
    let oldest_due = jobs
        .find_one(due_filter)
        .sort(doc! { "dueAt": 1 })
        .projection(doc! { "dueAt": 1 })
        .await?
        .and_then(|d| d.get_datetime("dueAt").ok().copied())
        .map(chrono_time);
    // Only the documents with pending events, which the sparse outbox index finds.
    let outbox: Option<Document> = jobs
        .aggregate(vec![
            doc! { "$match": { "outboxAt": { "$exists": true } } },
            doc! { "$group": {
                "_id": Bson::Null,
                "pending": { "$sum": { "$size": "$outbox" } },
                "oldest": { "$min": "$outboxAt" },
            } },
        ])
        .await?
        .try_next()
        .await?;
    let (outbox_pending, oldest_event) = match &outbox {
        Some(d) => (
            d.get("pending")
                .and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
                .unwrap_or(0)
                .max(0) as u64,
            d.get_datetime("oldest").ok().copied().map(chrono_time),
        ),
        None => (0, None),
    };
    Ok(Census {
        jobs: statuses,
        due,
        oldest_due,
        outbox_pending,
        oldest_event,
    })
}
