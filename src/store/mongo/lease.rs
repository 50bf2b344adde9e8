//! A worker's hold on an open run, as a MongoDB document holds it (its time a BSON date, so that
//! the scheduler's queries compare it); the job's webhook is stored as `store::json` has it.

use serde::{Deserialize, Serialize};

/// A worker's hold on an open run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunLeaseDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) holder: Option<String>,
    pub(super) until: bson::DateTime,
}
