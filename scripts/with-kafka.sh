#!/usr/bin/env bash
# Runs a command with KAFKA_BROKERS pointing at an Apache Kafka broker.
#
# Unless KAFKA_BROKERS is already set (to brokers of your own, host:port[,host:port...]), starts
# a single-node KRaft broker (scripts/kafka-broker.sh: Kafka 4.1 from Maven Central; needs a JDK
# 17+, Maven and python3) on 127.0.0.1:9092, or on free loopback ports when 9092 or its controller
# port 9093 is taken, for the command's duration, then kills it and deletes its data.
# Either way KAFKA_CLASSPATH (the Kafka jars) and KAFKA_BROKER_SCRIPT (the absolute path of
# scripts/kafka-broker.sh) are exported, so tests can start private brokers of their own (the
# outage tests kill and restart theirs): "$KAFKA_BROKER_SCRIPT" DATA_DIR PORT CONTROLLER_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in java mvn python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found: Kafka tests need a JDK 17+, Maven and python3 (apt-get install openjdk-17-jdk-headless maven python3)" >&2
        exit 1
    fi
done
KAFKA_CLASSPATH="$(./scripts/kafka-classpath.sh)"
KAFKA_BROKER_SCRIPT="$PWD/scripts/kafka-broker.sh"
export KAFKA_CLASSPATH KAFKA_BROKER_SCRIPT

if [ -n "${KAFKA_BROKERS:-}" ]; then
    echo "== using the Kafka broker(s) at KAFKA_BROKERS ($KAFKA_BROKERS)"
    exec "$@"
fi

# 9092 and 9093 when both are free, else two free ports. (SO_REUSEADDR as Kafka binds: a port
# with only TIME_WAIT connections left by an earlier broker is free.)
read -r port controller_port < <(python3 -c '
import socket
def bind(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        return None
a, b = bind(9092), bind(9093)
if a is None or b is None:
    a, b = bind(0), bind(0)
print(a.getsockname()[1], b.getsockname()[1])
')

dir="$(mktemp -d)"
log="$dir/broker.log"
# In a process group of its own (set -m), so that killing the group also gets the storage
# formatter kafka-broker.sh may still be running.
set -m
"$KAFKA_BROKER_SCRIPT" "$dir/data" "$port" "$controller_port" >"$log" 2>&1 &
kafka_pid=$!
set +m
trap 'kill -KILL -- "-$kafka_pid" 2>/dev/null || true; wait "$kafka_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ready once it has logged that it started and its port takes connections.
ready() {
    grep -q "Kafka Server started" "$log" &&
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null
}
deadline=$((SECONDS + 90))
until ready; do
    if ! kill -0 "$kafka_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        cat "$log" >&2
        echo "the Kafka broker did not start (log above)" >&2
        exit 1
    fi
    sleep 0.2
done
export KAFKA_BROKERS="127.0.0.1:$port"
echo "== Kafka broker on $KAFKA_BROKERS"
"$@"
