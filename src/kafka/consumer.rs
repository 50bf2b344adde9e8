//! The result consumer: applies executors' results from `topic-job-run-result`.
//!
//! Offsets are stored only after a message was dealt with, and auto-commit commits only stored
//! offsets, so a crash or a rebalance redelivers at most the messages whose effect may not be
//! stored; applying a result twice changes nothing. What happens to each message:
//! - applied: the run is closed (or it was already closed with the same result);
//! - ignored and logged: a result for a run that is not the job's, or a different result for a
//!   finished run; it changes nothing;
//! - dead-lettered: it cannot ever be applied (not JSON, an unknown job, a bad status); it goes
//!   to the dead-letter topic with the reason and where it came from in headers;
//! - retried: the store is unavailable. That partition is paused and rewound to the message,
//!   then resumed after a backoff, so its order holds while the other partitions go on.
//!
//! The messages already fetched when one arrives are applied together (up to
//! [`MOST_PER_BATCH`]): those of different jobs at once, so the store commits them in one
//! group, those of one job (one partition and key) in order.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use futures::{FutureExt as _, future::join_all};
use rdkafka::{
    ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    statistics::Statistics,
    util::Timeout,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{KafkaSettings, message::ResultMessage};
use crate::{
    domain::{JobId, RunId},
    jobs::{Applied, Error, Jobs, Missing},
    metrics::{Metrics, ResultOutcome},
    runtime::{Backoff, Outage},
    telemetry,
};
use tracing::Instrument;

/// How long a dead letter may take to be acknowledged.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);
/// First wait before a message whose store write failed is tried again; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Longest wait between tries of one message.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How often librdkafka reports the consumer's lag (its statistics), when metrics are on.
const LAG_INTERVAL_MS: &str = "5000";
/// Blocking consumer calls (seek) wait at most this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Most messages applied together: those already fetched when the first of them is taken.
const MOST_PER_BATCH: usize = 256;

type PartitionKey = (String, i32);

/// The messages that must be applied one after the other: those of one partition with the
/// same message key (one job's results).
type Lane = (PartitionKey, Option<Vec<u8>>);

/// A partition held back after a transient failure.
#[derive(Debug, Clone)]
struct Held {
    /// The offset to resume from: the message that failed.
    offset: i64,
    resume_at: Instant,
}

/// Tracks held partitions across rebalances: a revoked partition is no longer ours to resume.
struct RebalanceAware {
    held: Arc<Mutex<HashMap<PartitionKey, Held>>>,
    /// Where librdkafka's statistics leave the lag of each assigned partition.
    metrics: Metrics,
}

impl ClientContext for RebalanceAware {
    /// Every statistics interval: each partition's lag, its high watermark minus the offset
    /// stored for it; a partition not assigned (lag -1) is removed.
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal unassigned partition
                }
                let lag = [p.consumer_lag_stored, p.consumer_lag]
                    .into_iter()
                    .find(|lag| *lag >= 0);
                self.metrics.consumer_lag(topic, *partition, lag);
            }
        }
    }
}

impl ConsumerContext for RebalanceAware {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            for partition in partitions.elements() {
                held.remove(&(partition.topic().to_owned(), partition.partition()));
            }
            tracing::info!(count = partitions.count(), "result partitions revoked");
        }
    }
}

/// What became of one message.
#[derive(Debug)]
enum Outcome {
    Applied,
    Duplicate,
    Ignored(String),
    /// Why, and the job and run the message named when it could be read.
    DeadLetter(String, Option<(JobId, Option<RunId>)>),
    Retry(anyhow::Error),
}

/// Consumes results and applies them through the use cases.
pub struct ResultConsumer {
    consumer: StreamConsumer<RebalanceAware>,
    held: Arc<Mutex<HashMap<PartitionKey, Held>>>,
    /// The partitions whose messages cannot be applied now, each with its backoff.
    outages: Mutex<HashMap<PartitionKey, Outage>>,
    dead_letters: FutureProducer,
    jobs: Jobs,
    settings: KafkaSettings,
    /// Where outcomes are counted.
    metrics: Metrics,
}

