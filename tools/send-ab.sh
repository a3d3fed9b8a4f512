#!/usr/bin/env bash
# Before/after of `udpring load` as a sender, in one run: two builds (A, B)
# into the same C sink (`udpring reference sink` on CPU 0: recvmmsg of 64,
# UDP_GRO on), each sender on CPU 1, SECS seconds, interleaved round by
# round (A first in odd rounds, B first in even ones) beside the C loops
# (`udpring reference send`: one send(2) per
# datagram, the denominator; and sendmmsg(2) of 32, the call A and B
# make on their default backend). The figure is what the sink counted per
# second. With perf, also the sink's wake-ups and the IPIs its CPU took,
# per datagram (sched:sched_wakeup, irq_vectors:call_function_single_entry
# on CPU 0): on loopback the sender's CPU pays for waking the sink, and
# the sink sleeps more often the longer the sender is away from the
# socket. Each round also gives the steal time on CPU 1 during each run,
# and what each sender says it sent over what the sink received, in
# datagrams (above 1: the sink was the limit and dropped the rest, so that
# run did not measure the sender); the summary gives the medians beside
# the means.
#
#   tools/send-ab.sh OLD_UDPRING NEW_UDPRING [ROUNDS] [SECS] [-- LOAD ARGS...]
#
# LOAD ARGS default to `-s 64` (add e.g. `--gso 64 -s 64`; the C loops get
# the same -s and --gso). The C loops are B's `udpring reference`.
# SINK_ARGS (environment) go to the sink, e.g. SINK_ARGS=--spin: a sink
# that never sleeps, so that no sender pays for waking it.
set -euo pipefail
a=${1:?old udpring binary}
b=${2:?new udpring binary}
rounds=${3:-5}
secs=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-s 64)
# shellcheck source=tools/send-lib.sh
source "$(dirname "$0")/send-lib.sh"
ref_args_of "${args[@]}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
perf_ok=0
perf stat -e sched:sched_wakeup -C 0 -o /dev/null -- true > /dev/null 2>&1 && perf_ok=1

# run NAME command... (PORT in the command is the sink's port)
run() {
  local name=$1; shift
  local port=$((20000 + RANDOM % 20000))
  # shellcheck disable=SC2086 # SINK_ARGS is a list of words
  "$b" reference sink --bind "127.0.0.1:$port" --cpu 0 --json ${SINK_ARGS:-} \
    --duration "$(python3 -c "print($secs + 1.5)")" > "$out/sink.json" 2>/dev/null &
  local s=$!
  sleep 0.3
  local cmd=("${@//PORT/$port}")
  local st0
  st0=$(steal_ticks)
  if [ $perf_ok = 1 ]; then
    perf stat -x, -e sched:sched_wakeup,irq_vectors:call_function_single_entry -C 0 \
      -o "$out/stat.txt" -- "${cmd[@]}" > "$out/cmd.out" 2>/dev/null || true
  else
    "${cmd[@]}" > "$out/cmd.out" 2>/dev/null || true
  fi
  local st1
  st1=$(steal_ticks)
  wait "$s"
  python3 - "$out" "$name" "$perf_ok" "$st0" "$st1" "$secs" <<'EOF' >> "$out/rows"
import json, os, re, sys
out, name, perf = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
# What the sender says it handed the kernel, over what the sink got
# (counts, not rates: a load with --match none has no warm-up, so both
# count the same datagrams). Above 1.00, the sink dropped the rest at its
# socket: it was the limit, not the sender.
text = open(f"{out}/cmd.out").read()
try:
    sent = float(json.loads(text)["sent"])
except ValueError:
    m = re.search(r"(\d+) datagrams in", text)
    sent = float(m.group(1)) if m else -1.0
s = json.load(open(f"{out}/sink.json"))
sent = sent / s["received"] if sent > 0 and s["received"] else -1.0
# Steal on the sender's CPU while it ran: % of its time.
steal = (int(sys.argv[5]) - int(sys.argv[4])) / os.sysconf("SC_CLK_TCK") / float(sys.argv[6]) * 100
w = i = -1.0
if perf and s["received"]:
    v = [int(l.split(",")[0]) for l in open(f"{out}/stat.txt") if l[:1].isdigit()]
    if len(v) == 2:
        w, i = v[0] / s["received"], v[1] / s["received"]
print(name, s["pps_received"], w, i, f"{steal:.1f}", sent)
EOF
}

