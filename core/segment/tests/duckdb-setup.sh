#!/usr/bin/env bash
# core/segment/tests/duckdb-setup.sh: the Python venv with a pinned DuckDB that the segment
# integration test uses to read a segment with no Weir code (tests/duckdb_reads_segment.rs).
#
#   bash core/segment/tests/duckdb-setup.sh     prints the venv's python path
#
# Idempotent: a venv that already imports the pinned version is kept. Lives in
# $WEIR_CACHE_DIR (default ~/.cache/weir) so CI caches it. Needs python3 (3.9+) with venv.
set -euo pipefail

# Pinned: the test compares DuckDB's view of Parquet (MAP, JSON, kv metadata) with what
# the writer wrote; a new DuckDB is a deliberate change of this line.
duckdb_version=2.0.1
cache="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
venv="$cache/venv-duckdb-$duckdb_version"

command -v python3 >/dev/null 2>&1 || {
    echo "duckdb-setup.sh: python3 not found: install Python 3.9+ with the venv module" >&2
    exit 1
}
if ! "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$duckdb_version')" >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "duckdb==$duckdb_version" >&2
fi
echo "$venv/bin/python"
