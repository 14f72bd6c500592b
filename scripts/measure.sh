#!/usr/bin/env bash
# Measurement (issue 21): `csipd run` (release build) against a CSIP-AUS utility and
# Modbus devices for MEASURE_MINUTES (default 10), with the Python client py20305 beside
# it against the same utility and devices when it installs, sampled from /proc:
#
#   bash scripts/measure.sh                         # builds, runs 10 min, writes results
#   MEASURE_MINUTES=3 MEASURE_OUT=/tmp/m bash scripts/measure.sh      # a short trial
#   MEASURE_SKIP_BUILD=1 MEASURE_CSIPD=path/to/csipd bash scripts/measure.sh
#   MEASURE_PY20305=0 ...                           # csipd alone
#   MEASURE_LOAD_STEP=0 ...                         # without the load-step figures
#   MEASURE_METER_PERIOD_MS=1000 ...                # the meter read once a cycle
#   MEASURE_UTILITY_CSIPD=target/debug/csipd ...    # the simulated utility's binary
#                                                   # (default MEASURE_CSIPD; needs `lab`)
#
# Peers (all on 127.0.0.1):
# - the simulated CSIP-AUS utility, `csipd demo --utility-only` (its own process, not
#   measured): TLS 1.2 ECDHE-ECDSA-AES128-CCM8 with client certificates from its lab CA,
#   a day of five-minute dynamic export envelopes at real time (--day-s 86400: a new
#   DERControl every 5 min asking for Responses, pollRate 60 s, postRate 300 s);
# - a pymodbus SunSpec server (tests/peers/sunspec_sim.py, the peers venv of
#   tests/setup.sh) laid out as a Fronius inverter (unit 1: 111, 120-123) with its
#   smart meter (unit 240: 211), tests/fixtures/brands/fronius-float.modbus.json;
#   csipd reads both every 1 s control cycle.
# - py20305 (PyPI, installed into target/py20305-venv), the same device certificate
#   and devices (a `der` and a `site_meter`), its default rates, its history file in
#   the run directory. It controls inverters through the IEEE 1547 models (70x) only:
#   on this 12x layout it keeps rescanning the inverter (its stderr says so), which
#   counts in its CPU time.
#
# First request: the utility records the time of the first request of every TLS
# connection (`first_requests` in its /sim/report); the script notes each client's spawn
# time just before starting it, and starts them one after the other so each first
# connection is that client's. csipd is measured twice: with a fresh data_dir, and at
# the end restarted on the store it wrote.
#
# Load step (issue 21): at the end the script runs the virtual-time closed-loop tests of
# a 3 kW load drop on the demo's physics (inverters of tau 1 s) and copies their settling
# and overshoot figures into the summary; they are no timed assertions of this run.
#
# Output in MEASURE_OUT (default scripts/measure/results): csipd.csv and py20305.csv
# (one row per MEASURE_SAMPLE_S, default 5 s; the columns of scripts/soak/soak.sh),
# csipd.svg / py20305.svg (memory plots by scripts/soak/plot.py), summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
minutes=${MEASURE_MINUTES:-10}
sample_s=${MEASURE_SAMPLE_S:-5}
warm_up_s=${MEASURE_WARM_UP_S:-120}
out=${MEASURE_OUT:-$root/scripts/measure/results}
run=${MEASURE_RUN_DIR:-$root/target/measure/run}
peers_venv=${PEERS_VENV:-$root/target/peers-venv}
with_py=${MEASURE_PY20305:-1}
mkdir -p "$out"
rm -rf "$run"
mkdir -p "$run"

if [ -z "${MEASURE_SKIP_BUILD:-}" ]; then
    cargo build --release --bin csipd
