//! The MongoDB store's indexes: one for every query it makes, and, on a MongoDB-wire server
//! without a query planner, the guard index its fire path's writes need.

use bson::{Document, doc};
use mongodb::{IndexModel, options::IndexOptions};

use super::{MongoStore, map_err};
use crate::jobs::ports::StoreError;

impl MongoStore {
    /// Creates, idempotently, an index for every query the store makes.
    pub(super) async fn create_indexes(&self) -> Result<(), StoreError> {
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
        let sparse = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .sparse(true)
                .build()
        };
        let models = vec![
            // The due-job query and the claim: jobs by the time they next need the scheduler.
            index(doc! { "dueAt": 1 }, Some(named("dueAt"))),
            // What pulling workers and the webhook caller may take.
            index(doc! { "pullAt": 1 }, Some(named("pullAt"))),
            index(doc! { "hookAt": 1 }, Some(named("hookAt"))),
            // When the next lease lapses.
            index(doc! { "leaseUntil": 1 }, Some(sparse("lease"))),
            // Listing, newest first, and filtered by status or by type.
            index(doc! { "createdAt": -1, "_id": -1 }, Some(named("created"))),
            index(
                doc! { "status": 1, "createdAt": -1, "_id": -1 },
                Some(named("statusCreated")),
            ),
            index(
                doc! { "jobType": 1, "createdAt": -1, "_id": -1 },
                Some(named("typeCreated")),
            ),
            // The name-prefix filter.
            index(doc! { "name": 1 }, Some(named("name"))),
            // The metrics' count per status, covered (tombstones left out by the index too).
            index(doc! { "status": 1, "deleted": 1 }, Some(named("status"))),
            // The sequencer's scan for pending events.
            index(doc! { "outboxAt": 1 }, Some(sparse("outbox"))),
            // One job per idempotency key.
            index(
                doc! { "idempotencyKey": 1 },
                Some(
                    IndexOptions::builder()
                        .name("idempotency".to_owned())
                        .unique(true)
                        .sparse(true)
                        .build(),
                ),
            ),
        ];
        self.jobs.create_indexes(models).await.map_err(map_err)?;
        if self.uses_only_exact_key_indexes().await? {
            // The guard of every claim, step and relay write (`queries::guard`): a MongoDB
            // serves it from the `_id` index, a server that uses an index only for a filter
            // naming exactly its keys needs this one, or scans every job per statement.
            self.jobs
                .create_index(index(
                    doc! { "_id": 1, "version": 1, "fence": 1 },
                    Some(
                        IndexOptions::builder()
                            .name("guard".to_owned())
                            .unique(true)
                            .build(),
                    ),
                ))
                .await
                .map_err(map_err)?;
        }
        self.create_journal_indexes().await
    }

    /// Whether the server is not a MongoDB but a MongoDB-wire server without a query planner
    /// (mongo-java-server, which the tests use): one whose `buildInfo` names no `gitVersion`.
    /// Such a server answers a filter from an index only when the filter names exactly that
    /// index's keys.
    async fn uses_only_exact_key_indexes(&self) -> Result<bool, StoreError> {
        let info = self
            .db
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(map_err)?;
        Ok(!info.contains_key("gitVersion"))
    }
}
