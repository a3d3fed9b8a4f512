//! Echo behaviour on loopback, for every backend: sizes from 0 to 65507
//! bytes over IPv4 and IPv6, many flows spread over workers, truncation,
//! ring exhaustion under a flood, GRO trains, senders and timers, ICMP
//! errors as events, and what a stop leaves unread. Every test checks that all slots came back.

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udpring::{Backend, Datagram, Engine, ErrorEvent, GRO_SLOT_SIZE, HEADROOM, Handler, Transport};
use util::Echo;
use util::*;

per_backend!(
    fn echoes_0_1_1472_and_65507_bytes_v4_and_v6_on_every_backend(backend) {
        for v6 in [false, true] {
            let mut cfg = config(backend, v6);
            cfg.slot_size = GRO_SLOT_SIZE; // room for a 65507-byte datagram
            cfg.recv_slots = 64;
            let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
            assert_eq!(engine.backend(), backend);
            let to = engine.local_addr();
            assert_eq!(to.is_ipv6(), v6);
            let c = client(v6);
            let mut buf = vec![0u8; 70000];
            let sizes = [0usize, 1, 1472, 65507];
            for (i, &n) in sizes.iter().enumerate() {
                let p = pattern(n, i as u8);
                c.send_to(&p, to).unwrap();
                let (got, from) = c
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("{backend} v6={v6}: no echo of {n} bytes: {e}"));
                assert_eq!(from, to);
                assert_eq!(got, n, "{backend} v6={v6}: echo length");
                assert!(
                    buf[..got] == p[..],
                    "{backend} v6={v6}: echo content of {n} bytes"
                );
            }
            let s = stop_clean(engine);
            assert_eq!(s.received, 4);
            assert_eq!(s.sent, 4);
            assert_eq!(s.bytes_received, sizes.iter().sum::<usize>() as u64);
            assert_eq!(s.truncated, 0);
        }
    }
);

per_backend!(
    fn many_source_ports_spread_over_workers(backend) {
        let mut cfg = config(backend, false);
        cfg.workers = 2;
        cfg.recv_slots = 64;
        let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
        assert_eq!(engine.workers(), 2);
        let to = engine.local_addr();
        let clients: Vec<UdpSocket> = (0..64).map(|_| client(false)).collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8; 32], to).unwrap();
        }
        let mut buf = [0u8; 64];
        for (i, c) in clients.iter().enumerate() {
            let (n, _) = c.recv_from(&mut buf).expect("echo");
            assert_eq!(&buf[..n], &[i as u8; 32]);
        }
        let per = wait_workers(&engine, |s| s.iter().map(|w| w.received).sum::<u64>() >= 64);
        assert_eq!(per.iter().map(|s| s.received).sum::<u64>(), 64);
        for (w, s) in per.iter().enumerate() {
            assert!(
                s.received > 0,
                "{backend}: worker {w} received nothing of 64 flows: {per:?}"
            );
        }
        stop_clean(engine);
    }
);

per_backend!(
    fn datagram_larger_than_a_slot_is_counted_as_truncated(backend) {
        let mut cfg = config(backend, false);
        cfg.slot_size = 2048;
        cfg.recv_slots = 16;
        let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
        let to = engine.local_addr();
        let c = client(false);
        let mut buf = vec![0u8; 8192];
        let big = pattern(4000, 1);
        c.send_to(&big, to).unwrap();
        let (n, _) = c.recv_from(&mut buf).expect("echo of the cut datagram");
        assert_eq!(
            n,
            2048 - HEADROOM,
            "{backend}: echo carries what fit in the slot"
        );
        assert_eq!(buf[..n], big[..n]);
        // The worker goes on: a normal datagram is echoed whole.
        c.send_to(b"after", to).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        let s = stop_clean(engine);
        assert_eq!(s.truncated, 1, "{backend}");
        assert_eq!(s.received, 2);
    }
);

