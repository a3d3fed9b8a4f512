#!/usr/bin/env bash
# Where udpring stands: one run, one table, each udpring figure beside its
# anchor (the C loops a program would run, iperf3, sockperf, netperf,
# dnsperf, tracepath, and for a service on the library a blocking std
# socket loop) measured in the same run, round by round in alternating
# order, and the ratio (median of the rounds' ratios). This is the table
# PERF.md opens with; it prints the date, the commit and this command
# first. About 15 minutes here (ROUNDS=5). Pasted into PERF.md, its rows go on to the
# README with tools/perf/readme-rows.py.
#
#   tools/perf/standing.sh            # ROUNDS=3 SECS=3
#   ROUNDS=5 SECS=5 tools/perf/standing.sh
#
# Servers on CPU 0, clients and senders on CPU 1 (taskset). Loopback, but
# for the path MTU rows: namespaces built by tools/netns.sh, and the xdp
# rows: a veth pair (tools/perf/xdp.sh) (both need root; without it those
# rows say skipped). Peers: iperf3, sockperf, dnsperf,
# nsd, tracepath from Debian (installed here when missing, as .ci/run
# does); netperf from Debian's non-free section into target/peers.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
S=0 # server CPU
C=1 # client CPU
U=$PWD/target/release/udpring
PEERS=target/peers
OUT=$(mktemp -d)
# A fresh port in PORT; kept in a file, since most calls run in a
# subshell ($(...), <(...)) whose variables the next call would not see.
echo $((20000 + RANDOM % 20000)) > "$OUT/port"
port() { PORT=$(( $(cat "$OUT/port") + 1 )); echo "$PORT" > "$OUT/port"; }
py() { python3 -c "$@"; }
j() { py "import json,sys; d=json.load(sys.stdin); print($1)"; } # JSON on stdin -> expression of d

cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${NS:-}" ] && bash tools/netns.sh down "$NS" >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT

need=()
for t in iperf3 sockperf dnsperf nsd tracepath; do command -v $t >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  pk=("${need[@]/tracepath/iputils-tracepath}")
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pk[@]}" >/dev/null
fi
. tools/peers/netperf.sh
netperf_fetch "$PEERS" || true
cargo build --release -q
# From here a failed measurement reads as nan in its row, not as the end
# of the run.
set +e

# A row: "what|udpring|anchor name|anchor|ratio|unit" appended to $OUT/rows.
row() { echo "$1|$2|$3|$4|$5|$6" >> "$OUT/rows"; }
# Median of the numbers in a file, one a line.
median() { py "import math,statistics; v=[float(l) for l in open('$1') if l.strip()]; v=[x for x in v if not math.isnan(x)]; print(statistics.median(v) if v else 'nan')"; }
# x / y, nan when either is missing.
ratio() { py "x, y = float('${1:-nan}' or 'nan'), float('${2:-nan}' or 'nan'); print(x / y if y else float('nan'))"; }
# Rounds alternate which side goes first: `first ROUND a b` prints the order.
order() { if (( $1 % 2 )); then echo "$2 $3"; else echo "$3 $2"; fi; }

# Starts a server on the server CPU (its pid in SRV), waits for it.
serve() { taskset -c $S "$@" >/dev/null 2>&1 & SRV=$!; sleep 0.5; }
# SIGINT first (udpring servers print their totals and stop clean); a
# server that ignores it (netserver -D does) is killed after 2 s.
unserve() {
  kill -INT "$SRV" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SRV" 2>/dev/null || true
  wait "$SRV" 2>/dev/null || true
}
# A failed measurement reads as nan, not as a stop of the whole run.
num() { local v; v=$(cat); [ -n "$v" ] && echo "$v" || echo nan; }

# --- 1. Echo under a C GSO flood, 64 x 64 B (segments echoed per second).
# Driven by the C flood (`udpring reference flood`: open-loop sendmsg +
# UDP_SEGMENT, echoes read with recvmmsg + GRO); anchor: the C GRO -> GSO
# echo (`udpring reference echo`).
gso_echo() { # server command... -> echoes/s the flood counted
  port; local p=$PORT
  serve "${@//PORT/$p}"
  taskset -c $C "$U" reference flood "127.0.0.1:$p" -t "$SECS" -s 64 --gso 64 --json 2>/dev/null \
    | j "int(d['pps_received'])"
  unserve
}
: > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
for r in $(seq "$ROUNDS"); do
  for who in $(order "$r" u c); do
    if [ "$who" = u ]; then x=$(gso_echo "$U" echo --bind 127.0.0.1:PORT --gro -w 1 -q)
    else y=$(gso_echo "$U" reference echo --bind 127.0.0.1:PORT); fi
  done
  echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
