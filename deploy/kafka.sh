#!/usr/bin/env bash
# deploy/kafka.sh: run real Apache Kafka (KRaft) for Weir's tests and local
# stack, from jars resolved out of Maven Central: a single-node broker, or a
# multi-node cluster for fault tests.
#
#   deploy/kafka.sh fetch               resolve jars into $WEIR_CACHE_DIR/kafka-<ver>/libs
#   deploy/kafka.sh start DIR PORT      start broker+controller, wait until it serves,
#                                       print "127.0.0.1:PORT"
#   deploy/kafka.sh stop DIR            SIGTERM, wait (20 s), then SIGKILL; no-op if not running
#   deploy/kafka.sh kill DIR            SIGKILL now (fault tests); no-op if not running
#   deploy/kafka.sh status DIR          exit 0 if running, 1 if not
#   deploy/kafka.sh run-class CLASS ARGS...
#                                       run a Kafka class (e.g. org.apache.kafka.tools.TopicCommand)
#                                       with the cached jars on the classpath
#
# Layout under DIR: config/ (server.properties, log4j2.properties), data/
# (log.dirs, formatted on first start and kept afterwards), logs/server.log
# (broker log), logs/kafka.out (JVM stdout/stderr), kafka.pid, port, cluster.id.
# Client listener 127.0.0.1:PORT, controller listener 127.0.0.1:PORT+1.
#
# Cluster: NODES brokers and a KRaft controller quorum, in one of two modes:
# combined (default): every node is broker and controller, the voters are all
# nodes, so a majority must be up for leader/ISR changes and for a node to
# (re)start; dedicated: NODES broker-only nodes plus one controller-only node
# (node NODES+1, the only voter, never needed down in tests), so brokers can
# die down to the last one and the controller still fences them and shrinks
# ISRs (what makes min.insync.replicas refuse writes).
#
#   deploy/kafka.sh cluster-start DIR BASEPORT [NODES=3 [combined|dedicated]]
#                                       start every node with one cluster id, wait until
#                                       each broker serves and lists all NODES brokers,
#                                       print "127.0.0.1:P1,127.0.0.1:P2,..."; on an existing
#                                       cluster DIR, starts the nodes that are not running
#   deploy/kafka.sh cluster-stop DIR    SIGTERM all nodes at once, wait (20 s), then SIGKILL
#                                       (takes 5-20 s: controllers shut down gracefully)
#   deploy/kafka.sh cluster-kill DIR    SIGKILL all nodes now
#   deploy/kafka.sh cluster-status DIR  one line per node and "bootstrap=..."; exit 0 if all
#                                       nodes run, 1 otherwise
#   deploy/kafka.sh node-start DIR I    (re)start node I (1-based) with its data, wait until
#                                       it serves as a registered broker, print "127.0.0.1:PI"
#                                       (the controller-only node: until it listens)
#   deploy/kafka.sh node-stop DIR I     stop node I like `stop`
#   deploy/kafka.sh node-kill DIR I     SIGKILL node I now (fault tests)
#
# Cluster layout: DIR/cluster.env (nodes, baseport, mode), DIR/cluster.id, and per
# node DIR/node-<I>/ laid out like a single broker's DIR (so `stop`, `kill` and
# `status` work on it too; `start` refuses it: use node-start). Node I listens on
# 127.0.0.1:BASEPORT+2(I-1) (clients; brokers) and the port after it
# (controller; controllers), so a cluster takes 2 ports per node. Node config
# template: deploy/kafka/cluster-node.properties.template (internal topics
# replicated to every broker; topics set their own replication factor and
# min.insync.replicas).
#
# Environment (all optional):
#   WEIR_CACHE_DIR              cache root (default $HOME/.cache/weir); holds m2/ and kafka-<ver>/
#   WEIR_KAFKA_VERSION          Kafka version (default 4.3.1)
#   WEIR_KAFKA_START_TIMEOUT    seconds start/node-start wait for readiness (default 60;
#                               cluster-start: 120)
#   WEIR_KAFKA_STOP_TIMEOUT     seconds stop/cluster-stop wait after SIGTERM (default 20)
#   WEIR_KAFKA_HEAP_OPTS        broker heap flags (default "-Xmx512m -Xms256m"; cluster
#                               nodes: "-Xmx384m -Xms128m", controller-only "-Xmx256m -Xms64m")
#   WEIR_KAFKA_JVM_OPTS         extra broker JVM flags
#   WEIR_KAFKA_PROPS            extra server.properties lines (newline-separated key=value; win)
#   WEIR_KAFKA_CDS              1 (default) = AppCDS class-data archive for faster broker
#                               starts (dumped by the first broker that stops cleanly); 0 = off
#   JAVA_HOME                   JDK/JRE to use (default: java on PATH); Java 17+ required
#
# A broker whose client listener requires SASL (`start` only; cluster commands refuse
# these variables). Read on every start, so pass the same value to every (re)start of DIR:
#   WEIR_KAFKA_SASL_PLAIN       "user:password[,user:password...]": the client listener is
#                               SASL_PLAINTEXT://127.0.0.1:PORT with mechanism PLAIN and
#                               exactly these users (inline JAAS config in server.properties)
#   WEIR_KAFKA_SASL_SCRAM       "user:password[,...]": the same with SCRAM-SHA-512; the users'
#                               credentials are written into the metadata log when DIR is
#                               first formatted (kafka-storage format --add-scram), so later
#                               starts keep the first start's users
# The first user is the broker's own (inter-broker) identity and the one the readiness
# probe logs in as (it authenticates in bash: SaslHandshake, SaslAuthenticate, then
# Metadata, as an unauthenticated Metadata request makes the broker close the
# connection). Users: [A-Za-z0-9._-]; passwords: [A-Za-z0-9._~@%^*+/-]. The controller
# listener stays PLAINTEXT on 127.0.0.1:PORT+1.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
readonly CONF_SRC="$SCRIPT_DIR/kafka"
readonly KAFKA_VERSION="${WEIR_KAFKA_VERSION:-4.3.1}"
readonly DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
readonly MAIN_CLASS="kafka.Kafka"
readonly FORMAT_CLASS="kafka.tools.StorageTool"

CACHE_DIR="${WEIR_CACHE_DIR:-${HOME:-/tmp}/.cache/weir}"
KAFKA_HOME=""
LIBS_DIR=""
JAVA=""
JAVA_VERSION_OUT=""
TOOL_CMD=()
# SASL of the client listener (sasl_init): mechanism (empty: none), "user:password" list.
SASL_MECH=""
SASL_USERS=()

die() {
    printf 'kafka.sh: error: %s\n' "$*" >&2
    exit 1
}