fi
csipd=${MEASURE_CSIPD:-$root/target/release/csipd}
# The simulated utility needs a build with the `lab` feature (`csipd demo`); a router
# binary (scripts/build-packages.sh) leaves it out, so MEASURE_UTILITY_CSIPD names
# another one then (e.g. target/release/csipd or target/debug/csipd).
utility_csipd=${MEASURE_UTILITY_CSIPD:-$csipd}
if ! "$utility_csipd" demo --help >/dev/null 2>&1; then
    echo "measure: $utility_csipd has no 'csipd demo' (a router build without the lab feature);" \
        "set MEASURE_UTILITY_CSIPD to a default build for the simulated utility" >&2
    exit 1
fi
[ -x "$peers_venv/bin/python" ] || { echo "measure: no peers venv at $peers_venv; run bash tests/setup.sh" >&2; exit 1; }

pyvenv=$root/target/py20305-venv
if [ "$with_py" = 1 ] && [ ! -x "$pyvenv/bin/py20305" ]; then
    echo "measure: installing py20305 from PyPI into $pyvenv" >&2
    if ! { python3 -m venv "$pyvenv" && "$pyvenv/bin/pip" install -q --disable-pip-version-check 'py20305[sunspec]==0.16.1'; }; then
        echo "measure: py20305 did not install; measuring csipd alone" >&2
        with_py=0
    fi
fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_line() { # file prefix -> the rest of the first line starting with prefix
    for _ in $(seq 600); do
        line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
        [ -n "$line" ] && { echo "${line#"$2"}"; return; }
        sleep 0.1
    done
    echo "measure: no '$2' line in $1" >&2
    exit 1
}
now_ms() { date +%s%3N; }

"$utility_csipd" demo --utility-only --day-s "${MEASURE_DAY_S:-86400}" >"$run/utility.out" 2>"$run/utility.err" &
pids+=($!)
dcap=$(wait_line "$run/utility.out" "dcap: ")
ca=$(wait_line "$run/utility.out" "ca: ")
cert=$(wait_line "$run/utility.out" "device cert: ")
key=$(wait_line "$run/utility.out" "device key: ")
lfdi=$(wait_line "$run/utility.out" "device lfdi: " | cut -d' ' -f1)
pin=$(wait_line "$run/utility.out" "pin: ")
report=$(wait_line "$run/utility.out" "report: " | cut -d' ' -f1)
base=${dcap%/dcap}

"$peers_venv/bin/python" tests/peers/sunspec_sim.py \
    --config tests/fixtures/brands/fronius-float.modbus.json --port 0 >"$run/modbus.out" 2>"$run/modbus.err" &
pids+=($!)
modbus_port=$(wait_line "$run/modbus.out" "READY ")

