#!/usr/bin/env bash
# udpring side by side with iperf3, sockperf and netperf, in one run, on
# loopback. Prints the tables that PERF.md records, with date, commit and
# command. Servers run on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU.
#
#   tools/compare.sh            # ~2 minutes
#   SECS=10 tools/compare.sh    # longer runs
#
# Installs iperf3 and sockperf with apt if missing. netperf is in Debian's
# non-free section: it is downloaded with a private package list under
# target/peers (the system's apt sources are not changed) and run from
# there; if that fails its rows say "skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-4}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEERS=target/peers
U=target/release/udpring
PORT_BASE=$((20000 + RANDOM % 20000))
# A fresh port in $P (not via $(...): a subshell would not advance the count).
next_port() { PORT_BASE=$((PORT_BASE + 1)); P=$PORT_BASE; }
cli() { taskset -c "$CLIENT_CPU" "$@"; }
py() { python3 -c "$@"; }
json_get() { py "import json,sys; d=json.load(sys.stdin); print($1)"; }

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v sockperf >/dev/null || need+=(sockperf)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
. tools/peers/netperf.sh
netperf_fetch "$PEERS" || echo "note: netperf could not be fetched; its rows are skipped" >&2

cargo build --release -q
COMMIT=$(git rev-parse --short HEAD)
DIRTY=$(git status --porcelain --untracked-files=no | grep -q . && echo "+uncommitted" || true)

cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts `udpring echo ARGS` on the server CPU; sets EP (pid) and EPORT.
start_echo() {
  next_port; EPORT=$P
  EOUT=$(mktemp)
  # Not through a shell function: $! must be the server itself.
  taskset -c "$SERVER_CPU" $U echo --bind 127.0.0.1:$EPORT --workers 1 --no-pin -q --duration 600 --json "$@" >"$EOUT" &
  EP=$!
  sleep 0.4
}
stop_echo() { kill -TERM "$EP" 2>/dev/null || true; wait "$EP" 2>/dev/null || true; }
# What the last echo server received (after stop_echo).
echo_received() { json_get "d['received']" <"$EOUT"; rm -f "$EOUT"; }

# Seconds of CPU (user + system) a command used, then its stdout.
cpu_of() {
  py '
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime + r.ru_stime)
sys.stdout.write(p.stdout.decode())' "$@"
}

echo "# udpring vs iperf3 / sockperf / netperf"
echo
echo "date $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT$DIRTY, kernel $(uname -r), $(nproc) CPUs,"
echo "command: SECS=$SECS tools/compare.sh (servers on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU)"
echo

