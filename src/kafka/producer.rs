//! The relay's Kafka publisher: an idempotent producer.
//!
//! `enable.idempotence` with `acks=all` means a retried send is written once and in order per
//! partition; events are keyed by job id, so one job's events keep their order. `publish`
//! returns only when the brokers acknowledged (or refused) every event of the batch.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};

use super::{KafkaSettings, message};
use crate::{domain::Event, jobs::ports::Publisher, metrics::Metrics, telemetry};

/// How long a send may wait for the brokers before it counts as failed (the event stays in
/// the outbox and is sent again).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a readiness check waits for the brokers' metadata.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes events to their topics.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
    settings: KafkaSettings,
    /// Where sends, their failures and durations are counted.
    metrics: Metrics,
}

impl KafkaPublisher {
    /// An idempotent producer to the brokers of `settings`; it connects on first use.
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let producer: FutureProducer = settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            // Idempotence keeps order with up to 5 requests in flight per connection.
            .set("max.in.flight.requests.per.connection", "5")
            .set("linger.ms", "2")
            .set(
                "delivery.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .context("Failed to create the Kafka producer")?;
        Ok(Self {
            producer,
            settings: settings.clone(),
            metrics: Metrics::off(),
        })
    }

    /// The same publisher, counting its sends into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The underlying producer, shared with the result consumer's dead-letter writes.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    async fn send(&self, event: &Event) -> anyhow::Result<()> {
        if !message::for_kafka(event) {
            return Ok(());
        }
        let topic = message::topic_of(event.kind, &self.settings.topics);
        let key = message::key_of(event);
        let span = telemetry::is_on().then(|| send_span(event, topic, &key));
        let payload = message::payload(event).to_string();
        let mut headers = OwnedHeaders::new();
        let traceparent = span.as_ref().and_then(telemetry::traceparent_of);
        for (name, value) in message::headers(event, &self.settings.source, traceparent) {
            headers = headers.insert(Header {
                key: name,
                value: Some(&value),
            });
        }
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        let start = Instant::now();
        let sent = self
            .producer
            .send(record, Timeout::After(DELIVERY_TIMEOUT))
            .await;
        self.metrics.published(topic, sent.is_ok(), start.elapsed());
        if let Some(span) = &span {
            match &sent {
                Ok(delivery) => {
                    span.record(
                        "messaging.destination.partition.id",
                        delivery.partition.to_string(),
                    );
                    span.record("messaging.kafka.offset", delivery.offset);
                }
                Err((error, _)) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", error.to_string());
                }
            }
        }
        sent.map(|_| ())
            .map_err(|(error, _)| anyhow!(error).context(format!("event {} to {topic}", event.id)))
    }
}

/// The PRODUCER span of one send, in the trace of the change that made the event, with
/// OpenTelemetry's messaging attributes (the key is the job id, never job data).
fn send_span(event: &Event, topic: &str, key: &str) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.kafka.message.key = key,
        messaging.message.id = %event.id,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, event.trace.as_deref(), None);
    span
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, events: &[Event]) -> Vec<anyhow::Result<()>> {
        // Each send is enqueued on its first poll, and join_all polls them in order, so the
        // producer receives the events in the batch's order.
        join_all(events.iter().map(|event| self.send(event))).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(PING_TIMEOUT))
                .map(|_| ())
                .map_err(|e| anyhow!(e).context("the Kafka brokers do not answer"))
        })
        .await?
    }
}
