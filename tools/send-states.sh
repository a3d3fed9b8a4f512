#!/usr/bin/env bash
# The two steady states of a GSO sender into a sink that sleeps when its
# socket is empty (PERF.md): round by round, what the
# sender sent per interval (its own count), what the sink received, how
# often the sink went to sleep, and the sender's page allocations per
# train (the kernel's copy target: new pages, or pages the sink just
# read). One sender per round: udpring load (--match none), or with
# SENDER=c the C UDP_SEGMENT loop (`udpring reference send`), whose own
# figure is only its total.
#
#   tools/send-states.sh [UDPRING] [ROUNDS] [SECS] [-- LOAD ARGS...]
#
# LOAD ARGS default to `--gso 46 -s 1400`. The sink is `udpring reference
# sink` on CPU 0 (recvmmsg of 64, UDP_GRO), the sender on CPU 1. Needs
# perf for the sleeps and page allocations (else they read -1).
set -euo pipefail
bin=${1:-target/release/udpring}
rounds=${2:-8}
secs=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--gso 46 -s 1400)
# shellcheck source=tools/send-lib.sh
source "$(dirname "$0")/send-lib.sh"
ref_args_of "${args[@]}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
perf_ok=0
perf stat -e sched:sched_switch,kmem:mm_page_alloc -C 0 -o /dev/null -- true > /dev/null 2>&1 && perf_ok=1

echo "sender: ${SENDER:-udpring} ${args[*]}; sent/s per 0.5 s (millions), then the run's"
echo "| round | sender's own rate per 0.5 s, M/s | sent M/s | sink M/s | sink sleeps /s | page allocs per train |"
echo "|---:|---|---:|---:|---:|---:|"
for r in $(seq 1 "$rounds"); do
  port=$((20000 + RANDOM % 20000))
  "$bin" reference sink --bind "127.0.0.1:$port" --cpu 0 --json \
    --duration "$(python3 -c "print($secs + 1.5)")" > "$out/sink.json" 2>/dev/null &
  s=$!
  sleep 0.3
  if [ "${SENDER:-}" = c ]; then
    cmd=("$bin" reference send "127.0.0.1:$port" --cpu 1 -t "$secs" --json "${ref_args[@]}")
  else
    cmd=("$bin" load "127.0.0.1:$port" --match none --cpu 1 -t "$secs" -i 0.5 --csv "${args[@]}")
  fi
  if [ $perf_ok = 1 ]; then
    # Sleeps: switches away from a task going to sleep on CPU 0 (the
    # sink's); allocations: CPU 1's, the sender's.
    perf stat -x, -e sched:sched_switch --filter 'prev_state == 1' -C 0 -o "$out/s0.txt" -- \
      perf stat -x, -e kmem:mm_page_alloc -C 1 -o "$out/s1.txt" -- \
      "${cmd[@]}" > "$out/send.out" 2>/dev/null || true
  else
    "${cmd[@]}" > "$out/send.out" 2>/dev/null || true
  fi
  wait "$s"
  python3 - "$out" "$r" "$secs" "$perf_ok" "${args[*]}" <<'EOF'
import csv, json, sys
out, r, secs, perf, args = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5].split()
sink = json.load(open(f"{out}/sink.json"))
text = open(f"{out}/send.out").read()
gso = int(args[args.index("--gso") + 1]) if "--gso" in args else 1
if text.lstrip().startswith("{"):
    sent, per = json.loads(text)["sent"], "-"
else:
    rows = list(csv.DictReader(l for l in text.splitlines() if l and l[0] in "e0123456789"))
    sent = int(rows[-1]["sent"]) if rows else 0
    per = " ".join("%.1f" % (float(x["pps_sent"]) / 1e6) for x in rows if x["draining"] == "0")
def first(f):
    for l in open(f):
        if l[:1].isdigit():
            return float(l.split(",")[0])
    return -1.0
sleeps = first(f"{out}/s0.txt") / secs if perf else -1
allocs = first(f"{out}/s1.txt") / max(sent / gso, 1) if perf else -1
print(f"| {r} | {per} | {sent / secs / 1e6:.2f} | {sink['pps_received'] / 1e6:.2f} | {sleeps:.0f} | {allocs:.2f} |")
EOF
done
