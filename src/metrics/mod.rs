//! The service's Prometheus metrics: it owns the registry and every instrument in it, and
//! renders them as the text exposition `GET /metrics` serves.
//!
//! [`Metrics`] is a cheap handle (an `Arc`, or nothing when metrics are turned off) that the
//! wiring in `app` hands to whatever observes something: the use cases and the scheduler
//! ([`runs`]: fires, lag, ledger records, claims, misfires), the store decorator (operation
//! durations and the gauges of what the store holds), the Kafka publisher and result consumer,
//! and the request middleware ([`requests`]). Observing is a method call on the handle; every
//! label set that is known in advance (statuses, kinds, operations) is resolved once here, so
//! the hot path is an atomic add, not a lookup.
//!
//! What it must not do: decide anything, or hold a label whose values are not bounded. No
//! label ever holds a job id, a run id or a raw path; a route is the router's template, a
//! topic one of the configured few, a partition a partition number.
//!
//! The names are the contract's (`CONTRACT.md`, "Observability"); every family's help says
//! what it measures and in which unit.

pub mod requests;
pub mod runs;
pub mod scrape;

use std::{sync::Arc, time::Duration};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{JobStatus, MisfirePolicy, RunStatus};

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Fire lag buckets: 1 ms to 5 min.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
/// Run duration buckets: 10 ms to a day (a run may stay open up to its timeout).
const RUN_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// Request durations: OpenTelemetry's recommended HTTP server buckets.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Store operations: 100 µs to 5 s.
const STORE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Kafka sends: 1 ms to 30 s (the delivery timeout).
const PUBLISH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What made a run due: the `kind` label of the fire lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FireKind {
    Once,
    Cron,
    Interval,
    Trigger,
    Retry,
}

impl FireKind {
    /// The labels, in the variants' order.
    const LABELS: [&'static str; 5] = ["once", "cron", "interval", "trigger", "retry"];
}

/// What the build info gauge says.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// The crate version.
    pub version: &'static str,
    /// Which store is configured: `embedded`, `memory` or `mongodb`.
    pub store: &'static str,
}

/// The store operations timed: one per method of the store port, named as it is (so each
/// needs no doc of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StoreOperation {
    Ping,
    Insert,
    FindByIdempotencyKey,
    Get,
    List,
    Update,
    Delete,
    DueWithin,
    Claim,
    RecordSteps,
    Offered,
    RunHistory,
    TakeRelayLease,
    SequenceEvents,
    ReadJournal,
    JournalBounds,
    TrimJournal,
    Cursor,
    SetCursor,
    Census,
}

impl StoreOperation {
    const ALL: [Self; 20] = [
        Self::Ping,
        Self::Insert,
        Self::FindByIdempotencyKey,
        Self::Get,
        Self::List,
        Self::Update,
        Self::Delete,
        Self::DueWithin,
        Self::Claim,
        Self::RecordSteps,
        Self::Offered,
        Self::RunHistory,
        Self::TakeRelayLease,
        Self::SequenceEvents,
        Self::ReadJournal,
        Self::JournalBounds,
        Self::TrimJournal,
        Self::Cursor,
        Self::SetCursor,
        Self::Census,
    ];

    /// The `operation` label: the port method's name.
    fn label(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Insert => "insert",
            Self::FindByIdempotencyKey => "find_by_idempotency_key",
            Self::Get => "get",
            Self::List => "list",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::DueWithin => "due_within",
            Self::Claim => "claim",
            Self::RecordSteps => "record_steps",
            Self::Offered => "offered",
            Self::RunHistory => "run_history",
            Self::TakeRelayLease => "take_relay_lease",
            Self::SequenceEvents => "sequence_events",
            Self::ReadJournal => "read_journal",
            Self::JournalBounds => "journal_bounds",
            Self::TrimJournal => "trim_journal",
            Self::Cursor => "cursor",
            Self::SetCursor => "set_cursor",
            Self::Census => "census",
        }
    }
}

