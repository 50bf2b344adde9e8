//! The core: jobs, their schedules and runs, how they move, and raw input checked into them.
//!
//! A leaf, and the place to start reading: nothing here knows about stores, event delivery,
//! transports or `anyhow` (`tests/service/architecture.rs` fails when a module here imports one).
//! Every transition is a pure function of a job and the time.
//!
//! - [`ids`]: job ids and the deterministic run ids;
//! - [`time`]: UTC milliseconds, RFC 3339;
//! - [`policy`]: the contract's enums, and the retry policy;
//! - [`schedule`]: one-shot, cron (in a time zone, with its DST rules) and interval schedules,
//!   and previews of their fires;
//! - [`job`]: the job, and how it moves: [`job::lifecycle`] (fires, timeouts, retries, misfires,
//!   overlaps) and [`job::operations`] (pause, resume, trigger, cancel, a run's result);
//! - [`run`]: runs and reported results;
//! - [`event`]: what happened to a job;
//! - [`audit`]: who asked for a change, and why;
//! - [`data`]: a job's data, held as compact shared text;
//! - [`delivery`]: where runs go (a webhook, Kafka, pulling workers) and a worker's hold on one;
//! - [`input`]: raw input parsed into a [`JobSpec`], with every [`FieldError`] at once
//!   ([`field`]).

pub mod audit;
pub mod data;
pub mod delivery;
pub mod event;
pub mod field;
pub mod ids;
pub mod input;
pub mod job;
pub mod policy;
pub mod run;
pub mod schedule;
pub mod time;

pub use self::{
    audit::Audit,
    data::JobData,
    delivery::{Delivery, RunLease, Webhook, WebhookInput},
    event::{Event, EventKind},
    field::{FieldError, Invalid},
    ids::{JOB_ID_EXPECTED, JobId, RunId},
    input::{JobInput, JobSpec, PolicyInput, RetryInput, ScheduleInput},
    job::{
        Job, PendingRetry,
        lifecycle::{Limits, Step},
        operations::{NotClosed, Refused},
    },
    policy::{
        DEFAULT_RUN_TIMEOUT_SECONDS, JobStatus, JobType, MisfirePolicy, OverlapPolicy, RetryPolicy,
        RunStatus, name_of,
    },
    run::{Run, RunResult},
    schedule::{
        Schedule, ScheduleFields,
        cron::{CronSchedule, DstShift, FireTime},
        preview::{MAX_PREVIEW, Preview},
    },
    time::{check_time, format_time, from_timestamp, in_range, parse_time, truncate},
};
