#!/usr/bin/env bash
# udpring load --dns-queries beside dnsperf, same NSD, same query file, same
# number of queries in flight, rounds interleaved; and udpring's templated
# mode (a payload with an ID) beside its own echo mode into the same echo
# server. Loopback only. Needs nsd and dnsperf (apt-get install nsd dnsperf).
#
#   tools/dns-compare.sh [ROUNDS] [SECS] [INFLIGHT]
#
# CPUs: the server on CPU 0, every client on CPU 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
INFLIGHT=${3:-100}
U=${U:-target/release/udpring}
[ -x "$U" ] || cargo build --release -q
command -v nsd >/dev/null && command -v dnsperf >/dev/null || {
  echo "needs nsd and dnsperf (apt-get install nsd dnsperf)" >&2; exit 2; }

D=$(mktemp -d)
trap 'kill $NSD $EP 2>/dev/null || true; rm -rf "$D"' EXIT
PORT=15353
. tools/peers/nsd.sh
nsd_start "$D" "$PORT" 0

echo "dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p'), $(nsd -v 2>&1 | head -1), $ROUNDS rounds x $SECS s, $INFLIGHT in flight, NSD on CPU 0, clients on CPU 1"
echo
echo "| round | tool | queries/s | p50 us | p99 us | avg us | stddev us | lost |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$D/q.txt" -l "$SECS" -q "$INFLIGHT" -c 1 -T 1 2>&1)
  qps=$(echo "$out" | sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p')
  avg=$(echo "$out" | sed -n 's/.*Average Latency (s): *\([0-9.]*\).*/\1/p')
  sd=$(echo "$out" | sed -n 's/.*Latency StdDev (s): *\([0-9.]*\).*/\1/p')
  lost=$(echo "$out" | sed -n 's/.*Queries lost: *\([0-9]*\).*/\1/p')
  python3 -c "print('| $r | dnsperf | %.0f | - | - | %.1f | %.1f | $lost |' % ($qps, $avg * 1e6, $sd * 1e6))"
  taskset -c 1 $U load 127.0.0.1:$PORT --dns-queries "$D/q.txt" -t "$SECS" --window "$INFLIGHT" \
      --json -q | python3 -c "
import json, sys
d = json.load(sys.stdin); r = d['rtt_us']
print('| $r | udpring | %.0f | %.1f | %.1f | %.1f | - | %d |' % (d['pps_received'], r['p50'], r['p99'], r['mean'], d['lost']))"
done

echo
echo "Templated (a 64-byte payload, ID at 0..2) vs udpring's own header, into one udpring echo:"
taskset -c 0 $U echo --bind 127.0.0.1:9700 -w 1 --no-pin -q --duration 600 >/dev/null & EP=$!
sleep 0.4
PAY=$(python3 -c "print('00' * 64)")
echo
echo "| round | header pps | templated pps | templated / header |"
echo "|---|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  h=$(taskset -c 1 $U load 127.0.0.1:9700 -s 64 -t "$SECS" --json -q | python3 -c "import json,sys; print(json.load(sys.stdin)['pps_received'])")
  t=$(taskset -c 1 $U load 127.0.0.1:9700 --payload "$PAY" --match id:0:2 -t "$SECS" --json -q | python3 -c "import json,sys; print(json.load(sys.stdin)['pps_received'])")
  python3 -c "print('| $r | %.0f | %.0f | %.3f |' % ($h, $t, $t / $h))"
done
