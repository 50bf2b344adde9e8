#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
# It needs a Rust toolchain (rustup with rustfmt and clippy), a JDK 17+, Maven and python3 (with
# venv or pip: scripts/schemathesis.sh installs Schemathesis from PyPI into a cached virtualenv).
# The tests start the service themselves on free loopback ports; the store tests run against
# the embedded store and against the MongoDB-wire server that scripts/with-mongo.sh provides,
# and the Kafka tests against the single-node Apache Kafka broker that scripts/with-kafka.sh
# starts (on 127.0.0.1:9092, or free ports if that is taken), and the etcd registration tests
# against the etcd that scripts/with-etcd.sh starts (installing Debian's etcd-server if missing).
# The metrics tests run the real promtool and the tracing tests a real Jaeger v2, which
# scripts/promtool.sh and scripts/jaeger.sh build with Go (1.25+; PATH or /usr/local/go/bin)
# once per machine; the first builds run beside the lints, the tests get promtool's path in
# PROMTOOL, and scripts/with-jaeger.sh starts Jaeger for them. The README's quick start runs
# as a test too, and its executors, with curl, jq and kcat (installed with apt-get when missing).
# Last, the dashboard is tested in Debian's Chromium with Playwright for Python and axe-core
# (scripts/ui-test.sh installs them once per machine).
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

# The README's quick start and executors, which tests run as pasted, need curl, jq and kcat.
missing=""
for tool in curl jq kcat; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "== installing$missing (apt-get)"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

# One after the other: two Go builds at once would only share the same cores.
promtool_out="$(mktemp)"
(./scripts/promtool.sh >"$promtool_out" && ./scripts/jaeger.sh >/dev/null) &
go_tools_pid=$!
trap 'kill "$go_tools_pid" 2>/dev/null || true; rm -f "$promtool_out"' EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== promtool and Jaeger"
wait "$go_tools_pid"
PROMTOOL="$(cat "$promtool_out")"
export PROMTOOL
echo "== cargo test"
./scripts/with-mongo.sh ./scripts/with-kafka.sh ./scripts/with-etcd.sh ./scripts/with-jaeger.sh \
    cargo test --locked
echo "== schemathesis (the REST API against its OpenAPI document)"
# `cargo test` built the binary (the end-to-end tests run it), with the features the tests
# unify; building it again alone would rebuild dependencies for nothing.
SCHEMATHESIS_TEST_AUTH=1 ./scripts/schemathesis.sh target/debug/scheduler
echo "== the dashboard in Chromium (Playwright, axe-core)"
./scripts/ui-test.sh target/debug/scheduler