done
row "echo under a GSO flood, 64 x 64 B" "$(median "$OUT/a")" "C GRO->GSO echo" "$(median "$OUT/b")" "$(median "$OUT/r")" "segments echoed/s"

# --- 2. Echo under a 64 B flood (window 256): udpring echo vs sockperf
# server, both loaded by `udpring load --sockperf`.
flood_echo() { # server command... -> echoed/s
  port; local p=$PORT
  serve "${@//PORT/$p}"
  taskset -c $C "$U" load "127.0.0.1:$p" --sockperf --window 256 -t "$SECS" --json -q \
    | j "int(d['pps_received'])"
  unserve
}
: > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
for r in $(seq "$ROUNDS"); do
  for who in $(order "$r" u s); do
    if [ "$who" = u ]; then x=$(flood_echo "$U" echo --bind 127.0.0.1:PORT --sockperf -w 1 -q)
    else y=$(flood_echo sockperf server -i 127.0.0.1 -p PORT); fi
  done
  echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
done
row "echo under a 64 B flood, 256 in flight" "$(median "$OUT/a")" "sockperf server" "$(median "$OUT/b")" "$(median "$OUT/r")" "echoed/s"

# --- 3. Ping-pong latency: sockperf ping-pong (64 B, half the round trip,
# as sockperf reports it) against udpring echo --sockperf and against
# sockperf server (the echo's default: a spin of 50 µs before sleeping),
# then `echo --spin 0` (sleeps at once: the engine's default receive path)
# against sockperf server in rounds of its own. Lower is better: a ratio
# above 1 is slower.
pingpong() { # server command... -> "p50 p99" (µs, half RTT)
  port; local p=$PORT
  serve "${@//PORT/$p}"
  taskset -c $C sockperf ping-pong -i 127.0.0.1 -p "$p" -t "$SECS" -m 64 2>&1 | py '
import re, sys
t = sys.stdin.read()
p50 = re.search(r"percentile 50\.000 =\s+([\d.]+)", t)
p99 = re.search(r"percentile 99\.000 =\s+([\d.]+)", t)
print(p50.group(1) if p50 else "nan", p99.group(1) if p99 else "nan")'
  unserve
}
: > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"; : > "$OUT/a9"; : > "$OUT/b9"; : > "$OUT/r9"
for r in $(seq "$ROUNDS"); do
  for who in $(order "$r" u s); do
    if [ "$who" = u ]; then read -r x x9 < <(pingpong "$U" echo --bind 127.0.0.1:PORT --sockperf -w 1 -q)
    else read -r y y9 < <(pingpong sockperf server -i 127.0.0.1 -p PORT); fi
  done
  echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
  echo "$x9" >> "$OUT/a9"; echo "$y9" >> "$OUT/b9"; ratio "$x9" "$y9" >> "$OUT/r9"
done
row "ping-pong p50, 64 B (lower is better)" "$(median "$OUT/a")" "sockperf server" "$(median "$OUT/b")" "$(median "$OUT/r")" "µs, half RTT"
row "ping-pong p99, 64 B (lower is better)" "$(median "$OUT/a9")" "sockperf server" "$(median "$OUT/b9")" "$(median "$OUT/r9")" "µs, half RTT"
: > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
for r in $(seq "$ROUNDS"); do
  for who in $(order "$r" u s); do
    if [ "$who" = u ]; then read -r x x9 < <(pingpong "$U" echo --bind 127.0.0.1:PORT --sockperf -w 1 -q --spin 0)
    else read -r y y9 < <(pingpong sockperf server -i 127.0.0.1 -p PORT); fi
  done
  echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
done
row "ping-pong p50, 64 B, echo --spin 0 (lower is better)" "$(median "$OUT/a")" "sockperf server" "$(median "$OUT/b")" "$(median "$OUT/r")" "µs, half RTT (CPU per round trip: tools/perf/latency.sh)"

