#!/usr/bin/env bash
# Prints the path of a Go program, building it once per machine: go-tool.sh NAME PACKAGE VERSION.
#
# The program is built from its Go module (no prebuilt download) with the Go toolchain (PATH,
# or /usr/local/go/bin), into ~/.cache/scheduler/NAME-VERSION/NAME, and reused from there.
# `go install PACKAGE@VERSION` is tried first; a module whose go.mod has replace directives
# refuses that, and is then built as a tool of a throwaway module instead.
set -euo pipefail

name="$1" package="$2" version="$3"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/scheduler/$name-$version"
if [ -x "$dir/$name" ]; then
    echo "$dir/$name"
    exit 0
fi
go="$(command -v go || true)"
[ -n "$go" ] || go=/usr/local/go/bin/go
if [ ! -x "$go" ]; then
    echo "go not found: building $name needs a Go toolchain (1.25+)" >&2
    exit 1
fi
echo "== building $name $version into $dir (once per machine)" >&2
mkdir -p "$dir"
start=$(date +%s)
if ! GOBIN="$dir" "$go" install "$package@$version" >&2 2>"$dir/install.log"; then
    cat "$dir/install.log" >&2
    echo "== go install refused $package; building it as a tool of a throwaway module" >&2
    module="$(mktemp -d)"
    (
        cd "$module"
        "$go" mod init "build-$name" >/dev/null 2>&1
        "$go" get -tool "$package@$version" >&2
        "$go" build -o "$dir/$name" "$package" >&2
    )
    rm -rf "$module"
fi
rm -f "$dir/install.log"
echo "== $name built in $(( $(date +%s) - start )) s" >&2
echo "$dir/$name"
