//! The names both stores write for the contract's enums, mapped explicitly: a renamed or new
//! variant in the domain is a compile error here until someone decides what the stores write
//! for it, and what they wrote before keeps reading back.

use serde::{Deserialize, Serialize};

use crate::domain::{
    Delivery, EventKind, JobStatus, JobType, MisfirePolicy, OverlapPolicy, RunStatus,
};

/// A stored enum: its variants, each with the name written for it.
macro_rules! stored_names {
    ($(#[$meta:meta])* $stored:ident for $domain:ident {
        $($variant:ident = $name:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub(crate) enum $stored {
            $(
                #[serde(rename = $name)]
                $variant,
            )+
        }

        impl From<$domain> for $stored {
            fn from(value: $domain) -> Self {
                match value {
                    $($domain::$variant => Self::$variant,)+
                }
            }
        }

        impl From<$stored> for $domain {
            fn from(value: $stored) -> Self {
                match value {
                    $($stored::$variant => Self::$variant,)+
                }
            }
        }
    };
}

stored_names! {
    /// A job's type in the embedded store's documents.
    StoredJobType for JobType { Email = "EMAIL", Sms = "SMS" }
}

stored_names! {
    /// A job's status in the embedded store's documents.
    StoredJobStatus for JobStatus {
        Pending = "PENDING",
        Scheduled = "SCHEDULED",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Paused = "PAUSED",
        Cancelled = "CANCELLED",
    }
}

stored_names! {
    /// A run's status, in both stores.
    StoredRunStatus for RunStatus {
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        TimedOut = "TIMED_OUT",
        Skipped = "SKIPPED",
        Missed = "MISSED",
        Cancelled = "CANCELLED",
    }
}

stored_names! {
    /// A misfire policy, in both stores.
    StoredMisfirePolicy for MisfirePolicy {
        FireOnce = "FIRE_ONCE",
        Skip = "SKIP",
        FireAll = "FIRE_ALL",
    }
}

stored_names! {
    /// An overlap policy, in both stores.
    StoredOverlapPolicy for OverlapPolicy { Skip = "SKIP", Allow = "ALLOW" }
}

stored_names! {
    /// Where runs go, in both stores.
    StoredDelivery for Delivery { Webhook = "webhook", Kafka = "kafka", Pull = "pull" }
}

stored_names! {
    /// What an outbox event says happened, in both stores.
    StoredEventKind for EventKind {
        Created = "created",
        Updated = "updated",
        Deleted = "deleted",
        Run = "run",
        Finished = "finished",
        Paused = "paused",
        Resumed = "resumed",
        Cancelled = "cancelled",
    }
}

impl Default for StoredMisfirePolicy {
    fn default() -> Self {
        MisfirePolicy::default().into()
    }
}

impl Default for StoredOverlapPolicy {
    fn default() -> Self {
        OverlapPolicy::default().into()
    }
}
