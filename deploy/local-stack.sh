#!/usr/bin/env bash
# deploy/local-stack.sh: the whole platform on one machine, from a fresh clone.
#
#   bash deploy/local-stack.sh [start]   build (core, edge, parser plugins), start Kafka
#                                        (embedded, unless WEIR_KAFKA_BOOTSTRAP names your
#                                        own) and an S3 server (versitygw, built once with
#                                        Go), dev certificates, one core that parses and
#                                        keeps segments in the bucket, one edge; print curl
#                                        lines
#   bash deploy/local-stack.sh stop      stop edge, core, the S3 server and the embedded Kafka
#   bash deploy/local-stack.sh status
#
# State (configs, certificates, spool, logs) lives in $WEIR_HOME (default ./.weir).
# The core's [parsers] section is deploy/local-parsers.toml (or the file WEIR_PARSERS names):
# repository `main` (token dev-token) is parsed by the kv plugin, `json` (dev-json-token)
# by the json plugin.
# The core's [bucket] is deploy/local-bucket.toml: bucket mode, so segments are uploaded,
# verified, and Kafka truncated below them (`weir-core status` shows it).
# Ports: WEIR_CORE_HTTP (8080), WEIR_CORE_QUIC (4433), WEIR_EDGE_HTTP (8090),
# WEIR_KAFKA_PORT (19092; 19093 for its controller), WEIR_S3_PORT (19070).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
home="${WEIR_HOME:-$root/.weir}"
core_http="${WEIR_CORE_HTTP:-8080}"
core_quic="${WEIR_CORE_QUIC:-4433}"
edge_http="${WEIR_EDGE_HTTP:-8090}"
kafka_port="${WEIR_KAFKA_PORT:-19092}"
s3_port="${WEIR_S3_PORT:-19070}"
target="${CARGO_TARGET_DIR:-$root/target}"
parsers_template="${WEIR_PARSERS:-$root/deploy/local-parsers.toml}"

say() { printf 'local-stack: %s\n' "$*" >&2; }

stop_node() {
    local pidfile="$home/$1.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
        say "stopped $1"
    fi
    rm -f "$pidfile"
}

wait_http() {
    local url=$1 name=$2
    for _ in $(seq 300); do
        if curl -fsS "$url" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$(cat "$home/$name.pid")" 2>/dev/null; then
            say "$name exited; its log ($home/logs/$name.log) ends with:"
            tail -n 30 "$home/logs/$name.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    say "$name did not answer $url within 60 s; see $home/logs/$name.log"
    exit 1
}

# The [parsers] block of the core: the template with its two placeholders filled in.
parsers_block() {
    local text
    text="$(cat "$parsers_template")"
    text="${text//@WASM@/$1}"
    printf '%s\n' "${text//@WEIR_HOME@/$2}"
}

