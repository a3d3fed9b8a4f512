//! What the request/answer benches share: the client's ping-pong and
//! windowed flood against one server, and the process's CPU time.

// Each bench uses its part of these.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Requests per ping-pong measurement.
pub const PING: usize = 3000;
/// Seconds per flood measurement.
pub const FLOOD_SECS: f64 = 1.5;
/// Requests in flight in a flood.
pub const WINDOW: usize = 32;

/// CPU time this process has used (user + system), µs, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks of 10 ms here,
/// against phases of 1.5 s): every thread, the client's, the servers' and
/// any runtime's, so a difference over a phase is what serving it cost the
/// host, the client's share being the same for every server.
pub fn cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0] + f[1]) * 1e6 / 100.0
}

/// One request in flight, [`PING`] times: the round trip's p50 and p99,
/// µs. `check` sees each answer.
pub fn ping(c: &UdpSocket, to: SocketAddr, req: &[u8], check: impl Fn(&[u8])) -> (f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..PING {
        let t = Instant::now();
        c.send_to(req, to).unwrap();
        let (n, _) = c.recv_from(&mut buf).expect("an answer");
        check(&buf[..n]);
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

/// [`WINDOW`] requests in flight for [`FLOOD_SECS`]: answers per second,
/// and the process's CPU µs per answer.
pub fn flood(c: &UdpSocket, to: SocketAddr, req: &[u8]) -> (f64, f64) {
    flood_with(c, to, req, cpu_us)
}

/// [`flood`], with the CPU (µs) read by `cpu`: e.g. only the server's
/// threads ([`Threads::cpu_us`]).
pub fn flood_with(
    c: &UdpSocket,
    to: SocketAddr,
    req: &[u8],
    cpu_us: impl Fn() -> f64,
) -> (f64, f64) {
    let mut buf = [0u8; 256];
    let mut answered = 0u64;
    for _ in 0..WINDOW {
        c.send_to(req, to).unwrap();
    }
    let start = Instant::now();
    let cpu0 = cpu_us();
    while start.elapsed().as_secs_f64() < FLOOD_SECS {
        match c.recv_from(&mut buf) {
            Ok(_) => {
                answered += 1;
                c.send_to(req, to).unwrap();
            }
            // A lost one: put another in flight.
            Err(_) => c.send_to(req, to).map(drop).unwrap(),
        }
    }
    let rate = answered as f64 / start.elapsed().as_secs_f64();
    let cpu = (cpu_us() - cpu0) / answered.max(1) as f64;
    // Drain what is still in flight.
    while c.recv_from(&mut buf).is_ok() {}
    (rate, cpu)
}

/// The threads one server runs on, told apart from the rest of this
/// process by the tasks that appeared while it started.
pub struct Threads(Vec<String>);

impl Threads {
    fn tasks() -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `start` and returns what it returned with the threads that
    /// appeared meanwhile and were still there 50 ms later (a helper that
    /// came and went is not the server).
    pub fn started_by<T>(start: impl FnOnce() -> T) -> (T, Threads) {
        let before = Threads::tasks();
        let t = start();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let after = Threads::tasks();
        (t, Threads(after.difference(&before).cloned().collect()))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// CPU time (µs) these threads have run, from the scheduler's own
    /// account in nanoseconds (fine enough for a block of 100 round trips,
    /// unlike the clock ticks of `stat`): each thread's CPU clock
    /// (`clock_gettime` of its thread CPU clock id), which brings a thread
    /// running at that moment up to date; its `schedstat` in /proc does
    /// not, and lagged a thread that spins without sleeping by up to a
    /// scheduler tick (4 ms, more than a block). Interrupts and softirqs
    /// that run while a thread is on the CPU (its reply's delivery to the
    /// client, on loopback) count as its own.
    pub fn cpu_us(&self) -> f64 {
        self.0
            .iter()
            .filter_map(|t| t.parse::<i32>().ok())
            .filter_map(|tid| {
                // MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED) (linux/posix-timers.h).
                let id = nix::time::ClockId::from_raw((!tid << 3) | 6);
                nix::time::clock_gettime(id).ok()
            })
            .map(|t| t.tv_sec() as f64 * 1e6 + t.tv_nsec() as f64 / 1e3)
            .sum()
    }
}

/// The order in which `n` servers take their turns, as a cycle: rounds in
/// which each server has one turn, each round a cyclic shift of a Williams
/// sequence (0, 1, n-1, 2, n-2, ...; for odd n every shift also reversed
/// and offset by 2), so that each server follows each other one about
/// equally often (each ordered pair 1-2 times a cycle for even n, 2-3 for
/// odd n from 5), never itself, and every server waits the same numbers of turns
/// between its turns (checked here). Both matter: a server whose turn
/// comes after one running the same code, or soon after its own last
/// turn, finds more of itself in the caches. (Until 946e568 the turns
/// rotated by 1, 2, 3, 4 places, and the engine followed the spinning
/// engine in three turns of four; then an Eulerian circuit balanced who
/// follows whom but gave the first server three turns in four two turns
/// after its last, against five to seven for the others.)
pub fn turn_order(n: usize) -> Vec<usize> {
    if n < 3 {
        return (0..n).collect();
    }
    let mut base = vec![0];
    let (mut lo, mut hi) = (1, n - 1);
    while base.len() < n {
        if base.len() % 2 == 1 {
            base.push(lo);
            lo += 1;
        } else {
            base.push(hi);
            hi -= 1;
        }
    }
    let mut order = vec![];
    for r in 0..n {
        order.extend(base.iter().map(|&x| (x + r) % n));
        if n % 2 == 1 {
            order.extend(base.iter().rev().map(|&x| (x + r + 2) % n));
        }
    }
    let len = order.len();
    let mut pairs = vec![vec![0; n]; n];
    let mut waits: Vec<Vec<usize>> = vec![vec![]; n];
    // Two laps: the first sets where each server last had its turn (every
    // server has one a lap), the second counts, across the lap's end too.
    let mut last = vec![0; n];
    for k in 0..2 * len {
        let (i, before) = (order[k % len], order[(k + len - 1) % len]);
        if k >= len {
            pairs[before][i] += 1;
            waits[i].push(k - last[i]);
        }
        last[i] = k;
    }
    let others = || (0..n).flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)));
    let least = others().map(|(a, b)| pairs[a][b]).min().unwrap_or(0);
    for (a, row) in pairs.iter().enumerate() {
        assert_eq!(row[a], 0, "{a} follows itself");
    }
    for (a, b) in others() {
        let c = pairs[a][b];
        assert!(c >= 1 && c <= least + 2, "turn {a} -> {b} taken {c} times");
    }
    for w in waits.iter_mut() {
        w.sort_unstable();
    }
    assert!(
        waits.iter().all(|w| *w == waits[0]),
        "uneven waits: {waits:?}"
    );
    order
}

