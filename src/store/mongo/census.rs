//! The MongoDB store's census for the metrics, three aggregations: a covered count per
//! status on the status index, a range of the due-time index, and the documents the sparse
//! outbox index finds.

use bson::{Bson, Document, doc};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::Collection;

use super::{
    document::{bson_time, chrono_time},
    queries::{count_of, live},
};
use crate::{domain::JobStatus, jobs::ports::Census};

/// Counts what the `jobs` collection holds at `now`.
pub(super) async fn count(
    jobs: &Collection<Document>,
    now: DateTime<Utc>,
) -> mongodb::error::Result<Census> {
    // One aggregation per figure: the count per status walks the status index alone (the
    // hint; a server without a planner ignores it), and the due jobs come with the oldest.
    let counted: Vec<Document> = jobs
        .aggregate(vec![
            doc! { "$match": live(Document::new()) },
            doc! { "$group": { "_id": "$status", "count": { "$sum": 1 } } },
        ])
        .hint(mongodb::options::Hint::Name("status".to_owned()))
        .await?
        .try_collect()
        .await?;
    let statuses = JobStatus::ALL
        .into_iter()
        .filter_map(|status| {
            let count = counted
                .iter()
                .find(|d| count_of(d.get("_id")) == u64::try_from(status.code()).ok())
                .and_then(|d| count_of(d.get("count")))?;
            (count > 0).then_some((status, count))
        })
        .collect();
    let now = bson_time(now);
    let due: Option<Document> = jobs
        .aggregate(vec![
            doc! { "$match": {
                "dueAt": { "$lte": now },
                "$or": [
                    { "leaseUntil": Bson::Null },
                    { "leaseUntil": { "$lt": now } },
                ],
            } },
            doc! { "$group": {
                "_id": Bson::Null,
                "count": { "$sum": 1 },
                "oldest": { "$min": "$dueAt" },
            } },
        ])
        .await?
        .try_next()
        .await?;
    let (due, oldest_due) = count_and_oldest(due.as_ref(), "count");
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
    let (outbox_pending, oldest_event) = count_and_oldest(outbox.as_ref(), "pending");
    Ok(Census {
        jobs: statuses,
        due,
        oldest_due,
        outbox_pending,
        oldest_event,
    })
}

/// The count in `field` and the time in `oldest` of a group's result; none when nothing matched.
fn count_and_oldest(group: Option<&Document>, field: &str) -> (u64, Option<DateTime<Utc>>) {
    group.map_or((0, None), |d| {
        (
            count_of(d.get(field)).unwrap_or(0),
            d.get_datetime("oldest").ok().copied().map(chrono_time),
        )
    })
}