warn() {
    printf 'kafka.sh: %s\n' "$*" >&2
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

init_paths() {
    mkdir -p "$CACHE_DIR" || die "cannot create cache dir $CACHE_DIR (set WEIR_CACHE_DIR to a writable dir)"
    CACHE_DIR="$(cd "$CACHE_DIR" && pwd -P)"
    KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
    LIBS_DIR="$KAFKA_HOME/libs"
}

find_java() {
    [[ -n "$JAVA" ]] && return 0
    if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
        JAVA="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        JAVA="$(command -v java)"
    else
        die "java not found: install a JDK 17+ (e.g. 'apt-get install openjdk-17-jdk-headless') or set JAVA_HOME"
    fi
    local line major
    JAVA_VERSION_OUT="$("$JAVA" -version 2>&1 || true)"
    line="$(grep -m1 -E 'version "' <<<"$JAVA_VERSION_OUT" || true)"
    major="$(sed -E 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/' <<<"$line")"
    # "1.8.0_x" style -> 8; "17.0.1" -> 17
    if [[ "${major%% *}" == 1 ]]; then major="${major#* }"; else major="${major%% *}"; fi
    if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
        die "$JAVA is not Java 17+ (got: ${line:-no version output}); Kafka $KAFKA_VERSION needs Java 17+: install a JDK 17 or point JAVA_HOME at one"
    fi
}

# --- fetch -------------------------------------------------------------------

fetch_stamp() {
    local pom_hash
    pom_hash="$(sha256sum "$CONF_SRC/pom.xml" | cut -d' ' -f1)"
    printf 'kafka=%s pom=%s\n' "$KAFKA_VERSION" "$pom_hash"
}

fetch_is_complete() {
    [[ -f "$LIBS_DIR/.weir-complete" && "$(cat "$LIBS_DIR/.weir-complete")" == "$(fetch_stamp)" ]]
}

cmd_fetch() {
    init_paths
    fetch_is_complete && return 0
    [[ -f "$CONF_SRC/pom.xml" ]] || die "missing $CONF_SRC/pom.xml (is deploy/kafka/ intact?)"
    command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven 3.6+ (e.g. 'apt-get install maven')"
    find_java
    mkdir -p "$KAFKA_HOME"

    # Serialise concurrent fetches (parallel test binaries, CI jobs).
    local lock_fd
    if command -v flock >/dev/null 2>&1; then
        exec {lock_fd}>"$KAFKA_HOME/.fetch.lock"
        flock -w 900 "$lock_fd" || die "timed out waiting for another fetch (lock $KAFKA_HOME/.fetch.lock)"
        if fetch_is_complete; then
            exec {lock_fd}>&-
            return 0
        fi
    fi

    local tmp log="$KAFKA_HOME/fetch.log"
    tmp="$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")"
    # JAVA_HOME for mvn: the JDK we validated.
    if ! JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVA" 2>/dev/null || echo "$JAVA")")")" \
        mvn -B -q -Dstyle.color=never \
            -f "$CONF_SRC/pom.xml" \
            -Dmaven.repo.local="$CACHE_DIR/m2" \
            -Dkafka.version="$KAFKA_VERSION" \
            "$DEP_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime \
            -DoutputDirectory="$tmp" \
            >"$log" 2>&1; then
        rm -rf "$tmp"
        tail -n 40 "$log" >&2 || true
        die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies (full log: $log). Check access to Maven Central (proxy/mirror in ~/.m2/settings.xml), or try another version with WEIR_KAFKA_VERSION=..."
    fi
    local jar
    for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-server-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar"; do
        [[ -f "$tmp/$jar" ]] || { rm -rf "$tmp"; die "fetch incomplete: $jar missing after mvn (log: $log)"; }
    done
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    fetch_stamp >"$LIBS_DIR/.weir-complete.tmp"
    mv "$LIBS_DIR/.weir-complete.tmp" "$LIBS_DIR/.weir-complete" # marker last
    [[ -n "${lock_fd:-}" ]] && exec {lock_fd}>&-
    return 0
}

# --- helpers -----------------------------------------------------------------

# Command prefix to run a Kafka CLI class in a small, fast-starting JVM.
tool_cmd() {
    TOOL_CMD=("$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
        -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$CONF_SRC/log4j2-tools.properties"
        -cp "$LIBS_DIR/*")
}

abs_dir() { # abs_dir DIR [create]
    local d="$1"
    [[ -n "$d" ]] || die "DIR must not be empty"
    if [[ "${2:-}" == create ]]; then
        mkdir -p "$d" || die "cannot create $d"
    fi
    [[ -d "$d" ]] || return 1
    (cd "$d" && pwd -P)
}

# Prints the broker pid for DIR if a broker started from DIR is alive.
running_pid() {
    local dir="$1" pid
    [[ -f "$dir/kafka.pid" ]] || return 1
    pid="$(cat "$dir/kafka.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local args state
    if [[ -r "/proc/$pid/cmdline" ]]; then
        state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null || echo '?')"
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    else
        state="$(ps -o stat= -p "$pid" 2>/dev/null || echo '?')"
        args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    fi
    [[ "$state" != Z* ]] || return 1 # killed but not yet reaped
    # Guard against pid reuse: it must be the broker for this DIR.
    [[ "$args" == *"$MAIN_CLASS $dir/config/server.properties"* ]] || return 1
    printf '%s\n' "$pid"
}

wait_gone() { # wait_gone DIR PID SECONDS -> 0 if gone
    local dir="$1" pid="$2" deadline=$((SECONDS + $3))
    while running_pid "$dir" >/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    return 0
}

