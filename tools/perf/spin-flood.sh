#!/usr/bin/env bash
# Does the echo's default spin (50 µs before sleeping) cost anything at
# high load? The echo as it starts against `echo --spin 0`, one worker on
# CPU 0, the load on CPU 1, taking turns at going first, ROUNDS rounds of
# SECS seconds each: under `udpring load --sockperf --window 256` (64 B,
# echoes the client got per second) and under the C GSO flood (`udpring
# reference flood --gso 64`, segments echoed per second, echo --gro).
#   ROUNDS=6 SECS=3 tools/perf/spin-flood.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-6}
SECS=${SECS:-3}
U=$PWD/target/release/udpring
cargo build --release -q -p udpring-cli
PORT=$((30000 + RANDOM % 20000))
one() { # window|gso [echo flags...] -> datagrams/s the client counted
  local kind=$1; shift
  PORT=$((PORT + 1))
  local gro=() ; [ "$kind" = gso ] && gro=(--gro)
  taskset -c 0 "$U" echo --bind 127.0.0.1:$PORT --sockperf -w 1 -q "${gro[@]}" "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep 0.3
  if [ "$kind" = window ]; then
    taskset -c 1 "$U" load 127.0.0.1:$PORT --sockperf --window 256 -t "$SECS" --json -q
  else
    taskset -c 1 "$U" reference flood 127.0.0.1:$PORT -t "$SECS" -s 64 --gso 64 --json 2>/dev/null
  fi | python3 -c 'import json, sys; print(int(json.load(sys.stdin)["pps_received"]))'
  kill -INT $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
}
echo "commit $(git rev-parse --short HEAD), kernel $(uname -r); command: ROUNDS=$ROUNDS SECS=$SECS tools/perf/spin-flood.sh"
for kind in window gso; do
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then a=$(one $kind); b=$(one $kind --spin 0)
    else b=$(one $kind --spin 0); a=$(one $kind); fi
    echo "$kind $r $a $b"
  done
done | tee /tmp/udpring-spin-flood.$$
python3 - /tmp/udpring-spin-flood.$$ <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
print()
print("| flood | echo as it starts (median/s) | echo --spin 0 (median/s) | ratio (median of rounds) | per round |")
print("|---|---:|---:|---:|---|")
for kind, name in [("window", "64 B, 256 in flight (load --sockperf)"), ("gso", "C GSO flood, 64 x 64 B (echo --gro)")]:
    k = [r for r in rows if r[0] == kind]
    a = [int(r[2]) for r in k]; b = [int(r[3]) for r in k]
    rs = [x / y for x, y in zip(a, b)]
    print(f"| {name} | {statistics.median(a):,.0f} | {statistics.median(b):,.0f} | {statistics.median(rs):.2f}x | {', '.join('%.2f' % x for x in rs)} |")
PY
rm -f /tmp/udpring-spin-flood.$$