start() {
    command -v curl >/dev/null || { say "curl not found: install curl"; exit 1; }
    mkdir -p "$home/logs"
    say "building weir-core and weir-edge (first build takes several minutes)"
    # `dev-certs`: the `weir-core certs` step below makes the local CA.
    (cd "$root" && cargo build --locked --bins --features weir-core/dev-certs -q)
    say "building the parser plugins into plugins/target/wasm"
    bash "$root/plugins/build.sh"

    local bootstrap
    if [ -n "${WEIR_KAFKA_BOOTSTRAP:-}" ]; then
        bootstrap="$WEIR_KAFKA_BOOTSTRAP"
        say "using your Kafka at $bootstrap"
    else
        say "starting embedded Kafka on 127.0.0.1:$kafka_port"
        bootstrap="$(bash "$root/deploy/kafka.sh" start "$home/kafka" "$kafka_port")"
    fi

    say "starting the S3 server (versitygw) on 127.0.0.1:$s3_port"
    local s3
    s3="$(bash "$root/deploy/s3.sh" start "$home/s3" "$s3_port")"
    bash "$root/deploy/s3.sh" mkbucket "$s3" weir

    if [ ! -f "$home/certs/ca.pem" ]; then
        "$target/debug/weir-core" certs --dir "$home/certs" --core core-1 --edge edge-1 >/dev/null
    fi

    cat > "$home/core.toml" <<TOML
version = 1
node_id = "core-1"
data_dir = "$home/core-data"
[http]
listen = "127.0.0.1:$core_http"
[ingest]
tokens = [{ token = "dev-token", repository = "main" }, { token = "dev-json-token", repository = "json" }]
[[read_tokens]]
token = "dev-read-token"
repositories = ["*"]
[digest]
flush_interval_ms = 1000
[storage]
mode = "bucket"
[truncation]
interval_ms = 2000
[quic]
listen = "127.0.0.1:$core_quic"
tls = { cert = "$home/certs/core-1.pem", key = "$home/certs/core-1.key", ca = "$home/certs/ca.pem" }
[kafka]
bootstrap_servers = "$bootstrap"
ingest_topic = "weir-ingest"
# The embedded Kafka is one broker; a real cluster keeps the defaults (3 and 2).
replication_factor = 1
min_insync_replicas = 1

TOML
    parsers_block "$root/plugins/target/wasm" "$home" >>"$home/core.toml"
    sed "s|@S3@|$s3|" "$root/deploy/local-bucket.toml" >>"$home/core.toml"
    cat > "$home/edge.toml" <<TOML
version = 1
edge_id = "edge-1"
[http]
listen = "127.0.0.1:$edge_http"
[ingest]
tokens = [{ token = "dev-token", repository = "main" }, { token = "dev-json-token", repository = "json" }]
[spool]
dir = "$home/spool"
max_bytes = 268435456
segment_bytes = 16777216
[forward]
cores = ["127.0.0.1:$core_quic"]
tls = { cert = "$home/certs/edge-1.pem", key = "$home/certs/edge-1.key", ca = "$home/certs/ca.pem" }
TOML

    stop_node edge
    stop_node core
    nohup "$target/debug/weir-core" run --config "$home/core.toml" >"$home/logs/core.log" 2>&1 &
    echo $! >"$home/core.pid"
    wait_http "http://127.0.0.1:$core_http/ready" core
    nohup "$target/debug/weir-edge" run --config "$home/edge.toml" >"$home/logs/edge.log" 2>&1 &
    echo $! >"$home/edge.pid"
    wait_http "http://127.0.0.1:$edge_http/health" edge

    cat <<TEXT

Weir is running: core http://127.0.0.1:$core_http (QUIC $core_quic), edge http://127.0.0.1:$edge_http, Kafka $bootstrap, S3 $s3 (bucket weir)
Logs: $home/logs/. Stop with: bash deploy/local-stack.sh stop

Web console: http://127.0.0.1:$core_http/ (sign in with the read token dev-read-token)

Send an event through the edge (acknowledged once a core has it in Kafka); repository
main parses key=value lines with the kv plugin:

  curl -sS http://127.0.0.1:$edge_http/api/v1/ingest/humio-structured -H 'Authorization: Bearer dev-token' -H 'x-weir-ack: core' -d '[{"tags":{"host":"laptop"},"events":[{"rawstring":"level=info user=ada msg=\"hello weir\" took_ms=42"}]}]'

Query it back by a parsed field about a second later (LogScale's query API, with a read
token); the answer carries the fields user, level, msg and took_ms:

  curl -sS http://127.0.0.1:$core_http/api/v1/repositories/main/query -H 'Authorization: Bearer dev-read-token' -H 'Accept: application/x-ndjson' -d '{"queryString":"user=ada took_ms>40","start":"1h"}'

JSON lines go to repository json (token dev-json-token), parsed by the json plugin:

  curl -sS http://127.0.0.1:$edge_http/api/v1/ingest/humio-structured -H 'Authorization: Bearer dev-json-token' -H 'x-weir-ack: core' -d '[{"events":[{"rawstring":"{\"level\":\"warn\",\"http\":{\"status\":503}}"}]}]'
  curl -sS http://127.0.0.1:$core_http/api/v1/repositories/json/query -H 'Authorization: Bearer dev-read-token' -H 'Accept: application/x-ndjson' -d '{"queryString":"http.status=503","start":"1h"}'

Parsers: $parsers_template (routes and plugins; README "Parser plugins" says how to change
them). A rebuilt plugin (bash plugins/build.sh) is picked up within a second, no restart.

Segments are uploaded to the bucket and verified, then Kafka deletes the records they hold:
a few seconds after sending, the status shows them "in the bucket", the partitions' safe
offset and truncation move, and Kafka's log start ("kafka log") follows:

  $target/debug/weir-core status --config $home/core.toml

Its segment files: $home/core-data/segments (Parquet; \`target/debug/weir-core segments ls --config $home/core.toml\`).
The raw Kafka records:

  bash deploy/kafka.sh run-class org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server $bootstrap --topic weir-ingest --from-beginning --timeout-ms 5000
TEXT
}

case "${1:-start}" in
    start) start ;;
    stop)
        stop_node edge
        stop_node core
        bash "$root/deploy/s3.sh" stop "$home/s3"
        if [ -z "${WEIR_KAFKA_BOOTSTRAP:-}" ]; then bash "$root/deploy/kafka.sh" stop "$home/kafka"; fi
        ;;
    status)
        for n in core edge; do
            if [ -f "$home/$n.pid" ] && kill -0 "$(cat "$home/$n.pid")" 2>/dev/null; then echo "$n running"; else echo "$n stopped"; fi
        done
        if bash "$root/deploy/kafka.sh" status "$home/kafka"; then echo "kafka running"; else echo "kafka stopped"; fi
        if bash "$root/deploy/s3.sh" status "$home/s3"; then echo "s3 running"; else echo "s3 stopped"; fi
        ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
