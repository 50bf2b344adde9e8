#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
# It needs a Rust toolchain (rustup with rustfmt and clippy), a JDK 17+, Maven and python3 (with
# venv or pip: scripts/schemathesis.sh installs Schemathesis from PyPI into a cached virtualenv).
# The tests start the service themselves on free loopback ports; the store tests run against
# the embedded store and against the MongoDB-wire server that scripts/with-mongo.sh provides,
# and the Kafka tests against the single-node Apache Kafka broker that scripts/with-kafka.sh
# starts (on 127.0.0.1:9092, or free ports if that is taken), and the etcd registration tests
# against the etcd that scripts/with-etcd.sh starts (installing Debian's etcd-server if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

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
./scripts/with-mongo.sh ./scripts/with-kafka.sh ./scripts/with-etcd.sh cargo test --locked
echo "== schemathesis (the REST API against its OpenAPI document)"
# `cargo test` built the binary (the end-to-end tests run it), with the features the tests
# unify; building it again alone would rebuild dependencies for nothing.
SCHEMATHESIS_TEST_AUTH=1 ./scripts/schemathesis.sh target/debug/scheduler
