#!/usr/bin/env bash
# The dashboard's tests in a real browser: Debian's Chromium driven by Playwright for Python,
# with axe-core checking accessibility, against an already-built binary.
#
#   scripts/ui-test.sh [path/to/scheduler] [pytest options...]
#
# Installs what is missing, once per machine: Chromium with apt-get (Playwright's own browser
# download is never used), Playwright, pytest and PyJWT into a cached virtualenv
# (~/.cache/scheduler/ui-venv, at the versions in scripts/requirements-ui.txt), and axe-core
# from npm (~/.cache/scheduler/axe-core-$AXE_VERSION). Each page's screenshot is saved under
# target/ui-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-${SCHEDULER_BIN:-target/debug/scheduler}}"
[ $# -gt 0 ] && shift
if [ ! -x "$bin" ]; then
    echo "ui-test.sh: no service binary at $bin (build it first: cargo build --bin scheduler)" >&2
    exit 1
fi

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (apt-get)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

requirements="scripts/requirements-ui.txt"
venv="${UI_VENV:-$HOME/.cache/scheduler/ui-venv}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
    echo "== installing Playwright for Python into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --requirement "$requirements"
    cp "$requirements" "$stamp"
fi

AXE_VERSION=4.14.1
axe_dir="$HOME/.cache/scheduler/axe-core-$AXE_VERSION"
if [ ! -f "$axe_dir/node_modules/axe-core/axe.min.js" ]; then
    echo "== installing axe-core $AXE_VERSION (npm)"
    mkdir -p "$axe_dir"
    npm install --silent --no-audit --no-fund --prefix "$axe_dir" "axe-core@$AXE_VERSION" >/dev/null
fi

SCHEDULER_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
CHROMIUM="$(command -v chromium)"
AXE_JS="$axe_dir/node_modules/axe-core/axe.min.js"
UI_SCREENSHOTS="$PWD/target/ui-screenshots"
export SCHEDULER_BIN CHROMIUM AXE_JS UI_SCREENSHOTS
cd tests/ui
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
