#!/usr/bin/env bash
# Runs a command with ETCD_ENDPOINTS pointing at an etcd server.
#
# Unless ETCD_ENDPOINTS is already set (to an etcd of your own), starts a single-member etcd
# (scripts/etcd-server.sh) on free loopback ports with a throwaway data directory for the
# command's duration, then kills it and deletes its data. Without an etcd on PATH it installs
# Debian's etcd-server first (apt-get, as root or through sudo; about 15 s). Either way
# ETCD_SERVER_SCRIPT (the absolute path of scripts/etcd-server.sh) is exported, so tests can
# start private servers of their own (the outage test starts one late):
# "$ETCD_SERVER_SCRIPT" DATA_DIR CLIENT_PORT PEER_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd-server (Debian)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi
ETCD_SERVER_SCRIPT="$PWD/scripts/etcd-server.sh"
export ETCD_SERVER_SCRIPT

if [ -n "${ETCD_ENDPOINTS:-}" ]; then
    echo "== using the etcd at ETCD_ENDPOINTS ($ETCD_ENDPOINTS)"
    exec "$@"
fi

read -r port peer_port < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])
')
dir="$(mktemp -d)"
log="$dir/etcd.log"
"$ETCD_SERVER_SCRIPT" "$dir/data" "$port" "$peer_port" >"$log" 2>&1 &
etcd_pid=$!
trap 'kill -KILL "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

endpoint="http://127.0.0.1:$port"
deadline=$((SECONDS + 30))
until python3 -c 'import sys, urllib.request; sys.exit(b"\"true\"" not in urllib.request.urlopen(sys.argv[1] + "/health", timeout=1).read())' "$endpoint" 2>/dev/null; do
    if ! kill -0 "$etcd_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        cat "$log" >&2
        echo "etcd did not start (log above)" >&2
        exit 1
    fi
    sleep 0.2
done
export ETCD_ENDPOINTS="$endpoint"
echo "== etcd on $ETCD_ENDPOINTS"
"$@"
