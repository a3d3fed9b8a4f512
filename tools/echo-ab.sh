#!/usr/bin/env bash
# Before/after of the echo server alone, in one run: `udpring echo` from two
# builds (A, B), each backend, as a process pinned to CPU 0, flooded by the
# same client (B's `udpring load --window 256` on CPU 1), interleaved round
# by round. Reports echoed/s and the server's CPU time per echo (user+system
# from /proc/PID/stat over the run, divided by what it echoed): on a shared
# VM the rate moves with the neighbours, CPU per echo much less.
#
#   tools/echo-ab.sh OLD_UDPRING NEW_UDPRING [ROUNDS] [SECS] [SIZE]
#
# BACKENDS picks the backends (default: simple mmsg uring); BIND the
# server's bind address (default 127.0.0.1; 0.0.0.0 for a wildcard
# server, which answers from the address asked); A_ARGS / B_ARGS more
# flags for A's / B's server (one build, two settings:
# `A_ARGS=--no-coalesce tools/echo-ab.sh U U`). The client always sends
# to 127.0.0.1.
set -euo pipefail
a=${1:?old udpring binary}
b=${2:?new udpring binary}
rounds=${3:-5}
secs=${4:-3}
size=${5:-64}
backends=${BACKENDS:-simple mmsg uring}
bind=${BIND:-127.0.0.1}
hz=$(getconf CLK_TCK)
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one() { # side binary backend round
  local side=$1 bin=$2 be=$3 r=$4 port extra
  port=$((20000 + RANDOM % 20000))
  extra=${A_ARGS:-}
  [ "$side" = b ] && extra=${B_ARGS:-}
  # shellcheck disable=SC2086 # extra flags, word-split on purpose
  "$bin" echo --bind "$bind:$port" --backend "$be" --workers 1 --cpu 0 -q $extra \
    > "$out/srv.txt" 2>&1 &
  srv=$!
  for _ in $(seq 50); do grep -q "listening on" "$out/srv.txt" 2>/dev/null && break; sleep 0.05; done
  local c0 c1
  c0=$(cpu_ticks "$srv")
  "$b" load "127.0.0.1:$port" --window 256 -t "$secs" --warmup 0.3 -s "$size" \
    --cpu 1 -q --json > "$out/load.json" 2>/dev/null
  c1=$(cpu_ticks "$srv")
  kill -INT "$srv"; wait "$srv" 2>/dev/null || true; srv=
  python3 - "$out/load.json" "$side" "$be" "$r" "$((c1 - c0))" "$hz" >> "$out/rows.txt" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
side, be, rnd, ticks, hz = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
# The server echoed what came back, plus warm-up and drain traffic: count
# its CPU over what the client saw back in all (warm-up replies included).
back = r["received"] + r["warmup_replies"]
print(side, be, rnd, r["pps_received"], ticks / hz * 1e6 / max(back, 1))
EOF
}

for r in $(seq 1 "$rounds"); do
  for be in $backends; do
    # A and B take turns at running first (a fixed order can favour one).
    for who in $( ((r % 2)) && echo a b || echo b a); do
      bin=$a
      [ "$who" = b ] && bin=$b
      one "$who" "$bin" "$be" "$r"
    done
  done
  echo "round $r/$rounds done" >&2
done

python3 - "$out/rows.txt" "$a" "$b" "$rounds" "$secs" "$size" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, be, rnd, pps, cpu = line.split()
    d = rows.setdefault(be, {"a": [], "b": []})
    d[side].append((float(pps), float(cpu)))
a, b, rounds, secs, size = sys.argv[2:7]
import os
print(f"A = {a} {os.environ.get('A_ARGS', '')}\nB = {b} {os.environ.get('B_ARGS', '')}\n{rounds} rounds interleaved, {secs} s each, {size} B, "
      "server on CPU 0, client (B's load --window 256) on CPU 1\n")
print("| backend | A echoed/s | B echoed/s | B/A rate | A server CPU us/echo | B server CPU us/echo | B/A CPU | B/A CPU per round (min..max) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for be, d in rows.items():
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    pa, pb, ca, cb = med(d["a"], 0), med(d["b"], 0), med(d["a"], 1), med(d["b"], 1)
    per = sorted(y[1] / x[1] for x, y in zip(d["a"], d["b"]) if x[1] > 0)
    print(f"| {be} | {pa:.0f} | {pb:.0f} | {pb / pa:.2f}x | {ca:.2f} | {cb:.2f} | "
          f"{cb / ca:.2f}x | {per[0]:.2f}..{per[-1]:.2f} |")
print("\nCPU per echo below 1x: B spends less per datagram.")
EOF
