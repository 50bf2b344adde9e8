#!/usr/bin/env bash
# Runs a command with MONGODB_URI pointing at a MongoDB-wire server.
#
# Unless MONGODB_URI is already set (say, to a real MongoDB from `docker compose up mongo`),
# starts mongo-java-server (from Maven Central; needs a JDK 17+ and Maven) on a free loopback
# port for the command's duration. Either way MONGO_WIRE_SERVER_CLASSPATH is exported, so tests
# can start private servers of their own (the outage tests stop and restart theirs).
# MONGO_WIRE_SERVER_HEAP sets the server's Java heap (default 512m; it keeps every document in
# it, so 100,000 stored jobs need a few GiB); MONGO_WIRE_SERVER_JAVA_OPTS adds JVM options (the
# benchmarks choose its garbage collector with it).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in java javac mvn python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found: MongoDB-wire tests need a JDK 17+, Maven and python3 (apt-get install openjdk-17-jdk-headless maven python3)" >&2
        exit 1
    fi
done
MONGO_WIRE_SERVER_CLASSPATH="$(./scripts/mongo-wire-server.sh)"
export MONGO_WIRE_SERVER_CLASSPATH

if [ -n "${MONGODB_URI:-}" ]; then
    echo "== using the MongoDB at MONGODB_URI"
    exec "$@"
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
# shellcheck disable=SC2086 # the options are words
java "-Xmx${MONGO_WIRE_SERVER_HEAP:-512m}" ${MONGO_WIRE_SERVER_JAVA_OPTS:-} -cp "$MONGO_WIRE_SERVER_CLASSPATH" MongoWireServer 127.0.0.1 "$port" >"$log" 2>&1 &
mongo_pid=$!
trap 'kill "$mongo_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 150); do
    grep -q "listening" "$log" && break
    kill -0 "$mongo_pid" 2>/dev/null || break
    sleep 0.2
done
if ! grep -q "listening" "$log"; then
    cat "$log" >&2
    echo "mongo-java-server did not start" >&2
    exit 1
fi
export MONGODB_URI="mongodb://127.0.0.1:$port"
echo "== mongo-java-server on $MONGODB_URI"
"$@"
