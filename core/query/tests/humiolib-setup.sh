#!/usr/bin/env bash
# core/query/tests/humiolib-setup.sh: the Python venv with LogScale's own Python client,
# humiolib (pinned, from PyPI), that the read API test drives (tests/humiolib.rs).
#
#   bash core/query/tests/humiolib-setup.sh     prints the venv's python path
#
# Idempotent: a venv that already imports the pinned version is kept. Lives in
# $WEIR_CACHE_DIR (default ~/.cache/weir) so CI caches it. Needs python3 (3.9+) with venv.
set -euo pipefail

# Pinned, with every package it pulls in (humiolib 0.2.6 lists requests, pytest and vcrpy
# as its requirements), so a new release on PyPI cannot change what the test runs.
humiolib_version=0.2.6
packages=(
    "humiolib==$humiolib_version"
    requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 charset-normalizer==3.5.3
    pytest==9.2.0 iniconfig==2.3.1 packaging==26.4 pluggy==1.7.0 Pygments==2.21.0
    vcrpy==9.4.2 PyYAML==6.0.4 wrapt==2.5.2
)
cache="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
venv="$cache/venv-humiolib-$humiolib_version"

command -v python3 >/dev/null 2>&1 || {
    echo "humiolib-setup.sh: python3 not found: install Python 3.9+ with the venv module" >&2
    exit 1
}
if ! "$venv/bin/python" -c "import humiolib, sys; sys.exit(humiolib.__version__ != '$humiolib_version')" >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi
echo "$venv/bin/python"