# --- 3b. A service on the library in closed loop: the kv example's logic
# behind the engine against the same logic on a blocking std socket
# (`cargo bench --bench kv`, ROUNDS passes: the servers take turns every
# 100 round trips, each following each other one equally often; its own
# second std loop is the control, whose ratio the unit column gives), then
# the same engine with `spin_us` 50 (its fifth row). Lower is better.
# kv_rows REGIME KEYS: the bench's table (run with the environment given)
# as rows, for the engines named in KEYS (udpring, spinning).
kv_rows() {
  cargo bench -q --bench kv 2>/dev/null | py '
import sys
regime, keys = sys.argv[1], sys.argv[2].split(",")
rows = {}
vs_marked = None
for l in sys.stdin:
    if l.startswith("the engine against the marked std loop"):
        vs_marked = l.split("CPU ")[1].split(" ")[0].rstrip("x")
    c = [x.strip() for x in l.strip().strip("|").split("|")]
    if len(c) == 10 and c[0] and c[1][:1].isdigit():
        rows[c[0].split(" ")[0] + ("2" if "control" in c[0] else "")] = c
s, k = rows.get("std"), rows.get("std2")
what = [("p50", 1, 6, "µs, round trip"), ("p99", 2, 7, "µs, round trip"),
        ("CPU per request", 3, 8, "µs of the server threads")]
# The engine as the library starts it, then with the spin before sleeping.
for key, label in [("udpring", ""), ("spinning", ", spin_us 50")]:
    if key not in keys:
        continue
    e = rows.get(key)
    for name, v, r, unit in what:
        if not (e and s and k):
            print(f"kv service on the library{label}, {regime} {name}|nan|std UdpSocket loop|nan|nan|failed")
            continue
        print(f"kv service on the library{label}, {regime} {name} (lower is better)|{e[v]}|"
              f"std UdpSocket loop|{s[v]}|{e[r][:-1]}|{unit} (control: {k[r]})")
# The engine against the std loop that reads the server mark as its guard
# does (`recvmsg` and the TTL): what is left when both pay for the mark.
e, m = rows.get("udpring"), rows.get("marked")
if "udpring" in keys:
    name = f"kv service on the library, {regime} CPU per request against a loop reading the server mark"
    if e and m and vs_marked:
        print(f"{name} (lower is better)|{e[3]}|std loop reading the server mark|{m[3]}|{vs_marked}|"
              f"µs of the server threads (that loop to the plain one: {m[8]})")
    else:
        print(f"{name}|nan|std loop reading the server mark|nan|nan|failed")
' "$1" "$2"
}
ROUNDS=$ROUNDS kv_rows "closed loop" udpring,spinning >> "$OUT/rows"
# --- 3c. The same service asked now and then: the client idle 2 ms before
# each request (outside the round trip), so that every request wakes the
# servers from idle, one-trip turns, 2,000 requests per server per pass.
GAP_US=2000 BLOCK=1 TRIPS=2000 ROUNDS=$ROUNDS kv_rows "a request every 2 ms" udpring >> "$OUT/rows"

# --- 4. netperf UDP_RR 64/64 against udpring echo (-N: no control
# connection, any echo answers) and against netperf's own netserver.
if [ -x "$NETPERF" ]; then
  NETSERVER=$(dirname "$NETPERF")/netserver
  rr_udpring() { # -> transactions/s against udpring echo
    port; local p=$PORT
    serve "$U" echo --bind "127.0.0.1:$p" -w 1 -q
    taskset -c $C "$NETPERF" -N -H 127.0.0.1 -t UDP_RR -l "$SECS" -- -P ,"$p" -r 64,64 \
      -o THROUGHPUT 2>/dev/null | tail -1
    unserve
  }
  rr_netserver() { # -> transactions/s against netserver (its data port given)
    port; local p=$PORT
    port; local d=$PORT
    serve "$NETSERVER" -D -p "$p"
    taskset -c $C "$NETPERF" -H 127.0.0.1 -p "$p" -t UDP_RR -l "$SECS" -- -P ,"$d" -r 64,64 \
      -o THROUGHPUT 2>/dev/null | tail -1
    unserve
  }
  : > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
  for r in $(seq "$ROUNDS"); do
    for who in $(order "$r" u c); do
      if [ "$who" = u ]; then x=$(rr_udpring)
      else y=$(rr_netserver); fi
    done
    echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
  done
  row "netperf UDP_RR 64/64" "$(median "$OUT/a")" "netperf's netserver" "$(median "$OUT/b")" "$(median "$OUT/r")" "transactions/s"
else
  row "netperf UDP_RR 64/64 against the echo" "skipped" "netperf not available" "" "" ""
fi