impl ResultConsumer {
    /// A consumer of the result topic in the configured group, applying results through
    /// `jobs`, writing dead letters with `dead_letters` and counting outcomes and its lag into
    /// `metrics`.
    pub fn new(
        settings: &KafkaSettings,
        jobs: Jobs,
        dead_letters: FutureProducer,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let held = Arc::new(Mutex::new(HashMap::new()));
        let mut config = settings.client_config();
        if metrics.is_on() {
            config.set("statistics.interval.ms", LAG_INTERVAL_MS);
        }
        let consumer: StreamConsumer<RebalanceAware> = config
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .create_with_context(RebalanceAware {
                held: held.clone(),
                metrics: metrics.clone(),
            })
            .context("Failed to create the Kafka result consumer")?;
        consumer
            .subscribe(&[settings.topics.run_result.name.as_str()])
            .context("Failed to subscribe to the result topic")?;
        Ok(Self {
            consumer,
            held,
            outages: Mutex::new(HashMap::new()),
            dead_letters,
            jobs,
            settings: settings.clone(),
            metrics,
        })
    }

    /// Runs until `shutdown` is cancelled, then commits what was stored.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(topic = %self.settings.topics.run_result.name, group = %self.settings.group_id, "result consumer started");
        let mut outage = Outage::new(
            "the result consumer cannot read from Kafka; retrying",
            "the result consumer reads from Kafka again",
            // librdkafka reconnects by itself; waiting long here would only delay what it
            // fetched meanwhile.
            Backoff::new(FIRST_RETRY, Duration::from_secs(1)),
        );
        loop {
            let next_resume = self.next_resume();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = sleep_until(next_resume) => self.resume_due(),
                received = self.consumer.recv() => match received {
                    Ok(first) => {
                        outage.recovered();
                        let (batch, failed) = self.take_ready(first);
                        self.handle_batch(batch).await;
                        if let Some(error) = failed {
                            let wait = outage.failed(&error);
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = shutdown.cancelled() => break,
                            }
                        }
                    }
                    Err(error) => {
                        let wait = outage.failed(&error);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = shutdown.cancelled() => break,
                        }
                    }
                },
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "no result offsets committed at shutdown");
        }
        tracing::info!("result consumer stopped");
    }

    /// `first` and the messages already fetched behind it, up to [`MOST_PER_BATCH`], in the
    /// order they came (offset order within each partition); and an error the consumer
    /// reported while they were taken, to be dealt with after the batch.
    fn take_ready<'c>(
        &'c self,
        first: BorrowedMessage<'c>,
    ) -> (Vec<BorrowedMessage<'c>>, Option<KafkaError>) {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_BATCH {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(message),
                Some(Err(error)) => return (batch, Some(error)),
                None => break,
            }
        }
        (batch, None)
    }

    /// Applies a batch of messages: the results of different jobs at once, so the store
    /// commits them together, those of one job in order. Then settles each in the order they
    /// came: once a partition is held back to retry a message, the messages behind it in that
    /// partition are left unsettled (their offsets not stored), to come again from the broker
    /// after the wait; applying one of them twice changes nothing.
    async fn handle_batch(&self, batch: Vec<BorrowedMessage<'_>>) {
        let mut lanes: HashMap<Lane, Vec<usize>> = HashMap::new();
        for (index, message) in batch.iter().enumerate() {
            let key = (message.topic().to_owned(), message.partition());
            if self.is_held(&key) {
                continue; // rewound; it comes again after the resume
            }
            let lane = (key, message.key().map(<[u8]>::to_vec));
            lanes.entry(lane).or_default().push(index);
        }
        let mut outcomes: Vec<Option<(Outcome, Option<tracing::Span>)>> =
            std::iter::repeat_with(|| None).take(batch.len()).collect();
        let lanes = lanes.into_values().map(|indexes| {
            let batch = &batch;
            async move {
                let mut done = Vec::with_capacity(indexes.len());
                for index in indexes {
                    let handled = self.handle_traced(&batch[index]).await;
                    let retry = matches!(handled.0, Outcome::Retry(_));
                    done.push((index, handled));
                    if retry {
                        break; // what follows in this lane comes again after the wait
                    }
                }
                done
            }
        });
        for (index, handled) in join_all(lanes).await.into_iter().flatten() {
            outcomes[index] = Some(handled);
        }
        for (message, handled) in batch.iter().zip(outcomes) {
            let key = (message.topic().to_owned(), message.partition());
            let Some((outcome, span)) = handled else {
                continue;
            };
            if self.is_held(&key) {
                continue; // behind a message that waits to be retried
            }
            match span {
                Some(span) => span.in_scope(|| self.settle(message, key, outcome)),
                None => self.settle(message, key, outcome),
            }
        }
    }

    /// Handles one message, in a span of its own while tracing is on.
    async fn handle_traced(
        &self,
        message: &BorrowedMessage<'_>,
    ) -> (Outcome, Option<tracing::Span>) {
        if !telemetry::is_on() {
            return (self.handle(message).await, None);
        }
        // The outcome's log line is in the message's span too.
        let span = process_span(message);
        let outcome = self.handle(message).instrument(span.clone()).await;
        record_outcome(&span, &outcome);
        (outcome, Some(span))
    }

    fn is_held(&self, key: &PartitionKey) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    fn next_resume(&self) -> Option<Instant> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.resume_at)
            .min()
    }

    /// Resumes held partitions whose backoff is over, from the message that failed.
    fn resume_due(&self) {
        let now = Instant::now();
        let due: Vec<(PartitionKey, Held)> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<PartitionKey> = held
                .iter()
                .filter(|(_, h)| h.resume_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| held.remove(&k).map(|h| (k, h)))
                .collect()
        };
        for ((topic, partition), held) in due {
            let mut list = TopicPartitionList::new();
            list.add_partition(&topic, partition);
            if let Err(error) = self.consumer.resume(&list) {
                tracing::warn!(%error, %topic, partition, "could not resume a result partition");
            }
            tracing::debug!(%topic, partition, offset = held.offset, "result partition resumed");
        }
    }

    /// Records the outcome: stores the offset, or holds the partition back to retry.
    fn settle(&self, message: &BorrowedMessage<'_>, key: PartitionKey, outcome: Outcome) {
        let offset = message.offset();
        match outcome {
            Outcome::Retry(error) => {
                let wait = self
                    .outages
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key.clone())
                    .or_insert_with(|| {
                        Outage::new(
                            "cannot apply a result now; its partition waits and retries",
                            "results apply again on the partition that waited",
                            Backoff::new(FIRST_RETRY, MAX_RETRY),
                        )
                    })
                    .failed(&format_args!("{}/{} at {offset}: {error:?}", key.0, key.1));
                self.hold(key, offset, wait);
                return;
            }
            Outcome::Applied => {
                self.metrics.result(ResultOutcome::Applied);
                tracing::debug!(topic = %key.0, partition = key.1, offset, "result applied")
            }
            Outcome::Duplicate => {
                self.metrics.result(ResultOutcome::Duplicate);
                tracing::debug!(topic = %key.0, partition = key.1, offset, "result applied before")
            }
            Outcome::Ignored(reason) => {
                self.metrics.result(ResultOutcome::Ignored);
                tracing::warn!(topic = %key.0, partition = key.1, offset, %reason,
                    "result changes nothing")
            }
            Outcome::DeadLetter(reason, ids) => {
                self.metrics.result(ResultOutcome::DeadLettered);
                let job_id = ids.map(|(job, _)| tracing::field::display(job));
                let run_id = ids.and_then(|(_, run)| run).map(tracing::field::display);
                tracing::warn!(topic = %key.0, partition = key.1, offset, %reason, job_id, run_id,
                    "result dead-lettered")
            }
        }
        if let Some(mut outage) = self
            .outages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            outage.recovered();
        }
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            // The partition was revoked meanwhile; its new owner will see the message again,
            // and applying it twice changes nothing.
            tracing::warn!(%error, "could not store a result offset");
        }
    }

    /// Pauses the partition and rewinds it to `offset`, to resume after `wait`.
    fn hold(&self, key: PartitionKey, offset: i64, wait: Duration) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&key.0, key.1);
        if let Err(error) = self.consumer.pause(&list) {
            tracing::warn!(%error, "could not pause a result partition");
        }
        if let Err(error) = self.consumer.seek(
            &key.0,
            key.1,
            Offset::Offset(offset),
            Timeout::After(CALL_TIMEOUT),
        ) {
            tracing::warn!(%error, "could not rewind a result partition");
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            Held {
                offset,
                resume_at: Instant::now() + wait,
            },
        );
    }

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Outcome {
        let outcome = match ResultMessage::parse(message.payload()) {
            Err(reason) => Outcome::DeadLetter(reason, None),
            Ok(result) => {
                let ids = Some((result.job, result.run));
                match self.apply(result).await {
                    Ok(Applied {
                        duplicate: false,
                        run,
                    }) => {
                        link_to_run(&run);
                        Outcome::Applied
                    }
                    Ok(Applied {
                        duplicate: true,
                        run,
                    }) => {
                        link_to_run(&run);
                        Outcome::Duplicate
                    }
                    Err(Error::NotFound(Missing::Job)) => {
                        Outcome::DeadLetter("unknown job".into(), ids)
                    }
                    Err(Error::NotFound(Missing::Run)) => Outcome::Ignored("run not found".into()),
                    Err(Error::Conflict(reason)) => Outcome::Ignored(reason),
                    Err(Error::Unavailable(error)) => Outcome::Retry(error),
                    // The message was checked when parsed; anything else is not the sender's to fix
                    // by resending, so it is kept aside with the reason.
                    Err(other) => Outcome::DeadLetter(format!("cannot be applied: {other}"), ids),
                }
            }
        };
        match outcome {
            Outcome::DeadLetter(reason, ids) => match self.dead_letter(message, &reason).await {
                Ok(()) => Outcome::DeadLetter(reason, ids),
                Err(error) => Outcome::Retry(error),
            },
            other => other,
        }
    }

    /// Applies a result, in a child span of the message's while tracing is on.
    async fn apply(&self, result: ResultMessage) -> Result<Applied, Error> {
        let applying = self
            .jobs
            .apply_result(result.job, result.run, result.result);
        if !telemetry::is_on() {
            return applying.await;
        }
        let span = tracing::info_span!(
            "apply result",
            otel.kind = "internal",
            scheduler.job.id = %result.job,
            scheduler.run.id = result.run.map(|r| r.to_string()),
        );
        applying.instrument(span).await
    }

    /// Copies the message to the dead-letter topic with its reason and origin in headers.
    async fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let origin = [
            ("dlq_reason", reason.to_owned()),
            ("dlq_original_topic", message.topic().to_owned()),
            ("dlq_original_partition", message.partition().to_string()),
            ("dlq_original_offset", message.offset().to_string()),
        ];
        for (key, value) in &origin {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.settings.topics.dead_letter.name).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.dead_letters
            .send(record, Timeout::After(DEAD_LETTER_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(error, _)| anyhow::anyhow!(error).context("dead letter not acknowledged"))
    }
}

