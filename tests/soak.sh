#!/usr/bin/env bash
# The kill-under-load test, long: `storage::cores_killed_under_load_...` with many rounds
# (each core killed -9 in turn under steady ingest, every other time after its partitions
# moved). The test command runs it with 4 rounds; this runs it with more, and several
# times, stopping at the first failure. Not part of CI.
#
#   bash tests/soak.sh [ROUNDS per run, default 40] [RUNS, default 3]
#
# Uses WEIR_TEST_KAFKA when set, else the harness's own broker (target/test-kafka, left
# running; `bash deploy/kafka.sh stop target/test-kafka` stops it). Each run's core and
# edge logs are in the test's temporary directory, named in a failure's message.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-40}"
runs="${2:-3}"
command -v cargo >/dev/null || { echo "tests/soak.sh: cargo not found" >&2; exit 1; }
cargo build --locked --workspace --bins --tests
for run in $(seq 1 "$runs"); do
    printf '\n== soak run %s of %s: %s kill rounds (%s)\n' "$run" "$runs" "$rounds" "$(date +%T)"
    log="$(mktemp "${TMPDIR:-/tmp}/weir-soak.XXXXXX")"
    passed=true
    WEIR_KILL_ROUNDS="$rounds" cargo test --locked -p weir-tests --test it -- --exact \
        storage::cores_killed_under_load_lose_no_acknowledged_event_and_truncation_stays_below_safe \
        --nocapture >"$log" 2>&1 || passed=false
    grep -E 'kill rounds done|test result' "$log" || true
    if [ "$passed" != true ]; then
        tail -n 80 "$log" >&2
        echo "tests/soak.sh: run $run failed; whole output in $log" >&2
        exit 1
    fi
    rm -f "$log"
done
printf '\n== soak: %s runs of %s rounds passed\n' "$runs" "$rounds"
