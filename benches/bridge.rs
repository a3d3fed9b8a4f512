//! The tokio bridge (`examples/tokio_bridge.rs`: engine handler -> bounded
//! channel -> async task -> Sender) beside the plain tokio server a user
//! would write (one task: `recv_from`, work, `send_to` on a tokio
//! `UdpSocket`), doing the same work (upper-case the payload), in one run,
//! interleaved round by round. The client is the same blocking socket for
//! both, on this thread.
//!
//! - ping-pong: one request in flight; round-trip p50 and p99 (µs);
//! - throughput: 32 requests in flight; answers per second.
//!
//! Beside them the engine alone (its handler answers: no hop) and the
//! engine as an async stream (`Engine::start_stream`: a copy per datagram,
//! served by one task).
//!
//! Run: `cargo bench --bench bridge` (prints a table; `ROUNDS=n` to
//! change the 5 rounds).

#[path = "../examples/tokio_bridge.rs"]
#[allow(dead_code)]
mod bridge;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

mod common;
use common::{WINDOW, flood, ping};

fn plain_tokio(rt: &tokio::runtime::Runtime) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = rt
        .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let task = rt.spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            buf[..n].make_ascii_uppercase();
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = bridge::start("127.0.0.1:0".parse().unwrap(), 1, 1024).unwrap();
    let bridge_addr = b.engine.local_addr();
    let counts = b.counts.clone();
    let server = rt.spawn(bridge::serve(b.requests, b.senders, b.pool, counts));
    let (plain_addr, plain) = plain_tokio(&rt);
    // The engine answering in its own handler: what the hop to tokio adds.
    struct Upper;
    impl udpring::Handler for Upper {
        fn on_datagram(&mut self, mut d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
            d.payload_mut().make_ascii_uppercase();
            let _ = tx.reply(d);
        }
    }
    let engine_only =
        udpring::Engine::start(udpring::Config::new("127.0.0.1:0".parse().unwrap()), |_| {
            Upper
        })
        .unwrap();
    let engine_addr = engine_only.local_addr();
    // The engine as an async stream (Engine::start_stream), served by one
    // tokio task on the same runtime.
    let (stream_engine, mut incoming) =
        udpring::Engine::start_stream(udpring::Config::new("127.0.0.1:0".parse().unwrap()), 1024)
            .unwrap();
    let stream_addr = stream_engine.local_addr();
    let mut inc = incoming.pop().unwrap();
    let stream_task = rt.spawn(async move {
        while let Some(d) = inc.recv().await {
            let _ = inc.reply(&d, &d.payload().to_ascii_uppercase());
        }
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Per server: (ping p50, ping p99, answers/s, CPU µs per answer) of
    // each round.
    type Rounds = Vec<(f64, f64, f64, f64)>;
    let mut rows: Vec<(&str, Rounds)> = vec![
        ("udpring engine + tokio bridge", vec![]),
        ("tokio UdpSocket, one task", vec![]),
        ("udpring engine alone (the handler answers)", vec![]),
        ("udpring engine as a stream (Engine::start_stream)", vec![]),
    ];
    for r in 0..rounds {
        for (i, to) in [bridge_addr, plain_addr, engine_addr, stream_addr]
            .into_iter()
            .enumerate()
        {
            let (p50, p99) = ping(&c, to, &[b'p'; 64], |_| {});
            let (rate, cpu) = flood(&c, to, &[b'f'; 64]);
            rows[i].1.push((p50, p99, rate, cpu));
        }
        eprintln!("round {}/{rounds}", r + 1);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut m = Vec::new();
    for (name, v) in &rows {
        let mut p50: Vec<f64> = v.iter().map(|x| x.0).collect();
        let mut p99: Vec<f64> = v.iter().map(|x| x.1).collect();
        let mut rate: Vec<f64> = v.iter().map(|x| x.2).collect();
        let mut cpu: Vec<f64> = v.iter().map(|x| x.3).collect();
        m.push((
            *name,
            med(&mut p50),
            med(&mut p99),
            med(&mut rate),
            med(&mut cpu),
        ));
    }
    println!(
        "{rounds} rounds interleaved; medians; 64-byte requests on 127.0.0.1; one tokio worker thread\n"
    );
    println!(
        "| server | ping p50 µs | ping p99 µs | answers/s, {WINDOW} in flight | vs tokio UdpSocket (rate) | CPU µs per answer (process, client included) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, p50, p99, rate, cpu) in &m {
        println!(
            "| {name} | {p50:.1} | {p99:.1} | {rate:.0} | {:.2}x | {cpu:.2} |",
            rate / m[1].3
        );
    }
    b.engine.stop().unwrap();
    engine_only.stop().unwrap();
    stream_engine.stop().unwrap();
    rt.block_on(stream_task).unwrap();
    rt.block_on(server).unwrap();
    plain.abort();
}
