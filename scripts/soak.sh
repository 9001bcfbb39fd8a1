#!/usr/bin/env bash
# Gatehouse soak: traffic that looks like a day of use, for 30 minutes by
# default, against
#   (a) one node on SQLite, and
#   (b) two nodes on PostgreSQL with Redis, behind nginx configured with
#       deploy/nginx-gatehouse-cluster.conf,
# both at once, each at a steady rate (examples/soak.rs sends it and
# BENCHMARKS.md, "Soak", explains the mix). Per minute it records the
# resident memory of each node, p50/p99 latency, requests and errors, prints
# a table per deployment, and exits non-zero if any answer was a 5xx (or not
# what it must be), if a node's RSS at the end is more than 5% above its RSS
# after the first five minutes, or if a minute's p99 exceeds twice the
# median minute's p99.
#
# Usage: scripts/soak.sh                 (30 minutes plus the release build)
#        SOAK_MINUTES=3 scripts/soak.sh  (a short run)
#
# Knobs (environment variables):
#   SOAK_MINUTES=30     minutes of traffic (the RSS baseline is minute 5, or
#                       the first third of a shorter run)
#   SOAK_RATE=200       requests per second to each deployment
#   SOAK_KEYS=1000      keys created in each deployment before the traffic
#   SOAK_TARGETS="sqlite cluster"   which deployments to soak
#   SOAK_PG_URL=URL     a PostgreSQL server where a database may be created
#                       (default postgres://postgres@127.0.0.1:5432/postgres);
#                       it is dropped afterwards
#   SOAK_REDIS_URL=URL  a Redis the nodes may share (default
#                       redis://127.0.0.1:6379; keys under a prefix of the run)
#   SOAK_NO_BUILD=1     use the existing release build
#   SOAK_KEEP=1         keep the temporary directory (data, logs, nginx config)
#
# Needs: cargo, nginx, psql, curl, Linux /proc. Servers listen on loopback
# only, and all traffic goes to loopback.

set -euo pipefail

MINUTES=${SOAK_MINUTES:-30}
RATE=${SOAK_RATE:-200}
KEYS=${SOAK_KEYS:-1000}
TARGETS=${SOAK_TARGETS:-sqlite cluster}
PG_ADMIN_URL=${SOAK_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${SOAK_REDIS_URL:-redis://127.0.0.1:6379}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BIN="$REPO/target/release/gatehouse"
LOAD_BIN="$REPO/target/release/examples/soak"

die() { echo "soak: error: $*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

for knob in MINUTES RATE KEYS; do
    [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || die "SOAK_$knob must be a positive integer"
done
for t in $TARGETS; do
    [[ "$t" == sqlite || "$t" == cluster ]] || die "SOAK_TARGETS: unknown deployment $t (sqlite, cluster)"
done
want() { [[ " $TARGETS " == *" $1 "* ]]; }
command -v curl >/dev/null 2>&1 || die "\`curl\` is not installed"
[[ -r /proc/self/status ]] || die "needs Linux /proc to read the nodes' memory"
NGINX=""
if want cluster; then
    NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
    [[ -n "$NGINX" ]] || die "\`nginx\` is not installed (Debian/Ubuntu: apt-get install nginx), or run SOAK_TARGETS=sqlite"
    command -v psql >/dev/null 2>&1 || die "\`psql\` is not installed (apt-get install postgresql-client)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-soak.XXXXXX")
chmod 755 "$WORK"
declare -A PID URL
PG_DB=""
NGINX_PID=""

cleanup() {
    local rc=$? name
    if [[ -n "$NGINX_PID" ]]; then
        kill -TERM "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    for name in "${!PID[@]}"; do
        kill -TERM "${PID[$name]}" 2>/dev/null || true
    done
    for name in "${!PID[@]}"; do
        wait "${PID[$name]}" 2>/dev/null || true
    done
    if [[ -n "$PG_DB" ]]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ "${SOAK_KEEP:-0}" == 1 ]]; then
        echo "soak: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secret() { head -c 32 /dev/urandom | base64 | tr -d '=+/\n'; }

# start_node NAME [VAR=VALUE ...]: a node in local mode (so the load can log
# in with dev.expose_codes) with its default configuration otherwise: the
# default worker count, the access log at info (to a file).
start_node() {
    local name=$1; shift
    local out="$WORK/$name.out" err="$WORK/$name.err" port="" pid deadline
    env "$@" \
        GATEHOUSE_DEV__EXPOSE_CODES=true \
        GATEHOUSE_AUTH__SEND_CODE_INTERVAL_SECS=1 \
        "$BIN" serve --listen "${LISTEN:-127.0.0.1:0}" --data-dir "$WORK/$name" >"$out" 2>"$err" &
    pid=$!
    PID[$name]=$pid
    deadline=$(( $(now_ms) + 60000 ))
    while [[ -z "$port" ]]; do
        kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; die "node $name exited during start"; }
        (( $(now_ms) < deadline )) || die "node $name did not print its port within 60 s"
        port=$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n1)
        [[ -n "$port" ]] || sleep 0.02
    done
    URL[$name]="http://127.0.0.1:$port"
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${URL[$name]}/readyz")" == 200 ]]; do
        kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; die "node $name exited during start"; }
        (( $(now_ms) < deadline )) || die "node $name: /readyz did not answer 200 within 60 s"
        sleep 0.05
    done
    say "  node $name: ${URL[$name]} (pid $pid)"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- build
