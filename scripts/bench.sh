#!/usr/bin/env bash
# The benchmark, on the embedded, in-memory and MongoDB stores, and the Kafka path (see
# BENCHMARKS.md).
# Arguments go to the benchmark, e.g. `./scripts/bench.sh --quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/with-mongo.sh ./scripts/with-kafka.sh cargo bench --locked --bench service -- "$@"
