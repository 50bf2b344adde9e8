#!/usr/bin/env bash
# Runs a single-node Apache Kafka broker (KRaft mode: broker and controller in one JVM) in the
# foreground, for the tests:
#   scripts/kafka-broker.sh DATA_DIR PORT CONTROLLER_PORT
# Clients connect to 127.0.0.1:PORT; the KRaft controller listens on 127.0.0.1:CONTROLLER_PORT.
# DATA_DIR gets server.properties (rewritten on every start) and the logs/ data directory
# (formatted on the first start only), so the broker can be killed (SIGTERM or SIGKILL) and
# started again with the same arguments and keep its topics and records. The script execs the
# JVM, so the caller's child process is the broker itself. It logs to stdout and stderr; the line
# "[KafkaRaftServer nodeId=1] Kafka Server started" means it serves clients.
# Topics are not created automatically (auto.create.topics.enable=false) and every internal
# topic has a replication factor of 1.
# Uses the jars at KAFKA_CLASSPATH when set (scripts/with-kafka.sh exports it), otherwise
# scripts/kafka-classpath.sh (JDK 17+ and Maven). KAFKA_HEAP_OPTS overrides -Xmx512m -Xms512m.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 DATA_DIR PORT CONTROLLER_PORT" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
data_dir="$(cd "$1" && pwd)"
port=$2
controller_port=$3
classpath="${KAFKA_CLASSPATH:-}"
if [ -z "$classpath" ]; then
    classpath="$("$root/scripts/kafka-classpath.sh")"
fi
# Any fixed id will do: each DATA_DIR is a cluster of its own.
cluster_id=TnC-Vw0MTDe7bIb1su8-_w

cat >"$data_dir/server.properties" <<EOF
# Written by scripts/kafka-broker.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$data_dir/logs

# Topics: created explicitly (the service with its admin client, the tests with theirs).
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics on a single broker: replication factor 1, few partitions.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0

# A restart after SIGKILL waits until the controller (restarted too) expires the broker's old
# session (DUPLICATE_BROKER_REGISTRATION until then): 9 s by default, 2 s here.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2000

# Small and quick: few threads, a small log-cleaner buffer (the default takes 128 MiB of heap;
# Kafka wants more than 1 MiB per cleaner thread, so 1048576 is refused).
num.network.threads=1
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
group.coordinator.threads=1
share.coordinator.threads=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
EOF

java_opts=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$root/tests/support/kafka/log4j2.properties")

if [ ! -f "$data_dir/logs/meta.properties" ]; then
    # Not formatted yet (or a format was interrupted before writing meta.properties).
    rm -rf "$data_dir/logs"
    java -Xmx256m "${java_opts[@]}" -cp "$classpath" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$data_dir/server.properties"
fi

# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of options
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} "${java_opts[@]}" -cp "$classpath" \
    kafka.Kafka "$data_dir/server.properties"
