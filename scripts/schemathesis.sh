#!/usr/bin/env bash
# Property-based tests of the REST API against its own OpenAPI document, with Schemathesis:
# every phase (examples, coverage, fuzzing, stateful) and every check, so a client generated from
# the document can trust it. Fails on any failure.
#
#   scripts/schemathesis.sh [path/to/scheduler] [extra schemathesis run options...]
#
# It builds nothing: it starts an already-built binary (the first argument, else
# $SCHEDULER_BIN, else target/debug/scheduler) on the memory store on a free loopback port,
# and stops it on exit. Schemathesis is installed once into a cached virtualenv
# ($SCHEMATHESIS_VENV, default ~/.cache/scheduler/schemathesis-venv) at the version pinned in
# scripts/requirements-schemathesis.txt. Per-operation settings (the event stream's bounded
# reads, the answers that depend on earlier requests) and the strategies for the document's
# custom string formats are in scripts/schemathesis.toml and scripts/schemathesis_hooks.py.
# Nothing is excluded: every operation of the document is tested, the event stream included.
#
# Optional environment:
#   SCHEMATHESIS_TEST_AUTH=1   start the service with access control on (the test key
#                              tests/keys/rsa.pub) and send an admin token signed with
#                              tests/keys/rsa.key, so the run covers the security scheme too
#                              (Schemathesis then also checks that calls without it are refused)
#   SCHEMATHESIS_AUTH_HEADER   a header sent on every request, e.g. "Authorization: Bearer <jwt>"
#   SCHEMATHESIS_SERVICE_FLAGS extra flags for the service, e.g. "--auth-public-key-file key.pem"
#   SCHEMATHESIS_MAX_EXAMPLES  cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED          the random seed (default 20240601), for runs without
#                              --generation-deterministic (which makes every run the same)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-${SCHEDULER_BIN:-target/debug/scheduler}}"
[ $# -gt 0 ] && shift
if [ ! -x "$bin" ]; then
    echo "schemathesis.sh: no service binary at $bin (build it first: cargo build --bin scheduler)" >&2
    exit 1
fi

requirements="scripts/requirements-schemathesis.txt"
venv="${SCHEMATHESIS_VENV:-$HOME/.cache/scheduler/schemathesis-venv}"
stamp="$venv/.requirements"

# The venv is rebuilt only when the pinned requirements change.
if [ ! -x "$venv/bin/schemathesis" ] || ! cmp -s "$requirements" "$stamp"; then
    echo "== installing Schemathesis into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if python3 -m venv "$venv" 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --requirement "$requirements"
    else
        # Some distributions ship python3 without ensurepip: install for the user instead,
        # into the same cache directory.
        rm -rf "$venv"
        mkdir -p "$venv/bin"
        PYTHONUSERBASE="$venv/user" python3 -m pip install --quiet --user --requirement "$requirements"
        ln -sf "$venv/user/bin/schemathesis" "$venv/bin/schemathesis"
        printf '#!/bin/sh\nPYTHONUSERBASE="%s/user" exec python3 "$@"\n' "$venv" >"$venv/bin/python"
        chmod +x "$venv/bin/python"
    fi
    cp "$requirements" "$stamp"
fi
export PYTHONUSERBASE="$venv/user"

service_flags="${SCHEMATHESIS_SERVICE_FLAGS:-}"
auth_header="${SCHEMATHESIS_AUTH_HEADER:-}"
if [ "${SCHEMATHESIS_TEST_AUTH:-0}" = 1 ]; then
    service_flags="$service_flags --auth-public-key-file tests/keys/rsa.pub"
    token="$("$venv/bin/python" - <<'PY'
import time, jwt
key = open("tests/keys/rsa.key").read()
now = int(time.time())
print(jwt.encode({"sub": "schemathesis", "role": "admin", "iat": now, "exp": now + 3600}, key, algorithm="RS256"))
PY
)"
    auth_header="Authorization: Bearer $token"
fi

# A free loopback port: bind port 0 and release it (the service binds it right after).
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
log="$(mktemp -t scheduler-schemathesis.XXXXXX.log)"

# A claim waits for runs as long as it asks (up to 60 s): here at most a second, so the cases
# that ask for long waits do not take the run's time. Webhooks may call the examples' host only
# (which this machine cannot reach: such a call fails its attempt).
# shellcheck disable=SC2086 # the extra service flags are words on purpose
"$bin" --store memory --host 127.0.0.1 --port "$port" --claim-max-wait-seconds 1 \
    --webhook-allowed-hosts hooks.example.com $service_flags >"$log" 2>&1 &
service=$!
stop() {
    kill "$service" 2>/dev/null || true
    wait "$service" 2>/dev/null || true
    rm -f "$log"
}
trap stop EXIT

for _ in $(seq 1 100); do
    if curl -fsS "$base/healthz" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$service" 2>/dev/null; then
        echo "schemathesis.sh: the service exited at start:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null

headers=()
if [ -n "$auth_header" ]; then
    headers=(--header "$auth_header")
fi

echo "== schemathesis $("$venv/bin/schemathesis" --version | awk '{print $NF}') against $base"
status=0
"$venv/bin/schemathesis" --config-file=scripts/schemathesis.toml run "$base/api-docs/openapi.json" \
    --phases=examples,coverage,fuzzing,stateful \
    --checks=all \
    --max-examples="${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --seed="${SCHEMATHESIS_SEED:-20240601}" \
    --generation-deterministic \
    --workers=1 \
    --request-timeout=10 \
    --no-color \
    "${headers[@]}" \
    "$@" || status=$?

if [ "$status" -ne 0 ]; then
    echo "== the service's log (last 50 lines)" >&2
    tail -n 50 "$log" >&2
fi
exit "$status"
