//! Apache Kafka for the tests: the broker at `KAFKA_BROKERS` (which `scripts/test.sh` starts),
//! topic names and a consumer group of each test's own, plain clients to read and write them,
//! and private brokers the outage tests kill and start again.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use clap::Parser;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    message::{Headers, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use scheduler::{config::Config, kafka::KafkaSettings};
use serde_json::Value;

use super::net::free_port;

/// The broker every test here may use.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS is not set: run the tests with ./scripts/test.sh, which starts Apache Kafka",
    )
}

/// Topic names and a consumer group of one test's own.
pub struct TestTopics {
    pub prefix: String,
}

impl TestTopics {
    pub fn new() -> Self {
        Self {
            prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    pub fn name(&self, topic: &str) -> String {
        format!("{}-{topic}", self.prefix)
    }

    pub fn create(&self) -> String {
        self.name("topic-job-create")
    }
    pub fn update(&self) -> String {
        self.name("topic-job-update")
    }
    pub fn run(&self) -> String {
        self.name("topic-job-run")
    }
    pub fn result(&self) -> String {
        self.name("topic-job-run-result")
    }
    pub fn dead_letter(&self) -> String {
        self.name("topic-job-run-result-dlq")
    }
    pub fn group(&self) -> String {
        self.name("job-run-result-consumer-scheduler")
    }

    /// The service's flags for these topics on `brokers`.
    pub fn flags(&self, brokers: &str) -> Vec<String> {
        [
            ("--kafka-brokers", brokers.to_owned()),
            ("--topic-job-create", self.create()),
            ("--topic-job-update", self.update()),
            ("--topic-job-run", self.run()),
            ("--topic-job-run-result", self.result()),
            ("--topic-job-run-result-dlq", self.dead_letter()),
            ("--topic-job-run-result-consumer-group-id", self.group()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }

    /// An in-process service with an in-memory store, publishing to these topics.
    pub fn config(&self, brokers: &str) -> Config {
        let mut args: Vec<String> = [
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--store",
            "memory",
            "--lease-seconds",
            "2",
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.flags(brokers));
        Config::parse_from(args)
    }

    /// The same on the embedded store in `data_dir`, which several apps may open in turn or at
    /// once, as replicas do.
    pub fn embedded_config(&self, brokers: &str, data_dir: &std::path::Path) -> Config {
        let mut config = self.config(brokers);
        config.store = Some(scheduler::config::StoreKind::Embedded);
        config.data_dir = data_dir.to_owned();
        config
    }

    pub fn settings(&self, brokers: &str) -> KafkaSettings {
        self.config(brokers).kafka_settings().expect("brokers set")
    }

    /// Creates the topics now, so readers can be assigned to them before the service runs.
    pub async fn ensure(&self, brokers: &str) {
        scheduler::kafka::ensure_topics(&self.settings(brokers))
            .await
            .expect("topics created");
    }
}

/// A message as a plain consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

impl Received {
    pub fn of(message: &OwnedMessage) -> Self {
        let mut headers = HashMap::new();
        if let Some(all) = message.headers() {
            for header in all.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        Self {
            topic: message.topic().to_owned(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_deref().expect("a value")).expect("JSON value")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", self.headers))
    }
}

/// A plain consumer reading topics from their beginning, with no consumer group.
pub struct Reader {
    consumer: StreamConsumer,
}

impl Reader {
    pub fn new(brokers: &str, topics: &[String]) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        for topic in topics {
            partitions
                .add_partition_offset(topic, 0, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&partitions).unwrap();
        Self { consumer }
    }

    /// Reads until `done` holds for everything read so far.
    pub async fn until(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(message)) => seen.push(Received::of(&message.detach())),
                Ok(Err(error)) => panic!("consumer error: {error}"),
                Err(_) => panic!(
                    "timed out; read {} messages: {:#?}",
                    seen.len(),
                    seen.iter()
                        .map(|r| (
                            r.topic.clone(),
                            r.payload.as_deref().map(String::from_utf8_lossy)
                        ))
                        .collect::<Vec<_>>()
                ),
            }
        }
        seen
    }
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// Produces a message with a plain producer; returns its offset.
pub async fn produce(brokers: &str, topic: &str, key: &str, payload: Option<&[u8]>) -> i64 {
    produce_with(brokers, topic, key, payload, &[]).await
}

/// As `produce`, with these headers.
pub async fn produce_with(
    brokers: &str,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> i64 {
    let mut all = rdkafka::message::OwnedHeaders::new();
    for (name, value) in headers {
        all = all.insert(rdkafka::message::Header {
            key: name,
            value: Some(*value),
        });
    }
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key).headers(all);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer(brokers)
        .send(record, Timeout::After(Duration::from_secs(20)))
        .await
        .expect("produced")
        .offset
}

/// The offset the group has committed on partition 0 of `topic` (-1001 for none).
pub async fn committed(brokers: &str, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    tokio::task::spawn_blocking(move || {
        let offsets = consumer
            .committed_offsets(partitions, Timeout::After(Duration::from_secs(10)))
            .unwrap();
        offsets.elements()[0].offset().to_raw().unwrap_or(-1)
    })
    .await
    .unwrap()
}

/// How many messages `topic` holds (its high watermark on partition 0).
pub async fn message_count(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_watermarks(&topic, 0, Timeout::After(Duration::from_secs(10)))
            .unwrap()
            .1
    })
    .await
    .unwrap()
}

/// A Kafka broker of one test's own, which it can kill and start again on the same data.
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            controller_port: free_port(),
            child: None,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker and waits until it answers.
    pub async fn start(&mut self) {
        let script = std::env::var("KAFKA_BROKER_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker.sh")
            });
        let log = std::fs::File::create(self.dir.path().join("broker.log")).unwrap();
        let child = Command::new("bash")
            .arg(script)
            .arg(self.dir.path().join("broker"))
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the broker script starts");
        self.child = Some(child);
        let address = self.address();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let address = address.clone();
            let answered = tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &address)
                    .set("log_level", "0")
                    .create()
                    .unwrap();
                consumer
                    .fetch_metadata(None, Timeout::After(Duration::from_secs(1)))
                    .is_ok_and(|m| !m.brokers().is_empty())
            })
            .await
            .unwrap();
            if answered {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
                panic!("the private broker did not start:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGKILLs the broker.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
