#!/usr/bin/env bash
# Closed-loop latency of the echo, default settings (the adaptive spin of
# 50 µs before sleeping), with --spin 0 (sleeping at once, the engine's
# default) and with --busy-poll, against `sockperf
# server`: `sockperf ping-pong -m 64` (half round trips, as sockperf reports
# them) from CPU 1 against each server on CPU 0, the servers taking turns at
# going first, ROUNDS rounds of SECS seconds, with each server's own CPU per
# round trip (every thread's run time from /proc over sockperf's received
# messages: what its latency costs; and CPU 0's busy time, softirqs
# included, over the same messages); then the default and the --spin 0
# servers' CPU use while idle (every thread's run time in ns and wake-ups,
# from /proc, over IDLE seconds, and their CPU's iowait ticks).
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
# CPU 0's idle time (idle and iowait, /proc/stat, in clock ticks) and the
# time now (ns): its busy time over a run is the wall time less the idle,
# softirqs included. The scheduler's account of a thread (schedstat) leaves
# out the time its CPU spends in interrupts and softirqs, where loopback
# delivers a datagram; /proc/stat's busy columns are sampled at ticks,
# which a CPU that sleeps between short bursts mostly does not take (they
# read a sleeping server at 0.65-0.77x of this), where its idle time is
# kept exactly (NO_HZ).
cpu0_idle() { echo "$(awk '$1 == "cpu0" {print $5 + $6}' /proc/stat) $(date +%s%N)"; }
run() { # name port -> "p50 p99 cpu" of one ping-pong against that server
  local PORT=$2
  case "$1" in
    sockperf|control) taskset -c 0 sockperf server -i 127.0.0.1 -p $PORT >/dev/null 2>&1 & ;;
    udpring) taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q >/dev/null 2>&1 & ;;
    busy) taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q --busy-poll >/dev/null 2>&1 & ;;
    sleep) taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q --spin 0 >/dev/null 2>&1 & ;;
  esac
  local pid=$!
  sleep 0.5
  local c0 c1
  c0=$(cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {printf "%d\n", s}')
  read -r i0 t0 < <(cpu0_idle)
  taskset -c 1 sockperf ping-pong -i 127.0.0.1 -p $PORT -t "$SECS" -m 64 > /tmp/udpring-pp.$$ 2>&1
  c1=$(cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {printf "%d\n", s}')
  read -r i1 t1 < <(cpu0_idle)
  CPU_NS=$((c1 - c0)) IDLE_TICKS=$((i1 - i0)) WALL_NS=$((t1 - t0)) python3 -c '
import os, re, sys
t = open(sys.argv[1]).read()
get = lambda q: (re.search(r"percentile %s =\s+([\d.]+)" % q, t) or [None, "nan"])[1]
n = re.search(r"ReceivedMessages=(\d+)", t)
m = int(n[1]) if n and int(n[1]) else float("nan")
cpu = int(os.environ["CPU_NS"]) / 1e3 / m
idle_us = int(os.environ["IDLE_TICKS"]) * 1e6 / os.sysconf("SC_CLK_TCK")
busy = (int(os.environ["WALL_NS"]) / 1e3 - idle_us) / m
print(get("50\\.000"), get("99\\.000"), "%.2f" % cpu, "%.2f" % busy)' /tmp/udpring-pp.$$
  rm -f /tmp/udpring-pp.$$
  kill -INT $pid 2>/dev/null || true
  for _ in $(seq 20); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  kill -KILL $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
}
echo "commit $(git rev-parse --short HEAD), kernel $(uname -r); command: ROUNDS=$ROUNDS SECS=$SECS IDLE=$IDLE tools/perf/latency.sh"
echo "round server p50_us p99_us (half RTT) server_cpu_us_per_round_trip cpu0_busy_us_per_round_trip"
SERVERS=(sockperf udpring sleep busy control)
for r in $(seq "$ROUNDS"); do
  # Each server goes first in turn.
  for k in $(seq 0 $((${#SERVERS[@]} - 1))); do
    s=${SERVERS[$(((k + r - 1) % ${#SERVERS[@]}))]}
    PORT=$((PORT + 1))
    echo "$r $s $(run $s $PORT)"
  done
done | tee /tmp/udpring-latency.$$
python3 - /tmp/udpring-latency.$$ <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = {}
for r, s, p50, p99, cpu, busy in rows:
    by.setdefault(int(r), {})[s] = (float(p50), float(p99), float(cpu), float(busy))
med = lambda f: statistics.median(f(v) for v in by.values())
print()
print("| server | p50 µs (median) | p99 µs (median) | p50 / sockperf's | p99 / sockperf's | server CPU µs per round trip | CPU / sockperf's | CPU 0 busy µs per round trip | CPU 0 busy / sockperf's |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
names = {"sockperf": "sockperf server", "udpring": "udpring echo (default: spin 50 µs)", "sleep": "udpring echo --spin 0", "busy": "udpring echo --busy-poll", "control": "sockperf server again (the control)"}
for s in ["sockperf", "udpring", "sleep", "busy", "control"]:
    p50, p99, cpu, busy = (med(lambda v, i=i: v[s][i]) for i in range(4))
    r = [med(lambda v, i=i: v[s][i] / v["sockperf"][i]) for i in range(4)]
    print(f"| {names[s]} | {p50:.2f} | {p99:.2f} | {r[0]:.2f}x | {r[1]:.2f}x | {cpu:.2f} | {r[2]:.2f}x | {busy:.2f} | {r[3]:.2f}x |")
PY
rm -f /tmp/udpring-latency.$$
# Idle: the default (spinning) and the --spin 0 server with nothing to do
# (each answers a few pings first, so that the spinning one has spun).
for args in "" "--spin 0"; do
  PORT=$((PORT + 1))
  taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q $args >/dev/null 2>&1 &
  pid=$!
  sleep 0.5
  taskset -c 1 sockperf ping-pong -i 127.0.0.1 -p $PORT -t 1 -m 64 >/dev/null 2>&1 || true
  sleep 0.5
  # Every thread's run time in ns (schedstat) and its sleeps (voluntary
  # context switches), summed over the process.
  cpu() { cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {print s}'; }
  wakes() { cat /proc/$pid/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
  # CPU 0's iowait in clock ticks (/proc/stat): what `top` shows as "wa".
  iowait() { awk '$1 == "cpu0" {print $6}' /proc/stat; }
  a=$(cpu); wa=$(wakes); ia=$(iowait); sleep "$IDLE"; b=$(cpu); wb=$(wakes); ib=$(iowait)
  kill -INT $pid; wait $pid 2>/dev/null || true
  python3 -c "print(f'idle server (echo ${args:-default}): {($b - $a) / 1e9 / $IDLE * 100:.3f}% of a CPU over $IDLE s ({($b - $a) / 1e6:.2f} ms of CPU, {$wb - $wa} wake-ups); its CPU in iowait {$ib - $ia} of {$IDLE * 100} ticks')"
done