# The first request after $1 (Unix ms) on a new TLS connection: "DELAY_MS REQUEST".
first_request_after() {
    for _ in $(seq 600); do
        got=$(curl -sk "$report" | python3 -c '
import json, sys
t0 = int(sys.argv[1])
for f in json.load(sys.stdin).get("first_requests", []):
    if f["at_unix_ms"] >= t0 and "/sim/" not in f["request"]:
        print(f["at_unix_ms"] - t0, f["request"]); break
' "$1" 2>/dev/null || true)
        [ -n "$got" ] && { echo "$got"; return; }
        sleep 0.1
    done
    echo "none in 60 s"
}

status_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$run/csipd" <<CONF
config csipd 'main'
	option status_listen '127.0.0.1:$status_port'
	option log_level 'warn'
	option data_dir '$run/state'
	option telemetry_dir '$run/telemetry'
config server 'utility'
	option dcap_url '$dcap'
	option cert '$cert'
	option key '$key'
	option ca '$ca'
	option inband_registration '1'
	option registration_pin '$pin'
	option pen '12345'
	option nmi '4100000000'
config device 'inverter'
	option role 'inverter'
	option transport 'tcp'
	option host '127.0.0.1'
	option port '$modbus_port'
	option unit_id '1'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '127.0.0.1'
	option port '$modbus_port'
	option unit_id '240'
config control 'site'
	option cycle_s '1'
CONF
# MEASURE_METER_PERIOD_MS: the site meter's read period (csipd's default for a TCP meter
# is 500 ms: two meter reads a cycle, one fed forward between cycles).
[ -n "${MEASURE_METER_PERIOD_MS:-}" ] && printf "\toption meter_period_ms '%s'\n" "$MEASURE_METER_PERIOD_MS" >>"$run/csipd"

t0=$(now_ms)
"$csipd" run --config "$run/csipd" 2>"$run/csipd.err" >"$run/csipd.out" &
pid=$!
pids+=($pid)
first_csipd=$(first_request_after "$t0")

py_pid=""
first_py="not run"
if [ "$with_py" = 1 ]; then
    # The meter's own LFDI (py20305 wants one per device; the utility never sees it:
    # the meter is mirrored under the client's EndDevice).
    meter_lfdi=$(printf 'measure-site-meter' | sha1sum | cut -c1-40)
    cat >"$run/py20305.json" <<JSON
{
  "server": {"url": "$base"},
  "tls": {"client_cert": "$cert", "client_key": "$key", "ca_cert": "$ca", "check_hostname": false},
  "devices": [
    {"type": "sunspec", "lfdi": "$lfdi", "role": "der", "pin": $pin,
     "host": "127.0.0.1", "port": $modbus_port, "unit_id": 1},
    {"type": "sunspec", "lfdi": "$meter_lfdi", "role": "site_meter",
     "host": "127.0.0.1", "port": $modbus_port, "unit_id": 240}
  ],
  "logging": {"level": "WARNING"},
  "history": {"path": "$run/py20305-history.sqlite3"},
  "discovery": {"enabled": false},
  "advertise": {"transport": "off"}
}
JSON
    sleep 2 # csipd's first connection is recorded; the next new one is py20305's
    t1=$(now_ms)
    "$pyvenv/bin/py20305" -c "$run/py20305.json" >"$run/py20305.out" 2>"$run/py20305.err" &
    py_pid=$!
    pids+=($py_pid)
    first_py=$(first_request_after "$t1")
fi

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat"; }
db_kib() { du -sk "$1" 2>/dev/null | awk '{print $1}' || echo 0; }
header="t_s,rss_kib,anon_kib,file_kib,shmem_kib,hwm_kib,threads,cpu_s,telemetry_dir_kib,data_dir_kib"
echo "$header" >"$out/csipd.csv"
[ -n "$py_pid" ] && echo "$header" >"$out/py20305.csv"
row() { # pid telemetry_dir data_dir
    echo "$(kib "$1" VmRSS),$(kib "$1" RssAnon),$(kib "$1" RssFile),$(kib "$1" RssShmem),$(kib "$1" VmHWM),$(kib "$1" Threads),$(cpu_s "$1"),$2,$3"
}
start=$(date +%s)
end=$((start + minutes * 60))
while :; do
    now=$(date +%s)
    [ "$now" -ge "$end" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "measure: csipd exited early; see $run/csipd.err" >&2; exit 1; }
    echo "$((now - start)),$(row "$pid" "$(db_kib "$run/telemetry")" "$(db_kib "$run/state")")" >>"$out/csipd.csv"
    if [ -n "$py_pid" ]; then
        if kill -0 "$py_pid" 2>/dev/null; then
            echo "$((now - start)),$(row "$py_pid" 0 0)" >>"$out/py20305.csv"
        else
            echo "measure: py20305 exited early; see $run/py20305.err" >&2
            py_pid=""
        fi
    fi
    sleep "$sample_s"
done
curl -sk "$report" >"$run/report.json" || true
# Where the resident pages are, per mapping (/proc/PID/smaps): the binary's own
# segments, heap, stacks, libraries.
mappings=$(awk '
    /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon]" : $6) " " $2; next }
    $1 == "Size:" { size[name] += $2; next }
    $1 == "Rss:" { rss[name] += $2; next }
    END { for (n in rss) if (rss[n] > 0) printf "  %s: %d of %d KiB resident\n", n, rss[n], size[n] }
' "/proc/$pid/smaps" | sort -t: -k2 -rn)
threads_by_name=$(for t in /proc/"$pid"/task/*; do cat "$t/comm"; done | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')

# Restart on the store the run wrote: the first request again.
kill -TERM "$pid"
wait "$pid" || { echo "measure: csipd did not stop cleanly" >&2; exit 1; }
t2=$(now_ms)
"$csipd" run --config "$run/csipd" 2>>"$run/csipd.err" >>"$run/csipd.out" &
pid2=$!
pids+=($pid2)
first_restart=$(first_request_after "$t2")
kill -TERM "$pid2"
wait "$pid2" || true

summary=$out/summary.txt
{
    echo "csipd measurement: $minutes min, sample every $sample_s s, warm-up $warm_up_s s"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+changes')"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "machine: $(uname -m), $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine)"
    echo "binary: $(stat -c %s "$csipd") bytes ($csipd)"
    echo "utility: $dcap ($utility_csipd demo --utility-only --day-s ${MEASURE_DAY_S:-86400}); devices: pymodbus on port $modbus_port"
    echo "utility report: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["requests"], "requests,", r["tls_connections"], "TLS connections,", len(r["responses"]), "responses,", r["readings_accepted"], "readings accepted")' "$run/report.json" 2>/dev/null || echo unavailable)"
    echo "first request after spawn, ms: csipd (fresh data_dir) $first_csipd; csipd (restart on its store) $first_restart; py20305 $first_py"
    echo "csipd threads at the end (/proc/PID/task/*/comm): $threads_by_name"
    echo "csipd stderr lines: $(wc -l <"$run/csipd.err") (in $run/csipd.err)"
    echo "site meter read every: ${MEASURE_METER_PERIOD_MS:-500 (default for TCP)} ms"
    echo "binary's file system: $(stat -f -c %T "$csipd"); read-ahead of its device: $(cat "/sys/dev/block/$(mountpoint -d "$(stat -c %m "$csipd")" 2>/dev/null)/queue/read_ahead_kb" 2>/dev/null || echo '?') KiB"
    echo "csipd resident pages by mapping at the end (/proc/PID/smaps):"
    echo "$mappings"
} >"$summary"
venv=$root/target/soak-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check matplotlib
fi
echo "--- csipd run" >>"$summary"
"$venv/bin/python" scripts/soak/plot.py "$out/csipd.csv" "$out/csipd.svg" "$warm_up_s" \
    "csipd run (release) against the simulated utility and pymodbus devices" >>"$summary"
