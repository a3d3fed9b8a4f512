#!/usr/bin/env bash
# Where a closed-loop kv request's CPU goes, server by server: one pass of
# `cargo bench --bench kv` (the engine, the std loop anchor, tokio, the
# std loop control, the spinning engine, the std loop reading the server
# mark, one after another in blocks of
# 100 round trips) while the kernel's tracepoints record CPU 0, where the
# servers run: system calls (raw_syscalls), context switches and
# wake-ups (sched), softirqs (irq). No PMU is needed. For each server
# thread, each stretch on the CPU that answered one request (switched in
# by the request's wake-up, switched out waiting for the next) is cut
# into:
#   tail   from the switch-in to the end of the receive that slept
#   user   between system calls, the server's own code
#   send   the answer's system call, less the softirqs inside it
#   reply  softirqs inside the send: the loopback delivery of the answer
#          to the client (the same work for every server)
#   head   the next receive, from its start to the switch-out
#   other  any other system call (setsockopt, io_uring_enter, ...)
# in µs per request (means), and
#   wakes  stretches on the CPU that answered nothing (a timeout, a
#          timer, the ring's own turn), their sum over the requests
# (the bench's GAP_US and BLOCK pass through: GAP_US=2000 BLOCK=1
# TRIPS=1000 for requests 2 ms apart). Tracing adds its own cost to every event, the
# same for each server that makes the same calls; read the differences
# between rows of one run, not the absolute figures. Needs root (tracefs)
# and restores the tracing settings it changed.
#   TRIPS=5000 tools/perf/kv-trace.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
T=/sys/kernel/tracing
[ -w "$T/tracing_on" ] || { echo "needs root and tracefs at $T" >&2; exit 1; }
TRIPS=${TRIPS:-5000}
BIN=$(cargo bench --bench kv --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "could not build the kv bench" >&2; exit 1; }
OUT=$(mktemp /tmp/udpring-kv-trace.XXXXXX)
EVENTS="raw_syscalls/sys_enter raw_syscalls/sys_exit sched/sched_switch sched/sched_wakeup irq/softirq_entry irq/softirq_exit"
old_mask=$(cat $T/tracing_cpumask)
old_kb=$(cat $T/buffer_size_kb)
old_overwrite=$(cat $T/options/overwrite)
old_on=$(cat $T/tracing_on)
restore() {
  echo 0 > $T/tracing_on
  for e in $EVENTS; do echo 0 > "$T/events/$e/enable"; done
  echo > $T/trace
  echo "$old_mask" > $T/tracing_cpumask
  echo "$old_overwrite" > $T/options/overwrite
  echo "${old_kb%% *}" > $T/buffer_size_kb
  echo "$old_on" > $T/tracing_on
  rm -f "$OUT"
}
trap restore EXIT
echo 0 > $T/tracing_on
echo > $T/trace
echo 1 > $T/tracing_cpumask # CPU 0 only
# Keep the first events (the closed loop) when the flood after it fills
# the buffer.
echo 0 > $T/options/overwrite
echo 65536 > $T/buffer_size_kb
for e in $EVENTS; do echo 1 > "$T/events/$e/enable"; done
echo 1 > $T/tracing_on
echo "$(date -u '+%F %H:%M') UTC, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples benches || echo +uncommitted), TRIPS=$TRIPS tools/perf/kv-trace.sh"
echo
echo "The bench's own pass (untraced figures are the bench's, not this table's):"
ROUNDS=1 TRIPS=$TRIPS "$BIN" --bench 2>&1 | grep -E '^\|'
echo 0 > $T/tracing_on
cat $T/trace > "$OUT"
echo
python3 - "$OUT" <<'PY'
import collections, re, sys
line = re.compile(r'^\s*(.+)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (\w+): (.*)$')
events, names = [], {}
for l in open(sys.argv[1]):
    m = line.match(l)
    if m:
        tid = int(m.group(2))
        names.setdefault(tid, m.group(1).strip())
        events.append((tid, float(m.group(3)) * 1e6, m.group(4), m.group(5)))
SENDS = {'44', '46', '307'}   # sendto, sendmsg, sendmmsg
RECVS = {'45', '47', '299'}   # recvfrom, recvmsg, recvmmsg
sends = collections.Counter()
for tid, ts, e, d in events:
    if e == 'sys_enter' and d.split()[1] in SENDS:
        sends[tid] += 1
