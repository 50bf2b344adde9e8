//! The MongoDB store's scheduler queries: the window read, the claim by ids (one read, one
//! guarded update command under a token of its own, one read of what carries the token) and
//! the batch of steps (unordered `update` commands split only by message size). Every filter
//! but the window read's names `_id` and is served by an index even on servers without a query
//! planner (see `queries::guard`).

use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    MongoStore, all,
    document::{bson_time, chrono_time, decode_job, fence_of, job_update},
    map_err,
    queries::{count_of, guard, is_tombstone, ledger_update, outbox_update, without_runs},
    sequencing::as_written,
};
use crate::{
    domain::JobId,
    jobs::{
        listing::ByteBudget,
        ports::{Claim, Claimed, ClaimedStep, Due, Lease, StoreError},
    },
    store::earliest_due_first,
};

/// Most bytes of write statements sent in one command: well under the server's 16 MiB
/// document limit.
const WRITE_COMMAND_BYTES: usize = 8 * 1024 * 1024;

/// Most write statements in one command (servers take at least 1,000).
const WRITE_COMMAND_STATEMENTS: usize = 1_000;

/// Whether a job document read for a claim may be claimed at `now`: live, due, and its lease
/// free or lapsed.
fn claimable(document: &Document, now: DateTime<Utc>) -> bool {
    let now = bson_time(now);
    let due = document.get_datetime("dueAt").is_ok_and(|due| *due <= now);
    let free = document
        .get_datetime("leaseUntil")
        .map_or(true, |until| *until < now);
    due && free && !is_tombstone(document)
}

/// Of the documents a window read found, in their order, the jobs that may be claimable by
/// `horizon` and when: due by then, and free or held no longer than that.
fn window_of(found: &[Document], horizon: bson::DateTime) -> Vec<Due> {
    found
        .iter()
        .filter_map(|document| {
            let job = JobId::from_object_id(document.get_object_id("_id").ok()?);
            let due = document.get_datetime("dueAt").ok()?;
            let lease = document.get_datetime("leaseUntil").ok();
            if *due > horizon || lease.is_some_and(|lease| *lease > horizon) {
                // Found for its pending events only, or held past the horizon.
                return None;
            }
            let at = lease.map_or(*due, |lease| (*due).max(*lease));
            Some(Due {
                job,
                at: chrono_time(at),
            })
        })
        .collect()
}

impl MongoStore {
    /// The window read: the ids and times of jobs that may be claimable by `horizon`. While
    /// this process holds the relay lease, the same query also finds every job with pending
    /// events (their ids and times only), which the sequencer's next round reads by `_id`
    /// instead of looking for them itself: one query a second serves both the scheduler and
    /// the relay. When that read is cut at `limit` it is read again without them, and the
    /// sequencer looks for itself.
    pub(super) async fn window(
        &self,
        horizon: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let horizon = bson_time(horizon);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let due = doc! {
            "dueAt": { "$lte": horizon },
            "$or": [
                { "leaseUntil": Bson::Null },
                { "leaseUntil": { "$lte": horizon } },
            ],
        };
        let read = |filter: Document| {
            self.jobs
                .find(filter)
                .sort(doc! { "dueAt": 1 })
                .limit(limit)
                .projection(doc! { "dueAt": 1, "leaseUntil": 1, "outboxAt": 1 })
        };
        if !self.sequencing.leads(Utc::now()) {
            return Ok(window_of(&all(read(due)).await?, horizon));
        }
        // The lease is left to `window_of`: a test server reads every document either way,
        // and evaluates a nested `$or` for each of them.
        let began = std::time::Instant::now();
        let mut found = all(read(doc! {
            "$or": [{ "dueAt": { "$lte": horizon } }, { "outboxAt": { "$exists": true } }],
        }))
        .await?;
        if i64::try_from(found.len()).unwrap_or(i64::MAX) >= limit {
            // Pending events or held jobs may have taken places of due jobs: the window
            // alone, cut where it is cut.
            found = all(read(due)).await?;
        } else {
            self.sequencing.looked(
                began,
                found
                    .iter()
                    .filter_map(|document| {
                        let at = document.get_datetime("outboxAt").ok()?;
                        Some((*at, document.get_object_id("_id").ok()?))
                    })
                    .collect(),
            );
        }
        Ok(window_of(&found, horizon))
    }

