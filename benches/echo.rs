//! Echo path per backend, payload size and batch.
//!
//! Each iteration a plain client socket sends `batch` datagrams to an echo
//! engine on loopback and waits for the `batch` echoes; throughput is in
//! datagrams. The client is the same for every row, so rows differ only in
//! the server's backend. Group names carry the configuration:
//! `echo/<backend>/<size>B/batch<n>`.
//!
//! Run: `cargo bench --bench echo`

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udpring::apps::echo::Echo;
use udpring::{Backend, Config, Engine};

fn round(
    client: &UdpSocket,
    to: std::net::SocketAddr,
    payload: &[u8],
    batch: usize,
    buf: &mut [u8],
) -> usize {
    for _ in 0..batch {
        // A failed send shows up as a missing echo below.
        let _ = client.send_to(payload, to);
    }
    let mut got = 0;
    while got < batch {
        match client.recv_from(buf) {
            Ok(_) => got += 1,
            Err(_) => break, // timed out: lost, counted by the caller
        }
    }
    got
}

fn bench_echo(c: &mut Criterion) {
    let mut backends = vec![Backend::Simple, Backend::Mmsg];
    if udpring::uring_support().is_ok() {
        backends.push(Backend::Uring);
    }
    for backend in backends {
        for size in [64usize, 1400] {
            for batch in [1usize, 32] {
                let mut cfg = Config::new("127.0.0.1:0".parse().unwrap());
                cfg.backend = Some(backend);
                cfg.workers = 1;
                let engine = Engine::start(cfg, |_| Echo::new()).expect("start echo engine");
                let to = engine.local_addr();
                let client = UdpSocket::bind("127.0.0.1:0").unwrap();
                client
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let payload = vec![0xa5u8; size];
                let mut buf = vec![0u8; 2048];
                let mut lost = 0usize;
                let mut g = c.benchmark_group(format!("echo/{backend}/{size}B/batch{batch}"));
                g.throughput(Throughput::Elements(batch as u64));
                g.sample_size(20);
                g.warm_up_time(Duration::from_millis(500));
                g.measurement_time(Duration::from_secs(2));
                g.bench_function("round", |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            lost += batch - round(&client, to, &payload, batch, &mut buf);
                        }
                        t.elapsed()
                    })
                });
                g.finish();
                let stats = engine.stop().expect("stop");
                assert_eq!(stats.slots_out, 0, "slots leaked");
                if lost > 0 {
                    eprintln!(
                        "echo/{backend}/{size}B/batch{batch}: {lost} echoes lost (timed out)"
                    );
                }
            }
        }
    }
}

criterion_group!(benches, bench_echo);
criterion_main!(benches);
