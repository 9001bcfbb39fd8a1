#!/usr/bin/env bash
# Gatehouse benchmark (BENCHMARKS.md explains the method and holds the
# figures of runs):
#   1. server CPU per request of GET /healthz, forward-auth and verify, in the
#      default configuration (access log on at info, metrics, request ids,
#      security headers), measured alternately with the floor: a bare
#      actix-web server that checks a key with SHA-256 and a HashMap
#      (examples/floor.rs), both with the same number of workers;
#   2. verification with ~1,000 vs ~1,000,000 stored keys;
#   3. memory: 1,000,000 keys stored, 100,000 distinct ones verified (the
#      cache full at its default size), with the default worker count (one
#      per core): ready time, RSS before, at its highest during the load
#      and after;
#   4. verify on the PostgreSQL backend against the SQLite one, alternately
#      (a cache hit touches neither: the two should cost the same).
#
# Usage: scripts/bench.sh            (from anywhere; takes about 6 minutes)
#
# Knobs (environment variables):
#   BENCH_DURATION=10        seconds of each measured wrk run
#   BENCH_WARMUP=3           seconds of the warm-up run before each measured run
#   BENCH_ROUNDS=3           measured runs per endpoint, interleaved
#                            (floor, healthz, forward-auth, verify, floor, ...)
#   BENCH_THREADS=2          wrk threads
#   BENCH_CONNECTIONS=32     wrk connections
#   BENCH_WORKERS=1          worker threads of Gatehouse and of the floor
#                            (the memory run uses Gatehouse's default, one
#                            per core, unless BENCH_MEMORY_WORKERS is set)
#   BENCH_MEMORY_WORKERS=N   worker threads of the memory run's server
#   BENCH_BASE_KEYS=1000     keys stored for the small-table verify runs
#   BENCH_SCALE_KEYS=1000000 keys stored for the large-table and memory runs
#   BENCH_MEMORY_KEYS=100000 distinct keys verified in the memory run
#   BENCH_MEMORY_DURATION=10 seconds of each memory run; runs repeat (up to 12)
#                            until every key was verified
#   BENCH_SKIP_SCALE=1       skip parts 2 and 3 (they need the large table)
#   BENCH_PG_URL=URL         a PostgreSQL server where a database may be created
#                            for part 4 (default postgres://postgres@127.0.0.1:5432/postgres);
#                            it is dropped afterwards
#   BENCH_SKIP_PG=1          skip part 4 (it also skips, saying so, when psql is
#                            missing or the server does not answer)
#   BENCH_NO_BUILD=1         use the existing release build
#   BENCH_BIN=PATH           benchmark this gatehouse binary (implies no build;
#                            the floor and key generator must be built already)
#   BENCH_KEEP=1             keep the temporary data directory
#
# Needs: wrk (Debian/Ubuntu: apt-get install wrk), curl, sqlite3, cargo, Linux
# /proc. It installs nothing. Exits non-zero if any run saw a non-2xx answer,
# a socket error or a verification that was not valid (the figures would be
# meaningless then).

set -euo pipefail

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-3}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
BASE_KEYS=${BENCH_BASE_KEYS:-1000}
SCALE_KEYS=${BENCH_SCALE_KEYS:-1000000}
WORKERS=${BENCH_WORKERS:-1}
MEMORY_KEYS=${BENCH_MEMORY_KEYS:-100000}
MEMORY_DURATION=${BENCH_MEMORY_DURATION:-10}
MEMORY_WORKERS=${BENCH_MEMORY_WORKERS:-}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BIN="${BENCH_BIN:-$REPO/target/release/gatehouse}"
FLOOR_BIN="$REPO/target/release/examples/floor"
KEYGEN_BIN="$REPO/target/release/examples/bench_keys"
VERIFY_LUA="$SCRIPT_DIR/bench-verify.lua"
VERIFY_MANY_LUA="$SCRIPT_DIR/bench-verify-many.lua"
# What a reverse proxy tells forward-auth about the original request.
FA_HEADERS=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /orders/42?expand=items")