say "== Gatehouse soak: $MINUTES minute(s), $RATE requests/s to each of: $TARGETS"
say "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)"
say "source: $(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null | cut -c1-72 || echo unknown)$( [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock schema.sql examples 2>/dev/null)" ]] && echo ' (+ uncommitted changes)')"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ "${SOAK_NO_BUILD:-0}" != 1 ]]; then
    command -v cargo >/dev/null 2>&1 || die "\`cargo\` is not installed"
    say "== cargo build --release --bin gatehouse --example soak"
    (cd "$REPO" && cargo build --release --bin gatehouse --example soak)
fi
[[ -x "$BIN" && -x "$LOAD_BIN" ]] || die "no release build (cargo build --release --bin gatehouse --example soak)"

# ---------------------------------------------------------------- deployments
ARGS=()
if want sqlite; then
    say "== (a) one node on SQLite"
    start_node sqlite
    ARGS+=(--target "sqlite=${URL[sqlite]}=${PID[sqlite]}")
fi
if want cluster; then
    say "== (b) two nodes on PostgreSQL with Redis, behind nginx"
    PG_DB="gh_soak_$$"
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create a database on $PG_ADMIN_URL"
    PG_URL=$(sed "s#/[^/]*\$#/$PG_DB#" <<<"$PG_ADMIN_URL")
    # The nodes share one session key (a session made on one is good on the
    # other), the database and Redis.
    SHARED=(GATEHOUSE_DATABASE__URL="$PG_URL" GATEHOUSE_REDIS__URL="$REDIS_URL"
        GATEHOUSE_REDIS__KEY_PREFIX="gh-soak-$$:"
        GATEHOUSE_SECRETS__SESSION_KEY="$(secret)" GATEHOUSE_SECRETS__OPS_TOKEN="$(secret)")
    start_node node1 "${SHARED[@]}"
    start_node node2 "${SHARED[@]}"
    PROXY_PORT=$(free_port)
    mkdir -p "$WORK/nginx"
    sed -e "s/server 10\.0\.0\.11:8080/server ${URL[node1]#http://}/" \
        -e "s/server 10\.0\.0\.12:8080/server ${URL[node2]#http://}/" \
        -e "s/listen 8443;/listen 127.0.0.1:$PROXY_PORT;/" \
        -e "s/server_name gatehouse\.acme\.test;/server_name 127.0.0.1;/" \
        "$REPO/deploy/nginx-gatehouse-cluster.conf" >"$WORK/nginx/cluster.conf"
    grep -q "server ${URL[node2]#http://}" "$WORK/nginx/cluster.conf" || die "deploy/nginx-gatehouse-cluster.conf does not have the expected shape"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    include $WORK/nginx/cluster.conf;
}
EOF
    "$NGINX" -p "$WORK/nginx" -c nginx.conf -g 'daemon off;' 2>>"$WORK/nginx/error.log" &
    NGINX_PID=$!
    deadline=$(( $(now_ms) + 15000 ))
    until curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/healthz"; do
        kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx/error.log" >&2; die "nginx exited"; }
        (( $(now_ms) < deadline )) || die "nginx did not listen within 15 s"
        sleep 0.05
    done
    say "  nginx: http://127.0.0.1:$PROXY_PORT (pid $NGINX_PID), upstreams ${URL[node1]} and ${URL[node2]}"
    ARGS+=(--target "cluster=http://127.0.0.1:$PROXY_PORT=${PID[node1]},${PID[node2]}")
fi

# ---------------------------------------------------------------- load
say "== traffic"
set +e
"$LOAD_BIN" --minutes "$MINUTES" --rate "$RATE" --keys "$KEYS" "${ARGS[@]}" 2>"$WORK/soak-progress.log" &
LOAD_PID=$!
# The load prints one progress line per minute and deployment on stderr.
tail -f "$WORK/soak-progress.log" --pid "$LOAD_PID" >&2 &
wait "$LOAD_PID"
RC=$?
set -e
for name in "${!PID[@]}"; do
    kill -0 "${PID[$name]}" 2>/dev/null || { say "soak: node $name is no longer running"; RC=1; }
    errors=$(cat "$WORK/$name.out" "$WORK/$name.err" | grep -c ' ERROR ' || true)
    (( errors == 0 )) || say "soak: node $name logged $errors errors (its logs are kept with SOAK_KEEP=1)"
done
say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$RC"
