#!/usr/bin/env bash
# Where a ping's microseconds go: `udpring load --mode ping
# --kernel-timestamps` against `udpring echo --kernel-timestamps`, server
# on CPU 0, client on CPU 1, 64 B on loopback, with and without
# --busy-poll on both sides, ROUNDS interleaved rounds of SECS seconds.
# Prints each stage's p50/p99 (median over rounds) for the client
# (send_path, wire_and_server, receive_queue) and the server
# (receive_queue, reply_path), and, as the cost of asking, the RTT p50
# of the same pair without --kernel-timestamps in the same round.
#
#   tools/kstamps.sh [UDPRING] [ROUNDS] [SECS]
set -euo pipefail
bin=${1:-target/release/udpring}
rounds=${2:-3}
secs=${3:-4}
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true' EXIT

one() { # busy(0/1) kstamps(0/1) round
  local busy=$1 ks=$2 r=$3 port extra=() kflag=()
  port=$((20000 + RANDOM % 20000))
  [ "$busy" = 1 ] && extra=(--busy-poll)
  [ "$ks" = 1 ] && kflag=(--kernel-timestamps)
  "$bin" echo --bind "127.0.0.1:$port" --workers 1 --cpu 0 -q --json \
    --duration $((secs + 3)) "${extra[@]}" "${kflag[@]}" \
    > "$out/srv-$busy-$ks-$r.json" 2> "$out/srv.txt" &
  srv=$!
  for _ in $(seq 50); do grep -q "listening on" "$out/srv.txt" 2>/dev/null && break; sleep 0.05; done
  "$bin" load "127.0.0.1:$port" --mode ping -t "$secs" --warmup 0.3 -s 64 \
    --cpu 1 -q --json "${extra[@]}" "${kflag[@]}" > "$out/load-$busy-$ks-$r.json"
  kill -INT "$srv" 2>/dev/null || true
  wait "$srv" 2>/dev/null || true
  srv=
}

for r in $(seq "$rounds"); do
  for busy in 0 1; do
    for ks in 0 1; do one "$busy" "$ks" "$r"; done
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(p):
    with open(p) as f:
        return json.load(f)
med = statistics.median
print("| busy-poll | side | stage | p50 µs | p99 µs | p50 per round |")
print("|---|---|---|---:|---:|---|")
for busy in (0, 1):
    b = "on" if busy else "off"
    rows = {}
    for r in range(1, rounds + 1):
        c = load(f"{out}/load-{busy}-1-{r}.json")
        s = load(f"{out}/srv-{busy}-1-{r}.json")
        for side, doc in (("client", c), ("server", s)):
            for st in doc["kernel_timestamps"]["stages"]:
                rows.setdefault((side, st["stage"]), []).append((st["p50"], st["p99"]))
        rows.setdefault(("client", "rtt (own clock)"), []).append((c["rtt_us"]["p50"], c["rtt_us"]["p99"]))
        plain = load(f"{out}/load-{busy}-0-{r}.json")
        rows.setdefault(("client", "rtt without --kernel-timestamps"), []).append((plain["rtt_us"]["p50"], plain["rtt_us"]["p99"]))
    for (side, stage), v in rows.items():
        p50 = med(x[0] for x in v); p99 = med(x[1] for x in v)
        per = " ".join(f"{x[0]:.1f}" for x in v)
        print(f"| {b} | {side} | {stage} | {p50:.1f} | {p99:.1f} | {per} |")
PY