die() { echo "bench: error: $*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------- prerequisites
if ! command -v wrk >/dev/null 2>&1; then
    cat >&2 <<'EOF'
bench: error: `wrk` is not installed; this script needs it to generate load.
  Debian/Ubuntu:  sudo apt-get install -y wrk
  macOS:          brew install wrk   (the CPU accounting below needs Linux /proc, though)
  Other:          https://github.com/wg/wrk
EOF
    exit 1
fi
for tool in curl sqlite3 awk sed sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "\`$tool\` is not installed"
done
[[ -r /proc/self/stat ]] || die "needs Linux /proc to read the server's CPU time"
[[ -f "$VERIFY_LUA" && -f "$VERIFY_MANY_LUA" ]] || die "missing the wrk scripts in $SCRIPT_DIR"
for knob in ROUNDS WORKERS THREADS MEMORY_KEYS MEMORY_DURATION; do
    [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || die "BENCH_$knob must be a positive integer"
done

CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

# ---------------------------------------------------------------- state/cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-bench.XXXXXX")
DATA="$WORK/data"
FAILED=0
declare -A PID URL STARTUP_MS LOG
# Extra environment for the next start_server (e.g. the database URL).
SERVER_ENV=()
PG_ADMIN_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DB=""

cleanup() {
    local rc=$? name
    for name in "${!PID[@]}"; do
        if kill -0 "${PID[$name]}" 2>/dev/null; then
            kill -TERM "${PID[$name]}" 2>/dev/null || true
            wait "${PID[$name]}" 2>/dev/null || true
        fi
    done
    if [[ -n "$PG_DB" ]]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        echo "bench: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# utime + stime of a process (all its threads), in clock ticks: fields 14 and
# 15 of /proc/PID/stat, counted after the ")" that ends the command name.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# utime of a process alone (the user-space part of cpu_ticks).
user_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 }'; }

# cutime + cstime of this shell: CPU of the children it has waited for (wrk).
child_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'; }

# Busy, total and steal ticks of the whole machine (first line of /proc/stat).
host_ticks() { awk '/^cpu / { busy = $2+$3+$4+$7+$8; print busy, busy+$5+$6+$9, $9 }' /proc/stat; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# wrk latency ("812.00us", "1.48ms", "2.01s") in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /m$/) f = 60e6; else f = 1e6
        printf "%.0f", n * f }'
}

fmt_us() { awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2fms", u / 1000; else printf "%dus", u }'; }

json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

post_json() { curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' "$@"; }

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# start_server NAME DATA_DIR [WORKERS]: starts Gatehouse in its default
# configuration with WORKERS worker threads ($WORKERS when not given; the
# default, one per core, when given empty)
# (local mode, access log at info) on a free loopback port, waits until
# /readyz answers 200, and records the time from spawn to ready. Its stdout
# (the access log) goes to a file, as it would to a log file or journald.
start_server() {
    local name=$1 dir=$2 out="$WORK/server-$1.out" err="$WORK/server-$1.err" workers=${3-$WORKERS}
    local t0 deadline code port="" pid
    t0=$(now_ms)
    env "${SERVER_ENV[@]}" \
    GATEHOUSE_DEV__EXPOSE_CODES=true \
    ${workers:+GATEHOUSE_HTTP__WORKERS=$workers} \
    GATEHOUSE_AUTH__SEND_CODE_INTERVAL_SECS=1 \
        "$BIN" serve --listen 127.0.0.1:0 --data-dir "$dir" >>"$out" 2>"$err" &
    pid=$!
    PID[$name]=$pid
    LOG[$name]=$out
    deadline=$(( t0 + 60000 ))
    while [[ -z "$port" ]]; do
        kill -0 "$pid" 2>/dev/null || { cat "$out" "$err" >&2; die "server $name exited during start"; }
        (( $(now_ms) < deadline )) || die "server $name did not print its port within 60 s"
        port=$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n1)
        [[ -n "$port" ]] || sleep 0.002
    done
    URL[$name]="http://127.0.0.1:$port"
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${URL[$name]}/readyz" || true)
        [[ "$code" == 200 ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$out" "$err" >&2; die "server $name exited during start"; }
        (( $(now_ms) < deadline )) || die "server $name: /readyz did not answer 200 within 60 s (last: $code)"
        sleep 0.002
    done
    STARTUP_MS[$name]=$(( $(now_ms) - t0 ))
}

# start_floor NAME: the floor server (examples/floor.rs) accepting $KEY.
start_floor() {
    local name=$1 out="$WORK/server-$1.out" deadline port="" pid
    GATEHOUSE_BENCH_KEY="$KEY" "$FLOOR_BIN" --listen 127.0.0.1:0 --workers "$WORKERS" \
        >"$out" 2>"$WORK/server-$1.err" &
    pid=$!
    PID[$name]=$pid
    deadline=$(( $(now_ms) + 30000 ))
    while [[ -z "$port" ]]; do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/server-$1.err" >&2; die "floor server exited during start"; }
        (( $(now_ms) < deadline )) || die "floor server did not print its port within 30 s"
        port=$(sed -n 's/^Listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n1)
        [[ -n "$port" ]] || sleep 0.002
    done
    URL[$name]="http://127.0.0.1:$port"
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $KEY" "${URL[$name]}/check")
    [[ "$status" == 200 ]] || die "floor server answered $status for the key"
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: ${KEY}x" "${URL[$name]}/check")
    [[ "$status" == 401 ]] || die "floor server answered $status for a wrong key"
}

# stop_server NAME: SIGTERM (a graceful stop flushes usage), SIGKILL after 30 s.
stop_server() {
    local name=$1 pid=${PID[$1]:-} i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: server $name did not stop on SIGTERM within 30 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
}

# Sums of gatehouse_key_verifications_total samples on a server: "valid other".
verification_counts() {
    curl -sS --max-time 5 "${URL[$1]}/metrics" 2>/dev/null | awk '
        /^gatehouse_key_verifications_total\{/ {
            if ($0 ~ /result="valid"/) valid += $NF; else other += $NF
        }
        END { printf "%d %d\n", valid, other }'
}

# check_key_works NAME: the key is accepted by both key endpoints (curl, once).
check_key_works() {
    local base=${URL[$1]} body status
    body=$(post_json "$base/api/v1/keys/verify" -d "{\"key\":\"$KEY\"}")
    [[ "$body" == *'"valid":true'* ]] || die "server $1: verify did not accept the key: $body"
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "X-API-Key: $KEY" "${FA_HEADERS[@]}" "$base/api/v1/auth/check")
    [[ "$status" == 200 ]] || die "server $1: forward-auth answered $status for the key"
    say "  key check ($1): verify -> valid:true, forward-auth -> 200 (limit $(sed -n 's/.*"limit":\([0-9]*\).*/\1/p' <<<"$body"), remaining $(sed -n 's/.*"remaining":\([0-9]*\).*/\1/p' <<<"$body"))"
}

# Per label, accumulated over rounds.
declare -A TICKS UTICKS REQS SECS RUN_CPU RUN_RPS RUN_P50 RUN_P99

# measure LABEL SERVER PATH [wrk args...]: a warm-up run, then one measured run
# with the server's CPU time read before and after.
measure() {
    local label=$1 server=$2 path=$3; shift 3
    local url="${URL[$server]}$path" pid=${PID[$server]} out="$WORK/wrk.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null

    local before_counts="0 0" after_counts="0 0" c0 c1 u0 u1 w0 w1 h0b h0t h0s h1b h1t h1s
    [[ "$server" == floor ]] || before_counts=$(verification_counts "$server")
    read -r h0b h0t h0s < <(host_ticks)
    w0=$(child_ticks)
    c0=$(cpu_ticks "$pid"); u0=$(user_ticks "$pid")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$out"
    c1=$(cpu_ticks "$pid"); u1=$(user_ticks "$pid")
    w1=$(child_ticks)
    read -r h1b h1t h1s < <(host_ticks)
    [[ "$server" == floor ]] || after_counts=$(verification_counts "$server")

    local total rps p50 p99 non2xx sockerr secs
    total=$(awk '/requests in/ { print $1; exit }' "$out")
    secs=$(awk '/requests in/ { d = $4; sub(/,$/, "", d); f = (d ~ /m$/) ? 60 : (d ~ /h$/) ? 3600 : 1; print (d + 0) * f; exit }' "$out")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2; exit }' "$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2; exit }' "$out")")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    sockerr=$(grep 'Socket errors' "$out" || true)
    [[ -n "$total" && "$total" -gt 0 ]] || { cat "$out" >&2; die "$label: wrk reported no requests"; }

    local srv=$(( c1 - c0 )) wrkt=$(( w1 - w0 ))
    local busy=$(( h1b - h0b )) all=$(( h1t - h0t )) steal=$(( h1s - h0s ))
    local cpu cores_srv cores_wrk cores_other cores_steal
    cpu=$(awk -v t="$srv" -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    read -r cores_srv cores_wrk cores_other cores_steal < <(awk -v s="$srv" -v w="$wrkt" -v b="$busy" \
        -v tt="$all" -v st="$steal" -v n="$NCPU" 'BEGIN {
            if (tt <= 0) tt = 1
            o = (b - s - w) / tt * n; if (o < 0) o = 0
            printf "%.2f %.2f %.2f %.2f\n", s / tt * n, w / tt * n, o, st / tt * n }')

    TICKS[$label]=$(( ${TICKS[$label]:-0} + srv ))
    UTICKS[$label]=$(( ${UTICKS[$label]:-0} + u1 - u0 ))
    REQS[$label]=$(( ${REQS[$label]:-0} + total ))
    SECS[$label]=$(awk -v a="${SECS[$label]:-0}" -v b="$secs" 'BEGIN { print a + b }')
    RUN_CPU[$label]="${RUN_CPU[$label]:-} $cpu"
    RUN_RPS[$label]="${RUN_RPS[$label]:-} $rps"
    RUN_P50[$label]="${RUN_P50[$label]:-} $p50"
    RUN_P99[$label]="${RUN_P99[$label]:-} $p99"

    printf '  %-15s %9s req/s  p50 %8s  p99 %8s  %8s req  %6s us CPU/req  (cores: server %s, wrk %s, other %s, steal %s)\n' \
        "$label" "$rps" "$(fmt_us "$p50")" "$(fmt_us "$p99")" "$total" "$cpu" \
        "$cores_srv" "$cores_wrk" "$cores_other" "$cores_steal"

    if awk -v o="$cores_other" -v st="$cores_steal" 'BEGIN { exit !(o + st > 0.25) }'; then
        say "  note: other processes ($cores_other cores) or the hypervisor (steal $cores_steal) took CPU during this run"
    fi
    if [[ -n "$non2xx" && "$non2xx" != 0 ]]; then
        say "  !! $label: $non2xx responses were not 2xx/3xx"; FAILED=1
    fi
    if [[ -n "$sockerr" ]]; then
        say "  !! $label: wrk $sockerr"; FAILED=1
    fi
    if [[ -n "${LOG[$server]:-}" ]]; then
        # The access log was written; drop it so a long run does not fill the disk.
        : >"${LOG[$server]}"
    fi
    if [[ "$path" != /healthz && "$server" != floor ]]; then
        local bv bo av ao
        read -r bv bo <<<"$before_counts"; read -r av ao <<<"$after_counts"
        if (( ao != bo )); then
            say "  !! $label: the server counted $(( ao - bo )) verifications that were not valid"; FAILED=1
        fi
        if (( av - bv < total )); then
            say "  !! $label: the server counted only $(( av - bv )) valid verifications for $total requests"; FAILED=1
        fi
    fi
}

# Aggregates of a label over its rounds.
cpu_of() { awk -v t="${TICKS[$1]}" -v hz="$CLK_TCK" -v n="${REQS[$1]}" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }'; }
# "user U us + system S us" per request of a label over its rounds.
split_of() { awk -v t="${TICKS[$1]}" -v u="${UTICKS[$1]}" -v hz="$CLK_TCK" -v n="${REQS[$1]}" \
    'BEGIN { printf "user %.2f us + system %.2f us", u * 1e6 / hz / n, (t - u) * 1e6 / hz / n }'; }
rps_of() { awk -v n="${REQS[$1]}" -v s="${SECS[$1]}" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { awk -v x="$1" -v lim="$2" 'BEGIN { print (x <= lim) ? "MET" : "MISSED" }'; }

# Per-round ratios of two labels' CPU per request, e.g. "1.21 1.30 1.25".
round_ratios() {
    local -a a b; local i out=""
    read -ra a <<<"${RUN_CPU[$1]}"; read -ra b <<<"${RUN_CPU[$2]}"
    for i in "${!a[@]}"; do out+="$(ratio "${a[$i]}" "${b[$i]}") "; done
    echo "${out% }"
}

# insert_bulk_keys DB TARGET_TOTAL: bulk rows until api_keys holds that many.
insert_bulk_keys() {
    local db=$1 target=$2 have from to t0 now
    have=$(sqlite3 "$db" 'SELECT count(*) FROM api_keys;')
    from=$(( $(sqlite3 "$db" "SELECT count(*) FROM api_keys WHERE id LIKE 'key_bulk_%';") + 1 ))
    to=$(( from - 1 + target - have ))
    if (( to < from )); then
        say "  api_keys already holds $have rows (>= $target)"
        return
    fi
    t0=$(now_ms); now=$(date +%s)
    sqlite3 "$db" <<SQL
PRAGMA cache_size = -262144;
BEGIN;
WITH RECURSIVE seq(n) AS (
    SELECT $from
    UNION ALL
    SELECT n + 1 FROM seq WHERE n < $to
)
INSERT INTO api_keys (id, project_id, key_hash, prefix, name, type, environment,
                      scopes, metadata, created_at, updated_at)
SELECT 'key_bulk_' || n, '$PROJECT', randomblob(32), 'gate_sk_' || printf('%08d', n),
       'bulk ' || n, 'secret', 'production', '[]', '{}', $now, $now
FROM seq;
COMMIT;
SQL
    have=$(sqlite3 "$db" 'SELECT count(*) FROM api_keys;')
    say "  inserted $(( to - from + 1 )) rows in $(( $(now_ms) - t0 )) ms with sqlite3; api_keys holds $have rows ($(mib $(( $(stat -c %s "$db") / 1024 ))) MiB database)"
}

# ---------------------------------------------------------------- build
say "== Gatehouse benchmark"
say "machine: $NCPU CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)"
say "source: $(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null | cut -c1-72 || echo unknown)$( [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock schema.sql 2>/dev/null)" ]] && echo ' (+ uncommitted changes)')"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "wrk $(wrk --version 2>&1 | head -n1 | awk '{ print $2 }'): $THREADS threads, $CONNECTIONS connections; per run ${WARMUP} s warm-up + ${DURATION} s measured; $ROUNDS interleaved rounds"
say "servers: $WORKERS worker thread(s) each (Gatehouse and the floor); Gatehouse in local mode with its default configuration (access log at info, to a file), data under $WORK"
say ""

if [[ "${BENCH_NO_BUILD:-0}" != 1 && -z "${BENCH_BIN:-}" ]]; then
    command -v cargo >/dev/null 2>&1 || die "\`cargo\` is not installed"
    say "== cargo build --release --bin gatehouse --example floor --example bench_keys"
    (cd "$REPO" && cargo build --release --bin gatehouse --example floor --example bench_keys)
fi
[[ -x "$BIN" ]] || die "no binary at $BIN"
[[ -x "$FLOOR_BIN" ]] || die "no floor server at $FLOOR_BIN (cargo build --release --example floor)"
BIN_BYTES=$(stat -c %s "$BIN")
say "binary: $BIN ($(mib $(( BIN_BYTES / 1024 ))) MiB, sha256 $(sha256sum "$BIN" | cut -c1-12))"
say ""

# ---------------------------------------------------------------- user and key
say "== start and set up"
start_server main "$DATA"
BASE=${URL[main]}
say "  listening on $BASE (ready after ${STARTUP_MS[main]} ms, fresh database)"
EMAIL="bench@example.test"
SENT=$(post_json "$BASE/api/v1/auth/send-code" -d "{\"email\":\"$EMAIL\"}")
CODE=$(json_field code <<<"$SENT")
[[ -n "$CODE" ]] || die "send-code did not return a code (is dev.expose_codes honoured?): $SENT"
LOGIN=$(post_json "$BASE/api/v1/auth/verify-code" -d "{\"email\":\"$EMAIL\",\"code\":\"$CODE\"}")
TOKEN=$(json_field access_token <<<"$LOGIN")
[[ -n "$TOKEN" ]] || die "verify-code did not return an access token: $LOGIN"
CREATED=$(post_json "$BASE/api/v1/api-keys" -H "Authorization: Bearer $TOKEN" \
    -d '{"name":"bench","rate_limit":{"limit":1000000000,"window_secs":60}}')
KEY=$(json_field plaintext_key <<<"$CREATED")
PROJECT=$(json_field project_id <<<"$CREATED")
[[ -n "$KEY" && -n "$PROJECT" ]] || die "creating the key failed: $CREATED"
export GATEHOUSE_BENCH_KEY="$KEY"
say "  user $EMAIL, project $PROJECT, key ${KEY:0:16}... (rate limit 1e9 per 60 s)"
check_key_works main
start_floor floor
say "  floor server on ${URL[floor]} ($WORKERS worker(s)): 200 for the key, 401 for another"
say ""

# ---------------------------------------------------------------- endpoints
say "== CPU per request: the floor and Gatehouse's three endpoints, $ROUNDS interleaved rounds"
for round in $(seq 1 "$ROUNDS"); do
    say " round $round"
    measure floor floor /check -H "X-API-Key: $KEY"
    measure healthz main /healthz
    measure forward-auth main /api/v1/auth/check -H "X-API-Key: $KEY" "${FA_HEADERS[@]}"
    measure verify main /api/v1/keys/verify -s "$VERIFY_LUA"
done
check_key_works main
stop_server floor
FA_RATIO=$(ratio "$(cpu_of forward-auth)" "$(cpu_of healthz)")
VE_RATIO=$(ratio "$(cpu_of verify)" "$(cpu_of healthz)")
FA_FLOOR=$(ratio "$(cpu_of forward-auth)" "$(cpu_of floor)")
VE_FLOOR=$(ratio "$(cpu_of verify)" "$(cpu_of floor)")
HZ_FLOOR=$(ratio "$(cpu_of healthz)" "$(cpu_of floor)")
say ""
say "  CPU per request over all rounds: floor $(cpu_of floor) us, healthz $(cpu_of healthz) us, forward-auth $(cpu_of forward-auth) us, verify $(cpu_of verify) us"
for label in floor healthz forward-auth verify; do
    say "    $label: $(split_of "$label")"
done
say "  forward-auth / floor:   ${FA_FLOOR}x  (rounds: $(round_ratios forward-auth floor))  target <= 1.5x: $(verdict "$FA_FLOOR" 1.5)"
say "  verify       / floor:   ${VE_FLOOR}x  (rounds: $(round_ratios verify floor))  target <= 1.8x: $(verdict "$VE_FLOOR" 1.8)"
say "  healthz      / floor:   ${HZ_FLOOR}x  (rounds: $(round_ratios healthz floor))  target <= 1.2x: $(verdict "$HZ_FLOOR" 1.2)"
say "  forward-auth / healthz: ${FA_RATIO}x  (rounds: $(round_ratios forward-auth healthz))  target <= 1.3x: $(verdict "$FA_RATIO" 1.3)"
say "  verify       / healthz: ${VE_RATIO}x  (rounds: $(round_ratios verify healthz))  target <= 1.5x: $(verdict "$VE_RATIO" 1.5)"
say ""

# ---------------------------------------------------------------- postgres
# The same verify run on a server whose data is in PostgreSQL, alternating
# with the SQLite server above. Both answer from their cache; what differs
# is only what happens off the request path (usage written as increments).
P=""
if [[ "${BENCH_SKIP_PG:-0}" == 1 ]]; then
    say "== verify on PostgreSQL: skipped (BENCH_SKIP_PG=1)"
elif ! command -v psql >/dev/null 2>&1; then
    say "== verify on PostgreSQL: skipped (psql is not installed)"
elif ! psql -q "$PG_ADMIN_URL" -c "SELECT 1" >/dev/null 2>&1; then
    say "== verify on PostgreSQL: skipped (no answer from $PG_ADMIN_URL; set BENCH_PG_URL)"
else
    P="verify@postgres"
    PG_DB="gh_bench_$$"
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $PG_DB" >/dev/null
    PG_URL=$(sed "s#/[^/?]*\([?].*\)\?\$#/$PG_DB\1#" <<<"$PG_ADMIN_URL")
    say "== verify on PostgreSQL (database $PG_DB) vs SQLite, $ROUNDS interleaved rounds"
    SERVER_ENV=("GATEHOUSE_DATABASE__URL=$PG_URL")
    start_server pg "$WORK/data-pg"
    SERVER_ENV=()
    PG_BASE=${URL[pg]}
    SENT=$(post_json "$PG_BASE/api/v1/auth/send-code" -d "{\"email\":\"$EMAIL\"}")
    CODE=$(json_field code <<<"$SENT")
    LOGIN=$(post_json "$PG_BASE/api/v1/auth/verify-code" -d "{\"email\":\"$EMAIL\",\"code\":\"$CODE\"}")
    PG_TOKEN=$(json_field access_token <<<"$LOGIN")
    [[ -n "$PG_TOKEN" ]] || die "postgres server: login failed: $LOGIN"
    CREATED=$(post_json "$PG_BASE/api/v1/api-keys" -H "Authorization: Bearer $PG_TOKEN" \
        -d '{"name":"bench","rate_limit":{"limit":1000000000,"window_secs":60}}')
    PG_KEY=$(json_field plaintext_key <<<"$CREATED")
    [[ -n "$PG_KEY" ]] || die "postgres server: creating the key failed: $CREATED"
    BODY=$(post_json "$PG_BASE/api/v1/keys/verify" -d "{\"key\":\"$PG_KEY\"}")
    [[ "$BODY" == *'"valid":true'* ]] || die "postgres server: verify did not accept its key: $BODY"
    say "  postgres server on $PG_BASE (ready after ${STARTUP_MS[pg]} ms), key ${PG_KEY:0:16}..."
    for round in $(seq 1 "$ROUNDS"); do
        say " round $round"
        measure "verify@sqlite" main /api/v1/keys/verify -s "$VERIFY_LUA"
        GATEHOUSE_BENCH_KEY="$PG_KEY" measure "$P" pg /api/v1/keys/verify -s "$VERIFY_LUA"
    done
    stop_server pg
    PG_RATIO=$(ratio "$(cpu_of "$P")" "$(cpu_of verify@sqlite)")
    PG_OK=$(verdict "$PG_RATIO" 1.10)
    say ""
    say "  CPU per verify: $(cpu_of verify@sqlite) us on SQLite, $(cpu_of "$P") us on PostgreSQL: ${PG_RATIO}x  (rounds: $(round_ratios "$P" verify@sqlite))  target within 10%: $PG_OK"
    say ""
fi

# ---------------------------------------------------------------- scale
S="" L=""
if [[ "${BENCH_SKIP_SCALE:-0}" != 1 ]]; then
    [[ -x "$KEYGEN_BIN" ]] || die "no key generator at $KEYGEN_BIN (cargo build --release --example bench_keys)"
    S="verify@${BASE_KEYS}" L="verify@${SCALE_KEYS}"
    say "== verify with $BASE_KEYS vs $SCALE_KEYS stored keys"
    stop_server main
    insert_bulk_keys "$DATA/gatehouse.db" "$BASE_KEYS"
    # Keep a copy of the small database so that both sizes can be measured
    # alternately (machine drift then affects both alike).
    cp -a "$DATA" "$WORK/data-small"
    # $MEMORY_KEYS real keys (plaintext known, for the memory run), then bulk
    # rows up to $SCALE_KEYS.
    KEY_PREFIX=${KEY%%_sk_*}
    t0=$(now_ms)
    "$KEYGEN_BIN" --count "$MEMORY_KEYS" --prefix "$KEY_PREFIX" --project "$PROJECT" \
        --sql "$WORK/keys.sql" --keys "$WORK/keys.txt"
    sqlite3 "$DATA/gatehouse.db" <"$WORK/keys.sql"
    rm -f "$WORK/keys.sql"
    say "  generated and inserted $MEMORY_KEYS real keys in $(( $(now_ms) - t0 )) ms"
    insert_bulk_keys "$DATA/gatehouse.db" "$SCALE_KEYS"

    start_server large "$DATA"
    sleep 1
    LARGE_IDLE_KB=$(rss_kb "${PID[large]}")
    say "  $SCALE_KEYS keys: server restarted on the same data dir, ready after ${STARTUP_MS[large]} ms, idle RSS $(mib "$LARGE_IDLE_KB") MiB"
    start_server small "$WORK/data-small"
    sleep 1
    SMALL_IDLE_KB=$(rss_kb "${PID[small]}")
    say "  $BASE_KEYS keys: second server on a copy of the database taken before the top-up, ready after ${STARTUP_MS[small]} ms, idle RSS $(mib "$SMALL_IDLE_KB") MiB"
    check_key_works small
    check_key_works large
    for round in $(seq 1 "$ROUNDS"); do
        say " round $round"
        measure "$S" small /api/v1/keys/verify -s "$VERIFY_LUA"
        measure "$L" large /api/v1/keys/verify -s "$VERIFY_LUA"
    done
    check_key_works small
    check_key_works large
    SMALL_LOAD_KB=$(rss_kb "${PID[small]}")
    LARGE_LOAD_KB=$(rss_kb "${PID[large]}")
    say "  RSS after the load (one key cached): $(mib "$SMALL_LOAD_KB") MiB ($BASE_KEYS keys), $(mib "$LARGE_LOAD_KB") MiB ($SCALE_KEYS keys)"
    stop_server small
    stop_server large

    CPU_SCALE=$(ratio "$(cpu_of "$L")" "$(cpu_of "$S")")
    RPS_SCALE=$(ratio "$(rps_of "$L")" "$(rps_of "$S")")
    SCALE_OK=$(awk -v r="$CPU_SCALE" 'BEGIN { print (r <= 1.10 && r >= 0.90) ? "MET" : "MISSED" }')
    say ""
    say "  CPU per verify: $(cpu_of "$S") us with $BASE_KEYS keys, $(cpu_of "$L") us with $SCALE_KEYS keys: ${CPU_SCALE}x  (rounds: $(round_ratios "$L" "$S"))  target within 10%: $SCALE_OK"
    say "  requests/s:     $(rps_of "$S") with $BASE_KEYS keys, $(rps_of "$L") with $SCALE_KEYS keys: ${RPS_SCALE}x"
    say ""

    # ------------------------------------------------------------ memory
    say "== memory: $SCALE_KEYS keys stored, $MEMORY_KEYS distinct ones verified (the cache's default capacity is 100,000)"
    start_server memory "$DATA" "$MEMORY_WORKERS"
    sleep 1
    MEM_READY_MS=${STARTUP_MS[memory]}
    MEM_BEFORE_KB=$(rss_kb "${PID[memory]}")
    MEM_THREADS=$(ls "/proc/${PID[memory]}/task" | wc -l)
    say "  fresh server on the $SCALE_KEYS-key database (${MEMORY_WORKERS:-default} workers, $MEM_THREADS threads): ready after $MEM_READY_MS ms, idle RSS $(mib "$MEM_BEFORE_KB") MiB"
    # RSS sampled every 0.2 s during the load: its highest value.
    echo 0 >"$WORK/rss-peak"
    ( peak=0; while kill -0 "${PID[memory]}" 2>/dev/null; do
          r=$(rss_kb "${PID[memory]}" 2>/dev/null || echo 0)
          (( r > peak )) && { peak=$r; echo "$peak" >"$WORK/rss-peak"; }
          sleep 0.2
      done ) &
    RSS_SAMPLER=$!
    read -r mv0 mo0 <<<"$(verification_counts memory)"
    # Runs of $MEMORY_DURATION s, each continuing where the last one left
    # off, until every key was checked (at most 12 runs).
    MEM_COVERED=0 MEM_REQS=0 MEM_SECS=0
    for chunk in $(seq 1 12); do
        (( MEM_COVERED < MEMORY_KEYS )) || break
        GATEHOUSE_BENCH_KEYS_FILE="$WORK/keys.txt" GATEHOUSE_BENCH_THREADS="$THREADS" \
        GATEHOUSE_BENCH_KEYS_START="$MEM_COVERED" \
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"${MEMORY_DURATION}s" -s "$VERIFY_MANY_LUA" \
            "${URL[memory]}/api/v1/keys/verify" >"$WORK/wrk-memory.txt"
        MEM_COVERED=$(( MEM_COVERED + $(sed -n 's/^keys covered: \([0-9]*\)$/\1/p' "$WORK/wrk-memory.txt") ))
        MEM_REQS=$(( MEM_REQS + $(awk '/requests in/ { print $1; exit }' "$WORK/wrk-memory.txt") ))
        MEM_SECS=$(( MEM_SECS + MEMORY_DURATION ))
        : >"${LOG[memory]}"
        if grep -q 'Non-2xx\|Socket errors' "$WORK/wrk-memory.txt"; then
            say "  !! memory: $(grep 'Non-2xx\|Socket errors' "$WORK/wrk-memory.txt")"; FAILED=1
        fi
    done
    MEM_DISTINCT=$(( MEM_COVERED < MEMORY_KEYS ? MEM_COVERED : MEMORY_KEYS ))
    read -r mv1 mo1 <<<"$(verification_counts memory)"
    # After the load the server writes the usage it counted (in chunks,
    # keys::usage) and hands the heap freed by cache fills back to the
    # system 3 s after the last fill (keys::store::return_freed_heap): RSS
    # is read once it has stopped falling (no lower in 3 readings 1 s
    # apart), at least 5 s and at most 30 s after the load.
    sleep 5
    MEM_AFTER_KB=$(rss_kb "${PID[memory]}")
    MEM_SETTLE_S=5 MEM_STEADY=0
    while (( MEM_STEADY < 3 && MEM_SETTLE_S < 30 )); do
        sleep 1; MEM_SETTLE_S=$(( MEM_SETTLE_S + 1 ))
        r=$(rss_kb "${PID[memory]}")
        if (( r < MEM_AFTER_KB * 99 / 100 )); then MEM_STEADY=0; else MEM_STEADY=$(( MEM_STEADY + 1 )); fi
        if (( r < MEM_AFTER_KB )); then MEM_AFTER_KB=$r; fi
    done
    kill "$RSS_SAMPLER" 2>/dev/null || true
    wait "$RSS_SAMPLER" 2>/dev/null || true
    MEM_PEAK_KB=$(cat "$WORK/rss-peak")
    (( MEM_PEAK_KB >= MEM_AFTER_KB )) || MEM_PEAK_KB=$MEM_AFTER_KB
    MEM_PER_KEY=$(awk -v a="$MEM_AFTER_KB" -v b="$MEM_BEFORE_KB" -v n="$MEM_DISTINCT" 'BEGIN { printf "%.0f", (a - b) * 1024 / (n > 0 ? n : 1) }')
    say "  $MEM_REQS verifications in $MEM_SECS s, $(( mv1 - mv0 )) valid, $(( mo1 - mo0 )) not valid; distinct keys checked: $MEM_DISTINCT"
    say "  RSS: $(mib "$MEM_BEFORE_KB") MiB before, $(mib "$MEM_PEAK_KB") MiB at most during the load, $(mib "$MEM_AFTER_KB") MiB after (read $MEM_SETTLE_S s after the load; about $MEM_PER_KEY bytes per key checked)"
    if (( MEM_DISTINCT < MEMORY_KEYS )); then
        say "  !! memory: only $MEM_DISTINCT of $MEMORY_KEYS keys were checked in $MEM_SECS s"; FAILED=1
    fi
    if (( mo1 != mo0 )) || (( mv1 - mv0 < MEM_DISTINCT )); then
        say "  !! memory: some verifications were not valid"; FAILED=1
    fi
    stop_server memory
    say ""
else
    stop_server main
fi

# ---------------------------------------------------------------- summary
say "== summary (req/s and CPU/request over all rounds; latencies: median of the rounds' p50 and p99)"
printf '  %-16s %10s %10s %10s %12s %12s  %s\n' run req/s p50 p99 requests "CPU us/req" "CPU us/req per round"
for label in floor healthz forward-auth verify ${P:+verify@sqlite} $P $S $L; do
    printf '  %-16s %10s %10s %10s %12s %12s  %s\n' "$label" "$(rps_of "$label")" \
        "$(fmt_us "$(median <<<"${RUN_P50[$label]}")")" "$(fmt_us "$(median <<<"${RUN_P99[$label]}")")" \
        "${REQS[$label]}" "$(cpu_of "$label")" "${RUN_CPU[$label]# }"
done
say ""
say "targets (1 MB = 10^6 bytes; figures in MiB = 2^20 bytes):"
target() { printf '  %-56s %-40s %s\n' "$1" "$2" "$3"; }
kb_of_mb() { echo $(( $1 * 1000 * 1000 / 1024 )); }   # VmRSS is in KiB
target "forward-auth CPU/request <= 1.5x the floor" "${FA_FLOOR}x (rounds: $(round_ratios forward-auth floor))" "$(verdict "$FA_FLOOR" 1.5)"
target "verify CPU/request <= 1.8x the floor" "${VE_FLOOR}x (rounds: $(round_ratios verify floor))" "$(verdict "$VE_FLOOR" 1.8)"
target "healthz CPU/request <= 1.2x the floor" "${HZ_FLOOR}x (rounds: $(round_ratios healthz floor))" "$(verdict "$HZ_FLOOR" 1.2)"
target "forward-auth CPU/request <= 1.3x healthz" "${FA_RATIO}x (rounds: $(round_ratios forward-auth healthz))" "$(verdict "$FA_RATIO" 1.3)"
target "verify CPU/request <= 1.5x healthz" "${VE_RATIO}x (rounds: $(round_ratios verify healthz))" "$(verdict "$VE_RATIO" 1.5)"
if [[ -n "$P" ]]; then
    target "verify CPU/request on PostgreSQL within 10% of SQLite" "${PG_RATIO}x (rounds: $(round_ratios "$P" verify@sqlite))" "$PG_OK"
fi
if [[ -n "$L" ]]; then
    target "verify CPU/request, $SCALE_KEYS vs $BASE_KEYS keys, within 10%" "${CPU_SCALE}x" "$SCALE_OK"
    target "start-up to ready < 1 s with $SCALE_KEYS keys" "${MEM_READY_MS} ms (${STARTUP_MS[small]} ms with $BASE_KEYS)" "$(verdict "$MEM_READY_MS" 999)"
    target "idle RSS < 30 MB" "$(mib "$LARGE_IDLE_KB") MiB ($(mib "$SMALL_IDLE_KB") MiB with $BASE_KEYS)" \
        "$(verdict "$(( LARGE_IDLE_KB > SMALL_IDLE_KB ? LARGE_IDLE_KB : SMALL_IDLE_KB ))" $(( $(kb_of_mb 30) - 1 )))"
    target "RSS < 100 MB, $SCALE_KEYS keys, $MEMORY_KEYS cached" "$(mib "$MEM_AFTER_KB") MiB (idle $(mib "$MEM_BEFORE_KB") MiB)" \
        "$(verdict "$MEM_AFTER_KB" $(( $(kb_of_mb 100) - 1 )))"
    target "RSS < 100 MB during the load that fills the cache" "$(mib "$MEM_PEAK_KB") MiB at most (${MEMORY_WORKERS:-default} workers)" \
        "$(verdict "$MEM_PEAK_KB" $(( $(kb_of_mb 100) - 1 )))"
fi
target "release binary < 25 MB" "$(mib $(( BIN_BYTES / 1024 ))) MiB" "$(verdict "$BIN_BYTES" $(( 25 * 1000 * 1000 - 1 )))"
say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

if (( FAILED )); then
    say ""
    say "bench: some runs were not clean (see the !! lines); their figures are not valid"
    exit 1
fi
