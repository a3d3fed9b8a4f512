#!/usr/bin/env bash
# What one closed-loop request costs in user space, counted rather than
# timed: the kv example on the engine (`examples/kv.rs`, one worker, no
# per-source limit) and the same `Kv::answer` behind a blocking std
# `UdpSocket` loop (built here in a scratch crate under target/, not part of
# the project), each under `valgrind --tool=callgrind` with its cache
# simulation at 1 KiB L1s and a 4 KiB last level, so small that nearly
# every line a request touches misses: the misses count the lines of code
# and data a request touches (one touched twice may count twice). The
# caches are fully associative (LRU), so that the count is of lines, not
# of where the linker put them: at 2 ways (the script until 48d6ba7) a
# change that moved no line on the request path moved the count by 5%.
# Each server answers `udpring load --mode ping --match flow` asking `GET`
# for a key it holds, N1 then N2 requests in two runs; the difference over
# N2 - N1 leaves start-up and shutdown out. Prints per request:
# instructions, data reads and writes, code lines (I1 misses), data lines
# read and written (D1 misses), and the same for the last level. The kv
# example sweeps expired entries every 50 ms on a timer, the std loop by
# the clock after each receive (as benches/kv.rs has it); under valgrind
# (tens of times slower) the sweeps come often enough to count. Needs
# valgrind. The builds go to target/footprint (target/footprint-lto), the
# callgrind outputs to $WORK. With LTO=1 both servers are built with fat
# LTO and one codegen unit (the workspace's own profile untouched). A server is asked
# (`SET`) until it answers, so the `GET`s find their key. Then the
# engine's TOP functions (default 15) by their own instructions per request
# (callgrind_annotate's self cost, the same difference), for where to look.
#   N1=2000 N2=6000 [LTO=1] [TOP=15] tools/perf/footprint.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
N1=${N1:-2000}
N2=${N2:-6000}
WORK=${WORK:-$(mktemp -d /tmp/udpring-footprint.XXXXXX)}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p udpring-cli
U=$REPO/target/release/udpring
if [ "${LTO:-0}" = 1 ]; then
  export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
  BUILD="fat LTO, 1 codegen unit"
  B=$REPO/target/footprint-lto
else
  BUILD="the workspace's release profile"
  B=$REPO/target/footprint
fi
CARGO_TARGET_DIR=$B cargo build --release -q --example kv
KV=$B/release/examples/kv

# The std loop, in a crate of its own that takes the example's file as is.
mkdir -p "$B/stdloop/src"
cat > "$B/stdloop/Cargo.toml" <<EOF
[package]
name = "kv-stdloop"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
udpring = { path = "$REPO" }

[profile.release]
debug = 1
codegen-units = 4

[workspace]
EOF
cat > "$B/stdloop/src/main.rs" <<EOF
#[path = "$REPO/examples/kv.rs"]
#[allow(dead_code)]
mod kv;

fn main() {
    let bind = std::env::args().nth(1).expect("usage: kv-stdloop ADDR");
    let sock = std::net::UdpSocket::bind(bind).expect("bind");
    sock.set_read_timeout(Some(kv::SWEEP_EVERY)).expect("timeout");
    let mut k = kv::Kv::new(kv::Table::default(), false);
    let mut buf = [0u8; 2048];
    // The example's sweep, as benches/kv.rs has a std loop do it.
    let mut sweep_at = std::time::Instant::now() + kv::SWEEP_EVERY;
    loop {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(k.answer(&buf[..n]), from);
        }
        let now = std::time::Instant::now();
        if now >= sweep_at {
            k.sweep();
            sweep_at = now + kv::SWEEP_EVERY;
        }
    }
}
EOF
CARGO_TARGET_DIR=$B cargo build --release -q --manifest-path "$B/stdloop/Cargo.toml"
STD=$B/release/kv-stdloop

hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
SET=$(hex "SET bench-key a-value-of-some-length")
GET=$(hex "GET bench-key")
# One port for every run: each runs in a subshell (`$(run ...)`), one
# after the other, its server killed and reaped before the next starts.
PORT=$((30000 + RANDOM % 20000))

