#!/usr/bin/env bash
# The test command under load (issue 26): two busy-loop processes keep two cores busy
# beside it, as on a 2-core CI machine that is doing other work, and the command runs
# N times in a row (default 3), stopping at the first failing run. After each run it
# prints the slowest test binaries (cargo's "finished in" per binary).
#
#   bash tests/run-under-load.sh            # `bash tests/run.sh` (README's command) 3 times
#   bash tests/run-under-load.sh 5          # ... 5 times
#   bash tests/run-under-load.sh 3 -- cargo test --test http_faults --test store_crash
#
# Logs: target/run-under-load/run-K.log. Exit status: that of the first failing run, or 0.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    runs=$1
    shift
fi
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
    set -- bash tests/run.sh
fi
case "$runs" in
    '' | *[!0-9]*) echo "usage: $0 [N] [-- command...]" >&2; exit 2 ;;
esac

logs=target/run-under-load
mkdir -p "$logs"

busy=()
stop_busy() {
    for pid in "${busy[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap stop_busy EXIT
for _ in 1 2; do
    ( while :; do :; done ) &
    busy+=("$!")
done

# The slowest test binaries of a cargo test log: "SECONDS  BINARY (TESTS)".
slowest() {
    awk '
        /^ *Running / { bin = $2; if (bin == "unittests") bin = $3 }
        /^ *Doc-tests / { bin = "doc-tests " $2 }
        /^test result: / {
            t = $NF; sub(/s$/, "", t)
            n = $4
            printf "%8.1f s  %s (%s passed)\n", t, bin, n
        }' "$1" | sort -rn | head -n 10
}

echo "under load: ${#busy[@]} busy loops (pids ${busy[*]}) on $(nproc) cores; command: $*"
for run in $(seq 1 "$runs"); do
    log="$logs/run-$run.log"
    echo "== run $run of $runs ($(date +%T)), log $log"
    started=$(date +%s)
    status=0
    "$@" >"$log" 2>&1 || status=$?
    took=$(( $(date +%s) - started ))
    passed=$(grep -o '[0-9]* passed' "$log" | awk '{ s += $1 } END { print s + 0 }')
    failed=$(grep -o '[0-9]* failed' "$log" | awk '{ s += $1 } END { print s + 0 }')
    echo "   exit $status after ${took} s: $passed tests passed, $failed failed; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "   slowest test binaries:"
    slowest "$log" | sed 's/^/   /'
    if [ "$status" -ne 0 ]; then
        echo "== run $run failed; the failures:"
        grep -E '^(---- |test .* FAILED|failures:|error(\[|:))' "$log" | head -n 40 || true
        exit "$status"
    fi
done
echo "== all $runs runs passed under load"
