#!/usr/bin/env bash
# The bench's 64 B uring-echo flood in one process against the same echo
# and client as two processes (`udpring echo -w 1` + `udpring load`, the
# load's default window and backend), alternating, ROUNDS times.
#   ROUNDS=3 SECS=3 tools/perf/process-gap.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
U=target/release/udpring
cargo build --release -q -p udpring-cli
j() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
echo "round one_process two_processes ratio"
for r in $(seq 1 "$ROUNDS"); do
    one=$($U bench --only flood --size 64 --backend uring --no-c-limit --duration "$SECS" --json \
        | j "int([x for x in d['rows'] if x['gso_segments'] == 1][0]['pps_received'])")
    $U echo --bind 127.0.0.1:19555 -w 1 --backend uring --duration $((SECS + 2)) -q >/dev/null &
    sleep 0.3
    two=$($U load 127.0.0.1:19555 -t "$SECS" --json -q | j "int(d['pps_received'])")
    wait
    echo "$r $one $two $(python3 -c "print(f'{$one / $two:.2f}')")"
done
