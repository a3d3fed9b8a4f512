//! The key-value responder of `examples/kv.rs`, one logic behind three
//! socket loops, in one run, interleaved round by round: the engine (its
//! handler answers with `reply_with`), a blocking `std::net::UdpSocket`
//! loop on a thread, and a tokio task on a `tokio::net::UdpSocket`. The
//! client is the same blocking socket for all, on this thread, asking
//! `GET` for a key that is there.
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

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const PING: usize = 3000;
const FLOOD_SECS: f64 = 1.5;
const WINDOW: usize = 32;
const REQUEST: &[u8] = b"GET bench-key";

/// See benches/bridge.rs: the process's CPU time, µs, from /proc.
fn cpu_us() -> f64 {
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

fn ping(c: &UdpSocket, to: SocketAddr) -> (f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..PING {
        let t = Instant::now();
        c.send_to(REQUEST, to).unwrap();
        let (n, _) = c.recv_from(&mut buf).expect("an answer");
        assert!(buf[..n].starts_with(b"VALUE"), "{:?}", &buf[..n]);
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

fn flood(c: &UdpSocket, to: SocketAddr) -> (f64, f64) {
    let mut buf = [0u8; 256];
    let mut answered = 0u64;
    for _ in 0..WINDOW {
        c.send_to(REQUEST, to).unwrap();
    }
    let start = Instant::now();
    let cpu0 = cpu_us();
    while start.elapsed().as_secs_f64() < FLOOD_SECS {
        match c.recv_from(&mut buf) {
            Ok(_) => {
                answered += 1;
                c.send_to(REQUEST, to).unwrap();
            }
            Err(_) => c.send_to(REQUEST, to).map(drop).unwrap(),
        }
    }
    let rate = answered as f64 / start.elapsed().as_secs_f64();
    let cpu = (cpu_us() - cpu0) / answered.max(1) as f64;
    while c.recv_from(&mut buf).is_ok() {}
    (rate, cpu)
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
    let (engine, table) = kv::start("127.0.0.1:0".parse().unwrap(), 1).unwrap();
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
            let (p50, p99) = ping(&c, addrs[i]);
            let (rate, cpu) = flood(&c, addrs[i]);
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