if [ -s "$out/py20305.csv" ] && [ "$(wc -l <"$out/py20305.csv")" -gt 2 ]; then
    echo "--- py20305 $("$pyvenv/bin/python" -c 'import importlib.metadata as m; print(m.version("py20305"))') (python $("$pyvenv/bin/python" -c 'import platform; print(platform.python_version())'); venv $(du -sm "$pyvenv" | cut -f1) MB)" >>"$summary"
    "$venv/bin/python" scripts/soak/plot.py "$out/py20305.csv" "$out/py20305.svg" "$warm_up_s" \
        "py20305 against the same utility and devices" >>"$summary"
    echo "py20305 stderr lines: $(wc -l <"$run/py20305.err") (in $run/py20305.err)" >>"$summary"
fi
if [ "${MEASURE_LOAD_STEP:-1}" = 1 ]; then
    # Issue 21's load step on the demo's physics (sim::site: first-order inverters of
    # tau 1 s), through the whole coordinator step on a virtual clock: settling and
    # overshoot after a 3 kW load drop at six phases of the 1 s cycle, with the meter
    # read once a cycle and every 500 ms (TCP's default) / 200 ms with the feed-forward.
    echo "--- load step (virtual time: cargo test --lib three_kw_load_drop -- --nocapture --test-threads 1)" >>"$summary"
    if cargo test --lib three_kw_load_drop -- --nocapture --test-threads 1 >"$run/load-step.out" 2>&1; then
        grep -o 'τ .*' "$run/load-step.out" >>"$summary"
    else
        echo "load-step tests failed: see $run/load-step.out" >>"$summary"
    fi
fi
cat "$summary"
