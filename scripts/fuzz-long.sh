#!/usr/bin/env bash
# The long, coverage-guided fuzz run (docs/fuzzing.md): every target (or those named) under
# AFL++ for SECONDS each (default 300), JOBS at a time (default 1), then a table of the totals.
#
#   scripts/fuzz-long.sh [SECONDS] [TARGET...]
#
# Needs `cargo install cargo-afl` once. Output goes to fuzz/out/<target>/ (not committed);
# crashes and hangs are listed at the end and make the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
shift || true
jobs="${JOBS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/afl"
harness="$CARGO_TARGET_DIR/release/sluice-fuzz-afl"

command -v cargo-afl >/dev/null 2>&1 || {
    echo "cargo-afl is missing: cargo install cargo-afl" >&2
    exit 1
}
# Without LTO: the workspace's release profile uses thin LTO, and with it the code of the filter
# (a cdylib + rlib crate) reached the binary without AFL's coverage instrumentation.
CARGO_PROFILE_RELEASE_LTO=false \
    cargo afl build --release -p sluice-fuzz --features afl --bin sluice-fuzz-afl

if (($#)); then
    targets=("$@")
else
    # Without a target, the harness lists them (indented) and exits 2.
    mapfile -t targets < <("$harness" 2>&1 | sed -n 's/^  //p')
fi

# AFL++ refuses to start on machines tuned for power saving or with a core-dump pipe unless told.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1

run() {
    local target="$1"
    rm -rf "fuzz/out/$target"
    mkdir -p "fuzz/out/$target"
    # -V: stop after the time; -G: the harness's input bound; -t: the hang bound (ms).
    cargo afl fuzz -i "fuzz/corpus/$target" -o "fuzz/out/$target" -x "fuzz/dict/$target.dict" \
        -G 65536 -t 1000 -V "$seconds" -- "$harness" "$target" >"fuzz/out/$target.log" 2>&1 || {
        echo "$target: afl-fuzz failed; see fuzz/out/$target.log" >&2
        return 1
    }
}

started=$(date -u +%Y-%m-%dT%H:%MZ)
running=0
for t in "${targets[@]}"; do
    run "$t" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

stat() { sed -n "s/^$2 *: *//p" "fuzz/out/$1/default/fuzzer_stats" 2>/dev/null; }
printf '%-16s %12s %8s %8s %8s %8s %8s\n' target executions exec/s seconds corpus crashes hangs
found=0
for t in "${targets[@]}"; do
    crashes=$(stat "$t" saved_crashes)
    hangs=$(stat "$t" saved_hangs)
    printf '%-16s %12s %8s %8s %8s %8s %8s\n' "$t" "$(stat "$t" execs_done)" \
        "$(stat "$t" execs_per_sec)" "$(stat "$t" run_time)" "$(stat "$t" corpus_count)" \
        "${crashes:-?}" "${hangs:-?}"
    if [ "${crashes:-0}" != 0 ] || [ "${hangs:-0}" != 0 ]; then
        found=1
        ls "fuzz/out/$t/default/crashes" "fuzz/out/$t/default/hangs" 2>/dev/null | grep -v README || true
    fi
done
echo "started $started, $seconds s per target, $jobs at a time"
exit "$found"
