#!/usr/bin/env bash
# Senders into one sink: udpring load (one-way, --match none) beside the
# kernel-level references (`udpring reference send`: one send(2) per
# datagram, or sendmsg(2) + UDP_SEGMENT), every sender on CPU 1 into the
# same sink on CPU 0 (`udpring reference sink`: recvmmsg of 64 with
# UDP_GRO on, the loop a C program would run), SECS seconds each,
# interleaved for ROUNDS rounds. The figure is what the sink counted per
# second, from its first datagram to its last: datagrams, each segment of
# a GSO train counted (on loopback a train sent to a GRO socket arrives
# whole: these are segments, not packets on a wire).
#
#   tools/send-compare.sh [UDPRING] [ROUNDS] [SECS]
#
# SINK_ARGS (environment) go to the sink: SINK_ARGS=--spin for a sink that
# never sleeps, so that no sender pays for waking it.
# Prints one row per workload and round: `udpring load` as it runs by
# default (a flood: the sendmmsg backend) and with --backend uring, each
# over the reference (the denominator: the reference sender of the same
# workload, same round), and the C loop of the system call the default
# backend makes (`udpring reference send --mmsg 32`: sendmmsg of 32
# messages, each a datagram or a train, as the mmsg backend's batch),
# over the reference and as the denominator of the default load.
#
# Then the echo under a GSO flood: `udpring echo --backend uring --gro`
# (and the same on the mmsg backend with the C echo's batch of 64) and
# the C GRO -> GSO echo (`udpring reference echo`: recvmmsg + GRO,
# sendmmsg back with UDP_SEGMENT), each on CPU 0, driven by the same C
# flood (`udpring reference flood`: open-loop sendmsg + UDP_SEGMENT and a
# recvmmsg + GRO reader of the echoes, CPU 1); the figure is echoes
# counted per second (segments). Denominator: the C echo, same round.
set -euo pipefail
bin=${1:-target/release/udpring}
rounds=${2:-3}
secs=${3:-3}
port=$((20000 + RANDOM % 20000))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

sink_rate() { # sender command...
  # shellcheck disable=SC2086 # SINK_ARGS is a list of words
  "$bin" reference sink --bind "127.0.0.1:$port" --cpu 0 --json ${SINK_ARGS:-} \
    --duration "$(python3 -c "print($secs + 1.5)")" > "$out/sink.json" 2>/dev/null &
  local s=$!
  sleep 0.3
  "$@" > /dev/null 2>&1 || true
  wait "$s"
  python3 -c "import json;print(int(json.load(open('$out/sink.json'))['pps_received']))"
}

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo "| workload | round | reference (sink datagrams/s) | C sendmmsg of 32 | / reference | udpring load (default: mmsg) | / reference | / C sendmmsg | load --backend uring | / reference |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
  for w in "64 1" "64 64" "1400 46"; do
    set -- $w
    size=$1 gso=$2
    load=("$bin" load "127.0.0.1:$port" --match none --cpu 1 -t "$secs" -q -s "$size" --gso "$gso")
    ref=$(sink_rate "$bin" reference send "127.0.0.1:$port" --cpu 1 -t "$secs" -s "$size" --gso "$gso")
    mm=$(sink_rate "$bin" reference send "127.0.0.1:$port" --cpu 1 -t "$secs" -s "$size" --gso "$gso" --mmsg 32)
    us=$(sink_rate "${load[@]}")
    ur=$(sink_rate "${load[@]}" --backend uring)
    name="$size B"
    [ "$gso" -gt 1 ] && name="$size B, GSO $gso"
    echo "| $name | $r | $ref | $mm | $(ratio "$mm" "$ref") | $us | $(ratio "$us" "$ref") | $(ratio "$us" "$mm") | $ur | $(ratio "$ur" "$ref") |"
  done
done

echo_rate() { # server command...
  "$@" > /dev/null 2>&1 &
  local s=$!
  sleep 0.4
  "$bin" reference flood "127.0.0.1:$port" --cpu 1 -t "$secs" -s "$size" --gso "$gso" --json \
    > "$out/flood.json" 2>/dev/null || true
  kill -INT "$s" 2>/dev/null || true
  wait "$s" 2>/dev/null || true
  python3 -c "import json;print(int(json.load(open('$out/flood.json'))['pps_received']))"
}

echo
echo "| echo under a C GSO flood | round | C GRO->GSO echo (echoes/s) | udpring echo --gro (uring) | / C | echo --gro --backend mmsg --batch 64 | / C |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
  for w in "64 64" "1400 46"; do
    set -- $w
    size=$1 gso=$2
    echo=("$bin" echo --bind "127.0.0.1:$port" --gro -w 1 --cpu 0 -q)
    c=$(echo_rate "$bin" reference echo --bind "127.0.0.1:$port" --cpu 0)
    us=$(echo_rate "${echo[@]}" --backend uring)
    um=$(echo_rate "${echo[@]}" --backend mmsg --batch 64)
    echo "| $size B, GSO $gso | $r | $c | $us | $(ratio "$us" "$c") | $um | $(ratio "$um" "$c") |"
  done
done
