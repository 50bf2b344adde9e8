#!/usr/bin/env bash
# Prints the path of Prometheus's promtool, building it once per machine.
#
# The metrics tests run the real `promtool check metrics` and `promtool check rules`; promtool
# is built from its Go module (no prebuilt download) with the Go toolchain (PATH, or
# /usr/local/go/bin), into ~/.cache/scheduler/promtool-$VERSION, and reused from there.
# PROMTOOL, when already set to an executable, is used as it is.
set -euo pipefail

version="v0.316.0"
if [ -n "${PROMTOOL:-}" ] && [ -x "$PROMTOOL" ]; then
    echo "$PROMTOOL"
    exit 0
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/scheduler/promtool-$version"
if [ ! -x "$dir/promtool" ]; then
    go="$(command -v go || true)"
    [ -n "$go" ] || go=/usr/local/go/bin/go
    if [ ! -x "$go" ]; then
        echo "go not found: building promtool needs a Go toolchain (1.25+)" >&2
        exit 1
    fi
    echo "== building promtool $version into $dir (once per machine)" >&2
    mkdir -p "$dir"
    start=$(date +%s)
    GOBIN="$dir" "$go" install "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
    echo "== promtool built in $(( $(date +%s) - start )) s" >&2
fi
echo "$dir/promtool"
