//! The key-value responder of `examples/kv.rs`, one logic behind three
//! socket loops, in one run: the engine (its handler answers with
//! `reply_with`), a blocking `std::net::UdpSocket` loop on a thread (the
//! anchor), a tokio task on a `tokio::net::UdpSocket`, and a second std
//! loop, the same code as the anchor. Each sweeps expired entries every
//! `SWEEP_EVERY` (50 ms) as its API has it done: the engine's handler on
//! its timer (with the example's slack), the std loop by the clock after
//! each receive (its 50 ms read timeout bounding an idle wait), tokio on
//! an interval beside the receive. The last std
//! loop is the control, whose ratio to the
//! anchor is what this method cannot tell apart from 1.00x. The client is
//! the same blocking socket for all, on this thread, asking `GET` for a key
//! that is there. Servers on CPU 0, the client on CPU 1. A fifth row is
//! the engine with the adaptive spin before sleeping (`Config::spin_us`
//! 50): lower latency for more CPU per request. A sixth is the std loop
//! as a udpring server has it: its socket carries the server mark and each
//! datagram's TTL is read (`os::recv_from_hops`: `recvmsg` with a control
//! message, where the anchor's `recv_from` has none) and a marked one not
//! answered, what the engine's loop guard does; a last line gives the
//! engine's ratios to it.
//!
//! - closed loop: one request in flight, the servers taking turns block by
//!   block (100 round trips each; each server follows each other one
//!   equally often), so that all of them see the same moments of a shared
//!   machine (and each begins its turn with what another left in the
//!   caches); per pass, each server's
//!   round-trip p50 and p99 (µs) and the CPU its own threads used per
//!   request (µs, the scheduler's account in nanoseconds);
//! - flood: 32 requests in flight for 1.5 s per server, the servers taking
//!   turns pass by pass; answers per second and the server threads' CPU
//!   per answer.
//!
//! Ratios are to the anchor, per pass, then the median over the passes.
//!
//! Run: `cargo bench --bench kv` (prints a table; `ROUNDS=n` passes, 5 by
//! default; `BLOCK=n` round trips per turn, 100 by default: longer turns
//! leave less of each server's time to re-warming after the others;
//! `TRIPS=n` closed-loop round trips per server per pass, 10,000 by
//! default; `GAP_US=n`: the client waits n µs before each request, a
//! service asked now and then, each request a wake-up from idle, e.g.
//! `GAP_US=2000 BLOCK=1 TRIPS=2000`).

#[path = "../examples/kv.rs"]
#[allow(dead_code)]
mod kv;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{Threads, WINDOW, flood_with, ping_interleaved};

const REQUEST: &[u8] = b"GET bench-key";
/// Round trips per server per pass, and per block of one server's turn.
const PING_TOTAL: usize = 10_000;
const BLOCK: usize = 100;

/// Pins the calling thread to `cpu` (where the machine has it).
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// A table holding the key the client asks for.
fn table() -> kv::Table {
    let t = kv::Table::default();
    let mut k = kv::Kv::new(t.clone(), false);
    assert_eq!(k.answer(b"SET bench-key a-value-of-some-length"), b"OK");
    t
}

/// The kv handler on the engine, one worker pinned to CPU 0, with
/// `spin_us` (0: none): the engine and its address.
fn kv_engine(spin_us: u32) -> (udpring::Engine, SocketAddr) {
    let t2 = table();
    let mut cfg = udpring::Config::new("127.0.0.1:0".parse().unwrap());
    cfg.workers = 1;
    cfg.pin = true;
    cfg.first_cpu = 0;
    cfg.spin_us = spin_us;
    let engine = udpring::Engine::start(cfg, move |_| kv::Kv::new(t2.clone(), true)).unwrap();
    let addr = engine.local_addr();
    (engine, addr)
}

/// A blocking std loop on a thread of its own, on CPU 0.
fn std_loop(stop: &Arc<AtomicBool>) -> SocketAddr {
    loop_with(stop, false, |s, b| s.recv_from(b))
}

/// The std loop as a udpring server has it: the server mark on its socket
/// (`os::set_server_mark`) and each datagram's TTL read with it
/// (`os::recv_from_hops`: `recvmsg` and a control message), a marked one
/// not answered. What the loop guard's mark costs a blocking loop.
fn marked_loop(stop: &Arc<AtomicBool>) -> SocketAddr {
    loop_with(stop, true, |s, b| {
        loop {
            let (n, from, hops) = udpring::os::recv_from_hops(s, b)?;
            if !hops.is_some_and(udpring::is_marked) {
                return Ok((n, from));
            }
        }
    })
}

/// A blocking loop on a thread of its own, on CPU 0, receiving with
/// `recv`, its socket marked as a udpring server's when `mark`.
fn loop_with(
    stop: &Arc<AtomicBool>,
    mark: bool,
    recv: impl Fn(&UdpSocket, &mut [u8]) -> std::io::Result<(usize, SocketAddr)> + Send + 'static,
) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    if mark {
        udpring::os::set_server_mark(&sock, false).unwrap();
    }
    let addr = sock.local_addr().unwrap();
    let stop = stop.clone();
    let t = table();
    std::thread::spawn(move || {
        pin(0);
        let mut k = kv::Kv::new(t, false);
        let mut buf = [0u8; 2048];
        let mut sweep_at = Instant::now() + kv::SWEEP_EVERY;
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = recv(&sock, &mut buf) {
                let _ = sock.send_to(k.answer(&buf[..n]), from);
            }
            let now = Instant::now();
            if now >= sweep_at {
                k.sweep();
                sweep_at = now + kv::SWEEP_EVERY;
            }
        }
    });
    addr
}

