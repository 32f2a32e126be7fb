#!/usr/bin/env bash
# tests/run.sh: everything the tests need, from a fresh machine, then every test.
#
#   bash tests/run.sh            build, start a real Kafka broker and S3 server, run all tests,
#                                stop them
#
# Installs/fetches what it needs: the wasm32-wasip2 Rust target and plugin toolchains
# (plugins/build.sh: componentize-py from PyPI, componentize-js and jco from npm), Apache Kafka jars from Maven Central (deploy/kafka.sh), DuckDB from
# PyPI into a venv (core/segment/tests/duckdb-setup.sh), humiolib likewise
# (core/query/tests/humiolib-setup.sh), the shipper clients (OpenTelemetry SDK,
# elasticsearch) from PyPI into a venv (tests/clients/setup.sh), the S3 test server
# (versitygw, built from source with `go install`: deploy/s3.sh), Debian's chromium and
# chromium-driver for the console test (apt-get: deploy/chromium.sh). Caches live in
# $WEIR_CACHE_DIR (default ~/.cache/weir). Needs: rustup/cargo, Java 17+, Maven, Python 3,
# Go 1.25+, Node.js 20+ with npm.
# With CI=true, compiler warnings in Weir's own crates fail the run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$root"
export WEIR_CACHE_DIR="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
mkdir -p "$WEIR_CACHE_DIR"

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "tests/run.sh: $1 not found: $2" >&2; exit 1; }; }
need cargo "install Rust with rustup (https://rustup.rs)"
need java "install a JDK 17 or newer"
need mvn "install Apache Maven 3.8+"
need python3 "install Python 3.10+"
need go "install Go 1.25 or newer"
need npm "install Node.js 20 or newer with npm (JavaScript plugins are built with componentize-js)"

step "fetch Apache Kafka"
bash deploy/kafka.sh fetch

step "build the S3 test server (versitygw)"
# Pinned in deploy/s3.sh, cached in $WEIR_CACHE_DIR/tools/versitygw-<version>; a cold build
# takes about 2.5 minutes on 2 cores.
bash deploy/s3.sh build

step "build plugins (wasm32-wasip2)"
bash plugins/build.sh

step "plugin parser and SDK unit tests (native)"
cargo test --locked --quiet --manifest-path plugins/Cargo.toml -p weir-parsers -p weir-plugin-sdk \
    --features weir-parsers/pattern --target-dir "${WEIR_PLUGINS_TARGET_DIR:-plugins/target}"

step "build"
build_log="$(mktemp)"
# --workspace includes weir-tests, which enables weir-core's `dev-certs` feature; Cargo
# unifies features across the build, so target/debug/weir-core has `weir-core certs` too.
cargo build --locked --workspace --bins --tests 2>&1 | tee "$build_log"
if [ "${CI:-}" = "true" ] && grep -E "^warning: .* generated [0-9]+ warnings?" "$build_log"; then
    echo "tests/run.sh: compiler warnings in Weir's crates; CI denies them" >&2
    exit 1
fi
rm -f "$build_log"

step "cargo deny (licences, bans, sources)"
# Pinned, installed once into the cache (a cold install builds it from source: about
# 4 minutes on 2 cores). Built in cargo's own temporary directory, not the workspace's
# target dir. After the build step, so every crate it reads is already downloaded.
cargo_deny_version=0.20.2
cargo_deny="$WEIR_CACHE_DIR/tools/bin/cargo-deny"
if [ ! -x "$cargo_deny" ] || ! "$cargo_deny" --version | grep -qF " $cargo_deny_version"; then
    env -u CARGO_TARGET_DIR cargo install cargo-deny --locked --version "$cargo_deny_version" \
        --root "$WEIR_CACHE_DIR/tools"
fi
# No `advisories`: the RustSec advisory database is a git repository that our machines and
# CI cannot fetch, so that check could only fail here (see deny.toml). Duplicate versions
# are warnings; a disallowed licence or a crate from outside crates.io fails the run.
# The build downloads only this platform's crates; cargo deny reads the whole graph (e.g.
# notify's kqueue backend for the BSDs), so fetch the rest first.
cargo fetch --locked --quiet
PATH="$WEIR_CACHE_DIR/tools/bin:$PATH" cargo deny --offline check licenses bans sources
PATH="$WEIR_CACHE_DIR/tools/bin:$PATH" cargo deny --offline --manifest-path plugins/Cargo.toml \
    check licenses bans sources

step "DuckDB venv for the segment format test"
# Pinned DuckDB from PyPI in $WEIR_CACHE_DIR/venv-duckdb-<version>, so CI caches it; the
# test (core/segment/tests/duckdb.rs) would create it too, but fails rather than skips.
bash core/segment/tests/duckdb-setup.sh >/dev/null

step "humiolib venv for the read API test"
# LogScale's own Python client, pinned, in $WEIR_CACHE_DIR/venv-humiolib-<version>; the test
# (core/query/tests/it/humiolib.rs) would create it too, but fails rather than skips.
bash core/query/tests/humiolib-setup.sh >/dev/null

step "shipper clients venv (OpenTelemetry SDK, elasticsearch) and logger"
# Pinned in tests/clients/setup.sh, cached in $WEIR_CACHE_DIR/venv-clients-<hash>; the
# shipper tests (tests/it/shippers.rs) would create it too, but fail rather than skip.
bash tests/clients/setup.sh >/dev/null

step "headless Chromium for the console test"
# Debian's chromium and chromium-driver (apt-get; sudo when not root), installed once; the
# test (tests/it/console.rs) fails, saying how to install them, when they are missing.
bash deploy/chromium.sh ensure >/dev/null

step "start Kafka"
kafka_dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-test-kafka.XXXXXX")"
# Below the ephemeral port range, so no client socket can take the port first.
port=""
for candidate in $(seq 29200 2 29300); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((candidate + 1)))") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[ -n "$port" ] || { echo "tests/run.sh: no free port pair for Kafka in 29200-29300" >&2; exit 1; }
s3_dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-test-s3.XXXXXX")"
cleanup() {
    bash deploy/kafka.sh stop "$kafka_dir" >/dev/null 2>&1 || true
    bash deploy/s3.sh stop "$s3_dir" >/dev/null 2>&1 || true
    rm -rf "$kafka_dir" "$s3_dir"
}
trap cleanup EXIT
WEIR_TEST_KAFKA="$(bash deploy/kafka.sh start "$kafka_dir" "$port")"
export WEIR_TEST_KAFKA
echo "kafka at $WEIR_TEST_KAFKA"

step "start S3 (versitygw)"
# Below the ephemeral port range too, apart from Kafka's.
s3_port=""
for candidate in $(seq 29310 29399); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        s3_port=$candidate
        break
    fi
done
[ -n "$s3_port" ] || { echo "tests/run.sh: no free port for S3 in 29310-29399" >&2; exit 1; }
WEIR_TEST_S3="$(bash deploy/s3.sh start "$s3_dir" "$s3_port")"
# WEIR_TEST_S3_ACCESS_KEY, WEIR_TEST_S3_SECRET_KEY, WEIR_TEST_S3_REGION: fixed test keys.
eval "$(bash deploy/s3.sh credentials | sed 's/^/export /')"
export WEIR_TEST_S3
echo "s3 at $WEIR_TEST_S3"

step "test"
# Fault tests start their own brokers and processes; two test threads keep a 2-core
# machine responsive enough for the timing bounds the tests check.
timeout 45m cargo test --locked --workspace --no-fail-fast -- --test-threads="${WEIR_TEST_THREADS:-2}"
step "all tests passed"