# One run: server $1 (its extra arguments after the address in $3...),
# N = $2 requests; the callgrind totals line (Ir Dr Dw I1mr D1mr D1mw ILmr
# DLmr DLmw) on stdout.
run() {
  local bin=$1 n=$2 out="$WORK/cg.$(basename "$1").$2"
  shift 2
  rm -f "$out"*
  valgrind --tool=callgrind --cache-sim=yes --I1=1024,16,64 --D1=1024,16,64 --LL=4096,64,64 \
    --callgrind-out-file="$out" "$bin" "127.0.0.1:$PORT" "$@" >/dev/null 2>&1 &
  local vg=$!
  # Up when it answers (valgrind starts slowly).
  local up=
  for _ in $(seq 60); do
    if "$U" load "127.0.0.1:$PORT" --mode ping --payload "$SET" --match flow -n 1 \
        --warmup 0 --timeout 0.5 -q >/dev/null 2>&1; then up=1; break; fi
    sleep 0.5
  done
  [ -n "$up" ] || { echo "$(basename "$bin") did not answer under valgrind" >&2; kill -KILL $vg; exit 1; }
  "$U" load "127.0.0.1:$PORT" --mode ping --payload "$GET" --match flow -n "$n" \
    --warmup 0 -q >/dev/null
  # Dump what was counted (the process never ends by itself: valgrind
  # holds its lock through io_uring_enter, so a signal may not reach it).
  callgrind_control -d "$vg" >/dev/null 2>&1 || true
  sleep 1
  kill -KILL "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  local f
  f=$(ls -S "$out"* | head -1)
  grep -m1 '^summary:' "$f" | cut -d' ' -f2-
}

per_request() { # name totals(N1) totals(N2)
  python3 - "$1" "$2" "$3" "$N1" "$N2" <<'PY'
import sys
name, a, b, n1, n2 = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4]), int(sys.argv[5])
d = [(int(y) - int(x)) / (n2 - n1) for x, y in zip(a, b)]
print(f"| {name} | {d[0]:,.0f} | {d[1]:,.0f} + {d[2]:,.0f} | {d[3]:,.0f} | {d[4]:,.0f} + {d[5]:,.0f} | {d[6]:,.0f} | {d[7]:,.0f} + {d[8]:,.0f} |")
PY
}

echo "per closed-loop request ($N2 - $N1 requests, GET of a key the table holds), $BUILD, $(valgrind --version), commit $(git rev-parse --short HEAD)"
echo
echo "| server | instructions | data reads + writes | code lines (1 KiB L1) | data lines read + written (1 KiB L1) | code lines (4 KiB LL) | data lines (4 KiB LL) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
per_request "udpring engine (examples/kv.rs)" "$(run "$KV" "$N1" 1 0)" "$(run "$KV" "$N2" 1 0)"
per_request "std UdpSocket loop, same Kv::answer" "$(run "$STD" "$N1")" "$(run "$STD" "$N2")"

# The engine's functions by their own instructions per request.
largest() { ls -S "$WORK/cg.$1.$2"* | head -1; }
echo
echo "the engine's top ${TOP:-15} functions, own instructions per request:"
echo
python3 - "$(largest kv "$N1")" "$(largest kv "$N2")" "$N1" "$N2" "${TOP:-15}" <<'PY'
import re, subprocess, sys
a, b, n1, n2, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def own(path):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--show=Ir", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    d = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S+?:(.*?)(?: \[.*\])?$", line)
        if m and "PROGRAM TOTALS" not in line:
            d[m.group(2)] = d.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return d
x, y = own(a), own(b)
rows = sorted(((y.get(k, 0) - x.get(k, 0)) / (n2 - n1), k) for k in set(x) | set(y))
print("| instructions | function |")
print("|---:|---|")
for v, k in sorted(rows, reverse=True)[:top]:
    print(f"| {v:,.0f} | `{k}` |")
PY
echo
echo "callgrind outputs: $WORK"