# --- 5. Senders into one sink (`udpring reference sink`: recvmmsg + GRO on
# CPU 0): `udpring load --match none` vs the C loop of the same kind
# (`udpring reference send`: send(2) per datagram, or sendmsg(2) +
# UDP_SEGMENT); the figure is what the sink received per second
# (datagrams, a train's segments each).
into_sink() { # sender command (SINK for the sink's address)... -> received/s
  port; local p=$PORT
  taskset -c $S "$U" reference sink --bind "127.0.0.1:$p" --json > "$OUT/sink.json" 2>/dev/null &
  local k=$!
  sleep 0.3
  taskset -c $C "${@//SINK/127.0.0.1:$p}" >/dev/null 2>&1 || true
  kill -INT "$k" 2>/dev/null || true; wait "$k" 2>/dev/null || true
  j "int(d['pps_received'])" < "$OUT/sink.json"
}
sender_row() { # label size gso
  local label=$1 size=$2 gso=$3
  : > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
  local g=(); [ "$gso" -gt 1 ] && g=(--gso "$gso")
  for r in $(seq "$ROUNDS"); do
    for who in $(order "$r" u c); do
      if [ "$who" = u ]; then
        x=$(into_sink "$U" load SINK --match none -s "$size" "${g[@]}" -t "$SECS" -q)
      else
        y=$(into_sink "$U" reference send SINK -s "$size" --gso "$gso" -t "$SECS")
      fi
    done
    echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
  done
  local anchor="C send(2) loop"; [ "$gso" -gt 1 ] && anchor="C sendmsg + UDP_SEGMENT x$gso"
  row "$label" "$(median "$OUT/a")" "$anchor" "$(median "$OUT/b")" "$(median "$OUT/r")" "datagrams/s into one sink"
}
sender_row "sender, 64 B" 64 1
sender_row "sender, GSO 64 x 64 B" 64 64
sender_row "sender, GSO 46 x 1400 B" 1400 46

# --- 6. iperf3 -u -b 0 -l 64 into its own server (its client needs one)
# beside udpring load into the C sink: the anchor is iperf3.
iperf() { # -> received/s
  port; local p=$PORT
  taskset -c $S iperf3 -s -p "$p" -1 >/dev/null 2>&1 &
  local k=$!
  sleep 0.4
  taskset -c $C iperf3 -c 127.0.0.1 -p "$p" -u -b 0 -l 64 -t "$SECS" -J 2>/dev/null \
    | j "int((d['end']['sum']['packets'] - d['end']['sum']['lost_packets']) / d['end']['sum']['seconds'])"
  wait "$k" 2>/dev/null || true
}
: > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
for r in $(seq "$ROUNDS"); do
  for who in $(order "$r" u i); do
    if [ "$who" = u ]; then x=$(into_sink "$U" load SINK --match none -s 64 -t "$SECS" -q)
    else y=$(iperf); fi
  done
  echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
done
row "one-way 64 B, received" "$(median "$OUT/a")" "iperf3 -u -b 0 (its own server)" "$(median "$OUT/b")" "$(median "$OUT/r")" "datagrams/s received"

