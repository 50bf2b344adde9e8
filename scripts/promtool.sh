#!/usr/bin/env bash
# Prints the path of Prometheus's promtool, building it once per machine (scripts/go-tool.sh).
#
# The metrics tests run the real `promtool check metrics` and `promtool check rules`.
# PROMTOOL, when already set to an executable, is used as it is.
set -euo pipefail

if [ -n "${PROMTOOL:-}" ] && [ -x "$PROMTOOL" ]; then
    echo "$PROMTOOL"
    exit 0
fi
exec "$(dirname "$0")/go-tool.sh" promtool github.com/prometheus/prometheus/cmd/promtool v0.316.0
