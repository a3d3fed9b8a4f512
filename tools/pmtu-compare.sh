#!/usr/bin/env bash
# udpring pmtu beside tracepath on the namespace topology of tools/netns.sh
# (A - R - B; path MTU 1280 over IPv4, 1400 over IPv6), then with R dropping
# the ICMP errors (a PMTU black hole). Needs root. Prints the table PERF.md
# records.
#
#   tools/pmtu-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tracepath >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-tracepath >/dev/null
}
cargo build --release -q
U=$PWD/target/release/udpring
N=urpc$$
cleanup() { kill "${EP:-}" 2>/dev/null || true; bash tools/netns.sh down "$N"; }
trap cleanup EXIT
bash tools/netns.sh pmtu-up "$N"
ip netns exec "$N-b" "$U" echo --bind '[::]:7007' --workers 1 -q --duration 600 >/dev/null &
EP=$!
sleep 0.5

ms() { date +%s%N; }
row() { # label target family
  local label=$1 t=$2 fam=$3 t0 out res
  # Forget what earlier probes taught A's kernel.
  ip -n "$N-a" route flush cache >/dev/null 2>&1 || true
  ip -n "$N-a" -6 route flush cache >/dev/null 2>&1 || true
  t0=$(ms)
  out=$(ip netns exec "$N-a" timeout 30 tracepath -n $fam "$t" 2>&1 || true)
  res=$(echo "$out" | sed -n 's/.*Resume: pmtu \([0-9]*\).*/\1/p' | tail -1)
  # tracepath does not count its probes; it prints a line per hop answer.
  echo "| $label | tracepath | ${res:-no result (stopped at 30 s)} | $(echo "$out" | grep -c '^ *[0-9]*[:?]') hop lines | $(( ($(ms) - t0) / 1000000 )) |"
  for m in icmp plpmtud; do
    ip -n "$N-a" route flush cache >/dev/null 2>&1 || true
    ip -n "$N-a" -6 route flush cache >/dev/null 2>&1 || true
    t0=$(ms)
    out=$(ip netns exec "$N-a" "$U" pmtu "$(
      if [ "$fam" = -6 ]; then echo "[$t]:7007"; else echo "$t:7007"; fi
    )" --method "$m" --json 2>/dev/null || true)
    el=$(( ($(ms) - t0) / 1000000 ))
    echo "$out" | python3 -c "
import json, sys
d = json.load(sys.stdin)
p = d['pmtu'] if d['pmtu'] is not None else 'cannot tell'
print('| $label | udpring pmtu --method $m | %s | %d probes | $el |' % (p, d['probes']))"
  done
}

echo "date $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), command: tools/pmtu-compare.sh"
echo
echo "| path | tool | path MTU found | probes (tracepath: hop lines) | ms, the whole command |"
echo "|---|---|---:|---:|---:|"
row "IPv4, true 1280" 10.200.2.1 -4
row "IPv6, true 1400" fd00:200:2::1 -6
bash tools/netns.sh blackhole "$N"
row "IPv4 black hole, true 1280" 10.200.2.1 -4
row "IPv6 black hole, true 1400" fd00:200:2::1 -6
