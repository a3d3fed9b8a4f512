//! udpring's counters against the kernel's own, in namespaces the test
//! builds (host A, router R, host B): whatever B's UDP counters in
//! `/proc/net/snmp` moved by while only an echo ran there is what the echo
//! says it received, sent and lost; likewise A's for `udpring load`. In
//! the kernel's units: a GRO train or a GSO send counts once
//! (`received_bufs`, `sent_bufs`, `kernel_drops`).
//!
//! The burst goes into a paused server with a small receive buffer, so
//! the kernel drops the tail of it, after the last datagram the socket
//! will ever deliver: drops `SO_RXQ_OVFL` would never report.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use udpring::{Backend, Config, Engine};
use udpring_cli::apps::load::{LoadOpts, Mode, run_load};

use crate::topo::{Topology, udp_snmp};

fn delta(after: &HashMap<String, u64>, before: &HashMap<String, u64>, k: &str) -> u64 {
    after[k] - before[k]
}

/// Sends `n` datagrams of 200 bytes to `to` from A: plain, or as GSO
/// trains of 20.
fn burst(topo: &Topology, to: SocketAddr, n: usize, gso: bool) {
    topo.run_in("a", move || {
        let s = UdpSocket::bind("10.200.1.1:0").unwrap();
        let payload = vec![0x42u8; 200 * 20];
        let mut sent = 0;
        while sent < n {
            if gso {
                use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
                let k = 20.min(n - sent);
                let iov = [std::io::IoSlice::new(&payload[..200 * k])];
                sendmsg(
                    s.as_raw_fd(),
                    &iov,
                    &[ControlMessage::UdpGsoSegments(&200u16)],
                    MsgFlags::empty(),
                    Some(&SockaddrStorage::from(to)),
                )
                .expect("GSO send");
                sent += k;
            } else {
                s.send_to(&payload[..200], to).unwrap();
                sent += 1;
            }
        }
        // The echoes come back to this socket and are read (A's side is
        // not under test here) until 300 ms pass without one; the first
        // is waited for longer than the server's pause, or a reader that
        // gave up first would let the test stop the server with the
        // burst still queued at its socket.
        let mut buf = vec![0u8; 65536];
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        if s.recv_from(&mut buf).is_ok() {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            while s.recv_from(&mut buf).is_ok() {}
        }
    });
}

#[test]
fn an_echo_counts_what_the_kernel_counts_including_drops_after_its_last_datagram() {
    let topo = crate::topology!(pmtu, "acc");
    let mut backends = vec![Backend::Simple, Backend::Mmsg];
    if udpring::uring_support().is_ok() {
        backends.push(Backend::Uring);
    }
    // Each backend with and without GRO; and two sockets in one worker,
    // each overflowed, whose drops add up (they used to read as the larger).
    let mut cases: Vec<(Backend, bool, usize)> = backends
        .iter()
        .flat_map(|&b| [(b, false, 1), (b, true, 1)])
        .collect();
    cases.push((Backend::Mmsg, false, 2));
    for (backend, gro, sockets) in cases {
        {
            let what = format!("{backend} gro={gro} sockets={sockets}");
            let before = topo.run_in("b", udp_snmp);
            let engine = topo.run_in("b", move || {
                let mut cfg = Config::new("10.200.2.1:0".parse().unwrap());
                cfg.backend = Some(backend);
                cfg.workers = 1;
                cfg.gro = gro;
                cfg.sockets_per_worker = sockets;
                cfg.distinct_ports = sockets > 1;
                // A small buffer: the burst overflows it while paused.
                cfg.recv_buffer = Some(32 << 10);
                Engine::start(cfg, |_| {
                    crate::util::SlowFirst::new(Duration::from_millis(300))
                })
                .unwrap()
            });
            let addrs = engine.local_addrs().to_vec();
            std::thread::scope(|s| {
                for &a in &addrs {
                    let topo = &topo;
                    s.spawn(move || burst(topo, a, 3000, gro));
                }
            });
            let s = engine.stop().unwrap();
            let after = topo.run_in("b", udp_snmp);
            assert!(s.kernel_drops > 0, "{what}: the burst overflowed: {s:?}");
            let kernel = ["InDatagrams", "OutDatagrams", "RcvbufErrors", "InErrors"]
                .map(|k| delta(&after, &before, k));
            let ours = [s.received_bufs, s.sent_bufs, s.kernel_drops, s.kernel_drops];
            assert_eq!(ours, kernel, "{what}: {s:?}");
            assert_eq!(s.slots_out, 0);
            if !gro {
                assert_eq!(s.received, s.received_bufs, "{what}: one datagram a buffer");
                // The replies to the burst went as coalesced trains (not
                // on simple, which sends each reply before the next
                // receive), and the kernel's OutDatagrams counts each
                // train once, as sent_bufs does.
                if backend != Backend::Simple {
                    assert!(s.coalesced > 0 && s.sent > s.sent_bufs, "{what}: {s:?}");
                }
            }
        }
    }
}

#[test]
fn load_counts_what_the_kernel_counts() {
    let topo = crate::topology!(pmtu, "acl");
    let echo = topo.run_in("b", || {
        let mut cfg = Config::new("10.200.2.1:0".parse().unwrap());
        cfg.workers = 1;
        Engine::start(cfg, |_| udpring_cli::apps::echo::Echo::new()).unwrap()
    });
    let target = echo.local_addr();
    for gso in [1, 16] {
        let (before, r, after) = topo.run_in("a", move || {
            let before = udp_snmp();
            let mut o = LoadOpts::new(target);
            o.mode = Mode::Rate(20_000.0);
            o.duration = None;
            o.count = Some(4000);
            o.gso = gso;
            o.size = 200;
            o.warmup = Some(Duration::from_millis(100));
            let r = run_load(&o, &AtomicBool::new(false), |_| {}).unwrap();
            (before, r, udp_snmp())
        });
        let k = r.kernel;
        let kernel =
            ["OutDatagrams", "InDatagrams", "RcvbufErrors"].map(|n| delta(&after, &before, n));
        assert_eq!(
            [k.sent_bufs, k.received_bufs, k.drops],
            kernel,
            "gso {gso}: {k:?}"
        );
        assert_eq!(
            (r.counts.sent, r.lost),
            (4000, 0),
            "gso {gso}: {}",
            r.table()
        );
    }
    echo.stop().unwrap();
}
