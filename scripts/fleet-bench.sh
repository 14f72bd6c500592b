#!/bin/sh
# Benchmark: `csipd fleet` with N devices (default 1000) against the simulated CSIP-AUS
# utility (`csipd demo --utility-only`) on loopback. Prints the fleet's summary lines and
# its final line (devices connected/discovered/registered/reporting, requests/s, p50/p99
# latency, RSS per device), then what the utility recorded and what it cost.
# Not a timed test: run it by hand, on an otherwise idle machine for numbers to quote.
#
#   cargo build --release && sh scripts/fleet-bench.sh [DEVICES] [SECONDS] [RAMP_S]
#
# CSIPD=path/to/csipd picks the binary (default target/release/csipd); the fleet's JSON
# report is left in fleet-bench-report.json (REPORT=... to change).
set -eu
N=${1:-1000}
RUN_S=${2:-300}
RAMP_S=${3:-60}
BIN=${CSIPD:-target/release/csipd}
REPORT=${REPORT:-fleet-bench-report.json}
[ -x "$BIN" ] || { echo "fleet-bench: $BIN not found (cargo build --release)" >&2; exit 2; }
# One socket per device on each side, plus the utility's thread per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DIR=$(mktemp -d "${TMPDIR:-/tmp}/csipd-fleet-bench.XXXXXX")
"$BIN" demo --utility-only --pki-dir "$DIR/pki" --seconds $((RUN_S + 600)) >"$DIR/utility.out" 2>&1 &
UTILITY=$!
trap 'kill $UTILITY 2>/dev/null || true; wait $UTILITY 2>/dev/null || true; rm -rf "$DIR"' EXIT INT TERM
i=0
until grep -q '^dcap: ' "$DIR/utility.out" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 600 ] || { cat "$DIR/utility.out" >&2; exit 1; }
    sleep 0.1
done
DCAP=$(sed -n 's/^dcap: //p' "$DIR/utility.out")
REPORT_URL=$(sed -n 's/^report: \([^ ]*\).*/\1/p' "$DIR/utility.out")
echo "fleet-bench: $N devices, ${RUN_S} s, ramp ${RAMP_S} s, against $DCAP ($(uname -m), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))"
"$BIN" fleet --devices "$N" --dcap "$DCAP" --ca-cert "$DIR/pki/ca.pem" --ca-key "$DIR/pki/ca.key" \
    --ramp-s "$RAMP_S" --seconds "$RUN_S" --summary-s 10 --report "$REPORT"
UTILITY_CPU=$(awk '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / 100 }' /proc/$UTILITY/stat)
echo "utility (pid $UTILITY): CPU ${UTILITY_CPU} s; $(grep -E '^(VmRSS|VmHWM|Threads)' /proc/$UTILITY/status | tr -s ' \t' ' ' | tr '\n' ' ')"
if command -v curl >/dev/null && command -v python3 >/dev/null; then
    curl -s --cacert "$DIR/pki/ca.pem" "$REPORT_URL" | python3 -c '
import json, sys
r = json.load(sys.stdin)
d = [x for x in r["devices"] if x["registered_by"] == "certificate"]
print("utility saw %d devices: %d read their EndDevice, %d PUT DER reports, %d posted readings; "
      "%d requests, %d TLS connections, %d refused, %d bodies rejected"
      % (len(d), sum(x["end_device_reads"] > 0 for x in d), sum(x["der_puts"] > 0 for x in d),
         sum(x["readings_accepted"] > 0 for x in d), r["requests"], r["tls_connections"],
         r["forbidden"], len(r["rejected"])))'
fi
