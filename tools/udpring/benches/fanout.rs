//! Fan-out: one datagram in, N out, for N = 1, 10, 100 and 1000
//! subscribers. udpring's `Fanout` handler (every destination sent from
//! the receive buffer, all sends of a batch in one submit: many SQEs per
//! `io_uring_enter`) against the plain loop a user would write:
//! `recv_from`, then `send_to` once per subscriber, one syscall each.
//! `udpring-mmsg` is the same handler on the `mmsg` backend (`sendmmsg`
//! batches). `udpring-seq` is `examples/sequenced_fanout.rs`: each copy
//! built in a send slot with its subscriber's 4-byte sequence in front
//! (a copy per subscriber, and `on_writable` resuming the fan-out when the
//! slots run out), the cost of a per-subscriber header beside `forward`.
//!
//! The subscribers are N loopback addresses (127.77.x.y) on one port,
//! all received by one sink: a udpring engine bound to 0.0.0.0 that
//! counts, far faster than either relay, so the relay is what is
//! measured, and both relays send into the same sink. Each iteration a
//! client sends a burst (32 datagrams; 4 to 1000 subscribers) and waits
//! until the sink has counted burst x N; throughput is in datagrams
//! delivered. 64 B. Relays on CPU 0, the sink on CPU 1. Group names:
//! `fanout/<relay>/<size>B/to<N>`.
//!
//! Run: `cargo bench --bench fanout`

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../../../examples/sequenced_fanout.rs"]
#[allow(dead_code)]
mod sequenced;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udpring::{Backend, Datagram, Engine, Handler, Transport};
use udpring_cli::apps::fanout::{Fanout, Relay, RelayOpts};

/// Datagrams per iteration to `n` subscribers.
fn burst(n: usize) -> usize {
    if n >= 1000 { 4 } else { 32 }
}

/// Counts what arrives.
struct Count(Arc<AtomicU64>);

impl Handler for Count {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        self.0.fetch_add(d.segments() as u64, Ordering::Relaxed);
    }
}

/// The sink: one engine on 0.0.0.0 (every 127.77.x.y reaches it), CPU 1.
fn sink() -> (Engine, Arc<AtomicU64>) {
    let mut cfg = udpring::Config::new("0.0.0.0:0".parse().unwrap());
    cfg.workers = 1;
    cfg.first_cpu = 1;
    cfg.guard = udpring::Guard::off();
    cfg.recv_slots = 4096;
    cfg.recv_buffer = Some(32 << 20);
    cfg.backend = udpring::uring_support().ok().map(|_| Backend::Uring);
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    (Engine::start(cfg, move |_| Count(n2.clone())).unwrap(), n)
}

/// `n` subscriber addresses on the sink's port.
fn subscribers(n: usize, port: u16) -> Vec<SocketAddr> {
    (1..=n as u32)
        .map(|i| SocketAddr::from((Ipv4Addr::new(127, 77, (i >> 8) as u8, i as u8), port)))
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

/// Sends a burst and waits (bounded) until the sink counted `want` more;
/// returns how many arrived.
fn round(
    client: &UdpSocket,
    relay: SocketAddr,
    n: usize,
    count: &AtomicU64,
    payload: &[u8],
) -> u64 {
    let start = count.load(Ordering::Relaxed);
    let want = (burst(n) * n) as u64;
    for _ in 0..burst(n) {
        let _ = client.send_to(payload, relay);
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let got = count.load(Ordering::Relaxed) - start;
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::hint::spin_loop();
    }
}

fn bench_fanout(c: &mut Criterion) {
    let size = 64usize;
    let payload = vec![0x42u8; size];
    let (sink, count) = sink();
    let port = sink.local_addr().port();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in [1usize, 10, 100, 1000] {
        for relay in ["plain", "udpring", "udpring-mmsg", "udpring-seq"] {
            let dests = subscribers(n, port);
            let stop = Arc::new(AtomicBool::new(false));
            let (addr, engine, thread) = if relay == "plain" {
                let (a, t) = plain_relay(dests, stop.clone());
                (a, None, Some(t))
            } else if relay == "udpring-seq" {
                let (e, _) = sequenced::start("127.0.0.1:0".parse().unwrap(), dests).unwrap();
                (e.local_addr(), Some(e), None)
            } else {
                let mut cfg =
                    udpring_cli::apps::fanout::config("127.0.0.1:0".parse().unwrap(), None);
                cfg.workers = 1;
                cfg.backend = if relay == "udpring-mmsg" {
                    Some(Backend::Mmsg)
                } else {
                    udpring::uring_support().ok().map(|_| Backend::Uring)
                };
                let relay = Relay::new(RelayOpts::new(dests));
                let e = Engine::start(cfg, move |_| Fanout::new(relay.clone())).unwrap();
                (e.local_addr(), Some(e), None)
            };
            let mut lost = 0u64;
            let per = (burst(n) * n) as u64;
            let mut g = c.benchmark_group(format!("fanout/{relay}/{size}B/to{n}"));
            g.throughput(Throughput::Elements(per));
            g.sample_size(20);
            g.warm_up_time(Duration::from_millis(500));
            g.measurement_time(Duration::from_secs(2));
            g.bench_function("delivered", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        lost += per - round(&client, addr, n, &count, &payload).min(per);
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
            // Late arrivals of this relay must not count for the next.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    sink.stop().unwrap();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
