#!/usr/bin/env bash
# deploy/s3.sh: run a real S3-compatible server for Weir's tests and local stack:
# versitygw (Versity S3 Gateway, Apache-2.0) with its POSIX backend, built from source
# with `go install` at a pinned version and cached.
#
#   deploy/s3.sh build                  build versitygw once into
#                                       $WEIR_CACHE_DIR/tools/versitygw-<ver>/bin (a second
#                                       run does nothing)
#   deploy/s3.sh start DIR PORT         start the server on 127.0.0.1:PORT serving the
#                                       buckets under DIR/data, wait until it answers
#                                       HTTP, print "http://127.0.0.1:PORT"
#   deploy/s3.sh stop DIR               SIGTERM, wait (10 s), then SIGKILL; no-op if not running
#   deploy/s3.sh kill DIR               SIGKILL now (fault tests); no-op if not running
#   deploy/s3.sh status DIR             exit 0 if running, 1 if not
#   deploy/s3.sh mkbucket ENDPOINT NAME create bucket NAME on the server at ENDPOINT
#                                       (http://127.0.0.1:PORT) unless it exists (curl, SigV4)
#   deploy/s3.sh credentials            print the test credentials as shell assignments
#                                       (WEIR_TEST_S3_ACCESS_KEY=..., _SECRET_KEY, _REGION)
#
# The server takes path-style requests (http://127.0.0.1:PORT/BUCKET/KEY), signed with
# SigV4 by one root user whose keys are fixed test credentials, not secrets:
#   access key  weir-test-access-key     (WEIR_S3_ACCESS_KEY overrides)
#   secret key  weir-test-secret-key     (WEIR_S3_SECRET_KEY overrides)
#   region      us-east-1                (WEIR_S3_REGION overrides)
# Object data are files under DIR/data/BUCKET/KEY; metadata, ETags and checksums are
# extended attributes (user.*) of those files, so DIR must be on a filesystem with user
# xattrs (ext4, xfs, btrfs; tmpfs since Linux 6.6).
#
# Layout under DIR: data/ (the buckets; kept across restarts), logs/versitygw.log (the
# server's output), versitygw.pid, port.
#
# Environment (all optional):
#   WEIR_CACHE_DIR              cache root (default $HOME/.cache/weir); holds tools/versitygw-<ver>/
#   WEIR_VERSITYGW_VERSION      versitygw module version (default v1.8.0)
#   WEIR_S3_START_TIMEOUT       seconds start waits for the server to answer (default 30)
#   WEIR_S3_STOP_TIMEOUT        seconds stop waits after SIGTERM (default 10)
#   GOTOOLCHAIN                 passed to go (default "local": the Go on PATH, 1.25+)
set -euo pipefail

readonly VERSITYGW_VERSION="${WEIR_VERSITYGW_VERSION:-v1.8.0}"
readonly MODULE="github.com/versity/versitygw"
readonly ACCESS_KEY="${WEIR_S3_ACCESS_KEY:-weir-test-access-key}"
readonly SECRET_KEY="${WEIR_S3_SECRET_KEY:-weir-test-secret-key}"
readonly REGION="${WEIR_S3_REGION:-us-east-1}"

CACHE_DIR="${WEIR_CACHE_DIR:-${HOME:-/tmp}/.cache/weir}"
TOOL_HOME=""
BIN=""

die() {
    printf 's3.sh: error: %s\n' "$*" >&2
    exit 1
}

