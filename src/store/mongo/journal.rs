//! The MongoDB store's event journal: the `events` collection, one document per event, its
//! place in the journal as `_id`.
//!
//! A write stores its events in the job document's `outbox` (the same single-document update
//! as the change, so both happen or neither). The holder of the relay lease then gives them
//! their places: it reads the documents with pending events, inserts those events into
//! `events` numbered on from the newest (one ordered `insert_many`, so a place becomes
//! visible only after every place before it), and pulls them from their documents. Two
//! sequencers at once (a lease that lapsed mid-round) cannot give one place twice (`_id`) nor
//! journal one event twice (the unique `eventId`); one whose insert is refused stops and its
//! events wait for the next round. Events already journaled by a round that died before its
//! pull are recognised by their ids and only pulled.
//!
//! The newest event is never trimmed, so the next place always follows it even after a quiet
//! spell longer than the retention.
//!
//! What it reads, kept to filters on `_id` (served by an index on every MongoDB-wire server):
//! the jobs this process wrote events to are noted as it writes them (`sequencing`), and a
//! round reads those by `_id`, or not at all when the write knew the whole outbox it left (a
//! new job, or a step whose claim found no pending event); the scan for every pending event
//! (other replicas' writes, and this process's notes that did not fit) runs when nothing is
//! noted (paced to the relay's poll while others' events come, and to once a second while none
//! do), and at least once per `sequencing::SCAN_EVERY` while something always is. The
//! newest place is kept between rounds and read again only after another sequencer took one.
//! Reading the journal after a place asks for the places that follow it by `_id`, since
//! places are consecutive.

use std::collections::HashSet;

use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Utc};
use mongodb::{Collection, IndexModel, options::IndexOptions};

use super::{
    MongoStore, all,
    document::{bson_time, decode_outbox},
    map_err,
    queries::{guard, is_tombstone},
    sequencing::Pending,
};
use crate::{
    domain::{Event, JobId},
    jobs::{
        listing::ByteBudget,
        ports::{JournalBounds, Journaled, Retention, StoreError},
    },
    store::{
        json::{EventJson, from_text, to_text},
        or_skip,
    },
};

/// The indexes of the `events` collection: one journal entry per event, and one job's events
/// in order.
fn indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "eventId": 1 })
            .options(
                IndexOptions::builder()
                    .name("eventId".to_owned())
                    .unique(true)
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "jobId": 1, "_id": 1 })
            .options(IndexOptions::builder().name("job".to_owned()).build())
            .build(),
    ]
}