# --- 7. DNS: udpring load --dns-queries beside dnsperf, same NSD (RRL
# off), same query file, 100 queries in flight.
D=$OUT/dns; mkdir -p "$D"
port; DP=$PORT
. tools/peers/nsd.sh
nsd_start "$D" "$DP" "$S"
: > "$OUT/a"; : > "$OUT/b"; : > "$OUT/r"
for r in $(seq "$ROUNDS"); do
  for who in $(order "$r" u d); do
    if [ "$who" = u ]; then
      x=$(taskset -c $C "$U" load "127.0.0.1:$DP" --dns-queries "$D/q.txt" -t "$SECS" --window 100 \
        --json -q | j "int(d['pps_received'])")
    else
      y=$(taskset -c $C dnsperf -s 127.0.0.1 -p "$DP" -d "$D/q.txt" -l "$SECS" -q 100 -c 1 -T 1 2>&1 \
        | sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p')
    fi
  done
  echo "$x" >> "$OUT/a"; echo "$y" >> "$OUT/b"; ratio "$x" "$y" >> "$OUT/r"
done
kill "$NSD" 2>/dev/null || true; wait "$NSD" 2>/dev/null || true
row "DNS load on NSD, 100 in flight" "$(median "$OUT/a")" "dnsperf" "$(median "$OUT/b")" "$(median "$OUT/r")" "answers/s"

# --- 8. Path MTU on host - router - host (tools/netns.sh: 1280 over IPv4),
# then with the router dropping ICMP (a black hole): udpring pmtu (auto)
# beside tracepath, rounds alternating which goes first. The figures: the
# MTU each found most often and the median time of the whole command.
if [ "$(id -u)" = 0 ]; then
  NS=urst$$
  bash tools/netns.sh pmtu-up "$NS" >/dev/null
  ip netns exec "$NS-b" "$U" echo --bind '[::]:7007' --workers 1 -q --duration 600 >/dev/null 2>&1 &
  sleep 0.5
  ms() { date +%s%N; }
  # One side's try: prints "MTU ms" (MTU "none" when it found none).
  pmtu_try() { # tracepath|udpring
    ip -n "$NS-a" route flush cache >/dev/null 2>&1 || true
    # Only the command is timed: its output is read after (a python3 to
    # read JSON takes longer than the whole discovery).
    local t0 t m
    t0=$(ms)
    if [ "$1" = tracepath ]; then
      ip netns exec "$NS-a" timeout 30 tracepath -n -4 10.200.2.1 > "$OUT/pm_out" 2>&1
      t=$(( ($(ms) - t0) / 100000 ))
      m=$(sed -n 's/.*Resume: pmtu \([0-9]*\).*/\1/p' "$OUT/pm_out" | tail -1)
    else
      ip netns exec "$NS-a" "$U" pmtu 10.200.2.1:7007 --json > "$OUT/pm_out" 2>/dev/null
      t=$(( ($(ms) - t0) / 100000 ))
      m=$(j "d['pmtu']" < "$OUT/pm_out")
    fi
    echo "${m:-none} $((t / 10)).$((t % 10))"
  }
  # The most common of the MTUs found, one a line.
  mode() { sort "$1" | uniq -c | sort -rn | head -1 | awk '{print $2}'; }
  pmtu_rows() { # label
    rm -f "$OUT"/pm_*
    for r in $(seq "$ROUNDS"); do
      for who in $(order "$r" udpring tracepath); do
        pmtu_try "$who" > "$OUT/pm_last"
        cut -d' ' -f1 "$OUT/pm_last" >> "$OUT/pm_mtu_$who"
        cut -d' ' -f2 "$OUT/pm_last" >> "$OUT/pm_ms_$who"
      done
      ratio "$(tail -1 "$OUT/pm_ms_udpring")" "$(tail -1 "$OUT/pm_ms_tracepath")" >> "$OUT/pm_r"
    done
    local tp
    tp=$(mode "$OUT/pm_mtu_tracepath")
    [ "$tp" = none ] && tp="none (30 s)"
    row "path MTU, $1 (MTU found)" "$(mode "$OUT/pm_mtu_udpring")" "tracepath" "$tp" "" "bytes"
    row "path MTU, $1 (time)" "$(median "$OUT/pm_ms_udpring")" "tracepath" "$(median "$OUT/pm_ms_tracepath")" "$(median "$OUT/pm_r")" "ms, the whole command"
  }
  pmtu_rows "1280 B path"
  bash tools/netns.sh blackhole "$NS" >/dev/null
  pmtu_rows "1280 B path, ICMP dropped"
else
  row "path MTU (namespaces)" "skipped" "needs root" "" "" ""
fi

# --- The xdp backend on a veth pair (tools/perf/xdp.sh: its rows, same
# rounds and seconds).
if [ "$(id -u)" = 0 ]; then
  ROWS="$OUT/rows" ROUNDS=$ROUNDS SECS=$SECS bash tools/perf/xdp.sh >&2 || row "xdp backend" "failed" "" "" "" ""
else
  row "xdp backend (veth pair)" "skipped" "needs root" "" "" ""
fi

# --- The table.
echo "Where udpring stands: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo '+uncommitted' || true),"
echo "kernel $(uname -r), $(nproc) CPUs; command: ROUNDS=$ROUNDS SECS=$SECS tools/perf/standing.sh"
echo "(medians of $ROUNDS rounds of $SECS s, udpring and its anchor alternating which goes first;"
echo "the ratio is the median of the rounds' udpring / anchor)"
echo
echo "| what | udpring | anchor | anchor's figure | udpring / anchor | unit |"
echo "|---|---:|---|---:|---:|---|"
py "
import sys
for l in open('$OUT/rows'):
    w, u, a, af, r, unit = l.rstrip('\n').split('|')
    def f(x):
        try:
            v = float(x)
        except ValueError:
            return x
        return f'{v:,.0f}' if v >= 100 else f'{v:.1f}'
    rr = f'{float(r):.2f}x' if r and r != 'nan' else ''
    print(f'| {w} | {f(u)} | {a} | {f(af)} | {rr} | {unit} |')
"
