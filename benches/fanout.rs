//! Fan-out: one datagram in, N out. udpring's `Fanout` handler (every
//! destination sent from the receive buffer, all sends of a batch in one
//! submit) against the plain loop a user would write: `recv_from`, then
//! `send_to` once per destination, one syscall each.
//!
//! Each iteration a client sends 32 datagrams to the relay and the N sinks
//! wait for their 32 each; throughput is in datagrams delivered (32 x N).
//! The client and the sinks are the same for both relays. Group names:
//! `fanout/<relay>/<size>B/to<N>`.
//!
//! Run: `cargo bench --bench fanout`

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udpring::apps::fanout::{Fanout, FanoutCounters};
use udpring::{Backend, Engine};

const BURST: usize = 32;

fn sinks(n: usize) -> Vec<UdpSocket> {
    (0..n)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            let _ = s.set_recv_buffer_size(4 << 20);
            s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            let s: UdpSocket = s.into();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect()
}

/// The plain relay: one recv, then one send per destination.
fn plain_relay(
    dests: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut set = nix::sched::CpuSet::new();
        let _ = set.set(0);
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                for d in &dests {
                    let _ = s.send_to(&buf[..n], d);
                }
            }
        }
    });
    (addr, t)
}

fn round(
    client: &UdpSocket,
    relay: SocketAddr,
    sinks: &[UdpSocket],
    payload: &[u8],
    buf: &mut [u8],
) -> usize {
    for _ in 0..BURST {
        let _ = client.send_to(payload, relay);
    }
    let mut got = 0;
    for s in sinks {
        for _ in 0..BURST {
            if s.recv_from(buf).is_err() {
                break;
            }
            got += 1;
        }
    }
    got
}

fn bench_fanout(c: &mut Criterion) {
    let n = 3;
    for size in [64usize, 1400] {
        let payload = vec![0x42u8; size];
        let mut buf = vec![0u8; 2048];
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for relay in ["plain", "udpring"] {
            let out = sinks(n);
            let dests: Vec<SocketAddr> = out.iter().map(|s| s.local_addr().unwrap()).collect();
            let stop = Arc::new(AtomicBool::new(false));
            let (addr, engine, thread) = if relay == "plain" {
                let (a, t) = plain_relay(dests, stop.clone());
                (a, None, Some(t))
            } else {
                let mut cfg = udpring::apps::fanout::config("127.0.0.1:0".parse().unwrap());
                cfg.workers = 1;
                cfg.backend = udpring::uring_support().ok().map(|_| Backend::Uring);
                let counters = FanoutCounters::new(n);
                let e = Engine::start(cfg, move |_| Fanout::new(dests.clone(), counters.clone()))
                    .unwrap();
                (e.local_addr(), Some(e), None)
            };
            let mut lost = 0usize;
            let mut g = c.benchmark_group(format!("fanout/{relay}/{size}B/to{n}"));
            g.throughput(Throughput::Elements((BURST * n) as u64));
            g.sample_size(20);
            g.warm_up_time(Duration::from_millis(500));
            g.measurement_time(Duration::from_secs(2));
            g.bench_function("delivered", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        lost += BURST * n - round(&client, addr, &out, &payload, &mut buf);
                    }
                    t.elapsed()
                })
            });
            g.finish();
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = thread {
                let _ = t.join();
            }
            if let Some(e) = engine {
                let s = e.stop().unwrap();
                assert_eq!(s.slots_out, 0);
            }
            if lost > 0 {
                eprintln!(
                    "fanout/{relay}/{size}B/to{n}: {lost} datagrams not delivered (timed out)"
                );
            }
        }
    }
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
