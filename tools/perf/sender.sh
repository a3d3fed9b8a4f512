#!/usr/bin/env bash
# The standing run's "sender, 64 B" row alone, with more rounds: `udpring
# load --match none` (one datagram per send, no GSO) beside the C loop of
# one send(2) per datagram (`udpring reference send`), each on CPU 1 into
# the same C sink on CPU 0 (`udpring reference sink`: recvmmsg + GRO),
# SECS seconds each, taking turns at going first, ROUNDS rounds. Prints
# each round's received/s and ratio (udpring over the C loop: the
# denominator), then the median and range.
#
#   ROUNDS=9 SECS=3 SIZE=64 tools/perf/sender.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
U=$PWD/target/release/udpring
ROUNDS=${ROUNDS:-9}
SECS=${SECS:-3}
SIZE=${SIZE:-64}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cargo build --release -q

into_sink() { # sender command (SINK for the sink's address)... -> received/s
  local p=$((30000 + RANDOM % 20000)) k
  taskset -c 0 "$U" reference sink --bind "127.0.0.1:$p" --json > "$OUT/sink.json" 2>/dev/null &
  k=$!
  sleep 0.3
  taskset -c 1 "${@//SINK/127.0.0.1:$p}" >/dev/null 2>&1 || true
  kill -INT "$k" 2>/dev/null || true
  wait "$k" 2>/dev/null || true
  python3 -c "import json, sys; print(int(json.load(sys.stdin)['pps_received']))" < "$OUT/sink.json"
}

echo "sender.sh on $(git rev-parse --short HEAD): $SIZE B, $ROUNDS rounds of $SECS s"
echo "round udpring_load c_send ratio"
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then
    x=$(into_sink "$U" load SINK --match none -s "$SIZE" -t "$SECS" -q)
    y=$(into_sink "$U" reference send SINK -s "$SIZE" --gso 1 -t "$SECS")
  else
    y=$(into_sink "$U" reference send SINK -s "$SIZE" --gso 1 -t "$SECS")
    x=$(into_sink "$U" load SINK --match none -s "$SIZE" -t "$SECS" -q)
  fi
  echo "$r $x $y $(python3 -c "print(round($x / $y, 3))")" | tee -a "$OUT/rows"
done
python3 - "$OUT/rows" <<'PY'
import statistics, sys
r = [float(l.split()[3]) for l in open(sys.argv[1])]
print(f"median {statistics.median(r):.2f}x (per round {min(r):.2f}-{max(r):.2f}x)")
PY