# 1. Sender rate into a sink (no replies), 64 and 1400 B, $ROUNDS rounds
# interleaved (the host is noisy: one round can be off by 20%), then the
# median of each ratio. On loopback the sender's CPU pays for waking the
# receiver, so the sink changes the sender's figure: udpring and the C
# references (`udpring reference send`: send(2) per datagram, or sendmsg(2)
# + UDP_SEGMENT) all send into ONE sink, `udpring reference sink` (the C
# loop: recvmmsg + UDP_GRO) on the server CPU. iperf3 needs its own server
# (its client talks to it over TCP): its row is into that server, not the
# common sink, and says so.
ROUNDS=${ROUNDS:-3}
echo "## Datagrams sent per second into a sink ($ROUNDS rounds, interleaved)"
echo
echo "Denominator of 'vs C': the C reference of the same kind (send(2) loop for"
echo "plain senders, sendmsg + UDP_SEGMENT for --gso) into the same sink, same"
echo "round. 'received by sink/s' counts datagrams (a GSO train's segments each)."
echo
echo "| round | sender | sink | size | sent/s | received by sink/s | sender CPU µs per datagram | vs C |"
echo "|---:|---|---|---:|---:|---:|---:|---:|"
declare -A RATIOS
# Starts the common sink on the server CPU; sets SINKP (pid), SPORT, SOUT.
start_sink() {
  next_port; SPORT=$P
  SOUT=$(mktemp)
  taskset -c "$SERVER_CPU" $U reference sink --bind 127.0.0.1:$SPORT --json >"$SOUT" 2>/dev/null &
  SINKP=$!
  sleep 0.3
}
# Stops it and prints what it received per second.
sink_rate() {
  kill -INT "$SINKP" 2>/dev/null || true; wait "$SINKP" 2>/dev/null || true
  json_get "'%.0f' % d['pps_received']" <"$SOUT"; rm -f "$SOUT"
}
for round in $(seq 1 "$ROUNDS"); do
for size in 64 1400; do
  segs=64; [ "$size" = 1400 ] && segs=46
  # The C references into the common sink: the denominators.
  declare -A CREF
  for kind in send gso; do
    start_sink
    g=1; [ "$kind" = gso ] && g=$segs
    out=$(cpu_of $U reference send 127.0.0.1:$SPORT --cpu "$CLIENT_CPU" -s "$size" --gso "$g" -t "$SECS" --json)
    cpu=$(echo "$out" | head -1)
    cpps=$(echo "$out" | tail -n +2 | json_get "d['pps_sent']")
    recv=$(sink_rate)
    CREF[$kind]=$recv
    ccpu=$(py "print('%.3f' % ($cpu * 1e6 / ($cpps * $SECS)))")
    label="C send(2) loop"; [ "$kind" = gso ] && label="C sendmsg + UDP_SEGMENT x$segs"
    printf "| %d | %s | C sink | %d | %.0f | %s | %s | 1.00x |\n" "$round" "$label" "$size" "$cpps" "$recv" "$ccpu"
  done
  # iperf3 into its own server.
  next_port; p=$P
  taskset -c "$SERVER_CPU" iperf3 -s -p "$p" -1 >/dev/null 2>&1 &
  sleep 0.4
  out=$(cpu_of taskset -c "$CLIENT_CPU" iperf3 -c 127.0.0.1 -p "$p" -u -b 0 -l "$size" -t "$SECS" -J)
  cpu=$(echo "$out" | head -1)
  read -r ipps irecv < <(echo "$out" | tail -n +2 | json_get "'%f %f' % (d['end']['sum']['packets']/d['end']['sum']['seconds'], (d['end']['sum']['packets']-d['end']['sum']['lost_packets'])/d['end']['sum']['seconds'])")
  icpu=$(py "print('%.3f' % ($cpu * 1e6 / ($ipps * $SECS)))")
  wait "$!" 2>/dev/null || true
  ratio=$(py "print('%.2f' % ($irecv/${CREF[send]}))")
  RATIOS["iperf3 -u -b 0 (own server)|$size"]+="$ratio "
  printf "| %d | iperf3 -u -b 0 | iperf3 server | %d | %.0f | %.0f | %s | %sx |\n" "$round" "$size" "$ipps" "$irecv" "$icpu" "$ratio"
  for variant in "" "--unconnected" "--gso $segs"; do
    start_sink
    # shellcheck disable=SC2086
    # One-way (--match none: no window, no drain, nothing counted lost).
    out=$(cpu_of $U load 127.0.0.1:$SPORT --cpu "$CLIENT_CPU" -s "$size" -t "$SECS" --match none $variant --json -q)
    cpu=$(echo "$out" | head -1)
    upps=$(echo "$out" | tail -n +2 | json_get "d['pps_sent']")
    srecv=$(sink_rate)
    ucpu=$(py "print('%.3f' % ($cpu * 1e6 / ($upps * $SECS)))")
    label="udpring load ${variant:-(connected)}"
    base=${CREF[send]}; [ -n "$variant" ] && [ "${variant#--gso}" != "$variant" ] && base=${CREF[gso]}
    ratio=$(py "print('%.2f' % ($srecv/$base))")
    RATIOS["$label|$size"]+="$ratio "
    printf "| %d | %s | C sink | %d | %.0f | %s | %s | %sx |\n" "$round" "$label" "$size" "$upps" "$srecv" "$ucpu" "$ratio"
  done
done
done
echo
echo "Median over the rounds (received by the sink, over the C reference's):"
echo
echo "| sender | size | vs C (median) | every round |"
echo "|---|---:|---:|---|"
for key in "udpring load (connected)|64" "udpring load --unconnected|64" "udpring load --gso 64|64" \
           "iperf3 -u -b 0 (own server)|64" \
           "udpring load (connected)|1400" "udpring load --unconnected|1400" "udpring load --gso 46|1400" \
           "iperf3 -u -b 0 (own server)|1400"; do
  vals=${RATIOS[$key]}
  med=$(py "v=sorted(float(x) for x in '$vals'.split()); print('%.2fx' % v[len(v)//2])")
  echo "| ${key%|*} | ${key#*|} | $med | $vals |"
done
echo