warn() {
    printf 's3.sh: %s\n' "$*" >&2
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

init_paths() {
    mkdir -p "$CACHE_DIR" || die "cannot create cache dir $CACHE_DIR (set WEIR_CACHE_DIR to a writable dir)"
    CACHE_DIR="$(cd "$CACHE_DIR" && pwd -P)"
    TOOL_HOME="$CACHE_DIR/tools/versitygw-${VERSITYGW_VERSION#v}"
    BIN="$TOOL_HOME/bin/versitygw"
}

# --- build -------------------------------------------------------------------

build_stamp() {
    printf 'versitygw=%s\n' "$VERSITYGW_VERSION"
}

build_is_complete() {
    [[ -x "$BIN" && -f "$TOOL_HOME/.weir-complete" && "$(cat "$TOOL_HOME/.weir-complete")" == "$(build_stamp)" ]]
}

# `go install` in a private GOPATH and build cache under TOOL_HOME, removed once the
# binary is in place: the binary is the cache (about 60 MB; the module and build caches
# of a cold build take over 1 GB). CGO off: the POSIX backend needs no C, and the
# optional RDMA/cuObject code is cgo-only, so it is left out.
cmd_build() {
    init_paths
    build_is_complete && return 0
    command -v go >/dev/null 2>&1 || die "go not found: install Go 1.25+ (e.g. 'apt-get install golang-go' if new enough, or from the Go project)"
    mkdir -p "$TOOL_HOME"

    # Serialise concurrent builds (parallel test binaries, CI jobs).
    local lock_fd
    if command -v flock >/dev/null 2>&1; then
        exec {lock_fd}>"$TOOL_HOME/.build.lock"
        flock -w 900 "$lock_fd" || die "timed out waiting for another build (lock $TOOL_HOME/.build.lock)"
        if build_is_complete; then
            exec {lock_fd}>&-
            return 0
        fi
    fi

    local work log="$TOOL_HOME/build.log" started=$SECONDS
    work="$(mktemp -d "$TOOL_HOME/build.tmp.XXXXXX")"
    warn "building versitygw $VERSITYGW_VERSION from source (once; a few minutes on 2 cores)"
    if ! (
        cd "$work"
        export GOPATH="$work/gopath" GOMODCACHE="$work/gopath/pkg/mod" GOCACHE="$work/gocache"
        export GOBIN="$work/bin" GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
        go install -trimpath \
            -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=weir" \
            "$MODULE/cmd/versitygw@$VERSITYGW_VERSION"
    ) >"$log" 2>&1; then
        chmod -R u+w "$work" 2>/dev/null || true
        rm -rf "$work"
        tail -n 40 "$log" >&2 || true
        die "go install $MODULE/cmd/versitygw@$VERSITYGW_VERSION failed (full log: $log). It needs the Go module proxy and Go 1.25+ ('go version'; a newer toolchain: export GOTOOLCHAIN=...), or pick another version with WEIR_VERSITYGW_VERSION=..."
    fi
    mkdir -p "$TOOL_HOME/bin"
    mv "$work/bin/versitygw" "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
    chmod -R u+w "$work" 2>/dev/null || true # the module cache is read-only
    rm -rf "$work"
    printf 'built in %ss\n' $((SECONDS - started)) >>"$log"
    build_stamp >"$TOOL_HOME/.weir-complete.tmp"
    mv "$TOOL_HOME/.weir-complete.tmp" "$TOOL_HOME/.weir-complete" # marker last
    [[ -n "${lock_fd:-}" ]] && exec {lock_fd}>&-
    return 0
}

# --- helpers -----------------------------------------------------------------

abs_dir() { # abs_dir DIR [create]
    local d="$1"
    [[ -n "$d" ]] || die "DIR must not be empty"
    if [[ "${2:-}" == create ]]; then
        mkdir -p "$d" || die "cannot create $d"
    fi
    [[ -d "$d" ]] || return 1
    (cd "$d" && pwd -P)
}

# Prints the server pid for DIR if a server started from DIR is alive.
running_pid() {
    local dir="$1" pid args state
    [[ -f "$dir/versitygw.pid" ]] || return 1
    pid="$(cat "$dir/versitygw.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null || echo '?')"
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    else
        state="$(ps -o stat= -p "$pid" 2>/dev/null || echo '?')"
        args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    fi
    [[ "$state" != Z* ]] || return 1 # killed but not yet reaped
    # Guard against pid reuse: it must be the server for this DIR.
    [[ "$args" == *"versitygw"*" posix $dir/data"* ]] || return 1
    printf '%s\n' "$pid"
}

wait_gone() { # wait_gone DIR SECONDS -> 0 if gone
    local dir="$1" deadline=$((SECONDS + $2))
    while running_pid "$dir" >/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    return 0
}

# Exit 0 once 127.0.0.1:PORT answers an HTTP request with an S3 reply (an anonymous
# ListBuckets: 403 AccessDenied is an answer), without curl.
answers_http() { # answers_http PORT
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" >&3
        IFS= read -r -t 2 status <&3 || exit 1
        [[ "$status" == HTTP/1.1\ * ]]
    ) 2>/dev/null
}

show_log() { # show_log DIR
    if [[ -f "$1/logs/versitygw.log" ]]; then
        warn "last lines of $1/logs/versitygw.log:"
        tail -n 30 "$1/logs/versitygw.log" >&2 || true
    fi
}

# --- commands ----------------------------------------------------------------