/// What became of a result message from Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOutcome {
    /// It closed its run.
    Applied,
    /// Its run was already closed with the same result; nothing changed.
    Duplicate,
    /// It could change nothing (another run's, a different result for a finished run).
    Ignored,
    /// It can never be applied and went to the dead-letter topic.
    DeadLettered,
}

impl ResultOutcome {
    const ALL: [Self; 4] = [
        Self::Applied,
        Self::Duplicate,
        Self::Ignored,
        Self::DeadLettered,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// A handle on the registry; clones share it. [`Metrics::off`] observes nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Instruments>>);

/// Every instrument, with its label sets resolved where they are known in advance.
struct Instruments {
    registry: Registry,
    /// By [`FireKind`] index.
    fire_lag: [Histogram; 5],
    /// By [`status_index`].
    runs: [IntCounter; 7],
    /// By [`status_index`].
    run_duration: [Histogram; 7],
    /// By [`JobStatus::ALL`] index.
    jobs: [IntGauge; 7],
    due_jobs: IntGauge,
    oldest_due_age: Gauge,
    claims: IntCounter,
    claim_conflicts: IntCounter,
    /// By [`policy_index`].
    misfires: [IntCounter; 3],
    outbox_pending: IntGauge,
    outbox_oldest_age: Gauge,
    published: IntCounterVec,
    publish_errors: IntCounter,
    publish_duration: Histogram,
    /// By [`ResultOutcome::ALL`] index.
    results: [IntCounter; 4],
    consumer_lag: IntGaugeVec,
    http: HistogramVec,
    rpc: HistogramVec,
    /// By [`StoreOperation::ALL`] index.
    store: [Histogram; 20],
}

fn status_index(status: RunStatus) -> usize {
    match status {
        RunStatus::Running => 0,
        RunStatus::Succeeded => 1,
        RunStatus::Failed => 2,
        RunStatus::TimedOut => 3,
        RunStatus::Skipped => 4,
        RunStatus::Missed => 5,
        RunStatus::Cancelled => 6,
    }
}

const RUN_STATUSES: [&str; 7] = [
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "SKIPPED",
    "MISSED",
    "CANCELLED",
];

const JOB_STATUSES: [&str; 7] = [
    "PENDING",
    "SCHEDULED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "PAUSED",
    "CANCELLED",
];

fn policy_index(policy: MisfirePolicy) -> usize {
    match policy {
        MisfirePolicy::FireOnce => 0,
        MisfirePolicy::Skip => 1,
        MisfirePolicy::FireAll => 2,
    }
}

const POLICIES: [&str; 3] = ["FIRE_ONCE", "SKIP", "FIRE_ALL"];

/// Registers `metric` and hands it back; a clash of names is a bug, caught by any test.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid histogram"),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
    )
}

/// The children of `vec` for each of `values`, in order.
fn each<const N: usize, B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    values: [&str; N],
) -> [B::M; N] {
    values.map(|value| vec.with_label_values(&[value]))
}