/// A place as MongoDB stores it.
fn place(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The place a journal document holds.
fn seq_of(document: &Document) -> Option<u64> {
    match document.get("_id") {
        Some(Bson::Int64(n)) => Some(n.unsigned_abs()),
        Some(Bson::Int32(n)) => Some(u64::from(n.unsigned_abs())),
        _ => None,
    }
}

/// The journal document of `event` at `seq`.
fn entry(seq: u64, event: &Event) -> Result<Document, StoreError> {
    Ok(doc! {
        "_id": place(seq),
        "eventId": event.id.to_string(),
        "jobId": event.job.id.object_id(),
        "time": bson_time(event.time),
        "event": to_text(&EventJson::from(event))?,
    })
}

/// The journaled event of a journal document; `None` (logged) when malformed.
fn decode(document: &Document) -> Option<Journaled> {
    let seq = seq_of(document);
    let decoded = document
        .get_str("event")
        .map_err(|_| "a journal entry without its event".to_owned())
        .and_then(from_text::<EventJson, Event>)
        .and_then(|event| {
            seq.map(|seq| Journaled { seq, event })
                .ok_or_else(|| "a journal entry without its place".to_owned())
        });
    or_skip("journal entry", &seq, decoded)
}

impl MongoStore {
    /// Creates, idempotently, the journal's indexes.
    pub(super) async fn create_journal_indexes(&self) -> Result<(), StoreError> {
        self.journal()
            .create_indexes(indexes())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// The journal collection.
    fn journal(&self) -> Collection<Document> {
        self.db.collection("events")
    }

    /// The place of the newest or the oldest event kept (`direction` 1 or -1).
    async fn end(&self, direction: i32) -> Result<Option<u64>, StoreError> {
        let found = self
            .journal()
            .find_one(doc! {})
            .sort(doc! { "_id": direction })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(map_err)?;
        Ok(found.as_ref().and_then(seq_of))
    }

    pub(super) async fn journal_ends(&self) -> Result<JournalBounds, StoreError> {
        let head = self.end(-1).await?.unwrap_or(0);
        let first = self.end(1).await?.unwrap_or(head + 1);
        Ok(JournalBounds { first, head })
    }

    /// The job documents with pending events a round reads, oldest pending first, and
    /// whether the round scanned for every pending event.
    async fn pending(&self, limit: usize) -> Result<(Vec<Document>, bool), StoreError> {
        let projection = doc! {
            "outbox": 1, "outboxAt": 1, "version": 1, "fence": 1, "deleted": 1,
        };
        match self.sequencing.next(limit) {
            // Ties (events stored in the same millisecond) go by job id, so every pass over
            // the same pending events journals them in the same order. Only documents with
            // pending events are sorted: the sparse index finds them.
            Pending::Scan => {
                let found = all(self
                    .jobs
                    .find(doc! { "outboxAt": { "$exists": true } })
                    .sort(doc! { "outboxAt": 1, "_id": 1 })
                    .limit(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
                    .projection(projection))
                .await?;
                Ok((found, true))
            }
            Pending::Written { read, known } => {
                let mut found = if read.is_empty() {
                    Vec::new()
                } else {
                    all(self
                        .jobs
                        .find(doc! { "_id": { "$in": read } })
                        .projection(projection))
                    .await?
                };
                found.retain(|document| document.contains_key("outboxAt"));
                found.extend(known);
                found.sort_by_key(|document| {
                    (
                        document.get_datetime("outboxAt").ok().copied(),
                        document.get_object_id("_id").ok(),
                    )
                });
                Ok((found, false))
            }
        }
    }

    /// Journals up to about `limit` pending events: see the module's doc.
    pub(super) async fn sequence(&self, limit: usize) -> Result<usize, StoreError> {
        let (documents, looked) = self.pending(limit).await?;
        let pending: Vec<Event> = documents.iter().flat_map(decode_outbox).collect();
        // An entry that cannot be read is skipped by `decode_outbox`; its id still goes.
        let mut pulled: Vec<String> = documents.iter().flat_map(outbox_ids).collect();
        if documents.is_empty() {
            self.sequencing.took(&documents, looked);
            return Ok(0);
        }
        // Events already journaled by a round that stopped before its pull are looked for
        // only when this process does not know the newest place: after such a round, or
        // after another sequencer's. Otherwise the insert's unique event ids would refuse them,
        // and the next round looks.
        let head = self.sequencing.head();
        let journaled: HashSet<String> = if head.is_some() {
            HashSet::new()
        } else {
            let ids: Vec<String> = pending.iter().map(|e| e.id.to_string()).collect();
            all(self
                .journal()
                .find(doc! { "eventId": { "$in": &ids } })
                .projection(doc! { "eventId": 1 }))
            .await?
            .iter()
            .filter_map(|d| d.get_str("eventId").ok().map(str::to_owned))
            .collect()
        };
        let fresh: Vec<&Event> = pending
            .iter()
            .filter(|event| !journaled.contains(&event.id.to_string()))
            .collect();
        if !fresh.is_empty() {
            let head = match head {
                Some(head) => head,
                None => self.end(-1).await?.unwrap_or(0),
            };
            let entries = fresh
                .iter()
                .enumerate()
                .map(|(i, event)| entry(head + 1 + i as u64, event))
                .collect::<Result<Vec<_>, _>>()?;
            // Until this insert is known to have gone in whole, the newest place is read again.
            self.sequencing.forget();
            if let Err(error) = self.journal().insert_many(entries).ordered(true).await {
                // Another sequencer gave these places first, or some of these events were
                // journaled already: they wait for the next round, which reads their jobs by
                // `_id`, numbers on from where the journal got and looks for what it holds.
                self.sequencing.again(
                    documents
                        .iter()
                        .filter_map(|document| document.get_object_id("_id").ok()),
                );
                return match map_err(error) {
                    StoreError::DuplicateKey => Ok(0),
                    other => Err(other),
                };
            }
            self.sequencing.journaled(
                fresh
                    .iter()
                    .enumerate()
                    .map(|(i, event)| Journaled {
                        seq: head + 1 + i as u64,
                        event: (*event).clone(),
                    })
                    .collect(),
            );
        }
        pulled.sort();
        pulled.dedup();
        if let Err(error) = self.pull(&documents, &pulled).await {
            self.sequencing.forget();
            return Err(error);
        }
        self.sequencing.took(&documents, looked);
        Ok(fresh.len())
    }

    /// Empties the outboxes of `documents` (as read, their events now journaled); a document
    /// left with none loses its `outboxAt`, and a tombstone left with none goes. One command
    /// of writes guarded by what was read (and one of deletes, for tombstones); a document
    /// written since (an event stored meanwhile moves its version) has the journaled events
    /// `ids` pulled instead, keeping its `outboxAt` and its tombstone for the next round.
    async fn pull(&self, documents: &[Document], ids: &[String]) -> Result<(), StoreError> {
        let (mut empty, mut delete) = (Vec::new(), Vec::new());
        for document in documents {
            let Some(filter) = guard(document) else {
                continue;
            };
            if is_tombstone(document) {
                delete.push(doc! { "q": filter, "limit": 1 });
            } else {
                empty.push(doc! {
                    "q": filter,
                    "u": { "$set": { "outbox": [] }, "$unset": { "outboxAt": "" } },
                });
            }
        }
        // No statements, no command.
        let done = self.update_each(empty).await? + self.delete_each(delete).await?;
        if done < documents.len() {
            let jobs: Vec<ObjectId> = documents
                .iter()
                .filter_map(|d| d.get_object_id("_id").ok())
                .collect();
            self.jobs
                .update_many(
                    doc! { "_id": { "$in": jobs } },
                    doc! { "$pull": { "outbox": { "id": { "$in": ids } } } },
                )
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    pub(super) async fn journal_after(
        &self,
        after: u64,
        job: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Journaled>, StoreError> {
        let limit = limit.max(1);
        if job.is_none()
            && let Some(recent) = self.sequencing.recent_after(after, limit)
        {
            let (mut events, mut budget) = (Vec::new(), ByteBudget::page());
            for journaled in recent {
                if !budget.push(&mut events, journaled) {
                    break;
                }
            }
            return Ok(events);
        }
        let documents = match job {
            // Places are consecutive: the next `limit` are asked for by `_id`. Nothing found
            // there means nothing follows `after`, or what followed was trimmed: only then
            // is the journal searched.
            None => {
                let first = place(after.saturating_add(1));
                let places: Vec<i64> = (0..limit as i64).map(|i| first.saturating_add(i)).collect();
                let found = all(self.journal().find(doc! { "_id": { "$in": places } })).await?;
                if found.is_empty() {
                    self.journal_search(doc! { "_id": { "$gt": place(after) } }, limit)
                        .await?
                } else {
                    found
                }
            }
            Some(job) => {
                let filter = doc! { "_id": { "$gt": place(after) }, "jobId": job.object_id() };
                self.journal_search(filter, limit).await?
            }
        };
        let mut documents = documents;
        documents.sort_by_key(seq_of);
        let (mut events, mut budget) = (Vec::new(), ByteBudget::page());
        for document in &documents {
            if let Some(journaled) = decode(document)
                && !budget.push(&mut events, journaled)
            {
                break;
            }
        }
        Ok(events)
    }

    /// The first `limit` journal entries `filter` matches, in order.
    async fn journal_search(
        &self,
        filter: Document,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        all(self
            .journal()
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX)))
        .await
    }

    pub(super) async fn trim(
        &self,
        retention: Retention,
        floor: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let bounds = self.journal_ends().await?;
        let young = self
            .journal()
            .find_one(doc! { "time": { "$gte": bson_time(now - retention.age) } })
            .sort(doc! { "_id": 1 })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(map_err)?;
        let by_age = young
            .as_ref()
            .and_then(seq_of)
            .map_or(bounds.head, |seq| seq - 1);
        let by_count = bounds.head.saturating_sub(retention.events);
        // The newest stays: the next place follows it.
        let cut = by_age
            .max(by_count)
            .min(floor)
            .min(bounds.head.saturating_sub(1));
        if cut < bounds.first {
            return Ok(0);
        }
        let dropped = self
            .journal()
            .delete_many(doc! { "_id": { "$lte": place(cut) } })
            .await
            .map_err(map_err)?
            .deleted_count;
        Ok(dropped)
    }

    /// The cursors collection: one document per cursor, its name as `_id`.
    fn cursors(&self) -> Collection<Document> {
        self.db.collection("cursors")
    }

    pub(super) async fn cursor_at(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let found = self
            .cursors()
            .find_one(doc! { "_id": name })
            .await
            .map_err(map_err)?;
        Ok(found.and_then(|d| match d.get("seq") {
            Some(Bson::Int64(n)) => Some(n.unsigned_abs()),
            Some(Bson::Int32(n)) => Some(u64::from(n.unsigned_abs())),
            _ => None,
        }))
    }

    pub(super) async fn move_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.cursors()
            .update_one(doc! { "_id": name }, doc! { "$set": { "seq": place(seq) } })
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// The events journaled after `after`, and the time of the first of them.
    pub(super) async fn journaled_since(
        &self,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let filter = doc! { "_id": { "$gt": place(after) } };
        let count = self
            .journal()
            .count_documents(filter.clone())
            .await
            .map_err(map_err)?;
        let first = self
            .journal()
            .find_one(filter)
            .sort(doc! { "_id": 1 })
            .projection(doc! { "time": 1 })
            .await
            .map_err(map_err)?;
        let time = first
            .and_then(|d| d.get_datetime("time").ok().copied())
            .map(super::document::chrono_time);
        Ok((count, time))
    }
}

/// The ids of the events a job document holds pending, whether or not they can be read.
fn outbox_ids(document: &Document) -> Vec<String> {
    document
        .get_array("outbox")
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e.as_document()?.get_str("id").ok().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