    /// The claim by ids: one read of the candidates by `_id`, then one `update` command
    /// taking the free ones under a token of its own, each statement guarded by what was read:
    /// two round trips whatever the batch size, and a third (a read by `_id` of what carries
    /// the token) only when another writer took or changed some of them meanwhile.
    pub(super) async fn claim_ids(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        ids: &[JobId],
    ) -> Result<Claimed, StoreError> {
        let ids: Vec<ObjectId> = ids.iter().map(|id| id.object_id()).collect();
        let mut candidates = all(self
            .jobs
            .find(doc! { "_id": { "$in": &ids } })
            .projection(without_runs()))
        .await?;
        candidates.retain(|document| claimable(document, now));
        // Each statement matches only a document still as it was read (its guard), so of two
        // schedulers racing for a job exactly one takes it: the first claim moves `fence`.
        let token = Uuid::new_v4().to_string();
        let statements: Vec<Document> = candidates
            .iter()
            .filter_map(guard)
            .map(|guard| {
                doc! {
                    "q": guard,
                    "u": {
                        "$set": {
                            "leaseOwner": &lease.owner,
                            "leaseUntil": bson_time(lease.until),
                            "claim": &token,
                        },
                        "$inc": { "fence": 1_i64 },
                    },
                }
            })
            .collect();
        let asked = statements.len();
        let matched = self.update_each(statements).await?;
        if matched == 0 {
            return Ok(Claimed::default());
        }
        let mut taken = if matched == asked && asked == candidates.len() {
            // Every candidate was taken as read: the claim moved its fence by one.
            for document in &mut candidates {
                let fence = fence_of(document) + 1;
                document.insert("fence", i64::try_from(fence).unwrap_or(i64::MAX));
            }
            candidates
        } else {
            let mut taken = all(self
                .jobs
                .find(doc! { "_id": { "$in": &ids } })
                .projection(without_runs()))
            .await?;
            taken.retain(|document| document.get_str("claim").ok() == Some(token.as_str()));
            taken
        };
        taken.sort_by_key(|document| document.get_datetime("dueAt").ok().copied());
        // A step of a claim that found no pending event knows the whole outbox it leaves.
        for document in &taken {
            let pending = document
                .get_array("outbox")
                .is_ok_and(|outbox| !outbox.is_empty());
            if let (false, Ok(id)) = (pending, document.get_object_id("_id")) {
                self.sequencing.claimed_clean(id, fence_of(document));
            }
        }
        let (mut claims, mut budget) = (Vec::new(), ByteBudget::claim());
        let mut full = false;
        for document in taken {
            let token = fence_of(&document);
            if let Some(job) = decode_job(document)
                && !budget.push(&mut claims, Claim { job, token })
            {
                full = true;
                break;
            }
        }
        let deferred = if full {
            self.give_back(&ids, &token, &claims).await?
        } else {
            Vec::new()
        };
        Ok(Claimed {
            claims: earliest_due_first(claims),
            deferred,
        })
    }

    /// The batch of scheduler steps, in as few commands as its size allows.
    pub(super) async fn write_steps(
        &self,
        steps: &[ClaimedStep],
    ) -> Result<Vec<JobId>, StoreError> {
        // Every step is one update guarded by the claim (the job's version and the claim's
        // fencing token), and the batch goes in as few `update` commands as its size allows.
        // Each marks what it wrote with this call's token, read back only when not every step
        // matched.
        let mark = Uuid::new_v4().to_string();
        let mut statements = Vec::with_capacity(steps.len());
        let mut known = Vec::new();
        for step in steps {
            let mut update = job_update(&step.job)?;
            ledger_update(&mut update, &step.finished, self.history)?;
            outbox_update(&mut update, &step.events)?;
            let id = step.job.id.object_id();
            if !step.events.is_empty() && self.sequencing.was_clean(id, step.token) {
                known.push(known_after(id, step, &update));
            }
            if let Ok(fields) = update.get_document_mut("$set") {
                fields.insert("claim", &mark);
            }
            statements.push(doc! {
                // The claim left `fence` at the step's token and did not move `version`; a
                // later claim, a change of the job and a tombstone each move one of them.
                "q": {
                    "_id": step.job.id.object_id(),
                    "version": step.job.version.saturating_sub(1) as i64,
                    "fence": step.token as i64,
                },
                "u": update,
            });
        }
        let matched = self.update_each(statements).await?;
        let written = if matched == steps.len() {
            steps.iter().map(|step| step.job.id).collect()
        } else {
            let ids: Vec<ObjectId> = steps.iter().map(|step| step.job.id.object_id()).collect();
            self.ids_marked(&ids, &mark).await?
        };
        let mut known = known.into_iter().flatten().peekable();
        for step in steps.iter().filter(|step| !step.events.is_empty()) {
            let id = step.job.id.object_id();
            let as_written =
                known.next_if(|document| document.get_object_id("_id").ok() == Some(id));
            if written.contains(&step.job.id) {
                match as_written {
                    Some(document) => self.sequencing.note_known(document),
                    None => self.sequencing.note(id),
                }
            }
        }
        Ok(written)
    }

