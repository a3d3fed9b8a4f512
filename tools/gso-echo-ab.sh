#!/usr/bin/env bash
# Before/after of the echo under a C GSO flood, in one run: `udpring echo
# --gro` from two builds (A, B) and the C GRO -> GSO echo (`udpring
# reference echo`: recvmmsg of 64 with UDP_GRO, sendmmsg back with
# UDP_SEGMENT), each on CPU 0, driven by the same C flood (`udpring
# reference flood`: open-loop sendmsg + UDP_SEGMENT, and a recvmmsg + GRO
# reader of the echoes, on CPU 1), interleaved round by round. The figure
# is the echoes the flood counted per second (segments: on loopback a
# train reaches a GRO socket whole); A and B over the C echo of the same
# round (the denominator). The C loops are B's `udpring reference`.
#
#   tools/gso-echo-ab.sh OLD_UDPRING NEW_UDPRING [ROUNDS] [SECS] [SIZE] [GSO] [-- ECHO ARGS...]
#
# SIZE 64 and GSO 64 by default; ECHO ARGS go to both echoes (e.g.
# `--backend mmsg --batch 64`).
set -euo pipefail
a=${1:?old udpring binary}
b=${2:?new udpring binary}
rounds=${3:-5}
secs=${4:-3}
size=${5:-64}
gso=${6:-64}
shift $(( $# < 6 ? $# : 6 ))
[ "${1:-}" = "--" ] && shift
extra=("$@")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

rate() { # port server command...
  local port=$1; shift
  "$@" > /dev/null 2>&1 &
  local s=$!
  sleep 0.4
  "$b" reference flood "127.0.0.1:$port" --cpu 1 -t "$secs" -s "$size" --gso "$gso" --json \
    > "$out/flood.json" 2>/dev/null || true
  kill -INT "$s" 2>/dev/null || true
  wait "$s" 2>/dev/null || true
  python3 -c "import json;print(int(json.load(open('$out/flood.json'))['pps_received']))"
}

udpring_echo() { # port udpring -> the flood's echoes/s through that build's echo
  rate "$1" "$2" echo --bind "127.0.0.1:$1" --gro -w 1 --cpu 0 -q "${extra[@]}"
}

echo "echo under a C flood of $size B x $gso: echoes/s, A and B over the C echo of the same round"
echo "| round | C GRO->GSO echo | A | / C | B | / C | B / A |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$rounds"); do
  port=$((20000 + RANDOM % 20000))
  c=$(rate "$port" "$b" reference echo --bind "127.0.0.1:$port" --cpu 0)
  # A and B take turns at running first (a fixed order can favour one).
  for who in $( ((r % 2)) && echo a b || echo b a); do
    if [ "$who" = a ]; then
      x=$(udpring_echo $((port + 1)) "$a")
    else
      y=$(udpring_echo $((port + 2)) "$b")
    fi
  done
  echo "$c $x $y" >> "$out/rows"
  python3 -c "c,x,y=$c,$x,$y;print(f'| $r | {c} | {x} | {x/c:.3f}x | {y} | {y/c:.3f}x | {y/x:.3f} |')"
done
python3 - "$out/rows" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
a = [x / c for c, x, _ in rows]
b = [y / c for c, _, y in rows]
print(f"means over {len(rows)} rounds: A {statistics.mean(a):.3f}x ({min(a):.3f}-{max(a):.3f}), "
      f"B {statistics.mean(b):.3f}x ({min(b):.3f}-{max(b):.3f}) of the C echo")
EOF
