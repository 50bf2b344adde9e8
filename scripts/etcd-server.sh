#!/usr/bin/env bash
# Runs a single-member etcd in the foreground, for the tests:
#   scripts/etcd-server.sh DATA_DIR CLIENT_PORT PEER_PORT
# Clients reach it at http://127.0.0.1:CLIENT_PORT (the v3 API over gRPC and its JSON gateway);
# the member's peer port 127.0.0.1:PEER_PORT is for raft only. The data in DATA_DIR survives a
# kill, so the same arguments start the same member again with its keys and leases. The script
# execs etcd, so the caller's child process is the server itself. GET /health answers
# {"health":"true"} once it serves.
# Uses the etcd on PATH; scripts/with-etcd.sh installs Debian's etcd-server when there is none.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 DATA_DIR CLIENT_PORT PEER_PORT" >&2
    exit 2
fi
client="http://127.0.0.1:$2"
peer="http://127.0.0.1:$3"
# etcd reads every ETCD_* variable as one of its flags: the clients' ETCD_ENDPOINTS is not one.
exec env -u ETCD_ENDPOINTS etcd \
    --name test \
    --data-dir "$1" \
    --listen-client-urls "$client" \
    --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" \
    --initial-advertise-peer-urls "$peer" \
    --initial-cluster "test=$peer" \
    --logger zap \
    --log-level warn
