#!/usr/bin/env bash
# Closed-loop latency of the echo, default settings and with --busy-poll,
# against `sockperf server`: `sockperf ping-pong -m 64` (half round trips,
# as sockperf reports them) from CPU 1 against each server on CPU 0, the
# servers taking turns at going first, ROUNDS rounds of SECS seconds; then
# the default server's CPU use while idle (every thread's run time in ns and
# wake-ups, from /proc, over IDLE seconds, and its CPU's iowait ticks).
# A second `sockperf server` round (the control) measures the method: its
# ratio to the first is what these rounds cannot tell apart from 1.00x.
#   ROUNDS=5 SECS=5 IDLE=5 tools/perf/latency.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
IDLE=${IDLE:-5}
U=$PWD/target/release/udpring
cargo build --release -q -p udpring-cli
command -v sockperf >/dev/null || { echo "needs sockperf (apt-get install sockperf)" >&2; exit 1; }
PORT=$((30000 + RANDOM % 20000))
run() { # name -> "p50 p99" of one ping-pong against that server
  PORT=$((PORT + 1))
  case "$1" in
    sockperf|control) taskset -c 0 sockperf server -i 127.0.0.1 -p $PORT >/dev/null 2>&1 & ;;
    udpring) taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q >/dev/null 2>&1 & ;;
    busy) taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q --busy-poll >/dev/null 2>&1 & ;;
  esac
  local pid=$!
  sleep 0.5
  taskset -c 1 sockperf ping-pong -i 127.0.0.1 -p $PORT -t "$SECS" -m 64 2>&1 | python3 -c '
import re, sys
t = sys.stdin.read()
get = lambda q: (re.search(r"percentile %s =\s+([\d.]+)" % q, t) or [None, "nan"])[1]
print(get("50\\.000"), get("99\\.000"))'
  kill -INT $pid 2>/dev/null || true
  for _ in $(seq 20); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -KILL $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
}
echo "commit $(git rev-parse --short HEAD), kernel $(uname -r); command: ROUNDS=$ROUNDS SECS=$SECS IDLE=$IDLE tools/perf/latency.sh"
echo "round server p50_us p99_us (half RTT)"
for r in $(seq "$ROUNDS"); do
  case $((r % 4)) in
    1) order="sockperf udpring busy control" ;;
    2) order="udpring busy control sockperf" ;;
    3) order="busy control sockperf udpring" ;;
    0) order="control sockperf udpring busy" ;;
  esac
  for s in $order; do echo "$r $s $(run $s)"; done
done | tee /tmp/udpring-latency.$$
python3 - /tmp/udpring-latency.$$ <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = {}
for r, s, p50, p99 in rows:
    by.setdefault(int(r), {})[s] = (float(p50), float(p99))
print()
print("| server | p50 µs (median) | p99 µs (median) | p50 / sockperf's | p99 / sockperf's |")
print("|---|---:|---:|---:|---:|")
for s in ["sockperf", "udpring", "busy", "control"]:
    p50 = statistics.median(v[s][0] for v in by.values())
    p99 = statistics.median(v[s][1] for v in by.values())
    r50 = statistics.median(v[s][0] / v["sockperf"][0] for v in by.values())
    r99 = statistics.median(v[s][1] / v["sockperf"][1] for v in by.values())
    name = {"sockperf": "sockperf server", "udpring": "udpring echo (default)", "busy": "udpring echo --busy-poll", "control": "sockperf server again (the control)"}[s]
    print(f"| {name} | {p50:.2f} | {p99:.2f} | {r50:.2f}x | {r99:.2f}x |")
PY
rm -f /tmp/udpring-latency.$$
# Idle: the default server with nothing to do.
PORT=$((PORT + 1))
taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT -w 1 -q >/dev/null 2>&1 &
pid=$!
sleep 1
# Every thread's run time in ns (schedstat) and its sleeps (voluntary
# context switches), summed over the process.
cpu() { cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {print s}'; }
wakes() { cat /proc/$pid/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
# CPU 0's iowait in clock ticks (/proc/stat): what `top` shows as "wa".
iowait() { awk '$1 == "cpu0" {print $6}' /proc/stat; }
a=$(cpu); wa=$(wakes); ia=$(iowait); sleep "$IDLE"; b=$(cpu); wb=$(wakes); ib=$(iowait)
kill -INT $pid; wait $pid 2>/dev/null || true
python3 -c "print(f'idle default server: {($b - $a) / 1e9 / $IDLE * 100:.3f}% of a CPU over $IDLE s ({($b - $a) / 1e6:.2f} ms of CPU, {$wb - $wa} wake-ups); its CPU in iowait {$ib - $ia} of {$IDLE * 100} ticks')"
