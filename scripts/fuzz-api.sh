#!/usr/bin/env bash
# Gatehouse API fuzzing: schemathesis against a live local server, driven by
# the server's own /api/v1/openapi.json, with a logged-in session.
#
# Usage: scripts/fuzz-api.sh [--max-examples N] [--seed N]   (from anywhere)
#
# What it does:
#   1. installs schemathesis (pinned below) into a virtualenv of its own
#      (FUZZ_VENV, default target/fuzz-venv) unless it is already there;
#   2. enters a fresh network namespace that has only a loopback interface
#      (`unshare --net`; root, or a kernel that allows user namespaces), so
#      nothing the fuzzer makes the server do (webhook deliveries to the URLs
#      it invents, DNS look-ups) can leave the machine;
#   3. starts `gatehouse serve` in local mode on a free loopback port with a
#      temporary data directory, logs in through the local mailbox
#      (send-code, GET /api/v1/dev/mailbox, verify-code) and reads the
#      session's project id from GET /api/v1/me;
#   4. runs every schemathesis phase (examples, coverage, fuzzing, stateful,
#      which chains operations through the document's response links) with
#      every check, as that session (Authorization and X-Project-Id);
#   5. checks /healthz and /readyz still answer, stops the server and prints
#      a summary: operations, requests, failures.
#
# Exits non-zero on any failure schemathesis reports (a 5xx, an answer that
# does not match the document, a wrong status, ...), on a schemathesis health
# check failure, or when the server is not healthy afterwards.
#
# Not fuzzed: POST /api/v1/auth/logout, which would end the fuzzer's own
# session. (revoke-token stays in: the fuzzer never holds the session's
# refresh token.)
#
# Knobs (environment variables; flags win):
#   FUZZ_MAX_EXAMPLES=25     test cases per operation and phase (the budget)
#   FUZZ_SEED=N              make a run reproducible
#   FUZZ_BIN=PATH            the gatehouse binary (default: target/debug,
#                            built first; e.g. target/release/gatehouse)
#   FUZZ_VENV=DIR            where schemathesis is installed
#   FUZZ_REPORT_DIR=DIR      schemathesis' reports (default target/fuzz-report)
#   FUZZ_KEEP=1              keep the data directory and the server log
#
# Needs: python3 (with venv and pip), curl, unshare and ip (util-linux,
# iproute2), and cargo unless FUZZ_BIN is given.

set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-25}
SEED=${FUZZ_SEED:-}
INSIDE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --max-examples) MAX_EXAMPLES=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --inside-namespace) INSIDE=1; shift ;;
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz-api: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$MAX_EXAMPLES" in
  ''|*[!0-9]*|0) echo "fuzz-api: --max-examples must be a positive number" >&2; exit 2 ;;
esac

VENV=$(realpath -m "${FUZZ_VENV:-$REPO/target/fuzz-venv}")
REPORT_DIR=$(realpath -m "${FUZZ_REPORT_DIR:-$REPO/target/fuzz-report}")
log() { printf 'fuzz-api: %s\n' "$*" >&2; }

if [ "$INSIDE" = 0 ]; then
  # Outside the namespace: everything that needs the network or a build.
  for tool in python3 curl unshare ip; do
    command -v "$tool" >/dev/null || { log "needs $tool"; exit 2; }
  done
  if [ "$("$VENV/bin/st" --version 2>/dev/null)" != "st, version $SCHEMATHESIS_VERSION" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  BIN=${FUZZ_BIN:-}
  if [ -z "$BIN" ]; then
    # The debug binary, brought up to date (a no-op after `cargo test`), so
    # the fuzzer never meets a stale build.
    (cd "$REPO" && cargo build --quiet)
    BIN=$REPO/target/debug/gatehouse
  fi
  BIN=$(realpath "$BIN")
  export FUZZ_BIN=$BIN FUZZ_VENV=$VENV FUZZ_REPORT_DIR=$REPORT_DIR
  export FUZZ_MAX_EXAMPLES=$MAX_EXAMPLES FUZZ_SEED=$SEED
  # Root can make a network namespace directly; others need a user namespace.
  if unshare --net true 2>/dev/null; then
    exec unshare --net -- "$0" --inside-namespace
  elif unshare --net --map-root-user true 2>/dev/null; then
    exec unshare --net --map-root-user -- "$0" --inside-namespace
  fi
  log "cannot create a network namespace (unshare --net); refusing to fuzz"
  log "a server whose webhooks could then reach the network"
  exit 2
fi

# ---------------------------------------------------------------------------
# Inside the namespace: loopback only.

ip link set lo up
BIN=$FUZZ_BIN
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-fuzz.XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${FUZZ_KEEP:-}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT

# Its own process group, so the whole server stops with it.
# Billing on (with a secret the fuzzer does not know), so the Stripe webhook
# checks signatures rather than answering 404.
env -u GATEHOUSE_CONFIG RUST_LOG=warn \
  GATEHOUSE_BILLING__STRIPE_WEBHOOK_SECRET="whsec_$(python3 -c 'import secrets; print(secrets.token_hex(24))')" \
  setsid "$BIN" serve --mode local \
  --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; log "the server exited"; exit 1; }
  sleep 0.1