per_backend!(
    fn ring_exhaustion_under_a_flood_recovers_and_loses_nothing(backend) {
        const FLOOD: usize = 400;
        let mut cfg = config(backend, false);
        cfg.recv_slots = 16;
        cfg.recv_buffer = Some(8 << 20);
        // The ring's own recovery is the subject: a parked worker reads the
        // socket itself and may serve the tail of the flood, and the echo
        // after it, with the ring's receive left unarmed until it returns.
        cfg.park = false;
        let engine = Engine::start(cfg, |_| util::SlowFirst::new(Duration::from_millis(150))).unwrap();
        let to = engine.local_addr();
        let c = client(false);
        c.send_to(b"first", to).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the handler is now asleep
        for i in 0..FLOOD {
            c.send_to(&(i as u32).to_be_bytes(), to).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < FLOOD + 1 {
            match c.recv_from(&mut buf) {
                Ok(_) => got += 1,
                Err(e) => panic!("{backend}: {got} of {} echoes, then {e}", FLOOD + 1),
            }
        }
        // After the recovery, the worker still echoes.
        c.send_to(b"later", to).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"later");
        let s = stop_clean(engine);
        eprintln!("{backend}: {s:?}");
        assert_eq!(s.received, FLOOD as u64 + 2);
        assert_eq!(s.kernel_drops, 0);
        if backend == Backend::Uring {
            assert!(
                s.enobufs >= 1,
                "16 buffers for 400 queued datagrams must run the ring dry: {s:?}"
            );
            assert!(
                s.recv_arms > s.enobufs,
                "the receive was re-armed after each ENOBUFS: {s:?}"
            );
        }
    }
);

/// (payload length, GRO segment size) of each datagram a handler saw.
type Seen = Arc<Mutex<Vec<(usize, Option<u16>)>>>;

/// Echo that records the GRO segment size it saw.
struct GroProbe {
    seen: Seen,
}

impl Handler for GroProbe {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        self.seen
            .lock()
            .unwrap()
            .push((dgram.payload().len(), dgram.segment_size()));
        tx.reply(dgram).unwrap();
    }
}

fn send_gso(sock: &UdpSocket, data: &[u8], segment: u16, to: SocketAddr) {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    let addr = SockaddrStorage::from(to);
    let iov = [std::io::IoSlice::new(data)];
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .expect("GSO send");
}

per_backend!(
    fn gro_train_is_echoed_as_the_same_datagrams(backend) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = config(backend, false);
        cfg.gro = true;
        cfg.recv_slots = 16;
        let s2 = seen.clone();
        let engine = Engine::start(cfg, move |_| GroProbe { seen: s2.clone() }).unwrap();
        let to = engine.local_addr();
        let c = client(false);
        // Nine segments of 100 bytes and a last one of 40, each different.
        let mut train = Vec::new();
        for i in 0..9u8 {
            train.extend(pattern(100, i));
        }
        train.extend(pattern(40, 9));
        send_gso(&c, &train, 100, to);
        let mut buf = [0u8; 2048];
        for i in 0..10u8 {
            let (n, _) = c
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{backend}: segment {i}: {e}"));
            let want = pattern(if i == 9 { 40 } else { 100 }, i);
            assert_eq!(
                &buf[..n],
                &want[..],
                "{backend}: segment {i} boundaries and content"
            );
        }
        let s = stop_clean(engine);
        assert_eq!(s.received, 10, "{backend}: segments count as datagrams");
        assert_eq!(s.sent, 10);
        let seen = seen.lock().unwrap();
        assert_eq!(
            &seen[..],
            &[(940, Some(100))],
            "{backend}: one buffer for the whole train"
        );
    }
);

/// Sends through a `Sender` from another thread and uses timers.
struct Ticker {
    fired: Arc<AtomicU64>,
    peer: SocketAddr,
}

impl Handler for Ticker {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        tx.call_later(Duration::from_millis(30), 7);
        tx.call_later(Duration::from_millis(10), 3);
    }
    fn on_datagram(&mut self, _dgram: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        let order = self.fired.fetch_add(1, Ordering::SeqCst);
        tx.send_to(&[token as u8, order as u8], self.peer).unwrap();
    }
}

per_backend!(
    fn timers_fire_in_order_and_senders_work_from_other_threads(backend) {
        let c = client(false);
        let peer = c.local_addr().unwrap();
        let fired = Arc::new(AtomicU64::new(0));
        let f2 = fired.clone();
        let engine = Engine::start(config(backend, false), move |_| Ticker {
            fired: f2.clone(),
            peer,
        })
        .unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[3, 0], "{backend}: the 10 ms timer fires first");
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[7, 1]);
        let sender = engine.sender(0).unwrap();
        std::thread::spawn(move || sender.send_to(b"from-thread", peer).unwrap())
            .join()
            .unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from-thread");
        assert_eq!(from, engine.local_addr());
        let s = stop_clean(engine);
        assert_eq!(s.sent, 3);
        // After the stop, a sender says so instead of queueing into the void.
        let sender_after = {
            let e = Engine::start(config(backend, false), |_| Echo::new()).unwrap();
            let snd = e.sender(0).unwrap();
            e.stop().unwrap();
            snd
        };
        assert!(sender_after.send_to(b"x", peer).is_err());
    }
);