impl Metrics {
    /// A registry with every family, the process metrics (on Linux) and the build info.
    pub fn new(build: &BuildInfo) -> Self {
        let r = Registry::new();
        let fire_lag = histogram_vec(
            &r,
            "scheduler_fire_lag_seconds",
            "Seconds from the time a run was due to the time its fire was stored, by what made it due (once, cron, interval, trigger, retry).",
            LAG_BUCKETS,
            &["kind"],
        );
        let runs = counter_vec(
            &r,
            "scheduler_runs_total",
            "Run records stored, by status: RUNNING when a run fires, then each ledger record (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, SKIPPED, MISSED) as it is written.",
            &["status"],
        );
        let run_duration = histogram_vec(
            &r,
            "scheduler_run_duration_seconds",
            "Seconds from a run's fire to its final status, by that status.",
            RUN_BUCKETS,
            &["status"],
        );
        let jobs = gauge_vec(
            &r,
            "scheduler_jobs",
            "Jobs stored, by status, as last counted from the store (refreshed on an interval).",
            &["status"],
        );
        let due_jobs = register(
            &r,
            IntGauge::new(
                "scheduler_due_jobs",
                "Jobs due now and not yet claimed by any scheduler, as last counted from the store.",
            )
            .expect("valid gauge"),
        );
        let oldest_due_age = register(
            &r,
            Gauge::new(
                "scheduler_oldest_due_age_seconds",
                "Seconds since the earliest due time among the due jobs not yet claimed; 0 when none is due.",
            )
            .expect("valid gauge"),
        );
        let claims = register(
            &r,
            IntCounter::new(
                "scheduler_claims_total",
                "Jobs claimed by this process's scheduler (each claim is a lease and a new fencing token).",
            )
            .expect("valid counter"),
        );
        let claim_conflicts = register(
            &r,
            IntCounter::new(
                "scheduler_claim_conflicts_total",
                "Claimed jobs whose step the store refused to write: the claim was superseded (fencing token), the lease was lost, or the job changed meanwhile.",
            )
            .expect("valid counter"),
        );
        let misfires = counter_vec(
            &r,
            "scheduler_misfires_total",
            "Due times found missed (older than the misfire threshold when the scheduler got to them), by the job's misfire policy: recorded MISSED, or fired late as the policy's catch-up.",
            &["policy"],
        );
        let outbox_pending = register(
            &r,
            IntGauge::new(
                "scheduler_outbox_pending_events",
                "Events stored in the outbox and not yet published, as last counted from the store.",
            )
            .expect("valid gauge"),
        );
        let outbox_oldest_age = register(
            &r,
            Gauge::new(
                "scheduler_outbox_oldest_event_age_seconds",
                "Seconds since the oldest unpublished outbox event was stored; 0 when the outbox is empty.",
            )
            .expect("valid gauge"),
        );
        let published = counter_vec(
            &r,
            "scheduler_kafka_messages_published_total",
            "Messages the Kafka brokers acknowledged, by topic.",
            &["topic"],
        );
        let publish_errors = register(
            &r,
            IntCounter::new(
                "scheduler_kafka_publish_errors_total",
                "Kafka sends that failed or timed out; their events stay in the outbox and go again.",
            )
            .expect("valid counter"),
        );
        let publish_duration = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "scheduler_kafka_publish_duration_seconds",
                    "Seconds from handing a message to the Kafka producer to the brokers' acknowledgement or refusal.",
                )
                .buckets(PUBLISH_BUCKETS.to_vec()),
            )
            .expect("valid histogram"),
        );
        let results = counter_vec(
            &r,
            "scheduler_results_total",
            "Result messages consumed from Kafka, by outcome: applied, duplicate (already applied), ignored (changes nothing), dead_lettered.",
            &["outcome"],
        );
        let consumer_lag = gauge_vec(
            &r,
            "scheduler_result_consumer_lag",
            "Result messages not yet dealt with, per assigned partition: the partition's high watermark minus the consumer's stored offset, in messages.",
            &["topic", "partition"],
        );
        let http = histogram_vec(
            &r,
            "http_server_request_duration_seconds",
            "Seconds from receiving an HTTP request to sending its response headers, by method, route template (empty when no route matched) and status code.",
            REQUEST_BUCKETS,
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        );
        let rpc = histogram_vec(
            &r,
            "rpc_server_call_duration_seconds",
            "Seconds from receiving a gRPC call to its final status (the end of its response stream), by method (_OTHER for unknown ones) and gRPC status code.",
            REQUEST_BUCKETS,
            &["rpc_method", "rpc_grpc_status_code"],
        );
        let store = histogram_vec(
            &r,
            "scheduler_store_operation_duration_seconds",
            "Seconds one job store operation took, by operation (the store port's method), failed ones included.",
            STORE_BUCKETS,
            &["operation"],
        );
        let info = gauge_vec(
            &r,
            "scheduler_build_info",
            "Always 1; its labels say which version runs and which store it uses.",
            &["version", "store"],
        );
        info.with_label_values(&[build.version, build.store]).set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds and the
        // rest of the standard process family, read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric names are unique");
        let instruments = Instruments {
            fire_lag: each(&fire_lag, FireKind::LABELS),
            runs: each(&runs, RUN_STATUSES),
            run_duration: each(&run_duration, RUN_STATUSES),
            jobs: each(&jobs, JOB_STATUSES),
            due_jobs,
            oldest_due_age,
            claims,
            claim_conflicts,
            misfires: each(&misfires, POLICIES),
            outbox_pending,
            outbox_oldest_age,
            published,
            publish_errors,
            publish_duration,
            results: each(&results, ResultOutcome::ALL.map(ResultOutcome::label)),
            consumer_lag,
            http,
            rpc,
            store: each(&store, StoreOperation::ALL.map(StoreOperation::label)),
            registry: r,
        };
        Self(Some(Arc::new(instruments)))
    }

    /// A handle that observes nothing and serves no metrics.
    pub fn off() -> Self {
        Self(None)
    }

    /// Whether metrics are kept.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Every family in the Prometheus text format; empty when metrics are off.
    pub fn render(&self) -> String {
        let Some(m) = &self.0 else {
            return String::new();
        };
        let mut text = Vec::with_capacity(16 * 1024);
        if let Err(error) = TextEncoder::new().encode(&m.registry.gather(), &mut text) {
            tracing::error!(%error, "the metrics could not be rendered");
        }
        String::from_utf8(text).unwrap_or_default()
    }

    /// Jobs claimed by a scheduler round, and how many of their steps the store refused.
    pub fn claimed(&self, claimed: usize, refused: usize) {
        if let Some(m) = &self.0 {
            m.claims.inc_by(claimed as u64);
            m.claim_conflicts.inc_by(refused as u64);
        }
    }

    /// How long one store operation took.
    pub fn store_operation(&self, operation: StoreOperation, took: Duration) {
        if let Some(m) = &self.0 {
            // The variants are declared in `ALL`'s order.
            m.store[operation as usize].observe(took.as_secs_f64());
        }
    }

    /// The stored jobs per status, freshly counted; a status left out has none.
    pub fn jobs_counted(&self, jobs: &[(JobStatus, u64)]) {
        let Some(m) = &self.0 else { return };
        for (gauge, status) in m.jobs.iter().zip(JobStatus::ALL) {
            let count = jobs
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The jobs due and not yet claimed, and the age of the earliest due time among them.
    pub fn due_counted(&self, due: u64, oldest: Duration) {
        if let Some(m) = &self.0 {
            m.due_jobs.set(i64::try_from(due).unwrap_or(i64::MAX));
            m.oldest_due_age.set(oldest.as_secs_f64());
        }
    }

    /// The events waiting in the outbox, and the age of the oldest.
    pub fn outbox_counted(&self, pending: u64, oldest: Duration) {
        if let Some(m) = &self.0 {
            m.outbox_pending
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            m.outbox_oldest_age.set(oldest.as_secs_f64());
        }
    }

    /// One Kafka send to `topic`, acknowledged or not, and how long it took.
    pub fn published(&self, topic: &str, acknowledged: bool, took: Duration) {
        if let Some(m) = &self.0 {
            m.publish_duration.observe(took.as_secs_f64());
            if acknowledged {
                m.published.with_label_values(&[topic]).inc();
            } else {
                m.publish_errors.inc();
            }
        }
    }

    /// One result message dealt with.
    pub fn result(&self, outcome: ResultOutcome) {
        if let Some(m) = &self.0 {
            // The variants are declared in `ALL`'s order.
            m.results[outcome as usize].inc();
        }
    }

    /// The result consumer's lag on one partition; `None` when the partition is not (or no
    /// longer) assigned, which removes it.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: Option<i64>) {
        let Some(m) = &self.0 else { return };
        let partition = partition.to_string();
        match lag {
            Some(lag) => m
                .consumer_lag
                .with_label_values(&[topic, &partition])
                .set(lag),
            None => {
                // Absent already when it was never assigned.
                let _ = m.consumer_lag.remove_label_values(&[topic, &partition]);
            }
        }
    }
}