servers = sorted(t for t, n in sends.items() if n >= 1000)
rows = {t: collections.defaultdict(float) for t in servers}
count = collections.Counter()
idle = collections.Counter()
calls = collections.Counter()
answered = set()
cur = None
for tid, ts, e, d in events:
    if e == 'sched_switch':
        m = re.search(r'prev_pid=(\d+).*next_pid=(\d+)', d)
        prev, nxt = int(m.group(1)), int(m.group(2))
        if cur and prev == cur['tid']:
            cur['part'][cur['in']] += ts - cur['last']
            # Stretches before the server's first answer are its start.
            if cur['sends']:
                answered.add(prev)
            if cur['sends'] <= 1 and prev in answered:
                for nr, c in cur['calls'].items():
                    calls[(prev, cur['sends'], nr)] += c
            if cur['sends'] == 0 and prev in answered:
                idle[prev] += ts - cur['start']
            if cur['sends'] == 1:
                r = rows[prev]
                for k, v in cur['part'].items():
                    r[k] += v
                r['reply'] += cur['soft']
                r['send'] -= cur['soft']
                r['on CPU'] += ts - cur['start']
                count[prev] += 1
            cur = None
        if nxt in rows:
            cur = dict(tid=nxt, start=ts, last=ts, part=collections.defaultdict(float),
                       soft=0.0, sends=0, at=None, calls=collections.Counter())
            cur['in'] = 'tail'
        continue
    if cur is None:
        continue
    if e == 'softirq_entry':
        cur['at'] = ts
        continue
    if e == 'softirq_exit' and cur['at'] is not None:
        if cur['in'] == 'send':
            cur['soft'] += ts - cur['at']
        cur['at'] = None
        continue
    if tid != cur['tid']:
        continue
    if e == 'sys_enter':
        nr = d.split()[1]
        cur['part'][cur['in']] += ts - cur['last']
        cur['last'] = ts
        if nr in RECVS:
            cur['in'] = 'head'
        elif nr in SENDS:
            cur['in'] = 'send'
            cur['sends'] += 1
        else:
            cur['in'] = 'other'
            cur['calls'][nr] += 1
    elif e == 'sys_exit':
        cur['part'][cur['in']] += ts - cur['last']
        cur['last'] = ts
        cur['in'] = 'user'
# Rows in the order the bench starts its servers: the engine, the spinning
# engine (both udpring-w0), the anchor, tokio, the control.
order = {}
for t in servers:
    order.setdefault(names[t], []).append(t)
label = {}
for i, t in enumerate(order.get('udpring-w0', [])):
    label[t] = ['udpring engine', 'spinning engine'][min(i, 1)]
for t in order.get('tokio-rt-worker', []):
    label[t] = 'tokio'
# The std loops by their threads' age: the anchor, the control, the one
# reading the server mark.
std = sorted(t for t in servers if t not in label)
for i, t in enumerate(std):
    label[t] = ['std loop (the anchor)', 'std loop (the control)', 'std loop, server mark'][min(i, 2)]
cols = ['on CPU', 'tail', 'user', 'send', 'reply', 'head', 'other']
print('µs per closed-loop request on CPU 0, traced (requests answered in one stretch on the CPU)')
print()
print('| server | requests | ' + ' | '.join(cols) + ' | wakes |')
print('|---|---:|' + '---:|' * (len(cols) + 1))
want = ['udpring engine', 'std loop (the anchor)', 'tokio', 'std loop (the control)', 'spinning engine',
        'std loop, server mark']
for name in want:
    for t in [t for t in servers if label[t] == name]:
        n = max(count[t], 1)
        print(f'| {name} | {count[t]} | ' + ' | '.join(f'{rows[t][c] / n:.2f}' for c in cols)
              + f' | {idle[t] / n:.2f} |')
print()
NAMES = {'54': 'setsockopt', '55': 'getsockopt', '426': 'io_uring_enter', '232': 'epoll_wait',
         '1': 'write', '0': 'read', '202': 'futex'}
for name in want:
    for t in [t for t in servers if label[t] == name]:
        n = max(count[t], 1)
        for sent, what in [(1, 'answering'), (0, 'in the wakes')]:
            other = ', '.join(f'{NAMES.get(nr, "NR " + nr)} {c / n:.3f}'
                              for (tt, k, nr), c in sorted(calls.items(), key=lambda x: -x[1])
                              if tt == t and k == sent)
            if other:
                print(f'{name}, other system calls {what}, per request: {other}')
PY
