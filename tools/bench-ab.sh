#!/usr/bin/env bash
# Before/after on one host in one run: `udpring bench` from two builds,
# interleaved round by round (A B, B A, A B, ...), then per row the median of each
# and the ratio B/A. On a shared VM one round moves by +-30%; interleaving
# spreads that noise over both sides, and the medians and the spread of
# the per-round ratios say what moved and what is noise.
#
#   tools/bench-ab.sh OLD_UDPRING NEW_UDPRING [ROUNDS] [-- BENCH ARGS...]
#
# Build the old one from a worktree, e.g.
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release)
#   tools/bench-ab.sh /tmp/base/target/release/udpring target/release/udpring 5
set -euo pipefail
a=${1:?old udpring binary}
b=${2:?new udpring binary}
rounds=${3:-5}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
steal() { awk '/^cpu /{print $9}' /proc/stat; }
s0=$(steal); t0=$(date +%s)
for r in $(seq 1 "$rounds"); do
  # A and B take turns at running first (a fixed order can favour one).
  for who in $( ((r % 2)) && echo a b || echo b a); do
    bin=$a
    [ "$who" = b ] && bin=$b
    "$bin" bench --json "$@" > "$out/$who-$r.json"
  done
  echo "round $r/$rounds done" >&2
done
s1=$(steal); t1=$(date +%s)
python3 - "$out" "$rounds" "$a" "$b" "$(( (s1 - s0) ))" "$(( t1 - t0 ))" <<'EOF'
import json, os, statistics, sys
out, rounds, a, b, steal, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
hz = os.sysconf("SC_CLK_TCK")
rows = {}
for side in "ab":
    for r in range(1, rounds + 1):
        for x in (lambda d: d.get("rows", d.get("runs")))(json.load(open(f"{out}/{side}-{r}.json"))):
            # Older binaries wrote gso (a bool) and pps; newer gso_segments
            # and pps_received (one JSON vocabulary, tools/udpring/json-vocabulary.json).
            gso = x["gso_segments"] > 1 if "gso_segments" in x else x["gso"]
            k = (x["workload"], x["backend"], x["size"], "on" if gso else "off")
            # Floods: echoed/s (higher is better); ping: p50 RTT (lower).
            v = x.get("pps_received", x.get("pps")) if x["workload"] == "flood" else x["rtt_us"]["p50"]
            rows.setdefault(k, {"a": [], "b": []})[side].append(v)
print(f"A = {a}\nB = {b}\n{rounds} rounds interleaved, {secs} s, "
      f"steal {steal / hz / max(secs, 1) / os.cpu_count() * 100:.0f}% of CPU time\n")
print("| workload | backend | size | gso/gro | A median | B median | B/A | B/A per round (min..max) |")
print("|---|---|---:|---|---:|---:|---:|---|")
for k, v in rows.items():
    ma, mb = statistics.median(v["a"]), statistics.median(v["b"])
    per = sorted(y / x for x, y in zip(v["a"], v["b"]) if x > 0)
    unit = "echoed/s" if k[0] == "flood" else "p50 us"
    ratio = mb / ma if ma > 0 else float("nan")
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {ma:.0f} {unit} | {mb:.0f} {unit} | "
          f"{ratio:.2f}x | {per[0]:.2f}..{per[-1]:.2f} |")
print("\nFloods: B/A above 1 is faster. Ping: B/A below 1 is faster (it is RTT).")
EOF