port_open() {
    (exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1")
}

# Metadata probe, without a JVM (a Kafka CLI JVM costs ~1.7 s a try on this
# box): send a Metadata v4 request for no topics to 127.0.0.1:PORT and print the
# node ids of the brokers in the reply, space-separated, on one line (empty if
# none). A KRaft broker only processes client requests once it has caught up
# with the metadata log, and only lists brokers that are registered and
# unfenced, so a listed id means that broker serves clients. Metadata v4 is
# within what Kafka 4.x still accepts (KIP-896 kept v4+).
probe_brokers() { # probe_brokers PORT WAIT_SECONDS
    local reply
    # Request: int32 size=25 | int16 api_key=3 (Metadata) | int16 version=4 |
    # int32 correlation_id=1 | string client_id "weir-ready" |
    # int32 topics=0 (empty: none) | bool allow_auto_topic_creation=false
    # `head -c` reads no more than it is asked for, so the size prefix and the
    # body can be read from the socket one after the other.
    reply="$(
        { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || exit 1
        # A SASL listener answers nothing but ApiVersions and SASL before a login.
        [[ -z "$SASL_MECH" ]] || sasl_login "$2" || exit 1
        exec 2>/dev/null
        printf '\x00\x00\x00\x19\x00\x03\x00\x04\x00\x00\x00\x01\x00\x0aweir-ready\x00\x00\x00\x00\x00' >&3
        read -r -a h <<<"$(timeout "$2" head -c 4 <&3 | od -An -tu1 | tr -s ' \n' '  ')"
        ((${#h[@]} == 4)) || exit 1
        size=$(((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]))
        ((size >= 12 && size <= 65536)) || exit 1
        timeout "$2" head -c "$size" <&3 | od -An -v -tu1 | tr -s ' \n' '  '
    )" || return 1
    # Reply body: int32 correlation_id | int32 throttle_time_ms | int32 broker
    # count | brokers: int32 node_id, string host, int32 port, nullable string rack
    local -a b ids=()
    read -r -a b <<<"$reply"
    local n=${#b[@]} i=12 k count len
    ((n >= 12)) || return 1
    [[ "${b[0]} ${b[1]} ${b[2]} ${b[3]}" == "0 0 0 1" ]] || return 1
    count=$(((b[8] << 24) | (b[9] << 16) | (b[10] << 8) | b[11]))
    ((count >= 0 && count <= 1000)) || return 1
    for ((k = 0; k < count; k++)); do
        ((i + 6 <= n)) || return 1
        ids+=("$(((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]))")
        len=$(((b[i + 4] << 8) | b[i + 5]))
        i=$((i + 6 + len + 4)) # host, port
        ((i + 2 <= n)) || return 1
        len=$(((b[i] << 8) | b[i + 1]))
        i=$((i + 2))
        ((len == 65535)) || i=$((i + len)) # rack: -1 is null
        ((i <= n)) || return 1
    done
    printf '%s\n' "${ids[*]}"
}

# --- SASL ----------------------------------------------------------------------

# Parses WEIR_KAFKA_SASL_PLAIN / WEIR_KAFKA_SASL_SCRAM into SASL_MECH and SASL_USERS.
sasl_init() {
    local spec="" entry user pass
    SASL_MECH=""
    SASL_USERS=()
    if [[ -n "${WEIR_KAFKA_SASL_PLAIN:-}" && -n "${WEIR_KAFKA_SASL_SCRAM:-}" ]]; then
        die "set WEIR_KAFKA_SASL_PLAIN or WEIR_KAFKA_SASL_SCRAM, not both"
    elif [[ -n "${WEIR_KAFKA_SASL_PLAIN:-}" ]]; then
        SASL_MECH=PLAIN
        spec="$WEIR_KAFKA_SASL_PLAIN"
    elif [[ -n "${WEIR_KAFKA_SASL_SCRAM:-}" ]]; then
        SASL_MECH=SCRAM-SHA-512
        spec="$WEIR_KAFKA_SASL_SCRAM"
    else
        return 0
    fi
    local -a entries
    IFS=, read -r -a entries <<<"$spec"
    for entry in "${entries[@]}"; do
        user="${entry%%:*}"
        pass="${entry#*:}"
        [[ "$entry" == *:* && "$user" =~ ^[A-Za-z0-9._-]+$ && "$pass" =~ ^[A-Za-z0-9._~@%^*+/-]+$ ]] ||
            die "SASL users must be user:password[,user:password...] (users [A-Za-z0-9._-], passwords [A-Za-z0-9._~@%^*+/-]), got '$entry'"
        SASL_USERS+=("$user:$pass")
    done
    ((${#SASL_USERS[@]} > 0)) || die "no SASL users in '$spec'"
    if [[ "$SASL_MECH" == SCRAM-SHA-512 ]]; then
        command -v openssl >/dev/null 2>&1 || die "openssl not found: the readiness probe needs it for SCRAM-SHA-512"
    fi
}

sasl_refuse_for_clusters() {
    [[ -z "${WEIR_KAFKA_SASL_PLAIN:-}${WEIR_KAFKA_SASL_SCRAM:-}" ]] ||
        die "WEIR_KAFKA_SASL_PLAIN/WEIR_KAFKA_SASL_SCRAM are supported by 'start' (one broker) only"
}

# server.properties lines for a SASL client listener on PORT (after the template, before
# WEIR_KAFKA_PROPS).
sasl_props() { # sasl_props PORT CPORT
    local port="$1" cport="$2" first="${SASL_USERS[0]}" entry jaas mech_lc
    mech_lc="$(tr '[:upper:]' '[:lower:]' <<<"$SASL_MECH")"
    if [[ "$SASL_MECH" == PLAIN ]]; then
        jaas="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"${first%%:*}\" password=\"${first#*:}\""
        for entry in "${SASL_USERS[@]}"; do
            jaas+=" user_${entry%%:*}=\"${entry#*:}\""
        done
    else
        jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"${first%%:*}\" password=\"${first#*:}\""
    fi
    cat <<EOF

# From WEIR_KAFKA_SASL_*: the client listener requires SASL $SASL_MECH; the controller
# listener stays PLAINTEXT.
listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=$SASL_MECH
sasl.mechanism.inter.broker.protocol=$SASL_MECH
listener.name.sasl_plaintext.$mech_lc.sasl.jaas.config=$jaas;
EOF
}

# Kafka wire helpers for the probes: they run in a subshell with the connection on fd 3.
hex_of() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
hex_int() { printf "%0$(($2 * 2))x" "$1"; } # hex_int VALUE BYTES (big-endian)
# shellcheck disable=SC2059 # the format is the escaped bytes
hex_to_bytes() { printf "$(sed 's/../\\x&/g' <<<"$1")"; } # stdout: the bytes
bytes_hex() { od -An -v -tx1 | tr -d ' \n'; }             # stdin bytes -> hex

# Sends one request (header v1, client id weir-ready) with body BODY_HEX on fd 3.
kafka_send() { # kafka_send API_KEY VERSION CORRELATION BODY_HEX
    local client=weir-ready hex
    hex="$(hex_int "$1" 2)$(hex_int "$2" 2)$(hex_int "$3" 4)$(hex_int ${#client} 2)$(hex_of "$client")$4"
    hex_to_bytes "$(hex_int $((${#hex} / 2)) 4)$hex" >&3
}

# Reads one response from fd 3; prints its bytes (correlation id first) as decimals.
kafka_recv() { # kafka_recv WAIT_SECONDS
    local -a h
    local size
    read -r -a h <<<"$(timeout "$1" head -c 4 <&3 | od -An -tu1 | tr -s ' \n' '  ')"
    ((${#h[@]} == 4)) || return 1
    size=$(((h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]))
    ((size >= 4 && size <= 1048576)) || return 1
    timeout "$1" head -c "$size" <&3 | od -An -v -tu1 | tr -s ' \n' '  '
}

# Prints the text of decimal byte values (arguments).
bytes_text() {
    local b out=""
    for b in "$@"; do out+="$(printf '\\x%02x' "$b")"; done
    # shellcheck disable=SC2059 # the format is the escaped bytes
    printf "$out"
}

# One SaslAuthenticate v1 round trip: sends the token (hex), prints the server's token as
# text; on an error code prints Kafka's message to stderr and returns 1.
sasl_authenticate() { # sasl_authenticate WAIT CORRELATION TOKEN_HEX
    local -a r
    kafka_send 36 1 "$2" "$(hex_int $((${#3} / 2)) 4)$3"
    read -r -a r <<<"$(kafka_recv "$1")"
    ((${#r[@]} >= 8)) || { echo "no SaslAuthenticate reply" >&2; return 1; }
    # correlation id | int16 error | nullable string message | bytes token | int64 lifetime
    local err=$(((r[4] << 8) | r[5])) len i=8 msg=""
    len=$(((r[6] << 8) | r[7]))
    if ((len != 65535)); then
        msg="$(bytes_text "${r[@]:8:len}")"
        i=$((8 + len))
    fi
    if ((err != 0)); then
        echo "SASL $SASL_MECH login as ${SASL_USERS[0]%%:*} refused (error $err): $msg" >&2
        return 1
    fi
    ((${#r[@]} >= i + 4)) || return 1
    len=$(((r[i] << 24) | (r[i + 1] << 16) | (r[i + 2] << 8) | r[i + 3]))
    bytes_text "${r[@]:i+4:len}"
}

# Logs in on fd 3 as the first SASL user: SaslHandshake v1, then PLAIN or SCRAM-SHA-512
# through SaslAuthenticate v1. Failures go to stderr.
sasl_login() { # sasl_login WAIT
    local wait="$1" user="${SASL_USERS[0]%%:*}" pass="${SASL_USERS[0]#*:}"
    local -a r
    kafka_send 17 1 11 "$(hex_int ${#SASL_MECH} 2)$(hex_of "$SASL_MECH")"
    read -r -a r <<<"$(kafka_recv "$wait")"
    ((${#r[@]} >= 6)) || { echo "no SaslHandshake reply" >&2; return 1; }
    if (((r[4] << 8 | r[5]) != 0)); then
        echo "SaslHandshake for $SASL_MECH refused (error $((r[4] << 8 | r[5])))" >&2
        return 1
    fi
    if [[ "$SASL_MECH" == PLAIN ]]; then
        sasl_authenticate "$wait" 12 "00$(hex_of "$user")00$(hex_of "$pass")" >/dev/null
        return
    fi
    # SCRAM-SHA-512 (RFC 5802, RFC 7677 with SHA-512).
    local cnonce first_bare server_first nonce salt iter salted client_key stored_key final_bare auth sig proof="" k
    cnonce="$(head -c 18 /dev/urandom | base64 | tr -d '+/=\n')"
    first_bare="n=$user,r=$cnonce"
    server_first="$(sasl_authenticate "$wait" 12 "$(hex_of "n,,$first_bare")")" || return 1
    nonce="$(sed -nE 's/^r=([^,]*),.*/\1/p' <<<"$server_first")"
    salt="$(sed -nE 's/.*,s=([^,]*),.*/\1/p' <<<"$server_first")"
    iter="$(sed -nE 's/.*,i=([0-9]+).*/\1/p' <<<"$server_first")"
    [[ "$nonce" == "$cnonce"* && -n "$salt" && -n "$iter" ]] || { echo "bad SCRAM server-first message: $server_first" >&2; return 1; }
    salted="$(openssl kdf -keylen 64 -kdfopt digest:SHA512 -kdfopt "pass:$pass" \
        -kdfopt "hexsalt:$(base64 -d <<<"$salt" | bytes_hex)" -kdfopt "iter:$iter" PBKDF2 | tr -d ':\n')"
    client_key="$(printf 'Client Key' | openssl mac -digest SHA512 -macopt "hexkey:$salted" HMAC)"
    stored_key="$(hex_to_bytes "$client_key" | openssl dgst -sha512 -binary | bytes_hex)"
    final_bare="c=biws,r=$nonce"
    auth="$first_bare,$server_first,$final_bare"
    sig="$(printf '%s' "$auth" | openssl mac -digest SHA512 -macopt "hexkey:$stored_key" HMAC)"
    for ((k = 0; k < 128; k += 2)); do
        proof+="$(printf '%02x' $((0x${client_key:k:2} ^ 0x${sig:k:2})))"
    done
    proof="$(hex_to_bytes "$proof" | base64 | tr -d '\n')"
    sasl_authenticate "$wait" 13 "$(hex_of "$final_bare,p=$proof")" >/dev/null
}

# Ready: the broker at PORT serves clients and lists at least one broker.
probe_ready() { # probe_ready PORT WAIT_SECONDS
    local ids
    ids="$(probe_brokers "$1" "$2")" && [[ -n "$ids" ]]
}

show_logs() { # show_logs DIR [OFFSET]: last 40 lines of this run's broker log (+ JVM output) to stderr
    local dir="$1" off="${2:-0}"
    if [[ -s "$dir/logs/server.log" ]] && (($(wc -c <"$dir/logs/server.log") > off)); then
        printf -- '--- last 40 lines of %s (this start) ---\n' "$dir/logs/server.log" >&2
        tail -c +$((off + 1)) "$dir/logs/server.log" | tail -n 40 >&2
    else
        printf -- '--- nothing logged to %s by this start ---\n' "$dir/logs/server.log" >&2
    fi
    if [[ -s "$dir/logs/kafka.out" ]]; then
        printf -- '--- last 20 lines of %s (JVM stdout/stderr) ---\n' "$dir/logs/kafka.out" >&2
        tail -n 20 "$dir/logs/kafka.out" >&2
    fi
}

render_config() { # render_config DIR PORT CPORT
    local dir="$1" port="$2" cport="$3" tpl
    tpl="$(<"$CONF_SRC/server.properties.template")"
    tpl="${tpl//@DIR@/"$dir"}"
    tpl="${tpl//@CONTROLLER_PORT@/"$cport"}"
    tpl="${tpl//@PORT@/"$port"}"
    {
        printf '%s\n' "$tpl"
        [[ -z "$SASL_MECH" ]] || sasl_props "$port" "$cport"
        if [[ -n "${WEIR_KAFKA_PROPS:-}" ]]; then
            printf '\n# From WEIR_KAFKA_PROPS:\n%s\n' "$WEIR_KAFKA_PROPS"
        fi
    } >"$dir/config/server.properties.tmp"
    mv "$dir/config/server.properties.tmp" "$dir/config/server.properties"
    cp "$CONF_SRC/log4j2-broker.properties" "$dir/config/log4j2.properties"
}

# AppCDS: a dynamic class-data archive of the broker's classes cuts a warm
# start from ~6.5 s to ~4.5 s here. The first broker started without one runs
# with -XX:ArchiveClassesAtExit=DIR/broker-cds.jsa; the JVM writes it while
# exiting after SIGTERM, and `stop` then publishes it to the cache. The archive
# name is keyed by JVM build and jar set, so a different JDK or refetched jars
# just make a new one (a mismatched archive is ignored by -Xshare:auto anyway).
cds_archive_path() {
    local id
    id="$(printf '%s\n%s\n%s\n' "$(readlink -f "$JAVA" 2>/dev/null || echo "$JAVA")" "$JAVA_VERSION_OUT" \
        "$(cat "$LIBS_DIR/.weir-complete" 2>/dev/null)" | sha256sum | cut -c1-16)"
    printf '%s\n' "$KAFKA_HOME/cds/broker-$id.jsa"
}

# After the broker from DIR exited: publish its CDS dump (if clean) and tidy up.
cds_publish() { # cds_publish DIR clean|dirty
    local dir="$1" target
    if [[ "$2" == clean && -s "$dir/broker-cds.jsa" && -s "$dir/broker-cds.target" ]]; then
        target="$(<"$dir/broker-cds.target")"
        if [[ ! -s "$target" ]] && mkdir -p "$(dirname "$target")" 2>/dev/null &&
            cp "$dir/broker-cds.jsa" "$target.tmp.$$" 2>/dev/null; then
            mv -f "$target.tmp.$$" "$target" || rm -f "$target.tmp.$$"
        fi
    fi
    rm -f "$dir/broker-cds.jsa" "$dir/broker-cds.target"
}

new_cluster_id() {
    # Same shape as org.apache.kafka.common.Uuid.randomUuid().toString():
    # 16 random bytes, base64url without padding, not starting with '-'.
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ ${#id} -eq 22 && "$id" != -* && "$id" != AAAAAAAAAAAAAAAAAAAAA* ]] && break
    done
    printf '%s\n' "$id"
}

format_storage() { # format_storage DIR
    local dir="$1" cid
    if [[ -f "$dir/cluster.id" ]]; then
        cid="$(<"$dir/cluster.id")"
    else
        cid="$(new_cluster_id)"
        printf '%s\n' "$cid" >"$dir/cluster.id"
    fi
    tool_cmd
    local scram=() entry
    if [[ "$SASL_MECH" == SCRAM-SHA-512 ]]; then
        for entry in "${SASL_USERS[@]}"; do
            scram+=(--add-scram "SCRAM-SHA-512=[name=${entry%%:*},password=${entry#*:}]")
        done
    fi
    if ! "${TOOL_CMD[@]}" "$FORMAT_CLASS" format --cluster-id "$cid" \
        --config "$dir/config/server.properties" --ignore-formatted "${scram[@]}" \
        >"$dir/logs/format.log" 2>&1; then
        cat "$dir/logs/format.log" >&2
        die "formatting storage in $dir/data failed (see above / $dir/logs/format.log)"
    fi
}

# --- commands ----------------------------------------------------------------

# Starts the broker JVM for DIR unless one from DIR already runs (then on PORT, or
# die): renders the config with RENDER..., formats storage on first start, and
# launches. Sets LAUNCH_LOG_OFF to where this start's broker log begins.
launch_broker() { # launch_broker DIR PORT CPORT DEFAULT_HEAP RENDER...
    local dir="$1" port="$2" cport="$3" default_heap="$4"
    shift 4
    mkdir -p "$dir/config" "$dir/data" "$dir/logs"

    local pid
    LAUNCH_LOG_OFF=0
    [[ -f "$dir/logs/server.log" ]] && LAUNCH_LOG_OFF="$(wc -c <"$dir/logs/server.log")"
    if pid="$(running_pid "$dir")"; then
        local old_port
        old_port="$(cat "$dir/port" 2>/dev/null || true)"
        [[ "$old_port" == "$port" ]] ||
            die "a broker from $dir is already running (pid $pid) on port ${old_port:-?}; run 'kafka.sh stop $dir' first"
        return 0
    fi
    rm -f "$dir/kafka.pid"
    local p
    for p in "$port" "$cport"; do
        if port_open "$p"; then
            die "port 127.0.0.1:$p is already in use (client port $port, controller port $cport); pick another PORT"
        fi
    done
    [[ -f "$dir/logs/kafka.out" ]] && mv -f "$dir/logs/kafka.out" "$dir/logs/kafka.out.prev"
    "$@"
    printf '%s\n' "$port" >"$dir/port"
    # First start (or a start that died before formatting): format. An
    # existing meta.properties means keep the data and cluster id.
    [[ -f "$dir/data/meta.properties" ]] || format_storage "$dir"

    local launcher=() heap=() extra=() cds=()
    rm -f "$dir/broker-cds.jsa" "$dir/broker-cds.target"
    if [[ "${WEIR_KAFKA_CDS:-1}" != 0 ]]; then
        local archive
        archive="$(cds_archive_path)"
        # CDS chatter ("Skipping ...: Not linked") to logs/cds.log, not kafka.out.
        cds=("-Xlog:cds*=off" "-Xlog:cds*=warning:file=$dir/logs/cds.log")
        if [[ -s "$archive" ]]; then
            cds+=("-XX:SharedArchiveFile=$archive")
        else
            cds+=("-XX:ArchiveClassesAtExit=$dir/broker-cds.jsa")
            printf '%s\n' "$archive" >"$dir/broker-cds.target"
        fi
    fi
    command -v setsid >/dev/null 2>&1 && launcher=(setsid)
    read -r -a heap <<<"${WEIR_KAFKA_HEAP_OPTS:-$default_heap}"
    read -r -a extra <<<"${WEIR_KAFKA_JVM_OPTS:-}"
    # The inner bash records its own pid, then execs the JVM (same pid),
    # so the pid file is right whether or not setsid forks.
    # shellcheck disable=SC2016 # $$/$1 are for the inner shell
    nohup "${launcher[@]}" bash -c 'echo $$ >"$1.tmp" && mv "$1.tmp" "$1"; shift; exec "$@"' \
        weir-kafka "$dir/kafka.pid" \
        "$JAVA" \
        "${heap[@]}" \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Xshare:auto "${cds[@]}" \
        "-Xlog:gc*:file=$dir/logs/gc.log:time,tags:filecount=2,filesize=10M" \
        -Djava.awt.headless=true \
        -Dkafka.logs.dir="$dir/logs" \
        -Dlog4j2.configurationFile="$dir/config/log4j2.properties" \
        "${extra[@]}" \
        -cp "$LIBS_DIR/*" \
        "$MAIN_CLASS" "$dir/config/server.properties" \
        </dev/null >"$dir/logs/kafka.out" 2>&1 &
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -s "$dir/kafka.pid" ]] && break
        sleep 0.05
    done
}

# Waits until the broker from DIR serves clients on PORT and its Metadata reply
# lists every node id in NEED (space-separated; empty: any broker). On failure
# (the broker exited, or DEADLINE in $SECONDS passed) prints why and this
# start's logs, and returns 1; the caller decides what to kill.
wait_serving() { # wait_serving DIR PORT DEADLINE LOG_OFF NEED
    local dir="$1" port="$2" deadline="$3" log_off="$4" need="$5" ids last="(no reply)" id ok
    while :; do
        if ! running_pid "$dir" >/dev/null; then
            warn "broker in $dir exited during startup"
            show_logs "$dir" "$log_off"
            return 1
        fi
        # The probe's complaints (a refused SASL login) are shown if it never succeeds.
        if ids="$(probe_brokers "$port" 2 2>"$dir/logs/probe.err")"; then
            last="[${ids}]"
            ok=1
            if [[ -z "$need" ]]; then
                [[ -n "$ids" ]] || ok=0
            else
                for id in $need; do
                    [[ " $ids " == *" $id "* ]] || ok=0
                done
            fi
            ((ok)) && return 0
        fi
        if ((SECONDS >= deadline)); then
            if [[ -z "$need" ]]; then
                warn "broker in $dir did not serve Metadata requests on 127.0.0.1:$port in time (last reply's brokers: $last)"
            else
                warn "broker in $dir did not list brokers [$need] in its Metadata replies on 127.0.0.1:$port in time (last reply's brokers: $last)"
            fi
            if [[ -s "$dir/logs/probe.err" ]]; then
                printf -- '--- readiness probe of 127.0.0.1:%s ---\n' "$port" >&2
                cat "$dir/logs/probe.err" >&2
            fi
            show_logs "$dir" "$log_off"
            return 1
        fi
        sleep 0.1
    done
}

start_timeout() { # start_timeout DEFAULT: prints WEIR_KAFKA_START_TIMEOUT or DEFAULT
    local timeout="${WEIR_KAFKA_START_TIMEOUT:-$1}"
    [[ "$timeout" =~ ^[0-9]+$ ]] || die "WEIR_KAFKA_START_TIMEOUT must be whole seconds, got '$timeout'"
    printf '%s\n' "$timeout"
}

cmd_start() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh start DIR PORT"
    sasl_init
    local port="$2" dir cport timeout
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65534)); then
        die "PORT must be a number in 1..65534 (PORT+1 is the controller port), got '$port'"
    fi
    cport=$((port + 1))
    dir="$(abs_dir "$1" create)"
    if [[ -f "$dir/cluster-node" ]]; then
        die "$dir is node $(<"$dir/cluster-node") of the cluster in $(dirname "$dir"): use 'kafka.sh node-start $(dirname "$dir") $(<"$dir/cluster-node")'"
    fi
    [[ -f "$dir/cluster.env" ]] && die "$dir holds a cluster: use 'kafka.sh cluster-start $dir ...'"
    timeout="$(start_timeout 60)"

    cmd_fetch
    find_java
    launch_broker "$dir" "$port" "$cport" "-Xmx512m -Xms256m" render_config "$dir" "$port" "$cport"
    if ! wait_serving "$dir" "$port" $((SECONDS + timeout)) "$LAUNCH_LOG_OFF" ""; then
        warn "broker in $dir did not serve on 127.0.0.1:$port within ${timeout}s of starting; killing it"
        cmd_kill "$dir" >/dev/null 2>&1 || true
        exit 1
    fi
    printf '127.0.0.1:%s\n' "$port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh stop DIR"
    local dir pid
    dir="$(abs_dir "$1")" || return 0
    if ! pid="$(running_pid "$dir")"; then
        rm -f "$dir/kafka.pid"
        return 0
    fi
    local t="${WEIR_KAFKA_STOP_TIMEOUT:-20}" how=clean
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$dir" "$pid" "$t"; then
        warn "broker in $dir (pid $pid) did not stop within ${t}s of SIGTERM; sending SIGKILL"
        how=dirty
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$dir" "$pid" 10 || die "broker pid $pid still alive after SIGKILL"
    fi
    rm -f "$dir/kafka.pid"
    cds_publish "$dir" "$how"
}

cmd_kill() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh kill DIR"
    local dir pid
    dir="$(abs_dir "$1")" || return 0
    if pid="$(running_pid "$dir")"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$dir" "$pid" 10 || die "broker pid $pid still alive after SIGKILL"
    fi
    rm -f "$dir/kafka.pid"
    cds_publish "$dir" dirty
}

cmd_status() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh status DIR"
    local dir pid
    if dir="$(abs_dir "$1")" && pid="$(running_pid "$dir")"; then
        printf 'running pid=%s bootstrap=127.0.0.1:%s\n' "$pid" "$(cat "$dir/port" 2>/dev/null || echo '?')"
        return 0
    fi
    printf 'not running\n'
    return 1
}

cmd_run_class() {
    [[ $# -ge 1 ]] || die "usage: kafka.sh run-class CLASS [ARGS...]"
    cmd_fetch
    find_java
    tool_cmd
    exec "${TOOL_CMD[@]}" "$@"
}

# --- cluster -------------------------------------------------------------------

CL_DIR=""
CL_NODES=0 # brokers
CL_BASE=0
CL_MODE=combined
CL_TOTAL=0 # nodes: the brokers, plus the controller in dedicated mode

cluster_node_dir() { printf '%s/node-%s\n' "$CL_DIR" "$1"; }
cluster_port() { printf '%s\n' $((CL_BASE + 2 * ($1 - 1))); }

cluster_bootstrap() {
    local i list=()
    for ((i = 1; i <= CL_NODES; i++)); do
        list+=("127.0.0.1:$(cluster_port "$i")")
    done
    local IFS=,
    printf '%s\n' "${list[*]}"
}

# Loads DIR/cluster.env (written by cluster-start) into CL_*; returns 1 if DIR
# holds no cluster.
cluster_load() { # cluster_load DIR
    local dir key value
    dir="$(abs_dir "$1")" || return 1
    [[ -f "$dir/cluster.env" ]] || return 1
    CL_DIR="$dir"
    CL_NODES=0
    CL_BASE=0
    CL_MODE=combined
    while IFS='=' read -r key value; do
        case "$key" in
        nodes) CL_NODES="$value" ;;
        baseport) CL_BASE="$value" ;;
        mode) CL_MODE="$value" ;;
        esac
    done <"$dir/cluster.env"
    [[ "$CL_NODES" =~ ^[1-9]$ && "$CL_BASE" =~ ^[0-9]+$ && "$CL_MODE" =~ ^(combined|dedicated)$ ]] ||
        die "$dir/cluster.env is damaged (nodes='$CL_NODES' baseport='$CL_BASE' mode='$CL_MODE'): remove $dir"
    CL_TOTAL=$CL_NODES
    [[ "$CL_MODE" == dedicated ]] && CL_TOTAL=$((CL_NODES + 1))
    return 0
}

is_controller_only() { [[ "$CL_MODE" == dedicated ]] && (($1 == CL_TOTAL)); }

cluster_node_index() { # cluster_node_index I: validates I against the loaded cluster
    [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= CL_TOTAL)) ||
        die "node index must be 1..$CL_TOTAL for the cluster in $CL_DIR, got '$1'"
}

render_cluster_config() { # render_cluster_config I
    local i="$1" dir port tpl voters=() v roles listeners broker_lines
    dir="$(cluster_node_dir "$i")"
    port="$(cluster_port "$i")"
    if [[ "$CL_MODE" == dedicated ]]; then
        voters=("$CL_TOTAL@127.0.0.1:$(($(cluster_port "$CL_TOTAL") + 1))")
    else
        for ((v = 1; v <= CL_NODES; v++)); do
            voters+=("$v@127.0.0.1:$(($(cluster_port "$v") + 1))")
        done
    fi
    broker_lines="advertised.listeners=PLAINTEXT://127.0.0.1:$port"$'\n'"inter.broker.listener.name=PLAINTEXT"
    if is_controller_only "$i"; then
        roles=controller
        listeners="CONTROLLER://127.0.0.1:$((port + 1))"
        broker_lines="# (none: controller only)"
    elif [[ "$CL_MODE" == dedicated ]]; then
        roles=broker
        listeners="PLAINTEXT://127.0.0.1:$port"
    else
        roles=broker,controller
        listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))"
    fi
    tpl="$(<"$CONF_SRC/cluster-node.properties.template")"
    tpl="${tpl//@DIR@/"$dir"}"
    tpl="${tpl//@NODE_ID@/"$i"}"
    tpl="${tpl//@NODES@/"$CL_NODES"}"
    tpl="${tpl//@ROLES@/"$roles"}"
    tpl="${tpl//@LISTENERS@/"$listeners"}"
    tpl="${tpl//@BROKER_LISTENERS@/"$broker_lines"}"
    tpl="${tpl//@VOTERS@/"$(
        IFS=,
        printf '%s' "${voters[*]}"
    )"}"
    {
        printf '%s\n' "$tpl"
        if [[ -n "${WEIR_KAFKA_PROPS:-}" ]]; then
            printf '\n# From WEIR_KAFKA_PROPS:\n%s\n' "$WEIR_KAFKA_PROPS"
        fi
    } >"$dir/config/server.properties.tmp"
    mv "$dir/config/server.properties.tmp" "$dir/config/server.properties"
    cp "$CONF_SRC/log4j2-broker.properties" "$dir/config/log4j2.properties"
}

launch_cluster_node() { # launch_cluster_node I
    local i="$1" dir port
    dir="$(cluster_node_dir "$i")"
    port="$(cluster_port "$i")"
    mkdir -p "$dir"
    printf '%s\n' "$i" >"$dir/cluster-node"
    cp "$CL_DIR/cluster.id" "$dir/cluster.id"
    local heap="-Xmx384m -Xms128m"
    is_controller_only "$i" && heap="-Xmx256m -Xms64m"
    launch_broker "$dir" "$port" $((port + 1)) "$heap" render_cluster_config "$i"
}

# Waits until node I serves: a broker until its Metadata replies list the
# brokers in NEED, the controller-only node until its listener accepts.
wait_cluster_node() { # wait_cluster_node I DEADLINE LOG_OFF NEED
    local i="$1" deadline="$2" log_off="$3" need="$4" dir port
    dir="$(cluster_node_dir "$i")"
    port="$(cluster_port "$i")"
    if ! is_controller_only "$i"; then
        wait_serving "$dir" "$port" "$deadline" "$log_off" "$need"
        return
    fi
    while :; do
        if ! running_pid "$dir" >/dev/null; then
            warn "controller in $dir exited during startup"
            show_logs "$dir" "$log_off"
            return 1
        fi
        port_open $((port + 1)) && return 0
        if ((SECONDS >= deadline)); then
            warn "controller in $dir did not listen on 127.0.0.1:$((port + 1)) in time"
            show_logs "$dir" "$log_off"
            return 1
        fi
        sleep 0.1
    done
}

cmd_cluster_start() {
    sasl_refuse_for_clusters
    [[ $# -ge 2 && $# -le 4 ]] || die "usage: kafka.sh cluster-start DIR BASEPORT [NODES [combined|dedicated]]"
    local base="$2" nodes="${3:-3}" mode="${4:-combined}" dir timeout total
    [[ "$nodes" =~ ^[1-9]$ ]] || die "NODES must be 1..9, got '$nodes'"
    [[ "$mode" =~ ^(combined|dedicated)$ ]] || die "MODE must be 'combined' or 'dedicated', got '$mode'"
    total=$nodes
    [[ "$mode" == dedicated ]] && total=$((nodes + 1))
    if ! [[ "$base" =~ ^[0-9]+$ ]] || ((base < 1 || base + 2 * total - 1 > 65535)); then
        die "BASEPORT must be a number such that BASEPORT..BASEPORT+$((2 * total - 1)) are ports (node i: client port BASEPORT+2(i-1), controller port +1), got '$base'"
    fi
    dir="$(abs_dir "$1" create)"
    if cluster_load "$dir"; then
        [[ "$CL_NODES" == "$nodes" && "$CL_BASE" == "$base" && "$CL_MODE" == "$mode" ]] ||
            die "$dir already holds a $CL_MODE cluster of $CL_NODES brokers on base port $CL_BASE; run 'kafka.sh cluster-stop $dir' and remove $dir first"
    else
        [[ -e "$dir/config" || -e "$dir/data" || -e "$dir/cluster-node" ]] &&
            die "$dir holds a single broker (or a cluster node), not a cluster: pick an empty DIR"
        [[ -f "$dir/cluster.id" ]] || new_cluster_id >"$dir/cluster.id"
        printf 'nodes=%s\nbaseport=%s\nmode=%s\n' "$nodes" "$base" "$mode" >"$dir/cluster.env.tmp"
        mv "$dir/cluster.env.tmp" "$dir/cluster.env"
        cluster_load "$dir"
    fi
    timeout="$(start_timeout 120)"

    cmd_fetch
    find_java
    # Launch every node before waiting for any: a controller quorum needs a
    # majority of the voters.
    local i offsets=() need="" deadline
    for ((i = CL_TOTAL; i >= 1; i--)); do # the controller-only node first
        launch_cluster_node "$i"
        offsets[i]="$LAUNCH_LOG_OFF"
    done
    for ((i = 1; i <= CL_NODES; i++)); do
        need+="$i "
    done
    deadline=$((SECONDS + timeout))
    for ((i = CL_TOTAL; i >= 1; i--)); do
        if ! wait_cluster_node "$i" "$deadline" "${offsets[i]}" "${need% }"; then
            warn "node $i of the cluster in $CL_DIR did not serve with all $CL_NODES brokers registered within ${timeout}s of starting; killing the cluster"
            cmd_cluster_kill "$CL_DIR" >/dev/null 2>&1 || true
            exit 1
        fi
    done
    cluster_bootstrap
}

cmd_node_start() {
    sasl_refuse_for_clusters
    [[ $# -eq 2 ]] || die "usage: kafka.sh node-start DIR I"
    cluster_load "$1" || die "$1 holds no cluster (no cluster.env): start one with 'kafka.sh cluster-start'"
    cluster_node_index "$2"
    local i="$2" timeout port
    port="$(cluster_port "$i")"
    timeout="$(start_timeout 60)"
    cmd_fetch
    find_java
    launch_cluster_node "$i"
    if ! wait_cluster_node "$i" $((SECONDS + timeout)) "$LAUNCH_LOG_OFF" "$i"; then
        warn "node $i of the cluster in $CL_DIR did not serve within ${timeout}s of starting (a restarted broker needs a majority of the controllers up); killing it"
        cmd_kill "$(cluster_node_dir "$i")" >/dev/null 2>&1 || true
        exit 1
    fi
    if is_controller_only "$i"; then
        printf 'controller 127.0.0.1:%s\n' $((port + 1))
    else
        printf '127.0.0.1:%s\n' "$port"
    fi
}

cmd_node_stop() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh node-stop DIR I"
    cluster_load "$1" || return 0
    cluster_node_index "$2"
    cmd_stop "$(cluster_node_dir "$2")"
}

cmd_node_kill() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh node-kill DIR I"
    cluster_load "$1" || return 0
    cluster_node_index "$2"
    cmd_kill "$(cluster_node_dir "$2")"
}

# SIGTERM to every node at once (a node stopping alone would wait for a
# controller quorum the others already left), then up to the stop timeout
# for all of them together, then SIGKILL. Even so, each controller spends up
# to 5 s on its graceful Raft shutdown. In dedicated mode the brokers go first:
# their controlled shutdown needs the controller.
cmd_cluster_stop() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh cluster-stop DIR"
    cluster_load "$1" || return 0
    local t="${WEIR_KAFKA_STOP_TIMEOUT:-20}" deadline
    deadline=$((SECONDS + t))
    if [[ "$CL_MODE" == dedicated ]]; then
        stop_nodes "$deadline" "$t" $(seq 1 "$CL_NODES")
        stop_nodes $((SECONDS + t)) "$t" "$CL_TOTAL"
    else
        stop_nodes "$deadline" "$t" $(seq 1 "$CL_TOTAL")
    fi
}

stop_nodes() { # stop_nodes DEADLINE TIMEOUT I...: SIGTERM nodes I..., wait, SIGKILL
    local deadline="$1" t="$2" i dir pid how
    shift 2
    local -A pids=()
    for i in "$@"; do
        dir="$(cluster_node_dir "$i")"
        if pid="$(running_pid "$dir")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids[$i]="$pid"
        fi
    done
    for i in "$@"; do
        dir="$(cluster_node_dir "$i")"
        how=clean
        if [[ -n "${pids[$i]:-}" ]]; then
            if ! wait_gone "$dir" "${pids[$i]}" $((deadline > SECONDS ? deadline - SECONDS : 0)); then
                warn "node $i in $dir (pid ${pids[$i]}) did not stop within ${t}s of SIGTERM; sending SIGKILL"
                how=dirty
                kill -KILL "${pids[$i]}" 2>/dev/null || true
                wait_gone "$dir" "${pids[$i]}" 10 || die "node $i pid ${pids[$i]} still alive after SIGKILL"
            fi
        fi
        [[ -d "$dir" ]] || continue
        rm -f "$dir/kafka.pid"
        cds_publish "$dir" "$how"
    done
}

cmd_cluster_kill() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh cluster-kill DIR"
    cluster_load "$1" || return 0
    local i
    for ((i = 1; i <= CL_TOTAL; i++)); do
        cmd_kill "$(cluster_node_dir "$i")"
    done
}

cmd_cluster_status() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh cluster-status DIR"
    if ! cluster_load "$1"; then
        printf 'no cluster\n'
        return 1
    fi
    local i pid up=0 what
    for ((i = 1; i <= CL_TOTAL; i++)); do
        what="bootstrap=127.0.0.1:$(cluster_port "$i")"
        is_controller_only "$i" && what="controller=127.0.0.1:$(($(cluster_port "$i") + 1))"
        if pid="$(running_pid "$(cluster_node_dir "$i")")"; then
            printf 'node-%s running pid=%s %s\n' "$i" "$pid" "$what"
            up=$((up + 1))
        else
            printf 'node-%s not running (%s)\n' "$i" "$what"
        fi
    done
    printf 'bootstrap=%s\n' "$(cluster_bootstrap)"
    ((up == CL_TOTAL))
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    case "$cmd" in
    fetch)
        [[ $# -eq 0 ]] || die "usage: kafka.sh fetch"
        cmd_fetch
        ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    status) cmd_status "$@" ;;
    run-class) cmd_run_class "$@" ;;
    cluster-start) cmd_cluster_start "$@" ;;
    cluster-stop) cmd_cluster_stop "$@" ;;
    cluster-kill) cmd_cluster_kill "$@" ;;
    cluster-status) cmd_cluster_status "$@" ;;
    node-start) cmd_node_start "$@" ;;
    node-stop) cmd_node_stop "$@" ;;
    node-kill) cmd_node_kill "$@" ;;
    -h | --help | help) usage ;;
    *)
        warn "unknown command '$cmd'"
        usage
        ;;
    esac
}

main "$@"
