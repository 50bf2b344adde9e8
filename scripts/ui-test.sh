#!/usr/bin/env bash
# The dashboard's tests in real browsers: Debian's Chromium driven by Playwright for Python,
# with axe-core checking accessibility, and Debian's Firefox ESR driven by Selenium through
# geckodriver, against an already-built binary.
#
#   scripts/ui-test.sh [path/to/scheduler] [pytest options...]
#
# Installs what is missing, once per machine: Chromium and Firefox ESR with apt-get
# (Playwright's own browser download is never used), Playwright, Selenium, pytest and PyJWT
# into a cached virtualenv (~/.cache/scheduler/ui-venv, at the versions in
# scripts/requirements-ui.txt), axe-core from npm (~/.cache/scheduler/axe-core-$AXE_VERSION),
# and geckodriver from crates.io (~/.cache/scheduler/geckodriver-$GECKODRIVER_VERSION; its
# first build takes a few minutes). Each page's screenshot is saved under target/ui-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-${SCHEDULER_BIN:-target/debug/scheduler}}"
[ $# -gt 0 ] && shift
if [ ! -x "$bin" ]; then
    echo "ui-test.sh: no service binary at $bin (build it first: cargo build --bin scheduler)" >&2
    exit 1
fi

missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v firefox-esr >/dev/null 2>&1 || missing="$missing firefox-esr"
if [ -n "$missing" ]; then
    echo "== installing$missing (apt-get)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

GECKODRIVER_VERSION=0.37.1
gecko_dir="$HOME/.cache/scheduler/geckodriver-$GECKODRIVER_VERSION"
if [ ! -x "$gecko_dir/bin/geckodriver" ]; then
    echo "== building geckodriver $GECKODRIVER_VERSION (cargo install)"
    cargo install --quiet --locked --version "$GECKODRIVER_VERSION" --root "$gecko_dir" geckodriver
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
FIREFOX="$(command -v firefox-esr)"
GECKODRIVER="$gecko_dir/bin/geckodriver"
# Selenium finds nothing itself: the browser and the driver are given.
SE_OFFLINE=true
AXE_JS="$axe_dir/node_modules/axe-core/axe.min.js"
UI_SCREENSHOTS="$PWD/target/ui-screenshots"
export SCHEDULER_BIN CHROMIUM FIREFOX GECKODRIVER SE_OFFLINE AXE_JS UI_SCREENSHOTS
cd tests/ui
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
