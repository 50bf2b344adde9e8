#!/usr/bin/env bash
# Runs a command with a Jaeger v2 to send traces to: JAEGER_OTLP_ENDPOINT (OTLP over HTTP, the
# base URL an OTEL_EXPORTER_OTLP_ENDPOINT takes) and JAEGER_QUERY_URL (its HTTP query API).
#
# Unless both are already set (to a Jaeger of your own), starts the Jaeger that
# scripts/jaeger.sh builds (JAEGER, when set, is used instead) with in-memory storage on free
# loopback ports for the command's duration, then kills it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${JAEGER_OTLP_ENDPOINT:-}" ] && [ -n "${JAEGER_QUERY_URL:-}" ]; then
    echo "== using the Jaeger at JAEGER_QUERY_URL ($JAEGER_QUERY_URL)"
    exec "$@"
fi
jaeger="$(./scripts/jaeger.sh)"

read -r otlp query query_grpc < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
')
dir="$(mktemp -d)"
cat >"$dir/jaeger.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$query
    grpc:
      endpoint: 127.0.0.1:$query_grpc
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$otlp
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML
log="$dir/jaeger.log"
"$jaeger" --config "file:$dir/jaeger.yaml" >"$log" 2>&1 &
jaeger_pid=$!
trap 'kill -KILL "$jaeger_pid" 2>/dev/null || true; wait "$jaeger_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export JAEGER_QUERY_URL="http://127.0.0.1:$query"
export JAEGER_OTLP_ENDPOINT="http://127.0.0.1:$otlp"
deadline=$((SECONDS + 30))
until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/api/services", timeout=1)' "$JAEGER_QUERY_URL" 2>/dev/null; do
    if ! kill -0 "$jaeger_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        cat "$log" >&2
        echo "Jaeger did not start (log above)" >&2
        exit 1
    fi
    sleep 0.2
done
echo "== Jaeger: OTLP on $JAEGER_OTLP_ENDPOINT, queries on $JAEGER_QUERY_URL"
"$@"