/// Closed loop against several servers in turn, so that every one of them
/// sees the same machine: blocks of `block` round trips (one request in
/// flight), the servers taking turns in [`turn_order`], `total` round
/// trips per server. With `gap`, the client waits that long before each
/// request (a service asked now and then, idle in between: what it costs to
/// wake up for a request), the wait outside the round trip. Per server: the
/// round trips' histogram (ns) and the CPU µs its threads used per round
/// trip (with `gap`, including whatever it ran while idle).
/// `check` sees each answer.
pub fn ping_interleaved(
    c: &UdpSocket,
    servers: &[(SocketAddr, &Threads)],
    req: &[u8],
    block: usize,
    total: usize,
    gap: Option<std::time::Duration>,
    check: impl Fn(&[u8]),
) -> Vec<(Histogram<u64>, f64)> {
    let mut out: Vec<(Histogram<u64>, f64)> = servers
        .iter()
        .map(|_| {
            (
                Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap(),
                0.0,
            )
        })
        .collect();
    let mut buf = [0u8; 256];
    let blocks = total.div_ceil(block);
    let mut turns = vec![0; servers.len()];
    // The cycle again and again; a server that has had its blocks sits
    // out the rest (when `blocks` is no multiple of its turns a cycle).
    for &i in turn_order(servers.len()).iter().cycle() {
        if turns.iter().all(|&t| t == blocks) {
            break;
        }
        if turns[i] == blocks {
            continue;
        }
        turns[i] += 1;
        let (to, threads) = servers[i];
        let cpu0 = threads.cpu_us();
        for _ in 0..block {
            if let Some(g) = gap {
                std::thread::sleep(g);
            }
            let t = Instant::now();
            c.send_to(req, to).unwrap();
            let (n, _) = c.recv_from(&mut buf).expect("an answer");
            check(&buf[..n]);
            out[i].0.saturating_record(t.elapsed().as_nanos() as u64);
        }
        out[i].1 += threads.cpu_us() - cpu0;
    }
    for o in out.iter_mut() {
        o.1 /= (blocks * block) as f64;
    }
    out
}
