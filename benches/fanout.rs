//! Fan-out: one datagram in, N out, for N = 1, 10, 100 and 1000
//! subscribers. udpring's `Fanout` handler (every destination sent from
//! the receive buffer, all sends of a batch in one submit: many SQEs per
//! `io_uring_enter`) against the plain loop a user would write:
//! `recv_from`, then `send_to` once per subscriber, one syscall each.
//!
//! Each iteration a client sends a burst (32 datagrams; 4 to 1000
//! subscribers) to the relay and the N sinks wait for theirs; throughput
//! is in datagrams delivered (burst x N). The client and the sinks are the
//! same for both relays, 64 B. Group names: `fanout/<relay>/<size>B/to<N>`.
//!
//! Run: `cargo bench --bench fanout`

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udpring::apps::fanout::{Fanout, Relay, RelayOpts};
use udpring::{Backend, Engine};

/// Datagrams per iteration to `n` subscribers.
fn burst(n: usize) -> usize {
    if n >= 1000 { 4 } else { 32 }
}

fn sinks(n: usize) -> Vec<UdpSocket> {
    (0..n)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            let _ = s.set_recv_buffer_size(256 << 10);
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
    let burst = burst(sinks.len());
    for _ in 0..burst {
        let _ = client.send_to(payload, relay);
    }
    let mut got = 0;
    for s in sinks {
        for _ in 0..burst {
            if s.recv_from(buf).is_err() {
                break;
            }
            got += 1;
        }
    }
    got
}

fn bench_fanout(c: &mut Criterion) {
    let size = 64usize;
    for n in [1usize, 10, 100, 1000] {
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
                let mut cfg = udpring::apps::fanout::config("127.0.0.1:0".parse().unwrap(), None);
                cfg.workers = 1;
                cfg.backend = udpring::uring_support().ok().map(|_| Backend::Uring);
                let relay = Relay::new(RelayOpts::new(dests));
                let e = Engine::start(cfg, move |_| Fanout::new(relay.clone())).unwrap();
                (e.local_addr(), Some(e), None)
            };
            let mut lost = 0usize;
            let mut g = c.benchmark_group(format!("fanout/{relay}/{size}B/to{n}"));
            let per = burst(n) * n;
            g.throughput(Throughput::Elements(per as u64));
            g.sample_size(20);
            g.warm_up_time(Duration::from_millis(500));
            g.measurement_time(Duration::from_secs(2));
            g.bench_function("delivered", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        lost += per - round(&client, addr, &out, &payload, &mut buf);
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
