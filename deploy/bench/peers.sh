#!/usr/bin/env bash
# Peer benchmark (issue 8, part 5; not part of CI): the same load, on this machine, into
# one Kafka broker at the same durability (acks=all, idempotent producer, lz4), through
#   - OTLP/HTTP protobuf: the OpenTelemetry Collector (OTLP receiver -> Kafka exporter,
#     sending queue off) vs. Weir's core;
#   - syslog over TCP: rsyslog (imtcp -> omkafka, disk-assisted queue, retries forever)
#     vs. Weir's edge -> QUIC -> Weir's core.
# The measuring program is tests/benches/peers.rs; this script installs the peers into
# $WEIR_CACHE_DIR (default ~/.cache/weir), starts a broker and runs it.
#
#   bash deploy/bench/peers.sh
#
# Environment: WEIR_CACHE_DIR; WEIR_BENCH_KAFKA=host:port (an existing broker; else one is
# started under target/peers-kafka on WEIR_PEERS_KAFKA_PORT, default 39394, and stopped at
# the end); WEIR_PEERS_SKIP=otelcol|rsyslog|digest (leave a peer, or the runs
# with a digesting core, out); WEIR_PEERS_ONLY=otlp|syslog (one half); the load settings
# WEIR_PEERS_EVENTS, _BATCH, _CONCURRENCY, _CONNECTIONS, _EVENT_BYTES (see peers.rs);
# WEIR_PEERS_WARM_UP_S (seconds of plain producer load that warm the broker's JIT before
# anything is measured, default 15; 0 for none); WEIR_PEERS_IN_FLIGHT (the edge's
# forward.max_in_flight, default the edge's); WEIR_PEERS_SYSLOG_BATCH (the edge's
# syslog.batch_max_events, default the edge's); WEIR_PEERS_ROUNDS (like-for-like rounds per
# path, default 2, run Weir-peer-peer-Weir so drift favours neither; means are compared);
# CARGO_TARGET_DIR as for any cargo build. A peer that cannot be installed is reported
# and left out; the Weir runs still happen.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${WEIR_CACHE_DIR:-$HOME/.cache/weir}
PEERS=$CACHE/peers
# One Collector release for every module: core v0.165.0 goes with contrib v0.165.1
# (otelcol-builder.yaml pins the components).
OCB_VERSION=v0.165.0
mkdir -p "$PEERS"

say() { printf 'peers.sh: %s\n' "$*" >&2; }

# ---- the OpenTelemetry Collector, built from its Go modules ---------------------------
build_otelcol() {
    local dir=$PEERS/otelcol-$OCB_VERSION
    local binary=$dir/otelcol-weirbench/otelcol-weirbench
    if [[ -x $binary ]] && cmp -s "$ROOT/deploy/bench/otelcol-builder.yaml" "$dir/otelcol-builder.yaml"; then
        echo "$binary"
        return
    fi
    command -v go >/dev/null || { say "go is not installed: cannot build the Collector"; return 1; }
    mkdir -p "$dir"
    if [[ ! -x $PEERS/bin/builder-$OCB_VERSION ]]; then
        say "installing the Collector Builder (ocb) $OCB_VERSION"
        (cd "$dir" && GOBIN=$PEERS/bin go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION") >&2
        mv "$PEERS/bin/builder" "$PEERS/bin/builder-$OCB_VERSION"
    fi
    cp "$ROOT/deploy/bench/otelcol-builder.yaml" "$dir/otelcol-builder.yaml"
    say "building the Collector (OTLP receiver + Kafka exporter) in $dir"
    (cd "$dir" && "$PEERS/bin/builder-$OCB_VERSION" --config otelcol-builder.yaml) >&2
    echo "$binary"
}

# ---- rsyslog with omkafka, Debian's packages ------------------------------------------
install_rsyslog() {
    if ! command -v rsyslogd >/dev/null || ! dpkg -s rsyslog-kafka >/dev/null 2>&1; then
        command -v apt-get >/dev/null || { say "no apt-get: install rsyslog and rsyslog-kafka by hand"; return 1; }
        local sudo=
        [[ $(id -u) == 0 ]] || sudo=sudo
        say "installing rsyslog and rsyslog-kafka with apt-get"
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rsyslog rsyslog-kafka >&2
    fi
    command -v rsyslogd
}

OTELCOL=
RSYSLOGD=
if [[ ${WEIR_PEERS_SKIP:-} != *otelcol* ]]; then
    OTELCOL=$(build_otelcol) || { say "the Collector could not be built; its run is skipped"; OTELCOL=; }
fi
if [[ ${WEIR_PEERS_SKIP:-} != *rsyslog* ]]; then
    RSYSLOGD=$(install_rsyslog) || { say "rsyslog could not be installed; its run is skipped"; RSYSLOGD=; }
fi

# ---- the broker -----------------------------------------------------------------------
STOP_KAFKA=
if [[ -z ${WEIR_BENCH_KAFKA:-} ]]; then
    KAFKA_DIR=$ROOT/target/peers-kafka
    WEIR_BENCH_KAFKA=$(WEIR_CACHE_DIR=$CACHE bash "$ROOT/deploy/kafka.sh" start "$KAFKA_DIR" "${WEIR_PEERS_KAFKA_PORT:-39394}")
    STOP_KAFKA=$KAFKA_DIR
fi
export WEIR_BENCH_KAFKA
# The broker's pid, so the bench can show its CPU per event too (a broker of our own only).
if [[ -n ${KAFKA_DIR:-} && -f $KAFKA_DIR/kafka.pid ]]; then export WEIR_PEERS_BROKER_PID=$(cat "$KAFKA_DIR/kafka.pid"); fi
cleanup() { [[ -z $STOP_KAFKA ]] || bash "$ROOT/deploy/kafka.sh" stop "$STOP_KAFKA" >&2 || true; }
trap cleanup EXIT

# ---- versions, then the run -----------------------------------------------------------
echo "versions:"
echo "  weir      $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -z $OTELCOL ]] || echo "  otelcol   $("$OTELCOL" --version 2>&1 | head -n 1) (otlpreceiver $OCB_VERSION, kafkaexporter v0.165.1, franz-go)"
[[ -z $RSYSLOGD ]] || echo "  rsyslog   $("$RSYSLOGD" -v 2>&1 | head -n 1), rsyslog-kafka $(dpkg-query -W -f '${Version}' rsyslog-kafka 2>/dev/null), librdkafka $(dpkg-query -W -f '${Version}' 'librdkafka1' 2>/dev/null)"
echo "  kafka     broker $WEIR_BENCH_KAFKA"

cd "$ROOT"
# The weir-core and weir-edge processes the bench spawns come from the same profile.
cargo build --release -p weir-core -p weir-edge -p weir-tests --bins
WEIR_PEERS_OTELCOL=$OTELCOL WEIR_PEERS_RSYSLOGD=$RSYSLOGD cargo bench -p weir-tests --bench peers