    /// Releases the jobs a claim took (`mine`) but does not return (`kept` are returned):
    /// the byte budget was spent. Returns their ids; they are still due.
    async fn give_back(
        &self,
        ids: &[ObjectId],
        token: &str,
        kept: &[Claim],
    ) -> Result<Vec<JobId>, StoreError> {
        let kept: Vec<ObjectId> = kept.iter().map(|claim| claim.job.id.object_id()).collect();
        let rest: Vec<ObjectId> = ids
            .iter()
            .filter(|id| !kept.contains(id))
            .copied()
            .collect();
        let given = self.ids_marked(&rest, token).await?;
        let given_ids: Vec<ObjectId> = given.iter().map(|id| id.object_id()).collect();
        self.jobs
            .update_many(
                doc! { "_id": { "$in": given_ids }, "claim": token },
                doc! { "$set": { "leaseOwner": Bson::Null, "leaseUntil": Bson::Null } },
            )
            .await
            .map_err(map_err)?;
        Ok(given)
    }

    /// Which of the jobs `ids` carry `mark` in `claim`: read by `_id` alone (which every
    /// MongoDB-wire server answers from its `_id` index) and compared here.
    async fn ids_marked(&self, ids: &[ObjectId], mark: &str) -> Result<Vec<JobId>, StoreError> {
        let found = all(self
            .jobs
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "claim": 1 }))
        .await?;
        Ok(found
            .iter()
            .filter(|document| document.get_str("claim").ok() == Some(mark))
            .filter_map(|document| document.get_object_id("_id").ok())
            .map(JobId::from_object_id)
            .collect())
    }

    /// Runs update statements (`q`, `u`), unordered, in as few `update` commands as the
    /// server's message size allows; returns how many matched a document.
    pub(super) async fn update_each(&self, statements: Vec<Document>) -> Result<usize, StoreError> {
        self.write_each("update", "updates", statements).await
    }

    /// Runs delete statements (`q`, `limit`) as [`Self::update_each`] runs updates; returns how
    /// many documents went.
    pub(super) async fn delete_each(&self, statements: Vec<Document>) -> Result<usize, StoreError> {
        self.write_each("delete", "deletes", statements).await
    }

    /// Runs `statements` of the write `command` (their array named `field`), unordered, in as
    /// few commands as the server's message size allows; returns the replies' `n`.
    async fn write_each(
        &self,
        command: &str,
        field: &str,
        statements: Vec<Document>,
    ) -> Result<usize, StoreError> {
        let mut done = 0;
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut statements = statements.into_iter().peekable();
        while let Some(statement) = statements.next() {
            bytes += statement.to_vec().map(|b| b.len()).unwrap_or(0);
            batch.push(Bson::Document(statement));
            let next_fits = statements.peek().is_some_and(|_| {
                bytes < WRITE_COMMAND_BYTES && batch.len() < WRITE_COMMAND_STATEMENTS
            });
            if next_fits {
                continue;
            }
            let reply = self
                .db
                .run_command(doc! {
                    command: self.jobs.name(),
                    field: std::mem::take(&mut batch),
                    "ordered": false,
                })
                .await
                .map_err(map_err)?;
            bytes = 0;
            if let Ok(errors) = reply.get_array("writeErrors") {
                // A write that cannot be made (a document grown past the server's limit) is
                // left: a step keeps its lease until it lapses, an outbox its events for the
                // next round. The others are made.
                tracing::error!(?errors, command, "the store refused some writes");
            }
            done +=
                count_of(reply.get("n")).map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        }
        Ok(done)
    }
}

/// What `step` leaves pending in its job document when its claim found none: its events, as
/// `update` (the step's update) stores them. `None` if the update holds no outbox.
fn known_after(id: ObjectId, step: &ClaimedStep, update: &Document) -> Option<Document> {
    let outbox = update
        .get_document("$push")
        .ok()?
        .get_document("outbox")
        .ok()?
        .get("$each")?;
    let at = update.get_document("$min").ok()?.get("outboxAt")?;
    Some(as_written(
        id,
        step.job.version,
        step.token,
        outbox.clone(),
        at.clone(),
    ))
}
