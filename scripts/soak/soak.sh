#!/usr/bin/env bash
# Soak benchmark: `csipd run` (utility engine + Modbus devices + store + status server)
# with every period shortened so that about a day of work passes in SOAK_MINUTES
# (default 30), sampling the daemon's memory, threads and CPU time from /proc.
#
#   bash scripts/soak/soak.sh            # builds, runs, writes scripts/soak/results/
#   SOAK_MINUTES=5 SOAK_OUT=/tmp/s bash scripts/soak/soak.sh   # a short trial elsewhere
#   SOAK_SKIP_BUILD=1 SOAK_CSIPD=path/to/csipd ...            # an already built binary
#   SOAK_WRAP="heaptrack -o /tmp/h" SOAK_RUN_DIR=/tmp/r ...     # under a profiler
#   SOAK_CONTROL_S=100000 ...      # one long control instead of a new one every 6 s
#   SOAK_POLL_S=30 SOAK_CYCLE_S=1 SOAK_CONTROL_S=300 ...   # real-life rates instead
#
# Peers (all on 127.0.0.1): the hand-scripted CSIP-AUS server of the tests as its own
# process (examples/soak_utility.rs; plain HTTP), every poll and post rate 1 s (real
# servers: 60-300 s, so 60-300x) and a new 6-second export envelope with Responses
# every 6 s (a day of five-minute envelopes is 288; 30 minutes here make 300); the
# simulated SunSpec inverter and meter (`csipd demo --sim-only`, Modbus TCP) polled
# every control cycle of 0.1 s (the shortest `cycle_s` allows: 10x the default 1 s);
# /status and /metrics fetched every 10 s (a LuCI page or a scraper). Telemetry and
# state databases in the run directory, as on the router (tmpfs / flash).
#
# Output in SOAK_OUT (default scripts/soak/results): soak.csv (one row per
# SOAK_SAMPLE_S, default 5 s), soak.svg (the memory plot), summary.txt (warm-up and end
# values, slope, CPU). Needs python3 (matplotlib is installed into target/soak-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
minutes=${SOAK_MINUTES:-30}
sample_s=${SOAK_SAMPLE_S:-5}
out=${SOAK_OUT:-$root/scripts/soak/results}
run=${SOAK_RUN_DIR:-$root/target/soak/run}
mkdir -p "$out"
rm -rf "$run"
mkdir -p "$run"

if [ -z "${SOAK_SKIP_BUILD:-}" ]; then
    cargo build --release --bin csipd
    # The utility is not measured: a debug build is enough.
    cargo build --example soak_utility
fi
csipd=${SOAK_CSIPD:-$root/target/release/csipd}
utility=$root/target/debug/examples/soak_utility

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Device identity (the plain-HTTP debugging mode still derives the LFDI from it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$run/key.pem" -out "$run/cert.pem" -days 30 -subj /CN=csipd-soak 2>/dev/null

"$utility" "$run/cert.pem" "${SOAK_POLL_S:-1}" "${SOAK_CONTROL_S:-6}" >"$run/utility.out" 2>"$run/utility.err" &
pids+=($!)
"$csipd" demo --sim-only >"$run/sim.out" 2>"$run/sim.err" &
pids+=($!)

wait_line() { # file prefix -> the first line starting with prefix
    for _ in $(seq 300); do
        line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
        [ -n "$line" ] && { echo "$line"; return; }
        sleep 0.1
    done
    echo "soak: no '$2' line in $1" >&2
    exit 1
}
url=$(wait_line "$run/utility.out" "http://")
inverter_port=$(wait_line "$run/sim.out" "inverter: " | sed 's/.*:\([0-9]*\) unit.*/\1/')
meter_port=$(wait_line "$run/sim.out" "meter: " | sed 's/.*:\([0-9]*\) unit.*/\1/')
status_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cat >"$run/csipd" <<CONF
config csipd 'main'
	option status_listen '127.0.0.1:$status_port'
	option log_level 'warn'
	option data_dir '$run/state'
	option telemetry_dir '$run/telemetry'
config server 'utility'
	option dcap_url '$url/dcap'
	option cert '$run/cert.pem'
	option key '$run/key.pem'
	option allow_plain_http '1'
	option pen '12345'
	option nmi '4100000000'
config device 'inverter'
	option role 'inverter'
	option transport 'tcp'
	option host '127.0.0.1'
	option port '$inverter_port'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '127.0.0.1'
	option port '$meter_port'
config control 'site'
	option cycle_s '${SOAK_CYCLE_S:-0.1}'
	option meter_stale_s '10'
CONF

# shellcheck disable=SC2086 # SOAK_WRAP is a command line
${SOAK_WRAP:-} "$csipd" run --config "$run/csipd" 2>"$run/csipd.err" &
pid=$!
pids+=($pid)
if [ -n "${SOAK_WRAP:-}" ]; then
    # Sample csipd itself, not the wrapper.
    for _ in $(seq 100); do
        child=$(pgrep -P "$pid" -x csipd || true)
        [ -n "$child" ] && break
        sleep 0.1
    done
    pid=${child:?soak: csipd did not start under $SOAK_WRAP}
fi

kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
cpu_s() { # utime + stime, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$pid/stat"
}
db_kib() { du -sk "$1" 2>/dev/null | awk '{print $1}' || echo 0; }

csv=$out/soak.csv
echo "t_s,rss_kib,anon_kib,file_kib,shmem_kib,hwm_kib,threads,cpu_s,telemetry_dir_kib,data_dir_kib" >"$csv"
start=$(date +%s)
end=$((start + minutes * 60))
next_status=$start
while :; do
    now=$(date +%s)
    [ "$now" -ge "$end" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "soak: csipd exited early; see $run/csipd.err" >&2
        exit 1
    fi
    if [ "$now" -ge "$next_status" ]; then
        curl -sf "http://127.0.0.1:$status_port/status" -o "$run/status.json" || true
        curl -sf "http://127.0.0.1:$status_port/metrics" -o /dev/null || true
        next_status=$((now + 10))
    fi
    echo "$((now - start)),$(kib VmRSS),$(kib RssAnon),$(kib RssFile),$(kib RssShmem),$(kib VmHWM),$(kib Threads),$(cpu_s),$(db_kib "$run/telemetry"),$(db_kib "$run/state")" >>"$csv"
    sleep "$sample_s"
done
requests=$(grep '^requests' "$run/utility.out" | tail -n1 | awk '{print $2}' || true)
kill -TERM "$pid"
wait "${pids[2]}" || { echo "soak: csipd did not stop cleanly" >&2; exit 1; }

{
    echo "csipd soak: $minutes min, sample every $sample_s s"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "machine: $(uname -m), $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine)"
    echo "binary: $(stat -c %s "$csipd") bytes ($csipd)"
    echo "utility requests served: ${requests:-unknown}"
    echo "csipd stderr lines: $(wc -l <"$run/csipd.err") (warnings and errors, in $run/csipd.err)"
} >"$out/summary.txt"
venv=$root/target/soak-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check matplotlib
fi
"$venv/bin/python" scripts/soak/plot.py "$csv" "$out/soak.svg" >>"$out/summary.txt"
cat "$out/summary.txt"
