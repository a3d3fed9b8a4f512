//! The guards on loopback: who may talk to a server and how fast, sources
//! on our own port or on a reflecting service's port, and the relay that
//! must not loop. (Forged sources, broadcast and multicast destinations
//! need namespaces: tests/netns/guard.rs.)

#[macro_use]
mod util;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use udpring::{Engine, Guard, RateLimit, Stats};
use util::Echo;
use util::*;

/// A client socket bound to `bind`, with a short read timeout.
fn client_at(bind: &str) -> UdpSocket {
    let c = UdpSocket::bind(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c
}

/// Sends `n` datagrams and counts the echoes that come back.
fn echoes(c: &UdpSocket, to: SocketAddr, n: usize) -> usize {
    for i in 0..n {
        c.send_to(&[i as u8; 8], to).unwrap();
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while c.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

/// Waits until the engine has seen `n` datagrams, then stops it.
fn stop_after(engine: Engine, n: u64) -> Stats {
    wait_workers(&engine, |s| {
        s.iter().map(|w| w.received_bufs).sum::<u64>() >= n
    });
    stop_clean(engine)
}

per_backend!(
    fn the_allowlist_answers_only_its_prefixes(backend) {
        let mut cfg = config(backend, false);
        cfg.guard.allow = vec!["127.0.0.2/32".parse().unwrap()];
        let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
        let to = engine.local_addr();
        assert_eq!(echoes(&client_at("127.0.0.1:0"), to, 5), 0, "outside");
        assert_eq!(echoes(&client_at("127.0.0.2:0"), to, 5), 5, "inside");
        let s = stop_after(engine, 10);
        assert_eq!((s.guard_not_allowed, s.sent), (5, 5));
    }
);

per_backend!(
    fn a_source_over_its_rate_is_refused_and_others_are_not(backend) {
        let mut cfg = config(backend, false);
        cfg.guard.per_source_rate = Some(RateLimit {
            per_second: 0.01,
            burst: 5,
        });
        let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
        let to = engine.local_addr();
        assert_eq!(echoes(&client_at("127.0.0.1:0"), to, 50), 5, "the burst");
        assert_eq!(echoes(&client_at("127.0.0.3:0"), to, 3), 3, "its own bucket");
        let s = stop_after(engine, 53);
        assert_eq!(s.guard_rate, 45);
        assert_eq!(s.sent, 8);
    }
);

per_backend!(
    fn our_own_port_and_reflector_ports_are_never_answered(backend) {
        let engine = Engine::start(config(backend, false), |_| Echo::new()).unwrap();
        let to = engine.local_addr();
        // A twin service on our port (another address, as another host
        // would be): the other half of a loop.
        let twin = client_at(&format!("127.0.0.2:{}", to.port()));
        assert_eq!(echoes(&twin, to, 3), 0);
        // WS-Discovery's port, a service that answers whatever it gets.
        let reflector = UdpSocket::bind("127.0.0.1:3702").map(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            assert_eq!(echoes(&s, to, 3), 0);
        });
        if let Err(e) = &reflector {
            eprintln!("port 3702 is taken here ({e}); that check is skipped");
        }
        assert_eq!(echoes(&client_at("127.0.0.1:0"), to, 2), 2, "others are answered");
        let n = if reflector.is_ok() { 8 } else { 5 };
        let s = stop_after(engine, n);
        assert_eq!(s.guard_loop, 3);
        assert_eq!(s.guard_port, if reflector.is_ok() { 3 } else { 0 });
        assert_eq!(s.sent, 2);
    }
);

#[test]
fn allow_port_and_guard_off_open_what_the_defaults_close() {
    let mut cfg = config(udpring::Backend::Mmsg, false);
    cfg.guard.deny_ports.retain(|&p| p != 3702);
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    let to = engine.local_addr();
    if let Ok(s) = UdpSocket::bind("127.0.0.1:3702") {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert_eq!(echoes(&s, to, 2), 2, "allowed port");
    }
    stop_clean(engine);
    let mut cfg = config(udpring::Backend::Mmsg, false);
    cfg.guard = Guard::off();
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    let to = engine.local_addr();
    let twin = client_at(&format!("127.0.0.2:{}", to.port()));
    assert_eq!(echoes(&twin, to, 2), 2, "guard off: answered");
    let s = stop_clean(engine);
    assert_eq!(s.guard_loop, 0);
}

per_backend!(
    /// A program's own socket loop on the server mark
    /// (`os::set_server_mark`, `os::recv_from_hops`), IPv4 and IPv6: it
    /// reads the mark on the engine's answer and none on a plain client's
    /// datagram (cut to its buffer, as `recv_from` cuts it), and the engine
    /// refuses what it sends once marked (a `uring` worker parked by then:
    /// its own receive reads the mark).
    fn a_socket_loop_on_the_server_mark_reads_it_and_the_engine_refuses_it(backend) {
        for v6 in [false, true] {
            let engine = Engine::start(config(backend, v6), |_| Echo::new()).unwrap();
            let to = engine.local_addr();
            let own = client(v6);
            let plain = client(v6);
            // Asked before the socket is marked: the engine answers it.
            own.send_to(b"ask", to).unwrap();
            plain.send_to(&[7; 100], own.local_addr().unwrap()).unwrap();
            udpring::os::set_server_mark(&own, v6).unwrap();
            let mut buf = [0u8; 16];
            let mut seen = 0;
            for _ in 0..2 {
                let (n, from, hops) = udpring::os::recv_from_hops(&own, &mut buf).unwrap();
                if from == to {
                    assert_eq!(
                        (n, &buf[..n], hops),
                        (3, &b"ask"[..], Some(udpring::MARK_HOPS))
                    );
                    seen |= 1;
                } else {
                    assert_eq!(from, plain.local_addr().unwrap());
                    assert_eq!((n, buf), (16, [7; 16]), "cut to the buffer");
                    assert!(hops.is_some_and(|h| !udpring::is_marked(h)), "{hops:?}");
                    seen |= 2;
                }
            }
            assert_eq!(seen, 3, "v6 {v6}");
            own.send_to(b"again", to).unwrap();
            wait_workers(&engine, |s| {
                s.iter().map(|w| w.guard_marked).sum::<u64>() >= 1
            });
            let s = stop_clean(engine);
            assert_eq!((s.guard_marked, s.sent), (1, 1), "v6 {v6}");
        }
    }
);