done
curl -fsS "$BASE/readyz" >/dev/null || { log "the server did not become ready"; exit 1; }

json_field() { python3 -c 'import json, sys; v = json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v[int(k)] if k.isdigit() else v[k]
print(v)' "$1"; }

EMAIL=fuzzer@gatehouse.test
curl -fsS -H 'Content-Type: application/json' -d "{\"email\": \"$EMAIL\"}" \
  "$BASE/api/v1/auth/send-code" >/dev/null
CODE=$(curl -fsS "$BASE/api/v1/dev/mailbox" | python3 -c '
import json, re, sys
for m in json.load(sys.stdin)["items"]:
    if m["to"] == sys.argv[1]:
        print(re.search(r"^\s*(\d{6,10})\s*$", m["body"], re.M).group(1))
        break' "$EMAIL")
TOKEN=$(curl -fsS -H 'Content-Type: application/json' \
  -d "{\"email\": \"$EMAIL\", \"code\": \"$CODE\"}" \
  "$BASE/api/v1/auth/verify-code" | json_field access_token)
PROJECT=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me" |
  json_field memberships.0.project.id)
log "server $BASE, session for $EMAIL on project $PROJECT"

# Forward-auth reads an API key, not a session: give its operations a key
# that may do anything, with a window the fuzzer cannot fill.
KEY=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name": "fuzzer forward-auth", "scopes": ["full_access"], "rate_limit": {"limit": 1000000000, "window_secs": 1}}' \
  "$BASE/api/v1/api-keys" | json_field plaintext_key)
CONFIG=$WORK/schemathesis.toml
cp "$SCRIPT_DIR/fuzz-api.toml" "$CONFIG"
# The last table of fuzz-api.toml is forward-auth's.
printf 'headers = { Authorization = "Bearer %s" }\n' "$KEY" >>"$CONFIG"

# Requests the server has counted so far, and how many of them were 5xx.
served() {
  curl -fsS "$BASE/metrics" | python3 -c '
import re, sys
total = errors = 0
for line in sys.stdin:
    m = re.match(r"gatehouse_http_requests_total\{.*status=\"(\d+)\".*\} (\d+)", line)
    if m:
        total += int(m.group(2))
        errors += int(m.group(2)) if m.group(1).startswith("5") else 0
print(total, errors)'
}
read -r BEFORE_TOTAL _ < <(served)

mkdir -p "$REPORT_DIR"
ST_ARGS=(
  --config-file "$CONFIG"
  run "$BASE/api/v1/openapi.json"
  --phases examples,coverage,fuzzing,stateful
  --max-examples "$FUZZ_MAX_EXAMPLES"
  --header "Authorization: Bearer $TOKEN"
  --header "X-Project-Id: $PROJECT"
  --exclude-operation-id logout
  --workers 1
  --report junit --report-junit-path "$REPORT_DIR/junit.xml"
)
[ -n "$FUZZ_SEED" ] && ST_ARGS+=(--seed "$FUZZ_SEED")

set +e
# From the temporary directory: schemathesis keeps a cache in its working
# directory.
(cd "$WORK" && "$FUZZ_VENV/bin/st" "${ST_ARGS[@]}") 2>&1 | tee "$WORK/schemathesis.log"
ST_STATUS=${PIPESTATUS[0]}
set -e

HEALTHY=1
for route in /healthz /readyz; do
  if ! curl -fsS "$BASE$route" >/dev/null; then
    log "$route does not answer after fuzzing"
    HEALTHY=0
  fi
done
read -r AFTER_TOTAL SERVER_ERRORS < <(served)
REQUESTS=$((AFTER_TOTAL - BEFORE_TOTAL))
if [ "$SERVER_ERRORS" != 0 ]; then
  log "the server answered $SERVER_ERRORS requests with a 5xx"
  HEALTHY=0
fi
if grep -qiE 'panicked|internal error' "$WORK/server.log"; then
  log "the server log reports a panic or an internal error:"
  grep -iE 'panicked|internal error' "$WORK/server.log" | head -20 >&2
  HEALTHY=0
fi

python3 - "$WORK/schemathesis.log" "$REQUESTS" "$SERVER_ERRORS" "$ST_STATUS" "$HEALTHY" <<'PY'
import re
import sys

console, requests, server_errors, status, healthy = sys.argv[1:]
text = open(console, encoding="utf-8", errors="replace").read()
tested = re.search(r"Tested: (\d+)", text)
cases = re.search(r"(\d+) generated, ([^\n]*)", text)
failures = re.search(r"=+ (\d+) failures?", text)
errors = re.search(r"[ ,](\d+) errors?[ ,]", text.splitlines()[-1] if text else "")
print(
    f"fuzz-api summary: {tested.group(1) if tested else '?'} operations, "
    f"{requests} requests served ({server_errors} answered 5xx), "
    f"{cases.group(1) if cases else '?'} test cases ({cases.group(2) if cases else '?'}), "
    f"{failures.group(1) if failures else 0} failures, {errors.group(1) if errors else 0} errors; "
    f"schemathesis exit {status}; server {'healthy' if healthy == '1' else 'NOT healthy'} afterwards"
)
PY

[ "$ST_STATUS" = 0 ] && [ "$HEALTHY" = 1 ]