/// Sends to a closed port (`burst` datagrams at the start) and records
/// the error events.
struct Refused {
    target: SocketAddr,
    burst: usize,
    events: Arc<Mutex<Vec<ErrorEvent>>>,
}

impl Handler for Refused {
    fn on_start(&mut self, tx: &mut Transport<'_>) {
        // Each longer than the last: no two make one GSO train.
        for n in 1..=self.burst {
            tx.send_to(&b"anyone?".repeat(n)[..6 + n], self.target)
                .unwrap();
        }
    }
    fn on_datagram(&mut self, _dgram: Datagram<'_>, _tx: &mut Transport<'_>) {}
    fn on_error(&mut self, event: ErrorEvent, _tx: &mut Transport<'_>) {
        self.events.lock().unwrap().push(event);
    }
}

per_backend!(
    fn icmp_port_unreachable_becomes_a_connection_refused_event(backend) {
        let closed = unused_addr("127.0.0.1");
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        let engine = Engine::start(config(backend, false), move |_| Refused {
            target: closed,
            burst: 1,
            events: e2.clone(),
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The worker still receives after the error.
        let c = client(false);
        c.send_to(b"still here", engine.local_addr()).unwrap();
        let got = events.lock().unwrap().clone();
        assert!(
            got.iter().any(
                |e| matches!(e, ErrorEvent::ConnectionRefused { peer: Some(p) } if *p == closed)
            ),
            "{backend}: events {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        let s = stop_clean(engine);
        assert_eq!(s.received, 1, "{backend}: receive re-armed after the error");
    }
);

per_backend!(
    /// A burst into a closed port: on loopback the port-unreachable for
    /// one datagram comes back before the next send, which then fails with
    /// `ECONNREFUSED` (an unconnected socket reports the error on its next
    /// send, whatever its destination). The engine sends that datagram
    /// once more, which can fail the same way. Each datagram is either
    /// sent or counted in `send_errors` with a `SendFailed` event naming
    /// where it was going: a handler counting what left (a relay) must
    /// not take a datagram refused twice for one that went. (Here the
    /// `simple` and `uring` backends see sends refused; `mmsg`'s batches
    /// all left before the first report came back.)
    fn a_send_refused_for_an_earlier_datagrams_icmp_is_sent_or_told_failed(backend) {
        for v6 in [false, true] {
            let closed = unused_addr(if v6 { "::1" } else { "127.0.0.1" });
            let events = Arc::new(Mutex::new(Vec::new()));
            let e2 = events.clone();
            let burst = 48;
            let engine = Engine::start(config(backend, v6), move |_| Refused {
                target: closed,
                burst,
                events: e2.clone(),
            })
            .unwrap();
            wait_workers(&engine, |s| {
                s.iter().map(|w| w.sent + w.send_errors_total()).sum::<u64>() == burst as u64
            });
            let s = stop_clean(engine);
            let failed_here = events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, ErrorEvent::SendFailed { peer: Some(p), .. } if *p == closed))
                .count() as u64;
            assert_eq!(
                s.sent + s.send_errors_total(),
                burst as u64,
                "{backend} v6={v6}: each datagram sent or failed: {s:?}"
            );
            assert_eq!(
                failed_here,
                s.send_errors_total(),
                "{backend} v6={v6}: each failed send told as such: {:?}",
                events.lock().unwrap()
            );
        }
    }
);

per_backend!(
    fn reuseport_cpu_steering_sends_each_cpu_to_its_worker(backend) {
        use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
        use nix::unistd::Pid;
        let allowed = sched_getaffinity(Pid::from_raw(0)).unwrap();
        if !(allowed.is_set(0).unwrap() && allowed.is_set(1).unwrap()) {
            eprintln!("skipping: needs CPUs 0 and 1 (reuseport steering maps CPU n to worker n)");
            return;
        }
        let mut cfg = config(backend, false);
        cfg.workers = 2;
        cfg.steer_by_cpu = true;
        let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
        let to = engine.local_addr();
        for cpu in [1usize, 0] {
            let before: Vec<u64> = engine.worker_stats().iter().map(|s| s.received).collect();
            std::thread::spawn(move || {
                let mut set = CpuSet::new();
                set.set(cpu).unwrap();
                sched_setaffinity(Pid::from_raw(0), &set).unwrap();
                let c = client(false);
                let mut buf = [0u8; 16];
                for i in 0..16u8 {
                    c.send_to(&[i], to).unwrap();
                    c.recv_from(&mut buf).unwrap();
                }
            })
            .join()
            .unwrap();
            let total = before.iter().sum::<u64>() + 16;
            let after: Vec<u64> = wait_workers(&engine, |s| {
                s.iter().map(|w| w.received).sum::<u64>() >= total
            })
            .iter()
            .map(|s| s.received)
            .collect();
            assert_eq!(
                after[cpu] - before[cpu],
                16,
                "{backend}: sent from CPU {cpu}: {before:?} -> {after:?}"
            );
            assert_eq!(
                after[1 - cpu],
                before[1 - cpu],
                "{backend}: the other worker got none"
            );
        }
        stop_clean(engine);
    }
);

per_backend!(
    fn kernel_drops_are_counted_so_nothing_is_lost_silently(backend) {
        const FLOOD: u64 = 300;
        let mut cfg = config(backend, false);
        cfg.recv_buffer = Some(1); // the kernel's minimum: a few datagrams
        let engine = Engine::start(cfg, |_| util::SlowFirst::new(Duration::from_millis(150))).unwrap();
        let to = engine.local_addr();
        let c = client(false);
        c.send_to(b"first", to).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the handler is now asleep
        for i in 0..FLOOD {
            c.send_to(&i.to_be_bytes(), to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300)); // the handler wakes, drains
        // A datagram after the drops carries the socket's drop counter.
        c.send_to(b"last", to).unwrap();
        let s = {
            let per = wait_workers(&engine, |s| s[0].received + s[0].kernel_drops >= FLOOD + 2);
            per[0].clone()
        };
        assert!(
            s.kernel_drops > 0,
            "{backend}: a tiny buffer must overflow: {s:?}"
        );
        assert_eq!(
            s.received + s.kernel_drops,
            FLOOD + 2,
            "{backend}: every datagram is either received or counted as dropped: {s:?}"
        );
        stop_clean(engine);
    }
);

/// Sends one datagram to `to` (a `SlowFirst` handler falls asleep on it),
/// then `n` more, which wait in the socket's queue. The sending socket
/// closes at once: the echo of the first draws an ICMP error, which the
/// kernel reports on the server's socket ahead of its queue.
fn queue_behind_the_first(to: SocketAddr, n: u64) {
    let c = client(false);
    c.send_to(b"first", to).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the handler is now asleep
    for i in 0..n {
        c.send_to(&i.to_be_bytes(), to).unwrap();
    }
}

per_backend!(
    fn what_is_still_queued_at_a_stop_is_counted_as_unread(backend) {
        const QUEUED: u64 = 50;
        let engine = Engine::start(config(backend, false), |_| {
            util::SlowFirst::new(Duration::from_millis(300))
        })
        .unwrap();
        queue_behind_the_first(engine.local_addr(), QUEUED);
        // Asked while the handler sleeps: some of the queue may still be
        // handed over as the receive is cancelled, the rest is not read.
        let s = stop_clean(engine);
        assert_eq!(s.kernel_drops, 0, "{backend}: {s:?}");
        assert_eq!(
            s.received_bufs + s.unread_at_stop,
            QUEUED + 1,
            "{backend}: every datagram queued is received or counted unread: {s:?}"
        );
    }
);

per_backend!(
    /// A socket handed in (systemd keeps its own copy across a restart)
    /// keeps what was queued at the stop for its next holder.
    fn a_socket_handed_in_keeps_its_queue_at_a_stop(backend) {
        const QUEUED: u64 = 20;
        let sock = std::net::UdpSocket::bind(loopback(false)).unwrap();
        let next = sock.try_clone().unwrap(); // the next holder's copy
        let to = sock.local_addr().unwrap();
        let mut cfg = config(backend, false);
        cfg.workers = 0;
        let engine = Engine::start_on(cfg, [sock.into()], |_| {
            util::SlowFirst::new(Duration::from_millis(300))
        })
        .unwrap();
        queue_behind_the_first(to, QUEUED);
        let s = stop_clean(engine);
        assert_eq!(s.unread_at_stop, 0, "{backend}: {s:?}");
        next.set_nonblocking(true).unwrap();
        let mut left = 0;
        for _ in 0..1000 {
            match next.recv(&mut [0u8; 64]) {
                Ok(_) => left += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {} // the ICMP error, reported once
            }
        }
        assert_eq!(s.received_bufs + left, QUEUED + 1, "{backend}: {s:?}, {left} left");
        assert!(left > 0, "{backend}: the queue was read: {s:?}");
    }
);

/// Echo that tags each reply with the index of the socket it came in on.
struct TagSocket;

impl Handler for TagSocket {
    fn on_datagram(&mut self, mut dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        let sock = dgram.socket() as u8;
        if let Some(b) = dgram.payload_mut().first_mut() {
            *b = sock;
        }
        tx.reply(dgram).unwrap();
    }
}

per_backend!(
    fn several_sockets_per_worker_with_distinct_ports_reply_from_their_own(backend) {
        let mut cfg = config(backend, false);
        cfg.workers = 2;
        cfg.sockets_per_worker = 3;
        cfg.distinct_ports = true;
        let engine = Engine::start(cfg, |_| TagSocket).unwrap();
        let addrs = engine.local_addrs().to_vec();
        assert_eq!(addrs.len(), 6);
        let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6, "{backend}: distinct ports {addrs:?}");
        let c = client(false);
        let mut buf = [0u8; 8];
        for (n, &a) in addrs.iter().enumerate() {
            c.send_to(&[0xff, n as u8], a).unwrap();
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(
                from, a,
                "{backend}: the reply leaves from the socket it came to"
            );
            // Entry n is socket n / workers of worker n % workers.
            assert_eq!(
                &buf[..len],
                &[(n / 2) as u8, n as u8],
                "{backend}: socket index"
            );
        }
        let s = stop_clean(engine);
        assert_eq!(s.received, 6);
    }
);