cmd_start() {
    [[ $# -eq 2 ]] || die "usage: s3.sh start DIR PORT"
    local dir port="$2" timeout pid deadline
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "PORT must be a number in 1..65535, got '$port'"
    fi
    dir="$(abs_dir "$1" create)"
    timeout="${WEIR_S3_START_TIMEOUT:-30}"
    [[ "$timeout" =~ ^[0-9]+$ ]] || die "WEIR_S3_START_TIMEOUT must be whole seconds, got '$timeout'"
    if pid="$(running_pid "$dir")"; then
        [[ "$(cat "$dir/port" 2>/dev/null)" == "$port" ]] ||
            die "a server from $dir already runs (pid $pid) on port $(cat "$dir/port" 2>/dev/null); stop it first"
        printf 'http://127.0.0.1:%s\n' "$port"
        return 0
    fi
    cmd_build
    answers_http "$port" && die "port $port already answers HTTP (another server?); pick another PORT"
    mkdir -p "$dir/data" "$dir/logs"
    printf '%s\n' "$port" >"$dir/port"
    # Keep-alive on: S3 clients pool connections, and the fault proxy of the tests
    # forwards on pooled connections too.
    # The server writes its own pid (then execs), so the pid file is right whether or not
    # setsid forks (it does when the caller runs with job control: a group leader).
    local launcher=()
    command -v setsid >/dev/null 2>&1 && launcher=(setsid)
    rm -f "$dir/versitygw.pid"
    ROOT_ACCESS_KEY_ID="$ACCESS_KEY" ROOT_SECRET_ACCESS_KEY="$SECRET_KEY" \
        "${launcher[@]}" bash -c 'echo $$ >"$1.tmp" && mv "$1.tmp" "$1"; shift; exec "$@"' \
        _ "$dir/versitygw.pid" "$BIN" --port "127.0.0.1:$port" --region "$REGION" --keep-alive --quiet \
        posix "$dir/data" >>"$dir/logs/versitygw.log" 2>&1 </dev/null &
    local waited=0
    until [ -s "$dir/versitygw.pid" ] || [ "$waited" -ge 100 ]; do sleep 0.05; waited=$((waited + 1)); done
    deadline=$((SECONDS + timeout))
    until answers_http "$port"; do
        if ! running_pid "$dir" >/dev/null; then
            show_log "$dir"
            die "versitygw for $dir exited during startup (see above; 'xattr check failed' means $dir is on a filesystem without user xattrs: pick a DIR elsewhere)"
        fi
        if ((SECONDS >= deadline)); then
            show_log "$dir"
            cmd_kill "$dir"
            die "versitygw for $dir did not answer on 127.0.0.1:$port within ${timeout}s; killed it"
        fi
        sleep 0.1
    done
    printf 'http://127.0.0.1:%s\n' "$port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || die "usage: s3.sh stop DIR"
    local dir pid t="${WEIR_S3_STOP_TIMEOUT:-10}"
    dir="$(abs_dir "$1")" || return 0
    if pid="$(running_pid "$dir")"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$dir" "$t"; then
            warn "versitygw for $dir (pid $pid) did not stop within ${t}s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$dir" 10 || die "versitygw pid $pid still alive after SIGKILL"
        fi
    fi
    rm -f "$dir/versitygw.pid"
}

cmd_kill() {
    [[ $# -eq 1 ]] || die "usage: s3.sh kill DIR"
    local dir pid
    dir="$(abs_dir "$1")" || return 0
    if pid="$(running_pid "$dir")"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$dir" 10 || die "versitygw pid $pid still alive after SIGKILL"
    fi
    rm -f "$dir/versitygw.pid"
}

cmd_status() {
    [[ $# -eq 1 ]] || die "usage: s3.sh status DIR"
    local dir pid
    dir="$(abs_dir "$1")" || {
        printf 'not running\n'
        return 1
    }
    if pid="$(running_pid "$dir")"; then
        printf 'running pid=%s endpoint=http://127.0.0.1:%s\n' "$pid" "$(cat "$dir/port" 2>/dev/null)"
        return 0
    fi
    printf 'not running\n'
    return 1
}

cmd_credentials() {
    printf 'WEIR_TEST_S3_ACCESS_KEY=%s\nWEIR_TEST_S3_SECRET_KEY=%s\nWEIR_TEST_S3_REGION=%s\n' \
        "$ACCESS_KEY" "$SECRET_KEY" "$REGION"
}

cmd_mkbucket() {
    [[ $# -eq 2 ]] || die "usage: s3.sh mkbucket ENDPOINT NAME"
    local endpoint="${1%/}" name="$2"
    command -v curl >/dev/null || die "curl not found: install curl (7.75 or newer, for --aws-sigv4)"
    # SigV4 needs the payload's SHA-256 in a header: that of the empty body.
    local sign=(--aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY"
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    if curl -fsS -o /dev/null -I "${sign[@]}" "$endpoint/$name" 2>/dev/null; then
        return 0
    fi
    local answer
    answer="$(curl -sS -X PUT -w '\n%{http_code}' "${sign[@]}" "$endpoint/$name")" || die "cannot reach $endpoint to create bucket $name"
    case "${answer##*$'\n'}" in
    200) ;;
    *) die "creating bucket $name at $endpoint answered: ${answer}" ;;
    esac
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    case "$cmd" in
    build)
        [[ $# -eq 0 ]] || die "usage: s3.sh build"
        cmd_build
        ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    status) cmd_status "$@" ;;
    mkbucket) cmd_mkbucket "$@" ;;
    credentials)
        [[ $# -eq 0 ]] || die "usage: s3.sh credentials"
        cmd_credentials
        ;;
    -h | --help | help) usage ;;
    *)
        warn "unknown command '$cmd'"
        usage
        ;;
    esac
}

main "$@"
