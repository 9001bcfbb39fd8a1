#!/usr/bin/env bash
# Mutation testing of the pure policy files: cargo-mutants makes small
# wrong edits to the code (a `>` turned into `>=`, a function that returns
# a default value, a `&&` turned into `||`) and runs the unit tests against
# each; a "missed" mutant is a wrong line that no test notices.
#
# NOT part of CI (.ci/run does not call it): one run over all the files
# takes about an hour on 2 cores. Run it when changing one of these files,
# and update the figures in the README's testing section.
#
# Usage: scripts/mutants.sh [--list | --again] [FILE...]   (from anywhere)
#   FILE     one or more source files to mutate, e.g. src/auth/redirect.rs
#            (default: every file listed in FILES below)
#   --list   lists the mutants without testing them
#   --again  tests again only what the last run did not catch (missed or
#            timed out, or not reached when it was interrupted), e.g. after
#            adding tests for them; the figures are then those of the last
#            full run with the new outcomes in place of the old ones
#            (cargo-mutants' --iterate)
#   --figures  prints the figures of the last runs again, testing nothing
#
# Only the unit tests run against each mutant (`cargo test --lib`): the
# storage-level tests need databases and take far too long per mutant.
# Mutants that cannot change behaviour are excluded, each with its reason,
# in .cargo/mutants.toml.
#
# It prints, per file, how many mutants were caught, missed, unviable (did
# not compile) and timed out, lists the missed ones, and exits 2 when a
# mutant was missed (other non-zero codes: cargo-mutants' own, e.g. 4 when
# the unmutated tests already fail).
#
# Knobs (environment variables):
#   MUTANTS_JOBS=1         mutants built and tested at once (each needs a
#                          build directory of its own and about 2 cores)
#   MUTANTS_NICE=19        niceness of the run (the machine stays usable)
#   MUTANTS_OUT=target/mutants   where mutants.out (logs, caught.txt,
#                          missed.txt, ...) is written
#   MUTANTS_TOOLS=target/tools   where cargo-mutants is installed when no
#                          cargo-mutants of the pinned version is on PATH
#   CARGO_TARGET_DIR       default: the repository's target/, so that the
#                          dependencies already built are reused
#   TMPDIR                 where the scratch copy of the tree is made
#                          (cargo-mutants never edits the files in place)

set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=27.1.0
FILES=(
    src/store/session_rules.rs
    src/auth/redirect.rs
    src/auth/throttle.rs
    src/keys/format.rs
    src/keys/limiter.rs
    src/http/ratelimit.rs
    src/keys/credits.rs
    src/store/spend.rs
    src/store/maintenance.rs
    src/store/billing_link.rs
)
JOBS=${MUTANTS_JOBS:-1}
NICE=${MUTANTS_NICE:-19}
OUT=${MUTANTS_OUT:-$REPO/target/mutants}
TOOLS=${MUTANTS_TOOLS:-$REPO/target/tools}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

LIST=false
AGAIN=false
FIGURES=false
case ${1:-} in
    --list) LIST=true; shift ;;
    --again) AGAIN=true; shift ;;
    --figures) FIGURES=true; shift ;;
    -*) echo "usage: scripts/mutants.sh [--list | --again | --figures] [FILE...]" >&2; exit 1 ;;