# 2. Round-trip latency: closed loop, one request in flight.
echo "## Ping-pong round-trip time (64 B, one in flight), same server for both clients"
echo
echo "| server | client | round trips/s | p50 µs | p99 µs |"
echo "|---|---|---:|---:|---:|"
sockperf_pp() { # port -> "rate p50 p99"
  # --full-rtt: by default sockperf reports half the round trip.
  cli sockperf ping-pong -i 127.0.0.1 -p "$1" -t "$SECS" -m 64 --full-rtt 2>&1 | py '
import re, sys
t = sys.stdin.read()
v = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", t)
p50 = re.search(r"percentile 50\.000 =\s+([\d.]+)", t)
p99 = re.search(r"percentile 99\.000 =\s+([\d.]+)", t)
print("%.0f %s %s" % (int(v.group(3)) / float(v.group(1)), p50.group(1), p99.group(1)))'
}
udpring_pp() { # port [extra] -> "rate p50 p99"
  local p=$1; shift
  $U load 127.0.0.1:$p --cpu "$CLIENT_CPU" --mode ping -t "$SECS" --warmup 0.4 --json -q "$@" |
    json_get "'%.0f %.1f %.1f' % (d['pps_received'], d['rtt_us']['p50'], d['rtt_us']['p99'])"
}
start_echo --sockperf
read -r r a b < <(sockperf_pp "$EPORT"); echo "| udpring echo --sockperf | sockperf ping-pong | $r | $a | $b |"
read -r r a b < <(udpring_pp "$EPORT" --sockperf); echo "| udpring echo --sockperf | udpring load --mode ping --sockperf | $r | $a | $b |"
stop_echo
next_port; p=$P
taskset -c "$SERVER_CPU" sockperf server -i 127.0.0.1 -p "$p" >/dev/null 2>&1 &
SP=$!
sleep 0.5
read -r r a b < <(sockperf_pp "$p"); echo "| sockperf server | sockperf ping-pong | $r | $a | $b |"
read -r r a b < <(udpring_pp "$p" --sockperf); echo "| sockperf server | udpring load --mode ping --sockperf | $r | $a | $b |"
if [ -x "$NETPERF" ]; then
  start_echo
  read -r r a b < <(cli "$NETPERF" -N -H 127.0.0.1 -t UDP_RR -l "$SECS" -- -P ,"$EPORT" -r 64,64 \
    -o THROUGHPUT,P50_LATENCY,P99_LATENCY 2>/dev/null | tail -1 | tr ',' ' ')
  echo "| udpring echo | netperf -N UDP_RR 64/64 | $r | $a | $b |"
  read -r r a b < <(udpring_pp "$EPORT"); echo "| udpring echo | udpring load --mode ping | $r | $a | $b |"
  stop_echo
else
  echo "| udpring echo | netperf UDP_RR | skipped: netperf not available | | |"
fi
# Busy polling (neither side sleeps between datagrams): the wake-up between
# CPUs leaves the round trip.
start_echo --sockperf --busy-poll
read -r r a b < <(sockperf_pp "$EPORT"); echo "| udpring echo --sockperf --busy-poll | sockperf ping-pong | $r | $a | $b |"
read -r r a b < <(udpring_pp "$EPORT" --sockperf --busy-poll); echo "| udpring echo --sockperf --busy-poll | udpring load --mode ping --sockperf --busy-poll | $r | $a | $b |"
stop_echo
echo

# 3. Echo throughput under flood: udpring echo against sockperf server.
echo "## Echo servers under flood (64 B, udpring load --window 256 as client)"
echo
echo "Server CPU per echo: the server process's user+system time over the run"
echo "divided by the datagrams it echoed (on loopback it includes delivering the"
echo "echo into the client's socket). Less noisy than the rate on a shared host."
echo
echo "| server | echoed/s | lost | p50 µs | p99 µs | server CPU µs per echo | vs sockperf server (rate) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
flood_against() { # pid port [extra] -> "rate lost p50 p99 cpu_us_per_echo"
  local pid=$1 p=$2; shift 2
  local t0 t1 out
  t0=$(cpu_ticks "$pid")
  out=$($U load 127.0.0.1:$p --cpu "$CLIENT_CPU" --window 256 -t "$SECS" --warmup 0 --drain 0.2 --json -q "$@")
  t1=$(cpu_ticks "$pid")
  echo "$out" | json_get "'%.0f %d %.1f %.1f %.2f' % (d['pps_received'], d['lost'], d['rtt_us']['p50'], d['rtt_us']['p99'], ($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / max(1, d['received']))"
}
read -r sr sl sa sb sc < <(flood_against "$SP" "$p" --sockperf)
kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true
for b in simple mmsg uring; do
  start_echo --sockperf --backend "$b"
  read -r r l a c cpu < <(flood_against "$EP" "$EPORT" --sockperf)
  stop_echo
  echo "| udpring echo --backend $b | $r | $l | $a | $c | $cpu | $(py "print('%.2fx' % ($r/$sr))") |"
done
echo "| sockperf server | $sr | $sl | $sa | $sb | $sc | 1.00x |"
echo

# 4. Rate accuracy of --rate.
echo "## Rate accuracy: udpring load --rate (64 B into udpring echo)"
echo
echo "| asked/s | sent/s | error | p50 µs | p99 µs |"
echo "|---:|---:|---:|---:|---:|"
start_echo
for rate in 1000 10000 50000 100000; do
  read -r s a b < <($U load 127.0.0.1:$EPORT --cpu "$CLIENT_CPU" --rate "$rate" -t "$SECS" --json -q |
    json_get "'%.1f %.1f %.1f' % (d['pps_sent'], d['rtt_us']['p50'], d['rtt_us']['p99'])")
  echo "| $rate | $s | $(py "print('%+.3f%%' % (100*($s-$rate)/$rate))") | $a | $b |"
done
stop_echo
