//! The Kafka adapters: the outbox's publisher, and the consumer of executors' results.
//!
//! - [`message`]: payloads and headers of events, and result messages (the contract's format).
//! - [`producer`]: [`producer::KafkaPublisher`], an idempotent producer that the outbox relay
//!   hands events to, and that acknowledges each only once the brokers have it.
//! - [`consumer`]: [`consumer::ResultConsumer`], which applies results and dead-letters those
//!   that cannot be applied.
//!
//! Topics are created at start when missing, with the configured partitions and replicas.

pub mod consumer;
pub mod message;
pub mod producer;

use std::time::Duration;

use anyhow::{Context, anyhow};
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

/// How long start-up waits for the brokers to create topics.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic's name and how to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: String,
    /// Partitions it is created with when missing.
    pub partitions: i32,
    /// Replicas it is created with when missing.
    pub replicas: i32,
}

/// The topics the service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Creation events.
    pub create: TopicSpec,
    /// Every other event: updates, deletions, finished runs, pauses, resumes, cancellations.
    pub update: TopicSpec,
    /// Fired runs, for executors.
    pub run: TopicSpec,
    /// Executors' results, consumed here.
    pub run_result: TopicSpec,
    /// Results that cannot be applied, with the reason in a header.
    pub dead_letter: TopicSpec,
}

impl Topics {
    fn all(&self) -> [&TopicSpec; 5] {
        [
            &self.create,
            &self.update,
            &self.run,
            &self.run_result,
            &self.dead_letter,
        ]
    }
}

/// Everything the Kafka adapters need.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// The topics used.
    pub topics: Topics,
    /// Consumer group of the result consumer.
    pub group_id: String,
    /// CloudEvents `source` of published events.
    pub source: String,
    /// How often the relay looks for events other processes stored.
    pub outbox_poll: Duration,
}

impl KafkaSettings {
    /// Client settings shared by the producer, the consumer and the admin client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "scheduler")
            // An unreachable broker is normal during an outage; the service says so itself.
            .set("log_level", "3");
        config
    }
}

/// Creates the topics that do not exist yet. Existing topics are left as they are.
pub async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .context("Failed to create the Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = settings
        .topics
        .all()
        .into_iter()
        .map(|t| NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replicas)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .with_context(|| format!("Failed to reach the Kafka brokers at {}", settings.brokers))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(anyhow!("Failed to create the Kafka topic {topic}: {code}"));
            }
        }
    }
    Ok(())
}
