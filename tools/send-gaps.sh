#!/usr/bin/env bash
# What a sender's userspace time costs it on loopback, and whether the
# shape of that time matters: tools/send-gaps.c (a C sendmmsg loop, CPU 1)
# spinning the same ns per datagram as one long gap per tick or as short
# gaps between smaller calls, and sending from one buffer or from a
# pool's slots, into the same C sink (`udpring reference sink`, CPU 0),
# interleaved round by round. The figure is what the sink counted per
# second (segments of GSO trains counted); each variant over `one
# buffer` of the same round (the denominator: the bare C loop). `spin
# share` is the part of the sender's second spent spinning: what the
# variant would lose if userspace time cost only itself.
#
#   tools/send-gaps.sh [UDPRING] [ROUNDS] [SECS] [gso|plain]
#
# gso: 4096-byte trains of 64-byte segments (the load's --gso 64 -s 64),
# 125 ns of spin per train (about udpring's userspace per train);
# plain: 64-byte datagrams, 50 ns per datagram. Needs a C compiler.
set -euo pipefail
bin=${1:-target/release/udpring}
rounds=${2:-5}
secs=${3:-3}
mode=${4:-gso}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -o "$out/send-gaps" "$(dirname "$0")/send-gaps.c"

# name vlen nbuf stride spin_ns every
if [ "$mode" = gso ]; then
  len=4096 seg=64 per_msg=64
  variants=(
    "one-buffer 32 1 0 0 1"
    "64-slots 32 64 65728 0 1"
    "64-slots,gap-per-64-trains 32 64 65728 8000 2"
    "64-slots,gap-per-32-trains 32 64 65728 4000 1"
    "64-slots,calls-of-4 4 64 65728 0 1"
    "64-slots,calls-of-4,gap-per-4-trains 4 64 65728 500 1"
  )
elif [ "$mode" = plain ]; then
  len=64 seg=0 per_msg=1
  variants=(
    "one-buffer 32 1 0 0 1"
    "gap-per-256 32 256 64 12800 8"
    "gap-per-32 32 256 64 1600 1"
    "calls-of-8 8 256 64 0 1"
    "calls-of-8,gap-per-8 8 256 64 400 1"
  )
else
  echo "mode: gso or plain" >&2
  exit 2
fi

for r in $(seq 1 "$rounds"); do
  for v in "${variants[@]}"; do
    read -r name vlen nbuf stride spin every <<< "$v"
    port=$((20000 + RANDOM % 20000))
    "$bin" reference sink --bind "127.0.0.1:$port" --cpu 0 --json \
      --duration "$(python3 -c "print($secs + 1.5)")" > "$out/sink.json" 2>/dev/null &
    s=$!
    sleep 0.3
    "$out/send-gaps" "$port" "$secs" "$vlen" "$len" "$seg" "$nbuf" "$stride" "$spin" "$every" > /dev/null
    wait "$s"
    python3 -c "import json,sys; print(sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))['pps_received'], sys.argv[4], sys.argv[5], sys.argv[6])" \
      "$r" "$name" "$out/sink.json" "$vlen" "$spin" "$every" >> "$out/rows"
  done
  echo "round $r/$rounds done" >&2
done
python3 - "$out/rows" "$rounds" "$mode" "$per_msg" <<'EOF'
import statistics, sys
rows, names = {}, []
for l in open(sys.argv[1]):
    r, name, pps, vlen, spin, every = l.split()
    rows[(int(r), name)] = (float(pps), int(vlen), int(spin), int(every))
    if name not in names:
        names.append(name)
n, per_msg = int(sys.argv[2]), int(sys.argv[4])
print(f"send-gaps {sys.argv[3]}: sink datagrams/s, each over `one-buffer` of the same round")
print("| variant | " + " | ".join(f"round {r}" for r in range(1, n + 1)) + " | mean | spin share |")
print("|---|" + "---:|" * (n + 2))
for name in names:
    ratios, shares = [], []
    for r in range(1, n + 1):
        pps, vlen, spin, every = rows[(r, name)]
        ratios.append(pps / rows[(r, "one-buffer")][0])
        # ns spun per second: calls per second times spin per call.
        shares.append(pps / per_msg / vlen * spin / every / 1e9)
    cells = " | ".join(f"{x:.3f}x" for x in ratios)
    print(f"| {name} | {cells} | {statistics.mean(ratios):.3f}x | {statistics.mean(shares):.1%} |")
EOF