for r in $(seq 1 "$rounds"); do
  run "$r send" "$b" reference send 127.0.0.1:PORT --cpu 1 -t "$secs" "${ref_args[@]}"
  run "$r mmsg" "$b" reference send 127.0.0.1:PORT --cpu 1 -t "$secs" --mmsg 32 "${ref_args[@]}"
  # A and B take turns at running first: the run right after the C loops
  # does worse at 46 x 1400 B (PERF.md, part 5), and a fixed order would
  # give that to A every round.
  for who in $( ((r % 2)) && echo A B || echo B A); do
    bin=$a
    [ "$who" = B ] && bin=$b
    run "$r $who" "$bin" load 127.0.0.1:PORT --match none --cpu 1 -t "$secs" -q --json "${args[@]}"
  done
  echo "round $r/$rounds done" >&2
done
python3 - "$out/rows" "$rounds" "${args[*]}" <<'EOF'
import statistics, sys
rows = {}
for l in open(sys.argv[1]):
    r, name, pps, w, i, st, sent = l.split()
    rows[(int(r), name)] = (float(pps), float(w), float(i), float(st), float(sent))
n = int(sys.argv[2])
print(f"load {sys.argv[3]}: sink datagrams/s, each over the C send() loop of the same round")
print("| round | C send() | C sendmmsg 32 | / send | A | / send | B | / send | B / A | wake-ups per datagram: send, sendmmsg, A, B | IPIs per datagram: send, sendmmsg, A, B | steal % on CPU 1: send, sendmmsg, A, B | sent / received: send, sendmmsg, A, B |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
ratios = {"mmsg": [], "A": [], "B": [], "BA": []}
for r in range(1, n + 1):
    s, m, a, b = (rows[(r, k)] for k in ("send", "mmsg", "A", "B"))
    ratios["mmsg"].append(m[0] / s[0]); ratios["A"].append(a[0] / s[0])
    ratios["B"].append(b[0] / s[0]); ratios["BA"].append(b[0] / a[0])
    wk = ", ".join(f"{x[1]:.4f}" if x[1] >= 0 else "-" for x in (s, m, a, b))
    ip = ", ".join(f"{x[2]:.4f}" if x[2] >= 0 else "-" for x in (s, m, a, b))
    stl = ", ".join(f"{x[3]:.1f}" for x in (s, m, a, b))
    sr = ", ".join(f"{x[4]:.3f}" if x[4] > 0 else "-" for x in (s, m, a, b))
    print(f"| {r} | {s[0]:.0f} | {m[0]:.0f} | {m[0]/s[0]:.3f}x | {a[0]:.0f} | {a[0]/s[0]:.3f}x | {b[0]:.0f} | {b[0]/s[0]:.3f}x | {b[0]/a[0]:.3f} | {wk} | {ip} | {stl} | {sr} |")
m = {k: statistics.mean(v) for k, v in ratios.items()}
md = {k: statistics.median(v) for k, v in ratios.items()}
print(f"means over {n} rounds: C sendmmsg {m['mmsg']:.3f}x, A {m['A']:.3f}x, B {m['B']:.3f}x of C send(); B/A {m['BA']:.3f}")
print(f"medians: C sendmmsg {md['mmsg']:.3f}x, A {md['A']:.3f}x, B {md['B']:.3f}x of C send(); B/A {md['BA']:.3f}")
EOF
