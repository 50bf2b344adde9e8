#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
# It needs a Rust toolchain (rustup with rustfmt and clippy), a JDK 17+ and Maven. The tests
# start the service themselves on free loopback ports. Unless MONGODB_URI is set (say, to a real
# MongoDB from `docker compose up mongo`), a MongoDB-wire server (mongo-java-server, from Maven
# Central) is started on loopback for the store tests and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

for tool in java javac mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool not found: the store tests need a JDK 17+ and Maven (apt-get install openjdk-17-jdk-headless maven)" >&2
        exit 1
    fi
done
echo "== preparing mongo-java-server"
MONGO_WIRE_SERVER_CLASSPATH="$(./scripts/mongo-wire-server.sh)"
export MONGO_WIRE_SERVER_CLASSPATH
if [ -z "${MONGODB_URI:-}" ]; then
    port="$(free_port)"
    log="$(mktemp)"
    java -Xmx512m -cp "$MONGO_WIRE_SERVER_CLASSPATH" MongoWireServer 127.0.0.1 "$port" >"$log" 2>&1 &
    mongo_pid=$!
    trap 'kill "$mongo_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 1 150); do
        grep -q "listening" "$log" && break
        kill -0 "$mongo_pid" 2>/dev/null || { cat "$log" >&2; echo "mongo-java-server did not start" >&2; exit 1; }
        sleep 0.2
    done
    grep -q "listening" "$log" || { cat "$log" >&2; echo "mongo-java-server did not start" >&2; exit 1; }
    export MONGODB_URI="mongodb://127.0.0.1:$port"
    echo "mongo-java-server on $MONGODB_URI"
else
    echo "using the MongoDB at MONGODB_URI"
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
        exit 1
    fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