/// One row's passes: (p50 µs, p99 µs, closed-loop CPU µs per request,
/// answers/s, flood CPU µs per answer).
type Pass = (f64, f64, f64, f64, f64);

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|r| r.parse().ok())
            .filter(|&b| b > 0)
            .unwrap_or(default)
    };
    let block = env("BLOCK", BLOCK);
    let trips = env("TRIPS", PING_TOTAL);
    let gap = std::env::var("GAP_US")
        .ok()
        .and_then(|g| g.parse().ok())
        .map(Duration::from_micros);
    let stop = Arc::new(AtomicBool::new(false));
    // The engine, then again with the adaptive spin before sleeping.
    // Started before this thread is pinned: the engine pins its worker
    // among the CPUs the starting thread may use.
    let ((engine, engine_addr), engine_threads) = Threads::started_by(|| kv_engine(0));
    let ((spinning, spin_addr), spin_threads) = Threads::started_by(|| kv_engine(50));
    let (std_addr, std_threads) = Threads::started_by(|| std_loop(&stop));
    // A tokio task on a one-thread runtime pinned to CPU 0.
    let ((rt, task, tokio_addr), tokio_threads) = Threads::started_by(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(|| pin(0))
            .enable_all()
            .build()
            .unwrap();
        let sock = rt
            .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let t = table();
        let task = rt.spawn(async move {
            let mut k = kv::Kv::new(t, false);
            let mut buf = vec![0u8; 2048];
            let mut sweep = tokio::time::interval(kv::SWEEP_EVERY);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, from)) = r else { break };
                        let _ = sock.send_to(k.answer(&buf[..n]), from).await;
                    }
                    _ = sweep.tick() => k.sweep(),
                }
            }
        });
        (rt, task, addr)
    });
    let (control_addr, control_threads) = Threads::started_by(|| std_loop(&stop));
    let (marked_addr, marked_threads) = Threads::started_by(|| marked_loop(&stop));
    pin(1);
    for t in [
        &engine_threads,
        &std_threads,
        &tokio_threads,
        &control_threads,
        &spin_threads,
        &marked_threads,
    ] {
        assert!(t.len() > 0, "a server's threads were not found");
    }
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut rows: Vec<(&str, Vec<Pass>)> = vec![
        ("udpring engine (kv handler)", vec![]),
        ("std UdpSocket loop (the anchor)", vec![]),
        ("tokio UdpSocket, one task", vec![]),
        ("std loop again (the control)", vec![]),
        ("spinning engine (kv handler, spin_us 50)", vec![]),
        (
            "marked std loop (the server mark read, as the engine's guard does)",
            vec![],
        ),
    ];
    let servers = [
        (engine_addr, &engine_threads),
        (std_addr, &std_threads),
        (tokio_addr, &tokio_threads),
        (control_addr, &control_threads),
        (spin_addr, &spin_threads),
        (marked_addr, &marked_threads),
    ];
    for r in 0..rounds {
        let closed = ping_interleaved(&c, &servers, REQUEST, block, trips, gap, |a| {
            assert!(a.starts_with(b"VALUE"), "{a:?}");
        });
        // Taking turns at going first.
        let mut floods = vec![(0.0, 0.0); servers.len()];
        for k in 0..servers.len() {
            let i = (k + r) % servers.len();
            let (to, threads) = servers[i];
            floods[i] = flood_with(&c, to, REQUEST, || threads.cpu_us());
        }
        for (i, ((h, cpu), (rate, fcpu))) in closed.iter().zip(&floods).enumerate() {
            rows[i].1.push((
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                *cpu,
                *rate,
                *fcpu,
            ));
        }
        eprintln!("pass {}/{rounds}", r + 1);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    // Per pass ratios of row i to row j (the anchor: 1), then their median.
    let ratio_to = |i: usize, j: usize, f: fn(&Pass) -> f64| {
        med(rows[i]
            .1
            .iter()
            .zip(&rows[j].1)
            .map(|(a, b)| f(a) / f(b))
            .collect())
    };
    let ratio = |i: usize, f: fn(&Pass) -> f64| ratio_to(i, 1, f);
    println!(
        "{rounds} passes; medians; 64-byte-ish GETs on 127.0.0.1; closed loop {trips} round trips per server per pass in blocks of {block}{}; flood {WINDOW} in flight\n",
        gap.map_or(String::new(), |g| format!(
            ", {} µs idle before each",
            g.as_micros()
        ))
    );
    println!(
        "| server | p50 µs | p99 µs | CPU µs/request, closed loop | answers/s, flood | CPU µs/answer, flood | p50 / std | p99 / std | CPU / std, closed | CPU / std, flood |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (name, v)) in rows.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            med(v.iter().map(|x| x.0).collect()),
            med(v.iter().map(|x| x.1).collect()),
            med(v.iter().map(|x| x.2).collect()),
            med(v.iter().map(|x| x.3).collect()),
            med(v.iter().map(|x| x.4).collect()),
            ratio(i, |x| x.0),
            ratio(i, |x| x.1),
            ratio(i, |x| x.2),
            ratio(i, |x| x.4),
        );
    }
    // The engine against a blocking loop that pays for the server mark as
    // its guard does.
    let m = rows.len() - 1;
    println!(
        "\nthe engine against the marked std loop (per-pass ratios, median): p50 {:.2}x, p99 {:.2}x, CPU {:.2}x closed, {:.2}x flood",
        ratio_to(0, m, |x| x.0),
        ratio_to(0, m, |x| x.1),
        ratio_to(0, m, |x| x.2),
        ratio_to(0, m, |x| x.4),
    );
    stop.store(true, Ordering::Relaxed);
    task.abort();
    drop(rt);
    engine.stop().unwrap();
    spinning.stop().unwrap();
}