/// The CONSUMER span of one result message: it continues the message's `traceparent` when it
/// has one; a result without links to its run's fire once the run is known.
fn process_span(message: &BorrowedMessage<'_>) -> tracing::Span {
    let topic = message.topic();
    let span = tracing::info_span!(
        parent: None,
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = message.partition().to_string(),
        messaging.kafka.offset = message.offset(),
        messaging.kafka.message.key = message.key().and_then(|k| std::str::from_utf8(k).ok()),
        messaging.message.id = header(message, "ce_id"),
        scheduler.result.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    telemetry::continue_trace(
        &span,
        header(message, "traceparent"),
        header(message, "tracestate"),
    );
    span
}

/// A text header of a message.
fn header<'m>(message: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Links the current (message) span to the fire of the run a result closed, when the message
/// did not carry that trace itself.
fn link_to_run(run: &crate::domain::Run) {
    if !telemetry::is_on() {
        return;
    }
    let span = tracing::Span::current();
    let continued = telemetry::ids_of(&span).map(|(trace, _)| trace);
    let fired = telemetry::span_context_of(run.trace.as_deref());
    if let Some(fired) = fired
        && continued.as_deref() != Some(&fired.trace_id().to_string())
    {
        telemetry::link(&span, run.trace.as_deref());
    }
}

/// Records how a message ended on its span; a dead letter or a retry says why.
fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    let (name, why) = match outcome {
        Outcome::Applied => ("applied", None),
        Outcome::Duplicate => ("duplicate", None),
        Outcome::Ignored(reason) => ("ignored", Some(reason.clone())),
        Outcome::DeadLetter(reason, _) => ("dead_lettered", Some(reason.clone())),
        Outcome::Retry(error) => ("retried", Some(format!("{error:#}"))),
    };
    span.record("scheduler.result.outcome", name);
    if let Some(why) = why {
        if !matches!(outcome, Outcome::Ignored(_)) {
            span.record("otel.status_code", "ERROR");
        }
        span.record("otel.status_description", why);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
