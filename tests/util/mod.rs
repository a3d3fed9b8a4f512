//! Helpers shared by the engine's integration tests: loopback sockets on
//! port 0, engines per backend, an echo handler, and waiting for a worker
//! to go idle. The command's tests (tools/udpring/tests/util) include
//! this file too.
#![allow(dead_code)]

pub mod counting;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udpring::{Backend, Config, Engine, Stats};

/// An address on `ip` (127.0.0.1 or ::1) whose UDP port nothing holds
/// now: a closed port for a test, or one to start a peer on. Below the
/// kernel's ephemeral range (`ip_local_port_range`): a port found by
/// binding port 0 and letting go can be handed to the next socket any
/// other test binds to port 0 (a closed-loop test once saw its "closed"
/// port answered by another test's load).
pub fn unused_addr(ip: &str) -> std::net::SocketAddr {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
        .max(10_001);
    let ip: std::net::IpAddr = ip.parse().expect("an IP address");
    for _ in 0..1000 {
        let p = 10_000 + (udpring::random_u64() % u64::from(low - 10_000)) as u16;
        if let Ok(s) = std::net::UdpSocket::bind((ip, p)) {
            return s.local_addr().unwrap();
        }
    }
    panic!("no free UDP port on {ip} below {low}");
}

/// Loopback with port 0, IPv4 or IPv6.
pub fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    }
}

/// Whether this kernel can run `backend`; says why not when it cannot.
pub fn can_run(backend: Backend) -> bool {
    match (backend, udpring::uring_support()) {
        (Backend::Uring, Err(why)) => {
            eprintln!("skipping the uring backend: {why}");
            false
        }
        _ => true,
    }
}

/// One test per backend, each its own named test so that a failing
/// backend does not hide the others: `per_backend!(fn name(backend) {...})`
/// makes `name::uring`, `name::mmsg` and `name::simple`.
#[macro_export]
macro_rules! per_backend {
    ($(#[$meta:meta])* fn $name:ident($b:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn on($b: udpring::Backend) $body

            #[test]
            fn uring() {
                if $crate::util::can_run(udpring::Backend::Uring) {
                    on(udpring::Backend::Uring);
                }
            }
            #[test]
            fn mmsg() {
                on(udpring::Backend::Mmsg);
            }
            #[test]
            fn simple() {
                on(udpring::Backend::Simple);
            }
        }
    };
}

/// A config for one worker of `backend` on loopback.
pub fn config(backend: Backend, v6: bool) -> Config {
    let mut c = Config::new(loopback(v6));
    c.backend = Some(backend);
    c.workers = 1;
    c
}

/// A client socket on loopback with a generous receive buffer and a timeout.
pub fn client(v6: bool) -> UdpSocket {
    client_on(loopback(v6))
}

/// `n` round trips from `c` to an echo at `to`, one request in flight,
/// each answer checked.
pub fn closed_loop(c: &UdpSocket, to: SocketAddr, n: usize) {
    let mut buf = [0u8; 64];
    for i in 0..n as u32 {
        c.send_to(&i.to_be_bytes(), to).unwrap();
        let (k, _) = c.recv_from(&mut buf).expect("every request answered");
        assert_eq!(&buf[..k], &i.to_be_bytes());
    }
}

/// [`client`] bound to `bind` (a loopback address, port 0 for any).
pub fn client_on(bind: SocketAddr) -> UdpSocket {
    let domain = if bind.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None).unwrap();
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&bind.into()).unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Waits (bounded) until per-worker counters satisfy `done` (workers
/// publish counters once per loop, a moment after their sends).
pub fn wait_workers(engine: &Engine, done: impl Fn(&[Stats]) -> bool) -> Vec<Stats> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = engine.worker_stats();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the engine and checks that every slot came back.
pub fn stop_clean(engine: Engine) -> Stats {
    let s = engine.stop().expect("engine stops cleanly");
    assert_eq!(s.slots_out, 0, "slots still out after stop: {s:?}");
    assert!(s.slots_total > 0);
    assert_eq!(s.invalid_completions, 0, "invalid completions: {s:?}");
    s
}

/// Deterministic payload of `n` bytes, different per `tag`.
pub fn pattern(n: usize, tag: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect()
}

/// The plainest server: every datagram goes back to its sender from its
/// own buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Echo {
    pub fn new() -> Echo {
        Echo
    }
}

impl udpring::Handler for Echo {
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
        // A full send queue is counted by the engine (send_exhausted).
        let _ = tx.reply(d);
    }
}

/// Answers nothing: after each datagram nothing is in flight, so the
/// worker goes back to sleep with nothing to wake it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl udpring::Handler for Quiet {
    fn on_datagram(&mut self, _: udpring::Datagram<'_>, _: &mut udpring::Transport<'_>) {}
}

/// Three datagrams to `engine` (a [`Quiet`] one: nothing in flight after
/// each), then its worker 0's counters while it sleeps, and what its stop
/// reports. The stop's wake-up ends the loop before another wait (or
/// spin), and the stop publishes everything: where the worker publishes
/// before it sleeps, the two agree.
pub fn idle_then_stopped(engine: Engine) -> (Stats, Stats) {
    let c = client(false);
    for _ in 0..3 {
        c.send_to(b"anyone?", engine.local_addr()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_workers(&engine, |s| s[0].received == 3);
    std::thread::sleep(Duration::from_millis(100));
    let idle = engine.worker_stats()[0].clone();
    (idle, stop_clean(engine))
}

/// The first line a child process writes to `r` (its banner); the rest is
/// left unread and `r` closed, as `| head -1` would.
pub fn first_line(r: impl std::io::Read) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(r), &mut line).unwrap();
    line
}

/// An echo that stalls `pause` on its first datagram, so that what
/// follows piles up in the socket (or the ring) meanwhile.
pub struct SlowFirst {
    pub pause: std::time::Duration,
    stalled: bool,
}

impl SlowFirst {
    pub fn new(pause: std::time::Duration) -> SlowFirst {
        SlowFirst {
            pause,
            stalled: false,
        }
    }
}

impl udpring::Handler for SlowFirst {
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, tx: &mut udpring::Transport<'_>) {
        if !self.stalled {
            self.stalled = true;
            std::thread::sleep(self.pause);
        }
        tx.reply(d).unwrap();
    }
}

/// `n` rounds of 32 requests of 48 `q`s to `to`, each answered with 48
/// `Q`s (an upper-casing service), read before the next round.
pub fn upper_rounds(c: &UdpSocket, to: SocketAddr, n: usize, buf: &mut [u8]) {
    let msg = [b'q'; 48];
    for _ in 0..n {
        for _ in 0..32 {
            c.send_to(&msg, to).unwrap();
        }
        for _ in 0..32 {
            let (k, _) = c.recv_from(buf).expect("every request answered");
            assert_eq!(&buf[..k], &[b'Q'; 48][..]);
        }
    }
}
