#!/usr/bin/env bash
# Zero-copy sends (load --zerocopy-min) against plain sends, on loopback
# and between two network namespaces over veth and a bridge (the LAN of
# tools/netns.sh: h1 -> h3), into one C sink (`udpring reference sink`),
# for single datagrams and GSO trains; ROUNDS interleaved rounds of SECS.
# The figure is what the sink counted per second; zc_sent / zc_copied
# are what the kernel's notifications said (SEND_ZC_REPORT_USAGE).
# Needs root (namespaces). Denominator: the plain send, same path, same
# round.
#
#   tools/zerocopy-compare.sh [UDPRING] [ROUNDS] [SECS]
set -euo pipefail
bin=$(realpath "${1:-target/release/udpring}")
rounds=${2:-2}
secs=${3:-3}
name="zc$$"
here=$(dirname "$0")
out=$(mktemp -d)
trap 'bash "$here/netns.sh" down "$name" >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
bash "$here/netns.sh" lan-up "$name" >/dev/null

run() { # where(lo|veth) size gso zc -> "sink_pps zc_sent zc_copied"
  local where=$1 size=$2 gso=$3 zc=$4 port=$((20000 + RANDOM % 20000))
  local sink_ns=() send_ns=() dst=127.0.0.1
  if [ "$where" = veth ]; then
    sink_ns=(ip netns exec "$name-h3"); send_ns=(ip netns exec "$name-h1"); dst=10.201.0.3
  fi
  local z=(); [ "$zc" = 1 ] && z=(--zerocopy-min 1)
  "${sink_ns[@]}" "$bin" reference sink --bind "$dst:$port" --cpu 0 --json \
    --duration "$(python3 -c "print($secs + 1.5)")" > "$out/sink.json" 2>/dev/null &
  local s=$!
  sleep 0.4
  "${send_ns[@]}" "$bin" load "$dst:$port" --match none --cpu 1 -t "$secs" -q -s "$size" \
    --gso "$gso" --backend uring "${z[@]}" --json > "$out/load.json"
  wait "$s"
  python3 -c "
import json
s = json.load(open('$out/sink.json')); l = json.load(open('$out/load.json'))
print(int(s['pps_received']), l['zc_sent'], l['zc_copied'])"
}

echo "| path | datagram | round | plain (sink datagrams/s) | zero-copy | zero-copy / plain | zc_sent | zc_copied |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
  for where in lo veth; do
    for w in "1400 1" "8000 1" "1400 46"; do
      set -- $w
      read -r plain _ _ < <(run "$where" "$1" "$2" 0)
      read -r zc zs zcp < <(run "$where" "$1" "$2" 1)
      kind="$1 B"; [ "$2" -gt 1 ] && kind="$1 B x$2 (GSO train)"
      echo "| $where | $kind | $r | $plain | $zc | $(python3 -c "print(f'{$zc/$plain:.2f}x')") | $zs | $zcp |"
    done
  done
done
