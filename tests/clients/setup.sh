#!/usr/bin/env bash
# tests/clients/setup.sh: the real shipper clients the shipper tests (tests/it/shippers.rs)
# send with: the OpenTelemetry Python SDK with its OTLP/HTTP exporter, the official
# `elasticsearch` Python client (8.x, whose bulk helper checks what Elasticsearch answers),
# and `logger` (util-linux) for syslog.
#
#   bash tests/clients/setup.sh     prints the venv's python path
#
# Idempotent: a venv whose pinned versions import is kept. Lives in
# $WEIR_CACHE_DIR/venv-clients-<hash of the pins> (default ~/.cache/weir) so CI caches it;
# a change of a pin makes a new venv. Needs python3 (3.9+) with venv, and pip access to PyPI.
set -euo pipefail

# Pinned: the tests check what these exact clients send and accept; a new version is a
# deliberate change of these lines.
pins="opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2 elasticsearch==8.19.3"
cache="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
hash="$(printf '%s' "$pins" | sha256sum | cut -c1-12)"
venv="$cache/venv-clients-$hash"

command -v python3 >/dev/null 2>&1 || {
    echo "clients/setup.sh: python3 not found: install Python 3.9+ with the venv module" >&2
    exit 1
}
# util-linux's logger (Debian package bsdutils) sends the syslog test's messages.
if ! command -v logger >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q bsdutils >&2
    else
        echo "clients/setup.sh: logger not found: install util-linux's logger (Debian: apt-get install bsdutils)" >&2
        exit 1
    fi
fi
check='import importlib.metadata as m, sys
pins = sys.argv[1].split()
sys.exit(any(m.version(p.split("==")[0]) != p.split("==")[1] for p in pins))'
if ! "$venv/bin/python" -c "$check" "$pins" >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086 # the pins are separate words
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins >&2
fi
echo "$venv/bin/python"
