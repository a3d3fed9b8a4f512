#!/usr/bin/env bash
# The xdp backend against the kernel's socket path on one veth pair
# (tools/netns.sh xdp-up: one queue per end, checksum offload and UDP
# segmentation off, so GSO trains are cut into frames before the veth and
# both paths see frames). Receivers in B on CPU 0, senders in A on CPU 1;
# ROUNDS alternating rounds of SECS seconds each:
#   receive: `sink --backend xdp` vs `sink` (uring) under the same
#            `load --match none --unbounded --gso 64` sender (received/s);
#   echo:    `echo --backend xdp` vs `echo` (uring) under the same flood
#            (`load --unbounded --gso 64`, echoes received/s by the client);
#   send:    `load --backend xdp` vs `load --backend mmsg` (GSO off) and
#            `load --gso 64`, into the same kernel sink (received/s).
# Needs root. Prints one table: medians, and the median of the rounds'
# ratios; with ROWS=FILE also appends the rows in standing.sh's format.
#   ROUNDS=3 SECS=3 tools/perf/xdp.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
SIZE=${SIZE:-64}
U=$PWD/target/release/udpring
cargo build --release -q -p udpring-cli
N=xperf$$
T=$(mktemp -d) # the runs' JSON
trap 'bash tools/netns.sh down $N; rm -rf "$T"' EXIT
bash tools/netns.sh xdp-up $N
A() { ip netns exec $N-a "$@"; }
B() { ip netns exec $N-b "$@"; }
# Warm the neighbour tables both ways.
A ping -q -c 1 -W 2 10.202.0.2 >/dev/null
B ping -q -c 1 -W 2 10.202.0.1 >/dev/null
PORT=7100
rate() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]] / float(sys.argv[3]))' "$@"; }
sinkrun() { # backend-args... -> received/s at the sink under the GSO flood
  PORT=$((PORT + 1))
  B taskset -c 0 "$U" sink -b 10.202.0.2:$PORT --duration $((SECS + 3)) --json "$@" >$T/sink 2>/dev/null &
  local pid=$!; sleep 1
  A taskset -c 1 "$U" load 10.202.0.2:$PORT --match none --unbounded --gso 64 --size $SIZE -t $SECS -q --json >$T/load
  wait $pid
  rate $T/sink received "$(python3 -c 'import json; print(json.load(open("'$T'/load"))["duration_s"])')"
}
echorun() { # backend-args... -> echoes/s at the client
  PORT=$((PORT + 1))
  B "$U" echo -b 10.202.0.2:$PORT -w 1 --duration $((SECS + 3)) -q "$@" >/dev/null 2>&1 &
  local pid=$!; sleep 1
  A taskset -c 1 "$U" load 10.202.0.2:$PORT --unbounded --gso 64 --size $SIZE -t $SECS -q --json >$T/load
  wait $pid
  python3 -c 'import json; print(json.load(open("'$T'/load"))["pps_received"])'
}
sendrun() { # load-args... -> received/s at one kernel sink
  PORT=$((PORT + 1))
  B taskset -c 0 "$U" sink -b 10.202.0.2:$PORT --duration $((SECS + 3)) --json >$T/sink 2>/dev/null &
  local pid=$!; sleep 1
  A taskset -c 1 "$U" load 10.202.0.2:$PORT --match none --unbounded --size $SIZE -t $SECS -w 1 -q --json "$@" >$T/load
  wait $pid
  rate $T/sink received "$(python3 -c 'import json; print(json.load(open("'$T'/load"))["duration_s"])')"
}
declare -A R
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="k x"; else order="x k"; fi
  for o in $order; do
    if [ $o = x ]; then
      R[rx_xdp]+="$(sinkrun --backend xdp) "
      R[echo_xdp]+="$(echorun --backend xdp) "
      R[tx_xdp]+="$(sendrun --backend xdp --iface x0) "
    else
      R[rx_kernel]+="$(sinkrun) "
      R[echo_uring]+="$(echorun --backend uring) "
      R[tx_mmsg]+="$(sendrun --backend mmsg) "
      R[tx_gso]+="$(sendrun --gso 64) "
    fi
  done
done
python3 - "$ROUNDS" "$SECS" "$SIZE" "$(git rev-parse --short HEAD)" "${ROWS:-}" \
  "${R[rx_xdp]}" "${R[rx_kernel]}" "${R[echo_xdp]}" "${R[echo_uring]}" \
  "${R[tx_xdp]}" "${R[tx_mmsg]}" "${R[tx_gso]}" <<'PY'
import statistics, sys
rounds, secs, size, commit, rows = sys.argv[1:6]
v = [list(map(float, a.split())) for a in sys.argv[6:]]
rx_x, rx_k, ec_x, ec_u, tx_x, tx_m, tx_g = v
med = statistics.median
def row(name, a, b, base):
    r = [x / y if y else float("nan") for x, y in zip(a, b)]
    print(f"| {name} | {med(a)/1e3:,.0f}k/s | {med(b)/1e3:,.0f}k/s ({base}) | **{med(r):.2f}x** | {', '.join(f'{x:.2f}' for x in r)} |")
    if rows:
        with open(rows, "a") as f:
            f.write(f"xdp: {name}|{med(a):.0f}|{base}|{med(b):.0f}|{med(r)}|datagrams/s (veth pair)\n")
print(f"xdp.sh on {commit}: veth pair, {size} B payloads, {rounds} alternating rounds of {secs} s, medians")
print()
print("| what | xdp | baseline | ratio | per round |")
print("|---|---|---|---|---|")
row("receive: sink --backend xdp vs sink, GSO sender cut before the veth", rx_x, rx_k, "sink, uring")
row("echo under the same flood: echoes the client got", ec_x, ec_u, "echo, uring")
row("send: load --backend xdp into one kernel sink", tx_x, tx_m, "load --backend mmsg, GSO off")
row("send: load --backend xdp vs UDP GSO (--gso 64)", tx_x, tx_g, "load --gso 64")
PY
