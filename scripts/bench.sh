#!/usr/bin/env bash
# The benchmark, on the embedded, in-memory and MongoDB stores, and the Kafka path (see
# BENCHMARKS.md).
# Arguments go to the benchmark, e.g. `./scripts/bench.sh --quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The window figures store 100,000 jobs in the MongoDB-wire test server, which holds them all
# in its Java heap.
export MONGO_WIRE_SERVER_HEAP="${MONGO_WIRE_SERVER_HEAP:-4g}"
./scripts/with-mongo.sh ./scripts/with-kafka.sh cargo bench --locked --bench service -- "$@"
