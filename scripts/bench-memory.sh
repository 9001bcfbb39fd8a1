#!/usr/bin/env bash
# The memory run of scripts/bench.sh on its own, on a data directory that
# bench.sh kept (BENCH_KEEP=1): a fresh server on the 1,000,000-key
# database, POST /api/v1/keys/verify with each of the 100,000 real keys in
# keys.txt, then its resident memory and where it lies (/proc/PID/smaps:
# the main heap, other anonymous mappings such as malloc's per-thread
# arenas and thread stacks, and file-backed pages).
#
# Usage: scripts/bench-memory.sh KEPT_DIR [gatehouse binary]
#   KEPT_DIR is the directory bench.sh printed ("bench: kept ..."); it holds
#   data/ and keys.txt. The data directory is copied, never changed.
# Knobs: BENCH_THREADS (2), BENCH_CONNECTIONS (32), BENCH_MEMORY_DURATION (10),
#   BENCH_WORKERS (default: the server's default, one per core),
#   BENCH_MEMORY_PASSES (1: verify every key this many times over; past
#   keys.cache_ttl_secs, 60 s, cached keys are read again as they are used);
#   GATEHOUSE_* variables pass through to the server.

set -euo pipefail
KEPT=${1:?usage: bench-memory.sh KEPT_DIR [BINARY]}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${2:-$REPO/target/release/gatehouse}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
DURATION=${BENCH_MEMORY_DURATION:-10}
WORKERS=${BENCH_WORKERS:-}
PASSES=${BENCH_MEMORY_PASSES:-1}
[[ -d "$KEPT/data" && -f "$KEPT/keys.txt" ]] || { echo "bench-memory: $KEPT has no data/ and keys.txt" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench-memory: needs wrk" >&2; exit 1; }
KEYS=$(wc -l <"$KEPT/keys.txt")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-memory.XXXXXX")
PID=""
cleanup() {
    [[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cp -a "$KEPT/data" "$WORK/data"

# The default worker count (one per core) unless BENCH_WORKERS is given.
env ${WORKERS:+GATEHOUSE_HTTP__WORKERS=$WORKERS} "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" \
    >"$WORK/out" 2>"$WORK/err" &
PID=$!
PORT=""
for _ in $(seq 1 500); do
    PORT=$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$WORK/out" | head -n1)
    [[ -n "$PORT" ]] && break
    sleep 0.02
done
[[ -n "$PORT" ]] || { cat "$WORK/err" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"
until curl -sf -o /dev/null "$URL/readyz"; do sleep 0.02; done
sleep 1

# smaps: KiB resident in the main heap, in other anonymous mappings, in files.
breakdown() {
    awk '
        /^[0-9a-f]+-[0-9a-f]+ / { kind = ($6 == "[heap]") ? "heap" : ($6 == "" || $6 ~ /^\[(anon|stack)/) ? "anon" : "file"; next }
        /^Rss:/ { rss[kind] += $2 }
        END { printf "heap %.1f MiB, other anonymous %.1f MiB, files %.1f MiB", rss["heap"] / 1024, rss["anon"] / 1024, rss["file"] / 1024 }
    ' "/proc/$PID/smaps"
}
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
threads() { ls "/proc/$PID/task" | wc -l; }

echo "idle: RSS $(rss) MiB ($(breakdown)); $(threads) threads"
covered=0
for _ in $(seq 1 $(( 12 * PASSES ))); do
    (( covered < KEYS * PASSES )) || break
    GATEHOUSE_BENCH_KEYS_FILE="$KEPT/keys.txt" GATEHOUSE_BENCH_THREADS="$THREADS" \
    GATEHOUSE_BENCH_KEYS_START="$(( covered % KEYS ))" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$REPO/scripts/bench-verify-many.lua" \
        "$URL/api/v1/keys/verify" >"$WORK/wrk.txt"
    before=$covered
    covered=$(( covered + $(sed -n 's/^keys covered: \([0-9]*\)$/\1/p' "$WORK/wrk.txt") ))
    if (( covered / KEYS > before / KEYS && covered < KEYS * PASSES )); then
        echo "after pass $(( covered / KEYS )) over the keys: RSS $(rss) MiB ($(breakdown))"
    fi
    if grep -q 'Non-2xx\|Socket errors' "$WORK/wrk.txt"; then
        echo "bench-memory: $(grep 'Non-2xx\|Socket errors' "$WORK/wrk.txt")" >&2; exit 1
    fi
    : >"$WORK/out"
done
(( covered >= KEYS * PASSES )) || { echo "bench-memory: only $covered of $(( KEYS * PASSES )) key checks made" >&2; exit 1; }
# As bench.sh: read once RSS has stopped falling (usage written in chunks,
# freed heap returned 3 s after the fills stop), 5 to 30 s after the load.
sleep 5
settle=5 steady=0 low=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status")
while (( steady < 3 && settle < 30 )); do
    sleep 1; settle=$(( settle + 1 ))
    r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status")
    if (( r < low * 99 / 100 )); then steady=0; else steady=$(( steady + 1 )); fi
    (( r < low )) && low=$r
done
echo "settled $settle s after the load"
echo "after verifying $KEYS keys ($PASSES pass(es)): RSS $(rss) MiB ($(breakdown)); $(threads) threads"
if [[ -n "${BENCH_MEMORY_HOOK:-}" ]]; then PID=$PID bash -c "$BENCH_MEMORY_HOOK"; echo "after the hook: RSS $(rss) MiB ($(breakdown))"; fi
