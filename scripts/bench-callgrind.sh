#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind:
# repeatable to a fraction of a percent even on a busy machine, where the
# CPU time that scripts/bench.sh measures moves by 10-30% between rounds.
# Kernel work (socket reads and writes, epoll), about half of the CPU time
# of a request on loopback, is not counted: these figures say where
# Gatehouse's own code spends, not what a request costs in all.
#
# Usage: scripts/bench-callgrind.sh [OUT_DIR]   (default: a new temporary dir)
# Needs valgrind, wrk, curl and a release build (cargo build --release --bin
# gatehouse --example floor; build with CARGO_PROFILE_RELEASE_STRIP=false, or
# use the `profiling` profile with BENCH_BIN, for function names).
# Knobs: BENCH_BIN, BENCH_SECONDS (5 s of load per endpoint, under valgrind).
# It prints, per endpoint, the requests completed and instructions per
# request; OUT_DIR keeps the profiles (callgrind_annotate OUT_DIR/gh.*.out.2).

set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BENCH_BIN:-$REPO/target/release/gatehouse}
FLOOR=$REPO/target/release/examples/floor
SECS=${BENCH_SECONDS:-5}
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-callgrind.XXXXXX")}
mkdir -p "$OUT"
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || { echo "bench-callgrind: needs $tool" >&2; exit 1; }
done
declare -a PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port_of() { # FILE: waits for "Listening on 127.0.0.1:PORT"
    local port=""
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -n1)
        [[ -n "$port" ]] && { echo "$port"; return; }
        sleep 0.1
    done
    echo "bench-callgrind: no port in $1" >&2; exit 1
}

# A data directory with a user and a key (the server runs natively for this).
DATA="$OUT/data"; rm -rf "$DATA"
GATEHOUSE_DEV__EXPOSE_CODES=true "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" >"$OUT/setup.out" 2>&1 &
setup=$!
BASE="http://127.0.0.1:$(port_of "$OUT/setup.out")"
until curl -sf -o /dev/null "$BASE/readyz"; do sleep 0.05; done
pj() { curl -sS -X POST -H 'Content-Type: application/json' "$@"; }
CODE=$(pj "$BASE/api/v1/auth/send-code" -d '{"email":"cg@example.test"}' | sed -n 's/.*"code":"\([^"]*\)".*/\1/p')
TOKEN=$(pj "$BASE/api/v1/auth/verify-code" -d "{\"email\":\"cg@example.test\",\"code\":\"$CODE\"}" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
KEY=$(pj "$BASE/api/v1/api-keys" -H "Authorization: Bearer $TOKEN" \
    -d '{"name":"bench","rate_limit":{"limit":1000000000,"window_secs":60}}' | sed -n 's/.*"plaintext_key":"\([^"]*\)".*/\1/p')
kill "$setup"; wait "$setup" 2>/dev/null || true
[[ -n "$KEY" ]] || { echo "bench-callgrind: could not create a key" >&2; exit 1; }
export GATEHOUSE_BENCH_KEY=$KEY

start() { # NAME COMMAND...: under callgrind; records its pid and port
    local name=$1; shift
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.%p.out" "$@" \
        >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
    PIDS+=("$!")
    echo "$!" >"$OUT/$name.pid"
    port_of "$OUT/$name.stdout" >"$OUT/$name.port"
}

# load NAME LABEL PATH [wrk args]: warm up, zero the counters, load, dump.
load() {
    local name=$1 label=$2 path=$3; shift 3
    local pid port n f ir
    pid=$(cat "$OUT/$name.pid"); port=$(cat "$OUT/$name.port")
    wrk -t1 -c4 -d2s "$@" "http://127.0.0.1:$port$path" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    wrk -t1 -c4 -d"${SECS}s" "$@" "http://127.0.0.1:$port$path" >"$OUT/$label.wrk"
    callgrind_control -d "$label" "$pid" >/dev/null 2>&1
    n=$(awk '/requests in/ { print $1 }' "$OUT/$label.wrk")
    grep -q 'Non-2xx' "$OUT/$label.wrk" && { echo "bench-callgrind: $label got non-2xx answers" >&2; exit 1; }
    f=$(ls -t "$OUT/$name".*.out.* | head -n1)
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    printf '%-13s %7d requests  %8d instructions/request  (%s)\n' "$label" "$n" $(( ir / n )) "$f"
    echo "$label $(( ir / n ))" >>"$OUT/summary"
}

: >"$OUT/summary"
start floor "$FLOOR" --listen 127.0.0.1:0 --workers 1
export GATEHOUSE_HTTP__WORKERS=1
start gh "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA"
load floor floor /check -H "X-API-Key: $KEY"
load gh healthz /healthz
load gh forward-auth /api/v1/auth/check -H "X-API-Key: $KEY" -H "X-Forwarded-Method: GET" \
    -H "X-Forwarded-Uri: /orders/42?expand=items"
load gh verify /api/v1/keys/verify -s "$REPO/scripts/bench-verify.lua"
awk '{ v[$1] = $2 } END {
    printf "ratios (user-space instructions): healthz/floor %.3f, forward-auth/floor %.3f, verify/floor %.3f, forward-auth/healthz %.3f, verify/healthz %.3f\n",
        v["healthz"] / v["floor"], v["forward-auth"] / v["floor"], v["verify"] / v["floor"],
        v["forward-auth"] / v["healthz"], v["verify"] / v["healthz"] }' "$OUT/summary"
