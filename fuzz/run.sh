#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (the network-facing ones for
# NET_SECS), JOBS at a time, into fuzz/corpus/TARGET, and prints one line
# per target: executions, seconds, coverage, corpus size, and whether it
# crashed (the input is then in fuzz/artifacts/TARGET/; copy it to
# fuzz/regressions/TARGET/ with the fix). Needs nightly and cargo-fuzz.
#   SECS=300 NET_SECS=480 JOBS=2 fuzz/run.sh [TARGET...]
set -u
cd "$(dirname "$0")"
SECS=${SECS:-300}
NET_SECS=${NET_SECS:-480}
JOBS=${JOBS:-2}
# Bytes a stranger on the network chooses (or, for cmsg, the kernel writes
# beside them); the rest are files the user gives.
NET="header sequences fanout_control dns_reply expect cmsg frame"
ALL="header sequences fanout_control dns_reply expect cmsg frame pcap payload_file dnsperf interval_log report_json"
TARGETS=${*:-$ALL}
mkdir -p logs
# The engine's and the command's dependencies at the versions the root
# build uses (its lock file), so the fuzzer tests what ships.
cp ../Cargo.lock Cargo.lock
cargo +nightly fuzz build >/dev/null 2>&1 || { echo "cargo +nightly fuzz build failed" >&2; exit 1; }
run() {
    local t=$1 s=$SECS
    case " $NET " in *" $t "*) s=$NET_SECS ;; esac
    cargo +nightly fuzz run "$t" -- -max_total_time="$s" -rss_limit_mb=4096 >"logs/$t.log" 2>&1
    echo "$?" >"logs/$t.rc"
}
for t in $TARGETS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
    run "$t" &
done
wait
printf '%-15s %12s %6s %6s %8s %s\n' target executions secs cov corpus result
for t in $TARGETS; do
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)
    runs=$(grep -oE '^Done [0-9]+ runs in [0-9]+' "logs/$t.log" | awk '{print $2, $5}')
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.*corp: ([0-9]+).*/\1/p' <<<"$last")
    if [ "$(cat "logs/$t.rc")" = 0 ]; then res=clean; else res="CRASH (see fuzz/logs/$t.log)"; fi
    printf '%-15s %12s %6s %6s %8s %s\n' "$t" ${runs:-? ?} "${cov:-?}" "${corp:-?}" "$res"
done