/// Takes its time over socket 0's datagrams (50 us each, no reply) and
/// echoes socket 1's at once.
struct SlowOnFirst;

impl Handler for SlowOnFirst {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        if dgram.socket() == 0 {
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(50) {}
        } else {
            tx.reply(dgram).unwrap();
        }
    }
}

per_backend!(
    fn a_socket_under_a_flood_does_not_starve_its_neighbour(backend) {
        // The flood keeps the worker busy on socket 0 without a pause, so
        // the loop never waits in poll: socket 1 must still be read every
        // turn (the mmsg loop reads only what its last poll found readable
        // right after that poll, and everything on the other turns).
        let mut cfg = config(backend, false);
        cfg.sockets_per_worker = 2;
        cfg.distinct_ports = true;
        let engine = Engine::start(cfg, |_| SlowOnFirst).unwrap();
        let addrs = engine.local_addrs().to_vec();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let flood = {
            let (stop, sent, to) = (stop.clone(), sent.clone(), addrs[0]);
            std::thread::spawn(move || {
                let c = client(false);
                while !stop.load(Ordering::Relaxed) {
                    if c.send_to(&[0u8; 64], to).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // Well past the point where socket 0 is never empty (20k/s served):
        // by count, not by time, since a busy CI box may give the flood's
        // thread little of 200 ms.
        let t = Instant::now();
        while sent.load(Ordering::Relaxed) <= 20_000 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let c = client(false);
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 8];
        let mut answered = 0;
        for k in 0..10u8 {
            c.send_to(&[k], addrs[1]).unwrap();
            if let Ok((1, _)) = c.recv_from(&mut buf) {
                answered += usize::from(buf[0] == k);
            }
        }
        stop.store(true, Ordering::Relaxed);
        flood.join().unwrap();
        let flooded = sent.load(Ordering::Relaxed);
        assert!(flooded > 20_000, "{backend}: the flood sent only {flooded}");
        assert_eq!(answered, 10, "{backend}: socket 1 starved under socket 0's flood");
        stop_clean(engine);
    }
);

per_backend!(
    fn the_port_is_free_as_soon_as_stop_returns(backend) {
        // io_uring holds registered sockets until the ring is torn down, which
        // the kernel does asynchronously; stop must not return before the port
        // is released.
        for _ in 0..20 {
            let engine = Engine::start(config(backend, false), |_| Echo::new()).unwrap();
            let addr = engine.local_addr();
            stop_clean(engine);
            UdpSocket::bind(addr)
                .unwrap_or_else(|e| panic!("{backend}: {addr} still bound after stop: {e}"));
        }
    }
);
