#!/usr/bin/env bash
# Prints the path of Jaeger v2, building it once per machine (scripts/go-tool.sh).
#
# The tracing tests send the service's spans to a real Jaeger over OTLP and read them back
# through its query API. JAEGER, when already set to an executable, is used as it is.
set -euo pipefail

if [ -n "${JAEGER:-}" ] && [ -x "$JAEGER" ]; then
    echo "$JAEGER"
    exit 0
fi
exec "$(dirname "$0")/go-tool.sh" jaeger github.com/jaegertracing/jaeger/cmd/jaeger v1.76.0
