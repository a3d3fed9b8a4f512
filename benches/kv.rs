//! The key-value responder of `examples/kv.rs`, one logic behind three
//! socket loops, in one run, interleaved round by round: the engine (its
//! handler answers with `reply_with`), a blocking `std::net::UdpSocket`
//! loop on a thread, and a tokio task on a `tokio::net::UdpSocket`. The
//! client is the same blocking socket for all, on this thread, asking
//! `GET` for a key that is there. Servers on CPU 0, the client on CPU 1.
//!
//! - ping-pong: one request in flight; round-trip p50 and p99 (µs);
//! - throughput: 32 requests in flight; answers per second, and the
//!   process's CPU per answer (µs; every thread, the client's included,
//!   which is the same for all three).
//!
//! Run: `cargo bench --bench kv` (prints a table; `ROUNDS=n`, 5 by
//! default).

#[path = "../examples/kv.rs"]
#[allow(dead_code)]
mod kv;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;
use common::{WINDOW, flood, ping};

const REQUEST: &[u8] = b"GET bench-key";

/// Pins the calling thread to `cpu` (where the machine has it).
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let set = |t: &kv::Table| {
        let mut k = kv::Kv::new(t.clone(), false);
        assert_eq!(k.answer(b"SET bench-key a-value-of-some-length"), b"OK");
    };
    // The engine.
    // As PERF.md's method places them: every server on CPU 0, the client
    // on CPU 1 (a round trip crosses CPUs for all three alike).
    let table = kv::Table::default();
    let t2 = table.clone();
    let mut cfg = udpring::Config::new("127.0.0.1:0".parse().unwrap());
    cfg.workers = 1;
    cfg.pin = true;
    cfg.first_cpu = 0;
    // Started before this thread is pinned: the engine pins its worker
    // among the CPUs the starting thread may use.
    let engine = udpring::Engine::start(cfg, move |_| kv::Kv::new(t2.clone(), true)).unwrap();
    pin(1);
    set(&table);
    let engine_addr = engine.local_addr();
    // A blocking std loop on a thread.
    let std_table = kv::Table::default();
    set(&std_table);
    let std_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    std_sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let std_addr = std_sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let std_thread = std::thread::spawn(move || {
        pin(0);
        let mut k = kv::Kv::new(std_table, false);
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, from)) = std_sock.recv_from(&mut buf) {
                let _ = std_sock.send_to(k.answer(&buf[..n]), from);
            }
        }
    });
    // A tokio task.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| pin(0))
        .enable_all()
        .build()
        .unwrap();
    let tokio_table = kv::Table::default();
    set(&tokio_table);
    let sock = rt
        .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
        .unwrap();
    let tokio_addr = sock.local_addr().unwrap();
    let task = rt.spawn(async move {
        let mut k = kv::Kv::new(tokio_table, false);
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(k.answer(&buf[..n]), from).await;
        }
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    type Rounds = Vec<(f64, f64, f64, f64)>;
    let mut rows: Vec<(&str, Rounds)> = vec![
        ("udpring engine (kv handler)", vec![]),
        ("std UdpSocket loop (the anchor)", vec![]),
        ("tokio UdpSocket, one task", vec![]),
    ];
    let addrs = [engine_addr, std_addr, tokio_addr];
    for r in 0..rounds {
        // Taking turns at going first.
        for k in 0..3 {
            let i = (k + r) % 3;
            let (p50, p99) = ping(&c, addrs[i], REQUEST, |a| {
                assert!(a.starts_with(b"VALUE"), "{a:?}");
            });
            let (rate, cpu) = flood(&c, addrs[i], REQUEST);
            rows[i].1.push((p50, p99, rate, cpu));
        }
        eprintln!("round {}/{rounds}", r + 1);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    // Per round ratios against the std loop, then their median.
    let ratio = |i: usize, f: fn(&(f64, f64, f64, f64)) -> f64| {
        med(rows[i]
            .1
            .iter()
            .zip(&rows[1].1)
            .map(|(a, b)| f(a) / f(b))
            .collect())
    };
    println!("{rounds} rounds interleaved; medians; 64-byte-ish GETs on 127.0.0.1\n");
    println!(
        "| server | ping p50 µs | ping p99 µs | answers/s, {WINDOW} in flight | CPU µs/answer | p50 / std | p99 / std | CPU / std |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (name, v)) in rows.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2}x | {:.2}x | {:.2}x |",
            med(v.iter().map(|x| x.0).collect()),
            med(v.iter().map(|x| x.1).collect()),
            med(v.iter().map(|x| x.2).collect()),
            med(v.iter().map(|x| x.3).collect()),
            ratio(i, |x| x.0),
            ratio(i, |x| x.1),
            ratio(i, |x| x.3),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = std_thread.join();
    task.abort();
    engine.stop().unwrap();
}