esac
if [[ $# -gt 0 ]]; then
    FILES=("$@")
fi
cd "$REPO"
for f in "${FILES[@]}"; do
    [[ -f $f ]] || { echo "mutants: no such file: $f" >&2; exit 1; }
done

# cargo-mutants of the pinned version: the one on PATH, or one installed
# under $TOOLS (inside target/, so `cargo clean` removes it; nothing is
# added to ~/.cargo/bin).
MUTANTS=""
if command -v cargo-mutants >/dev/null \
    && [[ $(cargo-mutants mutants --version 2>/dev/null) == "cargo-mutants $VERSION" ]]; then
    MUTANTS=$(command -v cargo-mutants)
elif [[ -x $TOOLS/bin/cargo-mutants ]] \
    && [[ $("$TOOLS/bin/cargo-mutants" mutants --version 2>/dev/null) == "cargo-mutants $VERSION" ]]; then
    MUTANTS=$TOOLS/bin/cargo-mutants
else
    echo "mutants: installing cargo-mutants $VERSION into $TOOLS" >&2
    BUILD=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-mutants-install.XXXXXX")
    trap 'rm -rf "$BUILD"' EXIT
    CARGO_TARGET_DIR=$BUILD nice -n "$NICE" \
        cargo install --locked "cargo-mutants@$VERSION" --root "$TOOLS"
    MUTANTS=$TOOLS/bin/cargo-mutants
fi

# `--lib` for the build as well as the test run: building the integration
# test binaries for every mutant would triple the time and test nothing.
ARGS=(mutants --jobs "$JOBS" --gitignore=true --output "$OUT" --cargo-arg=--lib)
for f in "${FILES[@]}"; do
    ARGS+=(--file "$f")
done
BASE_ARGS=("${ARGS[@]}")
if $LIST; then
    exec "$MUTANTS" "${ARGS[@]}" --list
fi

# $OUT/outcomes.txt: "OUTCOME<TAB>MUTANT", one line per mutant, from the
# last full run, with what --again runs found since in place of the old.
RESULTS=$OUT/mutants.out
record_outcomes() { # [--merge]: this run's outcomes (merged into the earlier ones)
    {
        if [[ ${1:-} == --merge && -f $OUT/outcomes.txt ]]; then cat "$OUT/outcomes.txt"; fi
        for outcome in caught missed unviable timeout; do
            if [[ -f $RESULTS/$outcome.txt ]]; then sed "s/^/$outcome\t/" "$RESULTS/$outcome.txt"; fi
        done
    } | awk -F'\t' '{ latest[$2] = $1 } END { for (m in latest) print latest[m] "\t" m }' \
        | sort -t$'\t' -k2 >"$OUT/outcomes.txt.new"
    # Only the mutants there are now: an exclusion added to
    # .cargo/mutants.toml since the full run drops its mutants.
    "$MUTANTS" "${BASE_ARGS[@]}" --list >"$OUT/list.txt"
    awk -F'\t' 'NR == FNR { now[$0] = 1; next } $2 in now' "$OUT/list.txt" "$OUT/outcomes.txt.new" \
        >"$OUT/outcomes.txt.now"
    mv "$OUT/outcomes.txt.now" "$OUT/outcomes.txt.new"
    mv "$OUT/outcomes.txt.new" "$OUT/outcomes.txt"
}
if $AGAIN || $FIGURES; then
    [[ -d $RESULTS ]] || { echo "mutants: no earlier run in $OUT" >&2; exit 1; }
    # What the last run (full, --again, or interrupted) wrote to mutants.out
    # takes the place of what was known before.
    record_outcomes --merge
    ARGS+=(--iterate)
fi

if ! $FIGURES; then
    mkdir -p "$OUT"
    status=0
    nice -n "$NICE" "$MUTANTS" "${ARGS[@]}" || status=$?
    # 0: all caught; 2: some missed; 3: some timed out. Anything else means
    # the run itself failed (e.g. 4: the unmutated tests fail): no figures.
    case $status in
        0 | 2 | 3) ;;
        *) echo "mutants: cargo-mutants failed (exit $status); see $RESULTS" >&2; exit "$status" ;;
    esac
    if $AGAIN; then record_outcomes --merge; else record_outcomes; fi
fi

count() { # OUTCOME FILE: mutants of FILE with that outcome
    awk -F'\t' -v o="$1" -v f="$2:" 'index($2, f) == 1 && $1 == o { n++ } END { print n + 0 }' \
        "$OUT/outcomes.txt"
}
echo
printf '%-26s %7s %7s %9s %8s %14s\n' file caught missed unviable timeout caught/viable
missed_total=0
for f in "${FILES[@]}"; do
    caught=$(count caught "$f")
    missed=$(count missed "$f")
    unviable=$(count unviable "$f")
    timeout=$(count timeout "$f")
    viable=$((caught + missed + timeout))
    missed_total=$((missed_total + missed))
    printf '%-26s %7d %7d %9d %8d %14s\n' "$f" "$caught" "$missed" "$unviable" "$timeout" \
        "$caught/$viable"
done
if [[ $missed_total -gt 0 ]]; then
    echo
    echo "mutants: $missed_total missed (no unit test notices them):"
    awk -F'\t' '$1 == "missed" { print "  " $2 }' "$OUT/outcomes.txt"
    exit 2
fi
echo
echo "mutants: no mutant missed (a timed-out mutant is not a miss: the tests did not pass)."
